//! The probe benchmark: the host cost of checking one page-table free, against the bare port-I/O
//! exit round trip measured in the same run, at 10, 1,000 and 65,530 VMAs.

use super::BenchError;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// VMA counts the probe benchmark runs at.
pub const PROBE_SCALES: [u64; 3] = [10, 1_000, 65_530];
/// The smoke run's counts.
pub const PROBE_SCALES_QUICK: [u64; 2] = [10, 100];
/// Goal: a checked event costs at most this many bare exit round trips at 1,000 VMAs.
pub const PROBE_GOAL_RATIO: f64 = 2.0;

/// One row of the probe benchmark.
#[derive(Clone, Copy, Debug)]
pub struct ProbeRow {
    /// File VMAs in the process.
    pub vmas: u64,
    /// Bare exit round trip.
    pub round_trip: Duration,
    /// Median host time to check one page-table free.
    pub check: Duration,
    /// Mean over every free, including exit's frees of tables spanning many VMAs.
    pub check_mean: Duration,
    /// The slowest check (a table spanning the most VMAs).
    pub check_max: Duration,
    /// Page-table frees checked.
    pub frees: u64,
    /// Sweeps of every mm's page tables (P6) during the run.
    pub sweeps: u64,
    /// Mean host time of one sweep.
    pub sweep_mean: Duration,
    /// Host time of all sweeps.
    pub sweep_total: Duration,
}

impl ProbeRow {
    /// Cost of a checked event (a bare round trip plus the check) over a bare round trip.
    pub fn ratio(&self) -> f64 {
        (self.round_trip + self.check).as_secs_f64() / self.round_trip.as_secs_f64()
    }

    /// The typical check with the run's sweeps charged to the frees: median check plus sweep
    /// time per checked free.
    pub fn check_with_sweeps(&self) -> Duration {
        let frees = u32::try_from(self.frees.max(1)).unwrap_or(u32::MAX);
        self.check + self.sweep_total / frees
    }

    /// [`ProbeRow::ratio`] with the sweeps charged: what the goal is about.
    pub fn ratio_with_sweeps(&self) -> f64 {
        (self.round_trip + self.check_with_sweeps()).as_secs_f64() / self.round_trip.as_secs_f64()
    }
}

/// The probe benchmark's result.
#[derive(Clone, Debug)]
pub struct ProbeBench {
    /// One row per VMA count.
    pub rows: Vec<ProbeRow>,
}

impl fmt::Display for ProbeBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        writeln!(
            f,
            "probe cost per checked page-table free, against the bare exit round trip (same run)."
        )?;
        writeln!(
            f,
            "check: median host time of one check; mean and max include exit's frees of tables"
        )?;
        writeln!(
            f,
            "that span every VMA, whose cost grows with the VMAs meeting the span:"
        )?;
        writeln!(
            f,
            "sweeps: P6 over every mm at the guest's quiescent points; 'with sweeps' charges their"
        )?;
        writeln!(f, "time to the frees (median check + sweep time / frees):")?;
        writeln!(
            f,
            "  {:>7}  {:>12}  {:>9}  {:>9}  {:>9}  {:>16}  {:>6}  {:>6}  {:>9}  {:>13}  {:>6}",
            "VMAs",
            "bare exit µs",
            "check µs",
            "mean µs",
            "max µs",
            "checked event µs",
            "ratio",
            "sweeps",
            "sweep µs",
            "w/ sweeps µs",
            "ratio"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "  {:>7}  {:>12.2}  {:>9.2}  {:>9.2}  {:>9.1}  {:>16.2}  {:>5.2}x  {:>6}  {:>9.1}  {:>13.2}  {:>5.2}x",
                r.vmas,
                us(r.round_trip),
                us(r.check),
                us(r.check_mean),
                us(r.check_max),
                us(r.round_trip + r.check),
                r.ratio(),
                r.sweeps,
                us(r.sweep_mean),
                us(r.round_trip + r.check_with_sweeps()),
                r.ratio_with_sweeps()
            )?;
        }
        match self.rows.iter().find(|r| r.vmas == 1_000) {
            Some(r) => {
                let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
                write!(
                    f,
                    "goal: checked event <= {PROBE_GOAL_RATIO}x bare exit at 1,000 VMAs: {} ({:.2}x), \
                     with sweeps: {} ({:.2}x)",
                    verdict(r.ratio() <= PROBE_GOAL_RATIO),
                    r.ratio(),
                    verdict(r.ratio_with_sweeps() <= PROBE_GOAL_RATIO),
                    r.ratio_with_sweeps()
                )
            }
            None => write!(f, "goal: checked event <= {PROBE_GOAL_RATIO}x bare exit at 1,000 VMAs: not run (--quick)"),
        }
    }
}

/// Runs `vmm run --scenario probe-bench --scale N` for each VMA count and reads the timing from
/// its JSON report (`vmm bench probes`; the suite runs [`probe_row`] row by row).
pub fn probes(vmm_exe: &Path, quick: bool) -> Result<ProbeBench, BenchError> {
    let scales: &[u64] = if quick {
        &PROBE_SCALES_QUICK
    } else {
        &PROBE_SCALES
    };
    let mut rows = Vec::new();
    for &vmas in scales {
        eprintln!("bench probes: {vmas} VMAs …");
        rows.push(probe_row(vmm_exe, vmas, super::DEFAULT_ROW_TIMEOUT)?);
    }
    Ok(ProbeBench { rows })
}

/// One row: `vmm run --scenario probe-bench --scale VMAS`, stopped after `timeout`.
pub fn probe_row(vmm_exe: &Path, vmas: u64, timeout: Duration) -> Result<ProbeRow, BenchError> {
    {
        let scale = vmas.to_string();
        let args = ["--scenario", "probe-bench", "--scale", &scale];
        let (json, command) = super::run_with_report(vmm_exe, &args, timeout)?;
        let t = &json["timing"];
        let ns = |key: &str| t[key].as_u64().map(Duration::from_nanos);
        let timing = (
            ns("ping_round_trip_ns"),
            ns("check_median_ns"),
            ns("check_per_free_ns"),
            ns("check_max_ns"),
        );
        let (Some(round_trip), Some(check), Some(check_mean), Some(check_max)) = timing else {
            return Err(BenchError::Child {
                command,
                reason: format!("no timing in report: {t}"),
            });
        };
        let frees = t["checked_frees"].as_u64().unwrap_or(0);
        let sweeps = t["sweeps"].as_u64().unwrap_or(0);
        let sweep_mean = ns("sweep_mean_ns").unwrap_or_default();
        Ok(ProbeRow {
            vmas,
            round_trip,
            check,
            check_mean,
            check_max,
            frees,
            sweeps,
            sweep_mean,
            sweep_total: sweep_mean * u32::try_from(sweeps).unwrap_or(u32::MAX),
        })
    }
}
