//! The trace as the Trace Event Format's JSON object: `{"traceEvents": [...], "displayTimeUnit":
//! "ns", "otherData": {...}}`. Process 1 is the VM; thread N (a `thread_name` metadata event says
//! "vCPU N") is vCPU N. Slices are complete events (`"ph": "X"`, `ts` and `dur` in microseconds
//! since the run's start), instants `"ph": "i"` with `"s": "t"` (on the vCPU's track) or, for a
//! violation, `"s": "p"` (a line across the whole VM, still attributed to the vCPU). Addresses are
//! hex strings, as the viewers show them verbatim. One event per line, streamed: a run near the cap
//! is written without building the whole document in memory. Current Perfetto ignores
//! `displayTimeUnit` (its trace processor once read it as the unit of `ts`); `ts` is microseconds
//! for every viewer.

use super::{Checked, TraceEvent, TraceRecorder, What};
use crate::out_file;
use crate::probe::{ProbeEvent, UnlinkKind};
use mm_core::abi::{RaceCall, SchedPointKind, Ucall};
use mm_core::hooks::WalkerPoint;
use serde_json::{json, Map, Value};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

/// The process every track belongs to.
const PID: u64 = 1;

/// The run around the events, for the file's metadata.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// What ran, e.g. `vmm run --scenario tour`: the process's name in the viewer.
    pub command: String,
    /// The scenario.
    pub scenario: String,
    /// `None` when the run passed, else why it failed.
    pub failure: Option<String>,
    /// Since the run's start, when the outcome was known (`None`: when the file is written).
    pub ended: Option<Duration>,
}

/// Writes the recorder's events, taking them, to `path` atomically.
pub fn write(path: &Path, trace: &TraceRecorder, run: &RunInfo) -> io::Result<()> {
    let ended = run.ended.unwrap_or_else(|| trace.start().elapsed());
    let events = trace.take_events();
    out_file::write_atomic(path, |out| write_to(out, trace, &events, run, ended))
}

/// Writes the document: metadata, every event, then the outcome (and the drop count, if any) as
/// global instants at `ended`.
pub fn write_to(
    out: &mut dyn Write,
    trace: &TraceRecorder,
    events: &[TraceEvent],
    run: &RunInfo,
    ended: Duration,
) -> io::Result<()> {
    let other = json!({
        "command": run.command,
        "scenario": run.scenario,
        "outcome": run.failure.as_deref().unwrap_or("passed"),
        "vcpus": trace.vcpus(),
        "event_cap": trace.cap(),
        "events_kept": events.len(),
        "events_dropped": trace.dropped(),
        "time": "microseconds since the vmm process started",
    });
    writeln!(
        out,
        "{{\"displayTimeUnit\":\"ns\",\"otherData\":{other},\"traceEvents\":["
    )?;
    let mut first = true;
    let mut line = |out: &mut dyn Write, event: &Value| -> io::Result<()> {
        if !std::mem::take(&mut first) {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *out, event).map_err(io::Error::other)
    };
    line(
        out,
        &metadata(0, "process_name", json!({ "name": run.command })),
    )?;
    for cpu in 0..trace.vcpus() {
        let name = format!("vCPU {cpu}");
        line(out, &metadata(cpu, "thread_name", json!({ "name": name })))?;
        line(
            out,
            &metadata(cpu, "thread_sort_index", json!({ "sort_index": cpu })),
        )?;
    }
    for event in events {
        line(out, &event_json(event))?;
    }
    let outcome = match &run.failure {
        None => ("run passed", json!({})),
        Some(why) => ("run failed", json!({ "failure": why })),
    };
    line(out, &global(outcome.0, ended, outcome.1))?;
    if trace.dropped() > 0 {
        let args = json!({ "dropped": trace.dropped(), "cap": trace.cap() });
        line(out, &global("trace events dropped", ended, args))?;
    }
    out.write_all(b"\n]}\n")
}

fn metadata(cpu: usize, name: &str, args: Value) -> Value {
    json!({ "ph": "M", "pid": PID, "tid": cpu, "name": name, "args": args })
}

fn global(name: &str, at: Duration, args: Value) -> Value {
    json!({ "ph": "i", "s": "g", "pid": PID, "tid": 0, "name": name, "ts": us(at), "args": args })
}

/// Microseconds, the format's unit, keeping nanoseconds as the fraction.
fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn span(start: u64, end: u64) -> String {
    format!("[{start:#x}, {end:#x})")
}

/// One event: its name, category and arguments, a slice or an instant.
fn event_json(e: &TraceEvent) -> Value {
    let (name, cat, dur, scope, args) = match &e.what {
        What::Probe(c) => {
            let (name, slice, args) = probe(c);
            (name, "probe", slice.then_some(c.took), "t", args)
        }
        What::Quarantine { frame, took } => (
            "quarantine".to_string(),
            "quarantine",
            None,
            "t",
            json!({ "frame": hex(*frame), "took_us": us(*took) }),
        ),
        What::Race {
            call,
            class,
            waited,
        } => {
            let (name, mut args) = race(*call, class.as_deref());
            args["waited_us"] = json!(us(*waited));
            (name.to_string(), "race", None, "t", args)
        }
        What::Stage(stage) => (stage_name(*stage), "guest", None, "t", json!({})),
        What::Violation(v) => {
            // Perfetto puts a process-wide instant on the process's own track: the argument keeps
            // the vCPU.
            let mut args = violation_args(v);
            args["vcpu"] = json!(e.cpu);
            (
                format!("violation {}", v.check),
                "violation",
                None,
                "p",
                args,
            )
        }
    };
    let mut event = json!({
        "name": name, "cat": cat, "pid": PID, "tid": e.cpu, "ts": us(e.at), "args": args,
    });
    match dur {
        Some(dur) => {
            event["ph"] = json!("X");
            event["dur"] = json!(us(dur));
        }
        None => {
            event["ph"] = json!("i");
            event["s"] = json!(scope);
        }
    }
    event
}

