//! The recorder and the JSON it writes, on made-up events: the structure a viewer needs (a named
//! track per vCPU, slices with durations, instants with scopes), and the cap.

use super::json::{write, write_to, RunInfo};
use super::*;
use crate::probe::Check;
use mm_core::abi::{FreePath, TableSpan, Ucall};
use mm_core::hooks::WalkerPoint;
use serde_json::Value;

fn info(failure: Option<&str>) -> RunInfo {
    RunInfo {
        command: "vmm run --scenario tour".into(),
        scenario: "tour".into(),
        failure: failure.map(str::to_string),
        ended: Some(Duration::from_millis(5)),
    }
}

/// The document the recorder's events make.
fn document(trace: &TraceRecorder, failure: Option<&str>) -> Value {
    let events = trace.take_events();
    let mut out = Vec::new();
    let run = info(failure);
    write_to(&mut out, trace, &events, &run, run.ended.unwrap()).unwrap();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out)))
}

fn events(doc: &Value) -> &[Value] {
    doc["traceEvents"].as_array().expect("a traceEvents array")
}

fn named<'a>(doc: &'a Value, name: &str) -> Vec<&'a Value> {
    events(doc).iter().filter(|e| e["name"] == name).collect()
}

fn freed(frame: u64) -> ProbeEvent {
    ProbeEvent::TableFreed {
        frame,
        claim: Some(TableSpan {
            mm: 0x5000,
            level: 1,
            frame,
            start: 0x40_0000,
            end: 0x60_0000,
        }),
        path: FreePath::Munmap,
    }
}

fn checked(event: ProbeEvent, took_us: u64, ran: ChecksRan, violations: u32) -> Checked {
    Checked {
        event,
        took: Duration::from_micros(took_us),
        ran,
        violations,
        walk_errors: 0,
    }
}

fn violation(detail: &str) -> Violation {
    Violation {
        check: Check::P1,
        mm: 0x5000,
        level: 1,
        frame: 0x9000,
        start: 0x40_0000,
        end: 0x60_0000,
        vma: None,
        rip: 0x20_1000,
        detail: detail.into(),
    }
}

#[test]
fn every_vcpu_has_one_named_track_even_with_no_events() {
    let trace = TraceRecorder::new(3, Instant::now());
    let doc = document(&trace, None);
    assert_eq!(doc["displayTimeUnit"], "ns");
    let names: Vec<&Value> = events(&doc)
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .collect();
    assert_eq!(names.len(), 3, "{doc}");
    for (cpu, e) in names.iter().enumerate() {
        assert_eq!(
            (e["pid"].as_u64(), e["tid"].as_u64()),
            (Some(1), Some(cpu as u64))
        );
        assert_eq!(e["args"]["name"], format!("vCPU {cpu}"));
    }
    assert_eq!(
        named(&doc, "process_name")[0]["args"]["name"],
        "vmm run --scenario tour"
    );
    let passed = named(&doc, "run passed");
    assert_eq!(passed.len(), 1, "{doc}");
    assert_eq!(
        (&passed[0]["s"], passed[0]["ts"].as_f64()),
        (&Value::from("g"), Some(5000.0))
    );
    assert_eq!(doc["otherData"]["outcome"], "passed");
}

#[test]
fn a_checked_free_is_a_slice_with_its_duration_and_what_it_checked() {
    let start = Instant::now();
    let trace = TraceRecorder::new(2, start);
    let at = start + Duration::from_micros(1500);
    let ran = ChecksRan::between(&[4, 4, 4, 4, 4, 1, 0], &[5, 5, 5, 5, 5, 1, 0]);
    trace.probe(1, at, checked(freed(0x9000), 12, ran, 0), &[]);
    let doc = document(&trace, None);
    let [slice] = &named(&doc, "check TableFreed")[..] else {
        panic!("expected one slice in {doc}");
    };
    assert_eq!(slice["ph"], "X");
    assert_eq!(
        (slice["ts"].as_f64(), slice["dur"].as_f64()),
        (Some(1500.0), Some(12.0))
    );
    assert_eq!(
        (slice["pid"].as_u64(), slice["tid"].as_u64()),
        (Some(1), Some(1))
    );
    let args = &slice["args"];
    assert_eq!(args["frame"], "0x9000");
    assert_eq!(args["level"], 1);
    assert_eq!(args["span"], "[0x400000, 0x600000)");
    assert_eq!(args["path"], "munmap");
    assert_eq!(
        args["checks"],
        serde_json::json!(["P1", "P2", "P3", "P4", "P5"])
    );
    assert_eq!(args["violations"], 0);
}

