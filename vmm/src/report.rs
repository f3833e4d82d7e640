//! The end-of-run summary of the probes, on stderr and as JSON (`--report FILE`).

use crate::probe::coverage::{shape_name, Coverage, VmaKind};
use crate::probe::{Summary, UnlinkKind, Violation};
use crate::run::RunReport;
use mm_core::abi::FreePath;
use serde_json::{json, Value};
use std::path::Path;

/// One line for the user: events, checks per kind, violations.
pub fn summary_line(s: &Summary) -> String {
    let [p1, p2, p3, p4, p5, p6, p7] = s.checks;
    format!(
        "probes: {} events, checks P1 {p1} / P2 {p2} / P3 {p3} / P4 {p4} / P5 {p5} / P6 {p6} ({} \
         sweep(s)) / P7 {p7}, {} violation(s), {} walk error(s)",
        s.events,
        s.sweeps,
        s.violation_total(),
        s.errors.len()
    )
}

/// A violation as JSON, as the report and the trace events give it.
pub fn violation_json(v: &Violation) -> Value {
    json!({
        "check": v.check.to_string(),
        "mm": v.mm,
        "level": v.level,
        "frame": v.frame,
        "start": v.start,
        "end": v.end,
        "vma": v.vma.as_ref().map(|vma| json!({
            "addr": vma.addr,
            "start": vma.start,
            "end": vma.end,
            "flags": vma.flags,
            "kind": match vma.via { UnlinkKind::Anon => "anon", UnlinkKind::File => "file" },
        })),
        "rip": v.rip,
        "detail": v.detail,
    })
}

/// The coverage matrix as JSON: every cell that saw something, and the required cells that did
/// not.
pub fn coverage_json(c: &Coverage) -> Value {
    let (missing_frees, missing_unlinks) = c.missing();
    let free = |&(path, level, kept): &(FreePath, u8, u8)| json!({ "path": path.name(), "level": level, "kept": kept, "shape": shape_name(level, kept) });
    let unlink =
        |&(path, kind): &(FreePath, VmaKind)| json!({ "path": path.name(), "kind": kind.name() });
    json!({
        "frees": c.frees.iter().map(|(cell, n)| {
            let mut v = free(cell);
            v["count"] = json!(n);
            v
        }).collect::<Vec<_>>(),
        "unlinks": c.unlinks.iter().map(|(cell, n)| {
            let mut v = unlink(cell);
            v["count"] = json!(n);
            v
        }).collect::<Vec<_>>(),
        "missing_frees": missing_frees.iter().map(free).collect::<Vec<_>>(),
        "missing_unlinks": missing_unlinks.iter().map(unlink).collect::<Vec<_>>(),
    })
}

/// The run as JSON.
pub fn to_json(
    scenario: &str,
    variant: &str,
    inject: Option<String>,
    thorough: bool,
    report: &RunReport,
) -> Value {
    let s = &report.probes;
    json!({
        "scenario": scenario,
        "variant": variant,
        "inject": inject,
        "thorough": thorough,
        "passed": report.passed(),
        "failure": report.failure.as_ref().map(|f| f.to_string()),
        "events": s.events,
        "checks": crate::campaign::outcome::checks_json(&s.checks),
        "sweeps": s.sweeps,
        "coverage": coverage_json(&s.coverage),
        "violations": s.violations.iter().map(violation_json).collect::<Vec<_>>(),
        "violation_counts": crate::campaign::outcome::checks_json(&s.violation_counts),
        "violations_dropped": s.violations_dropped(),
        "errors": s.errors,
        "max_steps": s.max_steps,
        "held": {
            "violations": report.held.violations,
            "errors": report.held.errors,
            "indexed_vmas": report.held.indexed_vmas,
            "flush_mms": report.held.flush_mms,
            "flushes": report.held.flushes,
            "unhooked": report.held.unhooked,
            "freed": report.held.freed,
            "swept": report.held.swept,
            "check_samples": report.timing.check_samples(),
            "phases": report.timing.phases.len(),
        },
        "schedule": report.schedule.as_ref().map(|s| s.to_string()),
        "timing": {
            "pings": report.timing.pings,
            "ping_round_trip_ns": report.timing.ping_round_trip().map(|d| d.as_nanos() as u64),
            "checked_frees": report.timing.checked_frees,
            "check_per_free_ns": report.timing.check_per_free().map(|d| d.as_nanos() as u64),
            "check_median_ns": report.timing.check_median().map(|d| d.as_nanos() as u64),
            "check_max_ns": report.timing.check_max().map(|d| d.as_nanos() as u64),
            "sweeps": report.timing.sweeps,
            "sweep_mean_ns": report.timing.sweep_mean().map(|d| d.as_nanos() as u64),
            "check_with_sweeps_per_free_ns":
                report.timing.check_with_sweeps_per_free().map(|d| d.as_nanos() as u64),
            "probe_events": report.timing.probe_events,
            "phases_dropped": report.timing.phases_dropped,
            "phases": report.timing.phases.iter().map(|p| json!({
                "workload": p.workload.name(),
                "units": p.units,
                "ns": p.took.as_nanos() as u64,
            })).collect::<Vec<_>>(),
            "unpaired_marks": report.timing.unpaired_marks,
        },
    })
}

/// Writes the run as JSON to `path`, atomically (`out_file`).
pub fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    crate::out_file::write_text(path, &(text + "\n"))
}
