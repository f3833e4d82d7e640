//! `vmm difftest --guest`: the sequences run through mm-core in the VM, on real page tables with
//! the probes checking every table free (the guest's `difftest` scenario), and the states it
//! reports are compared with Linux's. Several seeds share one VM, so a boot is paid once per
//! batch; each seed still gets a fresh address space there.

use std::time::{Duration, Instant};

use mm_core::Variant;
use mm_replay::difftest::{batch, Obs, Op};

use crate::arch::x86_64::layout::DEFAULT_RAM;
use crate::probe::Summary;
use crate::run::{run, RunConfig};
use crate::sched::Mode;
use crate::vstate::vm::VmConfig;

/// The guest scenario that runs the sequences.
pub const SCENARIO: &str = "difftest";

/// Seeds one VM runs by default (`--per-vm`): enough to make the boot a small share of the time.
pub const PER_VM: u64 = 8;

/// The watchdog for a VM running `calls` calls: generous for emulated ring 0 (PVM), where one
/// call with its observation takes some 60 ms.
fn timeout(calls: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(250) * calls as u32
}

/// An output buffer for the states of calls whose host-build states are `states`: the guest's
/// encoding of the same states, twice over (a guest that diverges may have more lines), at least
/// 1 MiB.
pub fn output_len<'a>(states: impl IntoIterator<Item = &'a Obs>) -> u64 {
    let text: usize = states
        .into_iter()
        .map(|o| o.maps.len() * 40 + o.resident.len() + 32)
        .sum();
    (2 * text as u64).max(1 << 20)
}

/// What the probes did over a run's VMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeTotals {
    /// VMs booted.
    pub vms: u64,
    /// Page-table frees and other events the probes received.
    pub events: u64,
    /// Checks run (every kind).
    pub checks: u64,
    /// Violations found, and structures that could not be walked.
    pub violations: u64,
}

impl ProbeTotals {
    /// Adds one VM's summary.
    pub fn add(&mut self, s: &Summary) {
        self.vms += 1;
        self.events += s.events;
        self.checks += s.checks.iter().sum::<u64>();
        self.violations += s.violation_total() + s.errors.len() as u64;
    }

    /// The totals as JSON (`vmm difftest --json`, `vmm bench --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "vms": self.vms,
            "events": self.events,
            "checks": self.checks,
            "violations": self.violations,
        })
    }

    /// Adds another run's totals.
    pub fn merge(&mut self, o: &ProbeTotals) {
        self.vms += o.vms;
        self.events += o.events;
        self.checks += o.checks;
        self.violations += o.violations;
    }
}

/// What one VM reported.
pub struct GuestBatch {
    /// Each sequence's states (or mm-core's error), in order; or why the VM gave none: it could
    /// not run, the guest failed, or the probes found a violation (the first few listed).
    pub outcomes: Result<Vec<batch::Outcome>, String>,
    /// What the probes checked (nothing if the VM could not run).
    pub probes: ProbeTotals,
}

/// Runs `seqs` in one VM; `output_len` bytes must hold the states (the host model's text for the
/// same calls, with room to spare), the guest following `variant`.
pub fn run_batch(seqs: &[Vec<Op>], output_len: u64, variant: Variant) -> GuestBatch {
    let mut probes = ProbeTotals::default();
    let outcomes = run_vm(seqs, output_len, variant, &mut probes);
    GuestBatch { outcomes, probes }
}

fn run_vm(
    seqs: &[Vec<Op>],
    output_len: u64,
    variant: Variant,
    probes: &mut ProbeTotals,
) -> Result<Vec<batch::Outcome>, String> {
    let input = batch::encode_input(seqs);
    let calls = seqs.iter().map(Vec::len).sum();
    let config = RunConfig {
        vm: VmConfig::with_input(DEFAULT_RAM, SCENARIO, variant, input.as_bytes(), output_len),
        timeout: timeout(calls),
        started: Instant::now(),
        // The console would interleave across jobs; a failure carries its tail.
        console: Box::new(std::io::sink()),
        thorough: false,
        // One vCPU: nothing races, so nothing to schedule.
        schedule: Mode::Free(0),
        trace: None,
    };
    let report = run(config).map_err(|e| format!("the VM could not run: {e}"))?;
    probes.add(&report.probes);
    if let Some(failure) = report.failure {
        let mut msg = format!("the guest failed: {failure}");
        for v in report.probes.violations.iter().take(3) {
            msg.push_str(&format!("; {v}"));
        }
        if let Some(line) = report.console_tail.last() {
            msg.push_str(&format!(" (console: {})", line.trim()));
        }
        return Err(msg);
    }
    let outcomes = batch::decode_output(&report.output, seqs.len())
        .ok_or("the guest's output did not parse")?;
    if outcomes.len() != seqs.len() {
        return Err(format!(
            "the guest reported {} sequences of {}",
            outcomes.len(),
            seqs.len()
        ));
    }
    Ok(outcomes)
}
