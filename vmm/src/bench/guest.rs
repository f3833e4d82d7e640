//! The mm workloads in the guest, on real page tables: `vmm run --scenario mm-workloads --scale N`
//! runs each in ring-3 processes served by the guest's mm-core, marking every timed phase with a
//! `BenchMark` call the host timestamps (see `mm_core::abi::bench`). The anchor is Linux running the
//! same workload at the same size in this process, right after.

use super::BenchError;
use mm_bench::report::row_table;
use mm_bench::{linux_at, Row, Stats, Workload};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Units (operations, pages, VMAs) of each workload in the full run: about 15 s of guest time on
/// software KVM, where guest ring 0 is emulated.
pub const GUEST_SCALE: u64 = 256;
/// The smoke run's units.
pub const GUEST_SCALE_QUICK: u64 = 16;

/// The guest's rows: each workload's phases against Linux at the same size.
#[derive(Clone, Debug)]
pub struct GuestBench {
    /// Units each workload did.
    pub scale: u64,
    /// Guest (subject) against Linux (anchor), nanoseconds per unit or in all.
    pub rows: Vec<Row>,
}

impl GuestBench {
    /// The rows as a table under a head that names the platform (`label`).
    pub fn table(&self, label: &str) -> String {
        format!(
            "mm workloads in the guest: ring-3 processes, mm-core on real page tables, {} units \
             each, against Linux at the same sizes.\nplatform: {label}\n{}",
            self.scale,
            row_table(&self.rows, "guest", None)
        )
    }
}

/// Runs the guest scenario at the quick or full scale and measures Linux at the sizes it reports.
pub fn guest_workloads(
    vmm_exe: &Path,
    quick: bool,
    timeout: Duration,
) -> Result<GuestBench, BenchError> {
    let scale = if quick {
        GUEST_SCALE_QUICK
    } else {
        GUEST_SCALE
    };
    let scale_arg = scale.to_string();
    let args = ["--scenario", "mm-workloads", "--scale", &scale_arg];
    let (json, command) = super::run_with_report(vmm_exe, &args, timeout)?;
    let bad = |reason: String| BenchError::Child {
        command: command.clone(),
        reason,
    };
    let timing = &json["timing"];
    if timing["unpaired_marks"].as_u64() != Some(0) {
        return Err(bad(format!("benchmark marks did not pair up: {timing}")));
    }
    // Per workload: the units (the same in every repeat) and each repeat's figure.
    let mut phases: BTreeMap<Workload, (u64, Vec<f64>)> = BTreeMap::new();
    for p in timing["phases"].as_array().into_iter().flatten() {
        let workload = Workload::ALL
            .into_iter()
            .find(|w| p["workload"].as_str() == Some(w.name()));
        let (Some(w), Some(units), Some(ns)) = (workload, p["units"].as_u64(), p["ns"].as_u64())
        else {
            return Err(bad(format!("malformed phase {p}")));
        };
        let figure = if w.per_unit() {
            ns as f64 / units.max(1) as f64
        } else {
            ns as f64
        };
        let e = phases.entry(w).or_insert((units, Vec::new()));
        e.0 = units;
        e.1.push(figure);
    }
    let mut rows = Vec::new();
    for w in Workload::ALL {
        let Some((units, samples)) = phases.get(&w) else {
            return Err(bad(format!("no {} phase in the report", w.name())));
        };
        let anchor = linux_at(w, *units, samples.len()).map_err(|e| BenchError::Child {
            command: format!("Linux {} at {units}", w.name()),
            reason: e.to_string(),
        })?;
        rows.push(Row {
            workload: w,
            units: *units,
            subject: Stats::of(samples),
            anchor: Some(anchor),
        });
    }
    Ok(GuestBench { scale, rows })
}
