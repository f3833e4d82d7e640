//! The boot-time benchmark: process start to guest ready, against the bare KVM floor measured in
//! the same run.
//!
//! Both sides are whole processes of this executable, timed from spawn to exit, alternating so
//! drift in the machine hits both alike: the floor (`vmm floor`) opens KVM, creates a VM with one
//! small memory slot and one vCPU and takes the first exit; the boot (`vmm run --scenario boot`)
//! does everything `cargo run` does until the kernel is initialised, then finishes.

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

/// Median and minimum of a set of timings.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Median.
    pub median: Duration,
    /// Fastest.
    pub min: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        Summary {
            median: samples[samples.len() / 2],
            min: samples[0],
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
            "boot time, process spawn to exit, {} runs each (median / min):",
            self.iterations
        )?;
        writeln!(
            f,
            "  floor  (VM + vCPU + first exit)   {:8.2} ms / {:8.2} ms",
            ms(self.floor.median),
            ms(self.floor.min)
        )?;
        writeln!(
            f,
            "  boot   (kernel ready, 2 vCPUs)    {:8.2} ms / {:8.2} ms",
            ms(self.boot.median),
            ms(self.boot.min)
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

/// Runs the boot benchmark with `vmm_exe` as both sides, `iterations` times each, after one warm-up.
pub fn boot(vmm_exe: &Path, iterations: u32) -> Result<BootBench, BenchError> {
    let floor_args = ["floor"];
    let boot_args = ["run", "--scenario", "boot"];
    time_child(vmm_exe, &floor_args)?;
    time_child(vmm_exe, &boot_args)?;
    let (mut floor, mut boot) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        eprint!("\rbench boot: run {}/{iterations}", i + 1);
        floor.push(time_child(vmm_exe, &floor_args)?);
        boot.push(time_child(vmm_exe, &boot_args)?);
    }
    eprintln!();
    Ok(BootBench {
        iterations,
        floor: Summary::of(floor),
        boot: Summary::of(boot),
    })
}

/// VMA counts the probe benchmark runs at.
pub const PROBE_SCALES: [u64; 3] = [10, 1_000, 65_530];
/// The smoke run's counts.
pub const PROBE_SCALES_QUICK: [u64; 2] = [10, 100];
/// Goal: a checked event costs at most this many bare exit round trips at 1,000 VMAs.
pub const PROBE_GOAL_RATIO: f64 = 2.0;

/// One row of the probe benchmark.
#[derive(Clone, Copy, Debug)]
pub struct ProbeRow {
    /// File VMAs in the process.
    pub vmas: u64,
    /// Bare exit round trip.
    pub round_trip: Duration,
    /// Median host time to check one page-table free.
    pub check: Duration,
    /// Mean over every free, including exit's frees of tables spanning many VMAs.
    pub check_mean: Duration,
    /// The slowest check (a table spanning the most VMAs).
    pub check_max: Duration,
    /// Page-table frees checked.
    pub frees: u64,
}

impl ProbeRow {
    /// Cost of a checked event (a bare round trip plus the check) over a bare round trip.
    pub fn ratio(&self) -> f64 {
        (self.round_trip + self.check).as_secs_f64() / self.round_trip.as_secs_f64()
    }
}

/// The probe benchmark's result.
#[derive(Clone, Debug)]
pub struct ProbeBench {
    /// One row per VMA count.
    pub rows: Vec<ProbeRow>,
}

impl fmt::Display for ProbeBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        writeln!(
            f,
            "probe cost per checked page-table free, against the bare exit round trip (same run)."
        )?;
        writeln!(
            f,
            "check: median host time of one check; mean and max include exit's frees of tables"
        )?;
        writeln!(
            f,
            "that span every VMA, whose cost grows with the VMAs meeting the span:"
        )?;
        writeln!(
            f,
            "  {:>7}  {:>12}  {:>9}  {:>9}  {:>9}  {:>16}  {:>6}",
            "VMAs", "bare exit µs", "check µs", "mean µs", "max µs", "checked event µs", "ratio"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "  {:>7}  {:>12.2}  {:>9.2}  {:>9.2}  {:>9.1}  {:>16.2}  {:>5.2}x",
                r.vmas,
                us(r.round_trip),
                us(r.check),
                us(r.check_mean),
                us(r.check_max),
                us(r.round_trip + r.check),
                r.ratio()
            )?;
        }
        match self.rows.iter().find(|r| r.vmas == 1_000) {
            Some(r) => {
                let verdict = if r.ratio() <= PROBE_GOAL_RATIO { "met" } else { "MISSED" };
                write!(f, "goal: checked event <= {PROBE_GOAL_RATIO}x bare exit at 1,000 VMAs: {verdict}")
            }
            None => write!(f, "goal: checked event <= {PROBE_GOAL_RATIO}x bare exit at 1,000 VMAs: not run (--quick)"),
        }
    }
}

/// Runs `vmm run --scenario probe-bench --scale N` for each VMA count and reads the timing from
/// its JSON report.
pub fn probes(vmm_exe: &Path, quick: bool) -> Result<ProbeBench, BenchError> {
    let scales: &[u64] = if quick {
        &PROBE_SCALES_QUICK
    } else {
        &PROBE_SCALES
    };
    let mut rows = Vec::new();
    for &vmas in scales {
        eprintln!("bench probes: {vmas} VMAs …");
        let report =
            std::env::temp_dir().join(format!("mm-probe-bench-{}-{vmas}.json", std::process::id()));
        let scale = vmas.to_string();
        let args = [
            "run",
            "--scenario",
            "probe-bench",
            "--scale",
            &scale,
            "--timeout",
            "600",
            "--report",
        ];
        let command = || {
            format!(
                "{} {} {}",
                vmm_exe.display(),
                args.join(" "),
                report.display()
            )
        };
        let status = Command::new(vmm_exe)
            .args(args)
            .arg(&report)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| BenchError::Child {
                command: command(),
                reason: e.to_string(),
            })?;
        if !status.success() {
            return Err(BenchError::Child {
                command: command(),
                reason: status.to_string(),
            });
        }
        let text = std::fs::read_to_string(&report).map_err(|e| BenchError::Child {
            command: command(),
            reason: format!("no report: {e}"),
        })?;
        let _ = std::fs::remove_file(&report);
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BenchError::Child {
                command: command(),
                reason: format!("bad report: {e}"),
            })?;
        let t = &json["timing"];
        let ns = |key: &str| t[key].as_u64().map(Duration::from_nanos);
        let timing = (
            ns("ping_round_trip_ns"),
            ns("check_median_ns"),
            ns("check_per_free_ns"),
            ns("check_max_ns"),
        );
        let (Some(round_trip), Some(check), Some(check_mean), Some(check_max)) = timing else {
            return Err(BenchError::Child {
                command: command(),
                reason: format!("no timing in report: {t}"),
            });
        };
        let frees = t["checked_frees"].as_u64().unwrap_or(0);
        rows.push(ProbeRow {
            vmas,
            round_trip,
            check,
            check_mean,
            check_max,
            frees,
        });
    }
    Ok(ProbeBench { rows })
}
