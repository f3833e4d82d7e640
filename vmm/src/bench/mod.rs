//! Benchmarks, each against an anchor measured in the same run.
//!
//! - this module: boot time, process start to guest ready, against the bare KVM floor;
//! - [`probes`]: the host cost of checking a page-table free, against the bare exit round trip;
//! - [`guest`]: the mm workloads in the guest on real page tables, against Linux;
//! - [`platform`]: what this machine's KVM is, for the label next to guest figures;
//! - [`suite`]: `vmm bench` — everything in one run (the mm-core host rows come from `mm_bench`),
//!   as a table and JSON;
//! - [`svg`]: the suite as a picture: bars against goals, and the scaling curves.
//!
//! The boot benchmark:
//!
//! Both sides are whole processes of this executable, timed from spawn to exit, alternating so
//! drift in the machine hits both alike: the floor (`vmm floor`) opens KVM, creates a VM with one
//! small memory slot and one vCPU and takes the first exit; the boot (`vmm run --scenario boot`)
//! does everything `cargo run` does until the kernel is initialised, then finishes.

pub mod guest;
pub mod plan;
pub mod platform;
pub mod probes;
pub mod suite;
pub mod svg;

pub use probes::{probes, ProbeBench, ProbeRow};

use crate::progress::{Lines, Progress};
use crate::vstate::memory::{create_guest_memory, MemoryError};
use kvm_ioctls::{Kvm, VcpuExit};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

/// Goal: process start to guest ready, at most this long.
pub const BOOT_GOAL: Duration = Duration::from_millis(30);
/// Goal: boot at most this many times the floor.
pub const BOOT_GOAL_RATIO: f64 = 10.0;

/// I/O port the floor's guest writes to.
const FLOOR_PORT: u16 = 0x10;
/// Where the floor's real-mode code sits.
const FLOOR_CODE: u64 = 0x1000;
/// `out 0x10, al; hlt`.
const FLOOR_INSNS: [u8; 3] = [0xe6, FLOOR_PORT as u8, 0xf4];

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A KVM call failed.
    #[error("{step} failed: {source}")]
    Kvm {
        /// The step.
        step: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The floor's guest did not exit as planned.
    #[error("the floor guest's first exit was {0}, not its port write")]
    UnexpectedExit(String),
    /// A child process failed.
    #[error("`{command}` failed: {reason}")]
    Child {
        /// The command line.
        command: String,
        /// What happened.
        reason: String,
    },
}