#[test]
fn a_sweep_is_a_slice_and_an_unhook_flush_or_unlink_an_instant_on_the_vcpus_track() {
    let start = Instant::now();
    let trace = TraceRecorder::new(1, start);
    let sweep = ProbeEvent::Quiescent { mm: 0x5000 };
    trace.probe(0, start, checked(sweep, 300, ChecksRan(1 << 5), 0), &[]);
    let span = TableSpan {
        mm: 0x5000,
        level: 1,
        frame: 0x9000,
        start: 0,
        end: 0x20_0000,
    };
    let flush = ProbeEvent::TlbFlushed {
        mm: 0x5000,
        start: 0,
        end: 0x20_0000,
    };
    let unlink = ProbeEvent::VmaUnlinked {
        mm: 0x5000,
        vma: 0x7000,
        start: 0,
        end: 0x1000,
        kind: crate::probe::UnlinkKind::File,
        path: FreePath::Exit,
    };
    for event in [ProbeEvent::TableUnhooked(span), flush, unlink] {
        trace.probe(0, start, checked(event, 1, ChecksRan::default(), 0), &[]);
    }
    trace.record(
        0,
        start,
        What::Quarantine {
            frame: 0x9000,
            took: Duration::from_micros(3),
        },
    );
    let doc = document(&trace, None);
    let sweep = named(&doc, "sweep");
    assert_eq!((sweep.len(), &sweep[0]["ph"]), (1, &Value::from("X")));
    assert_eq!(sweep[0]["args"]["checks"], serde_json::json!(["P6"]));
    for name in ["unhook", "TLB flush", "VMA unlink", "quarantine"] {
        let found = named(&doc, name);
        assert_eq!(found.len(), 1, "{name} in {doc}");
        assert_eq!(
            (&found[0]["ph"], &found[0]["s"]),
            (&"i".into(), &"t".into()),
            "{name}"
        );
        assert_eq!(found[0]["tid"], 0);
        assert!(found[0].get("dur").is_none(), "{name} has no duration");
    }
    assert_eq!(named(&doc, "VMA unlink")[0]["args"]["from"], "i_mmap");
    assert_eq!(named(&doc, "quarantine")[0]["args"]["frame"], "0x9000");
}

#[test]
fn a_violation_is_a_process_wide_instant_on_its_vcpu_with_the_detail() {
    let start = Instant::now();
    let trace = TraceRecorder::new(2, start);
    let found = [violation("VMA still in the anon_vma"), violation("second")];
    trace.probe(
        1,
        start,
        checked(freed(0x9000), 40, ChecksRan(0x1f), 2),
        &found,
    );
    let doc = document(&trace, Some("the probes found 2 violation(s)"));
    let marks = named(&doc, "violation P1");
    assert_eq!(marks.len(), 2, "{doc}");
    let first = marks[0];
    assert_eq!((&first["ph"], &first["s"]), (&"i".into(), &"p".into()));
    assert_eq!(
        (&first["tid"], &first["args"]["vcpu"]),
        (&1.into(), &1.into())
    );
    assert_eq!(first["ts"].as_f64(), Some(40.0), "at the end of the check");
    assert_eq!(first["args"]["detail"], "VMA still in the anon_vma");
    assert_eq!(first["args"]["check"], "P1");
    assert_eq!(first["args"]["frame"], "0x9000");
    assert_eq!(first["args"]["level"], 1);
    assert_eq!(named(&doc, "check TableFreed")[0]["args"]["violations"], 2);
    let failed = named(&doc, "run failed");
    assert_eq!(
        failed[0]["args"]["failure"],
        "the probes found 2 violation(s)"
    );
    assert_eq!(
        doc["otherData"]["outcome"],
        "the probes found 2 violation(s)"
    );
}

