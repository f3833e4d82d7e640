//! `vmm replay` in the guest: the parsed replay goes into guest RAM as the op stream of
//! `mm_core::abi::replay`, the guest's `replay` scenario runs it through mm-core on real page
//! tables — the same `mm_replay::replay::Replayer` the host mode runs — with the probes checking
//! every page-table free, and its result comes back through the output buffer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mm_core::Variant;
use mm_replay::maps::MapsLine;
use mm_replay::replay::{ReplayError, Replayed};
use mm_replay::trace::Trace;
use mm_replay::wire::{self, WireError};

use crate::arch::x86_64::layout::DEFAULT_RAM;
use crate::loader::GUEST_KERNEL;
use crate::probe::Summary;
use crate::run::{run, Failure, RunConfig, RunError};
use crate::sched::Mode;
use crate::trace_events::TraceRecorder;
use crate::vstate::vm::VmConfig;

/// vCPUs a guest replay runs on: the replay runs on vCPU 0 alone, and a second would only add
/// boot time.
pub const VCPUS: usize = 1;

/// The guest scenario that replays.
pub const SCENARIO: &str = "replay";

/// Output buffer for `input` bytes of op stream: the result is a maps snapshot and notes, which
/// for any real program is far below a megabyte; twice the input leaves room for a trace that
/// splits every mapping.
fn output_len(input: usize) -> u64 {
    (1u64 << 20).max(2 * input as u64)
}

/// A replay the guest ran.
#[derive(Debug)]
pub struct GuestReplay {
    /// The replay's outcome, as the guest reported it.
    pub result: Result<Replayed, ReplayError>,
    /// Process start to the kernel being ready.
    pub ready_after: Duration,
    /// Kernel ready to the guest's outcome: decoding, seeding, replaying, tearing down, encoding.
    pub replay_time: Duration,
    /// What the probes checked.
    pub probes: Summary,
}

/// Why a guest replay produced no result.
#[derive(Debug, thiserror::Error)]
pub enum GuestReplayError {
    /// The VM could not be built or run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The guest failed (panic, exception, timeout) or the probes found a violation.
    #[error("{failure}")]
    Guest {
        /// How it failed.
        failure: Box<Failure>,
        /// The last console lines.
        console_tail: Vec<String>,
        /// What the probes saw.
        probes: Box<Summary>,
    },
    /// The guest's output buffer does not hold a result.
    #[error("the guest's replay result cannot be read: {0}")]
    Output(#[from] WireError),
}

/// How the guest replays.
#[derive(Clone)]
pub struct GuestOptions {
    /// The mm-core ordering variant the guest follows.
    pub variant: Variant,
    /// The watchdog.
    pub timeout: Duration,
    /// Where the vCPU records trace events (`--trace-events`), if anywhere.
    pub trace: Option<Arc<TraceRecorder>>,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            variant: Variant::Correct,
            timeout: Duration::from_secs(60),
            trace: None,
        }
    }
}

/// Replays `trace` on `before` in the guest (`hints` as for `mm_replay::replay::replay`); the
/// guest console goes to stderr, so stdout stays the caller's.
pub fn replay_in_guest(
    before: &[MapsLine],
    trace: &Trace,
    hints: &[MapsLine],
    options: GuestOptions,
) -> Result<GuestReplay, GuestReplayError> {
    let started = Instant::now();
    let input = wire::encode_input(before, trace, hints);
    let config = RunConfig {
        vm: VmConfig {
            ram_size: DEFAULT_RAM,
            vcpus: VCPUS,
            scenario: SCENARIO,
            seed: 0,
            log_level: log::max_level() as u64,
            variant: options.variant,
            scale: 0,
            inject: None,
            kernel: GUEST_KERNEL,
            input: &input,
            output_len: output_len(input.len()),
            probes: crate::vstate::vm::GuestProbes::DEFAULT,
        },
        timeout: options.timeout,
        started,
        console: Box::new(std::io::stderr()),
        thorough: false,
        // One vCPU: nothing races, so nothing to schedule.
        schedule: Mode::Free(0),
        trace: options.trace,
    };
    let report = run(config)?;
    if let Some(failure) = report.failure {
        return Err(GuestReplayError::Guest {
            failure: Box::new(failure),
            console_tail: report.console_tail,
            probes: Box::new(report.probes),
        });
    }
    let result = wire::decode_result(&report.output)?;
    let ready_after = report.ready_after.unwrap_or_default();
    Ok(GuestReplay {
        result,
        ready_after,
        replay_time: report.ended_after.saturating_sub(ready_after),
        probes: report.probes,
    })
}
