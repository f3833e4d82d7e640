//! `--trace-events FILE`: the run as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and
//! chrome://tracing open. One track per vCPU; every probe event the vCPU stopped for is on it once:
//! a slice for an event that runs checks (a table free, a sweep, a `validate_mm` report), an
//! instant for the others (unhook, TLB flush, VMA unlink, …); then quarantine revokes, the race
//! scheduler's calls, the guest's stages, and each violation.
//!
//! Protocol: [`Calls`](crate::calls::Calls) records through `Option<&TraceRecorder>`, so with no
//! `--trace-events` nothing is allocated, locked or timed beyond what the run does anyway. Each
//! vCPU appends to its own buffer (its lock is only ever shared with the final merge); one atomic
//! count of events holds the whole run to [`DEFAULT_CAP`], after which events are counted as
//! dropped, and the file says how many, so a guest that floods the probes cannot grow the host.
//!
//! - [`json`]: the merged events as the file.

pub mod json;

use crate::probe::{ProbeEvent, Summary, Violation};
use mm_core::abi::RaceCall;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Events a run keeps at most; later ones are dropped and counted. At [`EVENT_BYTES`] an event,
/// a full trace is 128 MB of events at most (a violation's text and the buffers' spare room
/// aside).
pub const DEFAULT_CAP: usize = 1_000_000;

/// The most a [`TraceEvent`] takes in a buffer (a unit test holds it to this).
pub const EVENT_BYTES: usize = 128;

/// The checks a probe event ran, one bit per check in `probe::Check::ALL`'s order (bit 0 is P1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksRan(pub u8);

impl ChecksRan {
    /// The checks whose count in the probes' summary grew from `before` to `after`.
    pub fn between(before: &[u64; 7], after: &[u64; 7]) -> ChecksRan {
        let bits = (0..7)
            .filter(|&i| after[i] > before[i])
            .fold(0, |bits, i| bits | 1 << i);
        ChecksRan(bits)
    }

    /// The names of the checks ran, e.g. `["P1", "P2"]`.
    pub fn names(self) -> Vec<String> {
        (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| format!("P{}", i + 1))
            .collect()
    }
}

/// The probes' running counts a trace compares around an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Checks run, per kind.
    pub checks: [u64; 7],
    /// Walk errors kept.
    pub errors: usize,
}

impl Counts {
    /// The counts in `summary`.
    pub fn of(summary: &Summary) -> Counts {
        Counts {
            checks: summary.checks,
            errors: summary.errors.len(),
        }
    }
}

/// What one probe event did, as the trace tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The event.
    pub event: ProbeEvent,
    /// How long the engine took.
    pub took: Duration,
    /// The checks it ran.
    pub ran: ChecksRan,
    /// Violations it found.
    pub violations: u32,
    /// Guest structures it could not walk.
    pub walk_errors: u32,
}

impl Checked {
    /// `event`, which took the engine `took`, moved its counts from `before` to `after` and found
    /// `violations`.
    pub fn new(
        event: ProbeEvent,
        took: Duration,
        before: &Counts,
        after: &Counts,
        violations: usize,
    ) -> Checked {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Checked {
            event,
            took,
            ran: ChecksRan::between(&before.checks, &after.checks),
            violations: count(violations),
            walk_errors: count(after.errors.saturating_sub(before.errors)),
        }
    }
}

/// What happened, at a point of a vCPU's track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A probe event (a slice if it ran checks, else an instant).
    Probe(Checked),
    /// A freed page-table frame revoked from the guest.
    Quarantine {
        /// The frame.
        frame: u64,
        /// How long revoking took (the other vCPUs paused).
        took: Duration,
    },
    /// A call to the race scheduler.
    Race {
        /// The call.
        call: RaceCall,
        /// The busy lock's class (`Contended` only).
        class: Option<Box<str>>,
        /// How long the vCPU waited for its turn.
        waited: Duration,
    },
    /// The guest reached a stage (`Ucall::STAGE_*`).
    Stage(u64),
    /// A probe check failed.
    Violation(Box<Violation>),
}

/// One event of a vCPU's track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The vCPU.
    pub cpu: usize,
    /// Since the run's start.
    pub at: Duration,
    /// What.
    pub what: What,
}

/// The recorder every vCPU of a run shares.
pub struct TraceRecorder {
    start: Instant,
    cap: usize,
    kept: AtomicUsize,
    dropped: AtomicU64,
    tracks: Vec<Mutex<Vec<TraceEvent>>>,
}

impl TraceRecorder {
    /// A recorder for `vcpus` vCPUs whose timestamps count from `start`, keeping [`DEFAULT_CAP`]
    /// events.
    pub fn new(vcpus: usize, start: Instant) -> TraceRecorder {
        TraceRecorder::with_cap(vcpus, start, DEFAULT_CAP)
    }

    /// A recorder keeping at most `cap` events.
    pub fn with_cap(vcpus: usize, start: Instant, cap: usize) -> TraceRecorder {
        TraceRecorder {
            start,
            cap,
            kept: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            tracks: (0..vcpus).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// The vCPUs, one track each.
    pub fn vcpus(&self) -> usize {
        self.tracks.len()
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The most events kept.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Events refused once the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records `what` on vCPU `cpu`'s track at `at`; past the cap (or for a vCPU the run does not
    /// have) it only counts a dropped event.
    pub fn record(&self, cpu: usize, at: Instant, what: What) {
        let room = self
            .kept
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok();
        match self.tracks.get(cpu) {
            Some(track) if room => {
                let at = at.saturating_duration_since(self.start);
                lock(track).push(TraceEvent { cpu, at, what });
            }
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records a probe event the engine took `checked.took` over from `started`, then each
    /// violation it found, at the moment the check ended.
    pub fn probe(&self, cpu: usize, started: Instant, checked: Checked, violations: &[Violation]) {
        let ended = started + checked.took;
        self.record(cpu, started, What::Probe(checked));
        for v in violations {
            self.record(cpu, ended, What::Violation(Box::new(v.clone())));
        }
    }

    /// Takes every vCPU's events so far, in time order (a vCPU's own in the order it recorded
    /// them); the buffers are left empty, so the file is written without a second copy.
    pub fn take_events(&self) -> Vec<TraceEvent> {
        let mut all: Vec<TraceEvent> = self
            .tracks
            .iter()
            .flat_map(|t| std::mem::take(&mut *lock(t)))
            .collect();
        all.sort_by_key(|e| e.at);
        all
    }
}

/// Locks `m`; a poisoned lock (a vCPU thread panicked while holding it) still holds usable data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
