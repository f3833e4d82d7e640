//! What the VMM does with a guest call: a plain function from a decoded call to what the vCPU does
//! next, so the policy (probe checks and their timing, quarantine, violations, the race scheduler)
//! is tested without KVM. `vstate` only runs KVM and hands each call here.

use crate::probe::{Probe, ProbeEvent, Violation};
use crate::sched::{SchedError, Scheduler};
use crate::timing::ExitTiming;
use crate::trace_events::{Checked, Counts, TraceRecorder, What};
use crate::ucall::GuestCall;
use mm_core::abi::RaceCall;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// What a vCPU thread tells the run's controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The guest reached a stage (`Ucall::STAGE_*`).
    Sync {
        /// The vCPU.
        cpu: usize,
        /// The stage.
        stage: u64,
    },
    /// A probe check failed at an event of this vCPU.
    Violations {
        /// The vCPU.
        cpu: usize,
        /// What failed.
        violations: Vec<Violation>,
    },
    /// The vCPU stopped running.
    End {
        /// The vCPU.
        cpu: usize,
        /// Why.
        end: crate::vstate::vcpu::VcpuEnd,
    },
}

/// What the vCPU does after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Run the guest again.
    Resume,
    /// The call ends the run (Done, Abort, Exception, PoisonHit).
    End(GuestCall),
    /// The race scheduler could not go on.
    Sched(SchedError),
    /// The host could not serve the call (a quarantine change failed).
    Failed(String),
}

/// Revokes a freed page-table frame from the guest (the quarantine, with the other vCPUs paused).
pub type Revoke<'a> = &'a dyn Fn(u64) -> Result<(), String>;

/// What the handling of one vCPU's calls needs of the run.
pub struct Calls<'a> {
    /// The calling vCPU.
    pub cpu: usize,
    /// The probe engine every vCPU's events go to.
    pub probe: &'a Mutex<Probe>,
    /// Exit timing for the probe benchmark.
    pub timing: &'a Mutex<ExitTiming>,
    /// Interleaves racing vCPUs.
    pub sched: &'a Scheduler,
    /// Set by the controller to stop every vCPU.
    pub stop: &'a AtomicBool,
    /// Where stages and violations go.
    pub events: &'a Sender<VcpuEvent>,
    /// The quarantine, when on.
    pub revoke: Option<Revoke<'a>>,
    /// Where the call goes in the trace (`--trace-events`); `None` costs nothing.
    pub trace: Option<&'a TraceRecorder>,
}

impl Calls<'_> {
    /// Serves `call`; `rip` reads the guest's RIP (only for a violation's report).
    pub fn handle(&self, call: GuestCall, rip: &mut dyn FnMut() -> u64) -> Next {
        match call {
            GuestCall::BenchMark {
                workload,
                phase,
                units,
            } => {
                lock(self.timing).bench_mark(workload, phase, units, Instant::now());
                Next::Resume
            }
            GuestCall::Sync { stage } => {
                if let Some(trace) = self.trace {
                    trace.record(self.cpu, Instant::now(), What::Stage(stage));
                }
                // The controller may be gone already (it stopped listening after the outcome).
                let _ = self.events.send(VcpuEvent::Sync {
                    cpu: self.cpu,
                    stage,
                });
                Next::Resume
            }
            GuestCall::Probe { event, text } => self.probe_event(&event, &text, rip),
            GuestCall::Race { call, class } => self.race(call, class),
            call @ (GuestCall::Done { .. }
            | GuestCall::Abort { .. }
            | GuestCall::Exception { .. }
            | GuestCall::PoisonHit(_)) => Next::End(call),
        }
    }

    /// Hands a racing vCPU's call to the scheduler, which returns when it is the vCPU's turn.
    fn race(&self, call: RaceCall, class: String) -> Next {
        let (sched, cpu, stop) = (self.sched, self.cpu, self.stop);
        let arrived = self.trace.map(|_| Instant::now());
        let class_seen = (call == RaceCall::Contended && self.trace.is_some())
            .then(|| class.clone().into_boxed_str());
        let turn = match call {
            RaceCall::Enter { racers } => sched.enter(cpu, racers, stop),
            RaceCall::Leave => {
                sched.leave(cpu);
                Ok(())
            }
            RaceCall::Point { kind } => sched.point(cpu, kind, None, stop),
            RaceCall::Contended => sched.point(cpu, 0, Some(class), stop),
        };
        if let (Some(trace), Some(arrived)) = (self.trace, arrived) {
            let waited = arrived.elapsed();
            let what = What::Race {
                call,
                class: class_seen,
                waited,
            };
            trace.record(cpu, arrived, what);
        }
        turn.map_or_else(Next::Sched, |()| Next::Resume)
    }

    /// Checks a probe event with the vCPU stopped, so the check sees the guest exactly at the
    /// event; quarantines a freed table; hands violations to the controller; and lets the race
    /// scheduler run another racer.
    fn probe_event(&self, event: &ProbeEvent, text: &str, rip: &mut dyn FnMut() -> u64) -> Next {
        let started = Instant::now();
        let (violations, counts) = {
            let mut probe = lock(self.probe);
            // Only a trace needs to know which checks ran: the counts before and after.
            let before = self.trace.map(|_| Counts::of(probe.summary()));
            let violations = probe.handle(self.cpu, event, text, rip);
            let counts = before.map(|before| (before, Counts::of(probe.summary())));
            (violations, counts)
        };
        let took = started.elapsed();
        if let (Some(trace), Some((before, after))) = (self.trace, counts) {
            let checked = Checked::new(*event, took, &before, &after, violations.len());
            trace.probe(self.cpu, started, checked, &violations);
        }
        {
            let mut timing = lock(self.timing);
            timing.probe_event();
            match event {
                ProbeEvent::Quiescent { .. } => timing.swept(took),
                ProbeEvent::TableFreed { .. } => timing.checked_free(took),
                _ => {}
            }
        }
        if let (ProbeEvent::TableFreed { frame, .. }, Some(revoke)) = (event, self.revoke) {
            let revoking = Instant::now();
            let revoked = revoke(*frame);
            if let Some(trace) = self.trace {
                let took = revoking.elapsed();
                trace.record(
                    self.cpu,
                    revoking,
                    What::Quarantine {
                        frame: *frame,
                        took,
                    },
                );
            }
            if let Err(e) = revoked {
                return Next::Failed(e);
            }
        }
        if !violations.is_empty() {
            let _ = self.events.send(VcpuEvent::Violations {
                cpu: self.cpu,
                violations,
            });
        }
        match self.sched.point(self.cpu, 0, None, self.stop) {
            Ok(()) => Next::Resume,
            Err(e) => Next::Sched(e),
        }
    }
}

/// Locks `m`; a poisoned lock (a vCPU thread panicked while holding it) still holds usable data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