/// A violation as the report gives it, its addresses in hex like the rest of the trace.
fn violation_args(v: &crate::probe::Violation) -> Value {
    let mut args = crate::report::violation_json(v);
    let hex_in = |obj: &mut Value, keys: &[&str]| {
        for key in keys {
            if let Some(n) = obj[*key].as_u64() {
                obj[*key] = json!(hex(n));
            }
        }
    };
    hex_in(&mut args, &["mm", "frame", "start", "end", "rip"]);
    if args["vma"].is_object() {
        hex_in(&mut args["vma"], &["addr", "start", "end", "flags"]);
    }
    args
}

/// A probe event's name, whether it is a slice (it ran checks), and its arguments.
fn probe(c: &Checked) -> (String, bool, Value) {
    let (name, slice, mut args) = match c.event {
        ProbeEvent::TableFreed { frame, claim, path } => {
            // The mmu_gather's announcement; the checks use the table's own descriptor, which a
            // violation names.
            let mut args = json!({ "frame": hex(frame), "path": path.name() });
            if let Some(s) = claim {
                args["mm"] = json!(hex(s.mm));
                args["level"] = json!(s.level);
                args["span"] = json!(span(s.start, s.end));
            }
            ("check TableFreed", true, args)
        }
        ProbeEvent::Quiescent { mm } => ("sweep", true, json!({ "mm": hex(mm) })),
        ProbeEvent::MmInvalid { mm, count } => (
            "check MmInvalid",
            true,
            json!({ "mm": hex(mm), "count": count }),
        ),
        ProbeEvent::Roots {
            roots,
            mem_map,
            mem_map_len,
            kernel_pgd,
            ..
        } => (
            "probe roots",
            false,
            json!({ "roots": hex(roots), "mem_map": hex(mem_map), "mem_map_len": mem_map_len,
                    "kernel_pgd": hex(kernel_pgd) }),
        ),
        ProbeEvent::TableUnhooked(s) => (
            "unhook",
            false,
            json!({ "mm": hex(s.mm), "level": s.level, "frame": hex(s.frame),
                    "span": span(s.start, s.end) }),
        ),
        ProbeEvent::TlbFlushed { mm, start, end } => (
            "TLB flush",
            false,
            json!({ "mm": hex(mm), "span": span(start, end) }),
        ),
        ProbeEvent::VmaUnlinked {
            mm,
            vma,
            start,
            end,
            kind,
            path,
        } => (
            "VMA unlink",
            false,
            json!({ "mm": hex(mm), "vma": hex(vma), "span": span(start, end),
                    "from": match kind { UnlinkKind::Anon => "anon_vma", UnlinkKind::File => "i_mmap" },
                    "path": path.name() }),
        ),
        ProbeEvent::VmaRange {
            mm,
            vma,
            start,
            end,
        } => (
            "VMA range",
            false,
            json!({ "mm": hex(mm), "vma": hex(vma), "span": span(start, end) }),
        ),
        ProbeEvent::VmaFreed { mm, vma } => (
            "VMA freed",
            false,
            json!({ "mm": hex(mm), "vma": hex(vma) }),
        ),
    };
    if slice {
        args["checks"] = json!(c.ran.names());
        args["violations"] = json!(c.violations);
    }
    if slice || c.walk_errors > 0 {
        args["walk_errors"] = json!(c.walk_errors);
    }
    (name.to_string(), slice, args)
}

/// A race call's name and arguments.
fn race(call: RaceCall, class: Option<&str>) -> (&'static str, Value) {
    match call {
        RaceCall::Enter { racers } => ("race enter", json!({ "racers": racers })),
        RaceCall::Leave => ("race leave", Value::Object(Map::new())),
        RaceCall::Point { kind } => ("sched point", json!({ "kind": point_name(kind) })),
        RaceCall::Contended => ("lock contended", json!({ "class": class.unwrap_or("") })),
    }
}

/// A scheduling point's kind by name (mm-core's walker points, the guest's own), else its number.
fn point_name(kind: u64) -> String {
    const NAMES: [(u64, &str); 5] = [
        (WalkerPoint::RmapVma as u64, "rmap-vma"),
        (WalkerPoint::RmapPte as u64, "rmap-pte"),
        (WalkerPoint::TruncateVma as u64, "truncate-vma"),
        (SchedPointKind::WalkerStep as u64, "walker-step"),
        (SchedPointKind::AfterInterrupt as u64, "after-interrupt"),
    ];
    NAMES
        .iter()
        .find(|&&(k, _)| k == kind)
        .map_or_else(|| kind.to_string(), |&(_, name)| name.to_string())
}

fn stage_name(stage: u64) -> String {
    match stage {
        Ucall::STAGE_ONLINE => "guest online".into(),
        Ucall::STAGE_READY => "guest ready".into(),
        Ucall::STAGE_SCENARIO => "in scenario".into(),
        n => format!("stage {n}"),
    }
}