#[test]
fn race_calls_and_stages_are_instants_named_by_what_they_are() {
    let start = Instant::now();
    let trace = TraceRecorder::new(2, start);
    let race = |call, class: Option<&str>| What::Race {
        call,
        class: class.map(Into::into),
        waited: Duration::from_micros(7),
    };
    trace.record(0, start, What::Stage(Ucall::STAGE_READY));
    trace.record(1, start, race(RaceCall::Enter { racers: 2 }, None));
    trace.record(
        1,
        start,
        race(
            RaceCall::Point {
                kind: WalkerPoint::RmapPte as u64,
            },
            None,
        ),
    );
    trace.record(1, start, race(RaceCall::Contended, Some("i_mmap_lock")));
    trace.record(1, start, race(RaceCall::Leave, None));
    let doc = document(&trace, None);
    assert_eq!(named(&doc, "guest ready").len(), 1, "{doc}");
    assert_eq!(named(&doc, "race enter")[0]["args"]["racers"], 2);
    assert_eq!(named(&doc, "sched point")[0]["args"]["kind"], "rmap-pte");
    let contended = named(&doc, "lock contended");
    assert_eq!(contended[0]["args"]["class"], "i_mmap_lock");
    assert_eq!(contended[0]["args"]["waited_us"].as_f64(), Some(7.0));
    assert_eq!(named(&doc, "race leave")[0]["cat"], "race");
}

#[test]
fn past_the_cap_events_are_counted_as_dropped_and_the_file_says_so() {
    let start = Instant::now();
    let trace = TraceRecorder::with_cap(2, start, 3);
    for i in 0..5 {
        trace.record(i % 2, start, What::Stage(i as u64));
    }
    // A vCPU the run does not have is dropped too, never a panic.
    trace.record(7, start, What::Stage(1));
    assert_eq!(trace.dropped(), 3);
    let doc = document(&trace, None);
    let stages = events(&doc).iter().filter(|e| e["cat"] == "guest").count();
    assert_eq!(stages, 3, "{doc}");
    assert_eq!(doc["otherData"]["events_kept"], 3);
    assert_eq!(doc["otherData"]["events_dropped"], 3);
    assert_eq!(doc["otherData"]["event_cap"], 3);
    let dropped = named(&doc, "trace events dropped");
    assert_eq!(dropped.len(), 1, "{doc}");
    assert_eq!(dropped[0]["args"]["dropped"], 3);
}

#[test]
fn events_come_out_in_time_order_across_vcpus() {
    let start = Instant::now();
    let trace = TraceRecorder::new(2, start);
    for (cpu, us) in [(0, 30), (1, 10), (0, 40), (1, 20)] {
        trace.record(cpu, start + Duration::from_micros(us), What::Stage(us));
    }
    let doc = document(&trace, None);
    let ts: Vec<f64> = events(&doc)
        .iter()
        .filter(|e| e["cat"] == "guest")
        .map(|e| e["ts"].as_f64().unwrap())
        .collect();
    assert_eq!(ts, [10.0, 20.0, 30.0, 40.0]);
    assert!(trace.take_events().is_empty(), "writing takes the events");
}

#[test]
fn the_checks_ran_are_the_counts_that_grew() {
    let ran = ChecksRan::between(&[1, 1, 1, 1, 1, 1, 1], &[1, 2, 1, 1, 1, 3, 1]);
    assert_eq!(ran.names(), ["P2", "P6"]);
    assert!(ChecksRan::between(&[0; 7], &[0; 7]).names().is_empty());
}

#[test]
fn the_file_is_written_whole_at_the_path() {
    let path = std::env::temp_dir().join(format!("vmm-trace-unit-{}.json", std::process::id()));
    let trace = TraceRecorder::new(1, Instant::now());
    trace.record(0, Instant::now(), What::Stage(Ucall::STAGE_ONLINE));
    write(&path, &trace, &info(None)).unwrap();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(named(&doc, "guest online").len(), 1, "{doc}");
}

#[test]
fn an_event_fits_the_size_the_cap_is_reckoned_with() {
    assert!(
        std::mem::size_of::<TraceEvent>() <= EVENT_BYTES,
        "{} bytes",
        std::mem::size_of::<TraceEvent>()
    );
}