/// Creates a VM and a vCPU and runs it to its first exit; returns how long that took.
pub fn floor() -> Result<Duration, BenchError> {
    let start = Instant::now();
    let step = |step| move |source| BenchError::Kvm { step, source };
    let kvm = Kvm::new().map_err(step("open /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(step("KVM_CREATE_VM"))?;
    let mem = create_guest_memory(&vm, 0x10000)?;
    mem.write_slice(&FLOOR_INSNS, GuestAddress(FLOOR_CODE))
        .map_err(|e| BenchError::UnexpectedExit(format!("(code not written: {e})")))?;
    let mut vcpu = vm.create_vcpu(0).map_err(step("KVM_CREATE_VCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(step("KVM_GET_SREGS"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(step("KVM_SET_SREGS"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: FLOOR_CODE,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(step("KVM_SET_REGS"))?;
    match vcpu.run().map_err(step("KVM_RUN"))? {
        VcpuExit::IoOut(FLOOR_PORT, _) => Ok(start.elapsed()),
        other => Err(BenchError::UnexpectedExit(format!("{other:?}"))),
    }
}

/// Median, minimum and maximum of a set of timings.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Median.
    pub median: Duration,
    /// Fastest.
    pub min: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        Summary {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
}

/// The boot benchmark's result.
#[derive(Clone, Copy, Debug)]
pub struct BootBench {
    /// Runs of each side.
    pub iterations: u32,
    /// `vmm floor` processes.
    pub floor: Summary,
    /// `vmm run --scenario boot` processes.
    pub boot: Summary,
}

impl BootBench {
    /// Boot median over floor median.
    pub fn ratio(&self) -> f64 {
        self.boot.median.as_secs_f64() / self.floor.median.as_secs_f64()
    }

    /// True when both goals hold.
    pub fn meets_goals(&self) -> bool {
        self.boot.median <= BOOT_GOAL && self.ratio() <= BOOT_GOAL_RATIO
    }
}

impl fmt::Display for BootBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        writeln!(
            f,
            "boot time, process spawn to exit, {} runs each (median / min / max):",
            self.iterations
        )?;
        writeln!(
            f,
            "  floor  (VM + vCPU + first exit)   {:8.2} ms / {:8.2} ms / {:8.2} ms",
            ms(self.floor.median),
            ms(self.floor.min),
            ms(self.floor.max)
        )?;
        writeln!(
            f,
            "  boot   (kernel ready, 2 vCPUs)    {:8.2} ms / {:8.2} ms / {:8.2} ms",
            ms(self.boot.median),
            ms(self.boot.min),
            ms(self.boot.max)
        )?;
        writeln!(
            f,
            "  ratio  boot / floor               {:8.2}x",
            self.ratio()
        )?;
        writeln!(
            f,
            "goal: boot <= {} ms: {}",
            BOOT_GOAL.as_millis(),
            verdict(self.boot.median <= BOOT_GOAL)
        )?;
        write!(
            f,
            "goal: boot <= {BOOT_GOAL_RATIO}x floor: {}",
            verdict(self.ratio() <= BOOT_GOAL_RATIO)
        )
    }
}

fn time_child(exe: &Path, args: &[&str]) -> Result<Duration, BenchError> {
    let command = || format!("{} {}", exe.display(), args.join(" "));
    let start = Instant::now();
    let status = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BenchError::Child {
            command: command(),
            reason: e.to_string(),
        })?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(BenchError::Child {
            command: command(),
            reason: status.to_string(),
        });
    }
    Ok(elapsed)
}

/// The watchdog of a benchmark child whose work is not sized by anything else.
pub const DEFAULT_ROW_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `vmm run ARGS --timeout T --report FILE` and returns the report and the command line
/// (for errors about the report's content).
fn run_with_report(
    vmm_exe: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(serde_json::Value, String), BenchError> {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let report = std::env::temp_dir().join(format!("mm-bench-{}-{n}.json", std::process::id()));
    let command = format!(
        "{} run {} --timeout {secs} --report {}",
        vmm_exe.display(),
        args.join(" "),
        report.display()
    );
    let child = |reason: String| BenchError::Child {
        command: command.clone(),
        reason,
    };
    // The child's stderr (its coverage matrix, its summary) is kept out of the bench's progress;
    // on a failure its last line says why.
    let output = Command::new(vmm_exe)
        .arg("run")
        .args(args)
        .args(["--timeout", &secs, "--report"])
        .arg(&report)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| child(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(child(match last {
            Some(line) => format!("{}: {}", output.status, line.trim()),
            None => output.status.to_string(),
        }));
    }
    let text = std::fs::read_to_string(&report).map_err(|e| child(format!("no report: {e}")))?;
    let _ = std::fs::remove_file(&report);
    let json = serde_json::from_str(&text).map_err(|e| child(format!("bad report: {e}")))?;
    Ok((json, command))
}

/// Runs the boot benchmark with `vmm_exe` as both sides, `iterations` times each, after one warm-up.
pub fn boot(vmm_exe: &Path, iterations: u32) -> Result<BootBench, BenchError> {
    let floor_args = ["floor"];
    let boot_args = ["run", "--scenario", "boot"];
    time_child(vmm_exe, &floor_args)?;
    time_child(vmm_exe, &boot_args)?;
    let (mut floor, mut boot) = (Vec::new(), Vec::new());
    let mut progress = Progress::stderr("bench boot:", iterations.into(), Lines::EachStep);
    for _ in 0..iterations {
        floor.push(time_child(vmm_exe, &floor_args)?);
        boot.push(time_child(vmm_exe, &boot_args)?);
        progress.step(" runs");
    }
    progress.finish();
    Ok(BootBench {
        iterations,
        floor: Summary::of(floor),
        boot: Summary::of(boot),
    })
}
