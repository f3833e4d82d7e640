//! The guest-call handler on made-up calls: no KVM, a probe over plain memory.

use super::*;
use crate::sched::Mode;
use crate::ucall::PoisonHit;
use mm_core::abi::{FreePath, PoisonReport, TableSpan};
use std::cell::RefCell;
use std::sync::mpsc::{self, Receiver};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The run around one vCPU's calls.
struct Run {
    probe: Mutex<Probe>,
    timing: Mutex<ExitTiming>,
    sched: Scheduler,
    stop: AtomicBool,
    events: Sender<VcpuEvent>,
    received: Receiver<VcpuEvent>,
}

impl Run {
    fn new() -> Run {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (events, received) = mpsc::channel();
        Run {
            probe: Mutex::new(Probe::new(mem, false)),
            timing: Mutex::new(ExitTiming::default()),
            sched: Scheduler::new(2, Mode::Seeded(1)),
            stop: AtomicBool::new(false),
            events,
            received,
        }
    }

    fn calls<'a>(&'a self, revoke: Option<Revoke<'a>>) -> Calls<'a> {
        Calls {
            cpu: 1,
            probe: &self.probe,
            timing: &self.timing,
            sched: &self.sched,
            stop: &self.stop,
            events: &self.events,
            revoke,
            trace: None,
        }
    }

    fn sent(&self) -> Vec<VcpuEvent> {
        self.received.try_iter().collect()
    }
}

fn probe(event: ProbeEvent) -> GuestCall {
    GuestCall::Probe {
        event,
        text: String::new(),
    }
}

const RIP: u64 = 0x20_1000;

#[test]
fn a_stage_goes_to_the_controller_and_the_vcpu_runs_on() {
    let run = Run::new();
    let next = run
        .calls(None)
        .handle(GuestCall::Sync { stage: 2 }, &mut || RIP);
    assert_eq!(next, Next::Resume);
    assert_eq!(run.sent(), [VcpuEvent::Sync { cpu: 1, stage: 2 }]);
}

#[test]
fn done_abort_exception_and_a_poison_hit_end_the_vcpu() {
    let run = Run::new();
    let hit = GuestCall::PoisonHit(PoisonHit {
        report: PoisonReport {
            table: 0x9000,
            ..PoisonReport::default()
        },
        file: "walk.rs".into(),
    });
    for call in [
        GuestCall::Done { verdict: 0 },
        GuestCall::Abort {
            message: "boom".into(),
            file: "x.rs".into(),
            line: 3,
        },
        GuestCall::Exception {
            vector: 14,
            error_code: 0,
            cr2: 0,
            rip: RIP,
        },
        hit,
    ] {
        assert_eq!(
            run.calls(None).handle(call.clone(), &mut || RIP),
            Next::End(call)
        );
    }
    assert!(run.sent().is_empty());
}

#[test]
fn a_benchmark_phase_is_timed_from_mark_to_mark() {
    let run = Run::new();
    let mark = |phase, units| GuestCall::BenchMark {
        workload: mm_core::abi::Workload::ALL[0] as u64,
        phase,
        units,
    };
    let calls = run.calls(None);
    assert_eq!(
        calls.handle(mark(mm_core::abi::MARK_START, 0), &mut || RIP),
        Next::Resume
    );
    assert_eq!(
        calls.handle(mark(mm_core::abi::MARK_END, 64), &mut || RIP),
        Next::Resume
    );
    let timing = run.timing.lock().unwrap();
    assert_eq!(timing.phases.len(), 1);
    assert_eq!(timing.phases[0].units, 64);
}

#[test]
fn a_broken_invariant_reaches_the_controller_with_the_guests_text_and_rip() {
    let run = Run::new();
    let call = GuestCall::Probe {
        event: ProbeEvent::MmInvalid {
            mm: 0x5000,
            count: 2,
        },
        text: "RssMismatch".into(),
    };
    assert_eq!(run.calls(None).handle(call, &mut || RIP), Next::Resume);
    let sent = run.sent();
    let [VcpuEvent::Violations { cpu: 1, violations }] = &sent[..] else {
        panic!("expected one batch of violations from vCPU 1, got {sent:?}");
    };
    assert_eq!(violations.len(), 1);
    assert_eq!((violations[0].mm, violations[0].rip), (0x5000, RIP));
    assert!(
        violations[0].detail.contains("RssMismatch"),
        "{:?}",
        violations[0]
    );
    let timing = run.timing.lock().unwrap();
    assert_eq!((timing.probe_events, timing.checked_frees), (1, 0));
}

