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
use crate::probe::Summary;
use crate::run::{run, Failure, RunConfig, RunError};
use crate::sched::Mode;
use crate::trace_events::TraceRecorder;
use crate::vstate::vm::{VmConfig, VmError};

/// vCPUs a guest replay runs on (`VmConfig::with_input`'s one): the replay runs on vCPU 0
/// alone, and a second would only add boot time.
pub const VCPUS: usize = 1;

/// The guest scenario that replays.
pub const SCENARIO: &str = "replay";

/// The largest file `vmm replay` reads for `--maps`, `--trace` or `--compare`: 256 MiB, checked
/// from the file's size before it is read. Generous: the shipped traces are a few KiB, and a
/// strace line of a memory call is some 100 bytes, so this is millions of calls. Parsed, a trace
/// of the shortest lines takes up to about ten times its size; in the guest, what fits its RAM
/// is the tighter limit ([`GuestInput::new`]).
pub const MAX_REPLAY_FILE: u64 = 256 << 20;

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

/// A replay encoded for the guest, known to fit its RAM with its output buffer.
#[derive(Debug)]
pub struct GuestInput {
    /// The op stream (`mm_core::abi::replay`).
    bytes: Vec<u8>,
    /// Guest RAM, in bytes.
    ram_size: u64,
}

impl GuestInput {
    /// Encodes the replay of `trace` on `before` (`hints` as for `mm_replay::replay::replay`) for
    /// a guest of `ram_size` bytes (a valid `--mem`), refusing, before any VM exists, an op stream
    /// that with its output buffer does not fit (a usage error: [`VmError::is_bad_input`]).
    pub fn new(
        before: &[MapsLine],
        trace: &Trace,
        hints: &[MapsLine],
        ram_size: u64,
    ) -> Result<GuestInput, VmError> {
        let input = GuestInput {
            bytes: wire::encode_input(before, trace, hints),
            ram_size,
        };
        crate::vstate::vm::check(&input.vm_config(Variant::Correct))?;
        Ok(input)
    }

    /// The VM that replays this input under `variant`.
    fn vm_config(&self, variant: Variant) -> VmConfig<'_> {
        VmConfig::with_input(
            self.ram_size,
            SCENARIO,
            variant,
            &self.bytes,
            output_len(self.bytes.len()),
        )
    }
}

/// Replays `trace` on `before` in a guest of the default RAM (`hints` as for
/// `mm_replay::replay::replay`); the guest console goes to stderr, so stdout stays the caller's.
pub fn replay_in_guest(
    before: &[MapsLine],
    trace: &Trace,
    hints: &[MapsLine],
    options: GuestOptions,
) -> Result<GuestReplay, GuestReplayError> {
    let input = GuestInput::new(before, trace, hints, DEFAULT_RAM).map_err(RunError::Vm)?;
    replay_input_in_guest(&input, options)
}

/// Replays `input` in the guest, as [`replay_in_guest`].
pub fn replay_input_in_guest(
    input: &GuestInput,
    options: GuestOptions,
) -> Result<GuestReplay, GuestReplayError> {
    let started = Instant::now();
    let config = RunConfig {
        vm: input.vm_config(options.variant),
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