#[test]
fn a_table_free_is_timed_and_its_frame_quarantined() {
    let run = Run::new();
    let revoked = RefCell::new(Vec::new());
    let revoke = |frame| {
        revoked.borrow_mut().push(frame);
        Ok(())
    };
    let span = TableSpan {
        mm: 0x5000,
        level: 1,
        frame: 0x9000,
        start: 1 << 39,
        end: (1 << 39) + (2 << 20),
    };
    let freed = ProbeEvent::TableFreed {
        frame: 0x9000,
        claim: Some(span),
        path: FreePath::Munmap,
    };
    let calls = run.calls(Some(&revoke));
    assert_eq!(calls.handle(probe(freed), &mut || RIP), Next::Resume);
    // Other events are checked but quarantine nothing.
    let flush = ProbeEvent::TlbFlushed {
        mm: 0x5000,
        start: 0,
        end: 1,
    };
    assert_eq!(calls.handle(probe(flush), &mut || RIP), Next::Resume);
    assert_eq!(*revoked.borrow(), [0x9000]);
    let timing = run.timing.lock().unwrap();
    assert_eq!((timing.probe_events, timing.checked_frees), (2, 1));
}

#[test]
fn a_failed_quarantine_fails_the_vcpu() {
    let run = Run::new();
    let revoke = |frame| Err(format!("cannot revoke {frame:#x}"));
    let freed = ProbeEvent::TableFreed {
        frame: 0xa000,
        claim: None,
        path: FreePath::Exit,
    };
    assert_eq!(
        run.calls(Some(&revoke)).handle(probe(freed), &mut || RIP),
        Next::Failed("cannot revoke 0xa000".into())
    );
}

#[test]
fn a_race_is_entered_and_left_through_the_scheduler() {
    let run = Run::new();
    let race = |call| GuestCall::Race {
        call,
        class: String::new(),
    };
    let calls = run.calls(None);
    // A race of one: the scheduler gives this vCPU every turn.
    assert_eq!(
        calls.handle(race(RaceCall::Enter { racers: 1 }), &mut || RIP),
        Next::Resume
    );
    assert!(run.sched.racing(1));
    assert_eq!(
        calls.handle(race(RaceCall::Point { kind: 0x10 }), &mut || RIP),
        Next::Resume
    );
    assert_eq!(
        calls.handle(race(RaceCall::Leave), &mut || RIP),
        Next::Resume
    );
    assert!(!run.sched.racing(1));
    assert!(
        !run.sched.schedule().0.is_empty(),
        "the turns were the scheduler's"
    );
}

#[test]
fn with_a_trace_each_call_is_recorded_once_with_the_checks_it_ran() {
    let run = Run::new();
    let trace = TraceRecorder::new(2, Instant::now());
    let revoke = |_| Ok(());
    let calls = Calls {
        trace: Some(&trace),
        ..run.calls(Some(&revoke))
    };
    let freed = ProbeEvent::TableFreed {
        frame: 0x9000,
        claim: None,
        path: FreePath::Exit,
    };
    let race = |call| GuestCall::Race {
        call,
        class: String::new(),
    };
    for call in [
        GuestCall::Sync { stage: 3 },
        probe(freed),
        race(RaceCall::Enter { racers: 1 }),
        race(RaceCall::Leave),
    ] {
        assert_eq!(calls.handle(call, &mut || RIP), Next::Resume);
    }
    let events = trace.take_events();
    let what: Vec<&What> = events.iter().map(|e| &e.what).collect();
    // Plain memory holds no `Page` saying page table: P5 fails, so the trace marks a violation.
    let [What::Stage(3), What::Probe(checked), What::Violation(v), What::Quarantine { frame: 0x9000, .. }, What::Race {
        call: RaceCall::Enter { racers: 1 },
        ..
    }, What::Race {
        call: RaceCall::Leave,
        ..
    }] = &what[..]
    else {
        panic!("expected stage, check, violation, quarantine, enter, leave: {what:#?}");
    };
    assert!(events.iter().all(|e| e.cpu == 1), "{events:?}");
    assert_eq!(checked.event, freed);
    assert!(
        events[2].at >= events[1].at + checked.took,
        "the violation is marked where the check ended"
    );
    let summary = run.probe.lock().unwrap().summary().clone();
    assert_eq!(
        checked.ran,
        crate::trace_events::ChecksRan::between(&[0; 7], &summary.checks)
    );
    assert_eq!((checked.violations, &**v), (1, &summary.violations[0]));
    assert_eq!(checked.walk_errors as usize, summary.errors.len());
    let sent = run.sent();
    assert!(
        matches!(
            &sent[..],
            [VcpuEvent::Sync { .. }, VcpuEvent::Violations { .. }]
        ),
        "the controller still hears of it: {sent:?}"
    );
    assert_eq!(trace.dropped(), 0);
}
