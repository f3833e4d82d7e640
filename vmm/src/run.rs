//! One run of the guest: build the VM, start a thread per vCPU, collect their events until the
//! guest reports an outcome or the watchdog fires, then stop every vCPU.

use crate::arch::x86_64::exception;
use crate::calls::VcpuEvent;
use crate::devices::serial::Serial;
use crate::probe::{Held, Probe, Summary};
use crate::quarantine::Quarantine;
use crate::sched::{Mode, SchedError, Schedule, Scheduler};
use crate::timing::ExitTiming;
use crate::trace_events::TraceRecorder;
use crate::ucall::{GuestCall, PoisonHit};
use crate::vstate::pause::PauseGate;
use crate::vstate::vcpu::{RegisterDump, Vcpu, VcpuEnd, VcpuError, VcpuShared};
use crate::vstate::vm::{Vm, VmConfig, VmError};
use mm_core::abi::{BootInfo, Ucall, QUARANTINE_TABLES};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// How long stopping the vCPUs may take before the run gives up on joining them.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a vCPU that has not stopped yet is kicked again.
const KICK_INTERVAL: Duration = Duration::from_millis(2);

/// What to run.
pub struct RunConfig<'a> {
    /// The VM.
    pub vm: VmConfig<'a>,
    /// Stop the guest after this long.
    pub timeout: Duration,
    /// When the process started: boot time is measured from here.
    pub started: Instant,
    /// Where the guest console goes.
    pub console: Box<dyn Write + Send>,
    /// Widen the probes' P1 and P2 searches (see `probe`).
    pub thorough: bool,
    /// How racing vCPUs are interleaved (see `sched`).
    pub schedule: Mode,
    /// Where the vCPUs record trace events (`--trace-events`; see `trace_events`).
    pub trace: Option<Arc<TraceRecorder>>,
}

/// Why a run failed in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The guest finished with a failing verdict.
    Verdict(u64),
    /// The guest aborted (a panic or an explicit abort).
    Abort {
        /// The vCPU.
        cpu: usize,
        /// Its message.
        message: String,
        /// Source file.
        file: String,
        /// Source line.
        line: u64,
    },
    /// A CPU exception reached the guest's IDT.
    Exception {
        /// The vCPU.
        cpu: usize,
        /// Vector.
        vector: u64,
        /// Error code.
        error_code: u64,
        /// CR2.
        cr2: u64,
        /// RIP.
        rip: u64,
    },
    /// Triple fault.
    TripleFault {
        /// The vCPU.
        cpu: usize,
        /// Its registers.
        regs: RegisterDump,
    },
    /// KVM could not run the guest.
    VcpuFailed {
        /// The vCPU.
        cpu: usize,
        /// Why.
        reason: String,
        /// Its registers, when readable.
        regs: Option<RegisterDump>,
    },
    /// The guest reported success although some vCPUs never reached the scenario.
    MissingCheckIn {
        /// The vCPUs that did not check in.
        cpus: Vec<usize>,
    },
    /// The watchdog stopped the guest.
    Timeout(Duration),
    /// A walker read a page table after it was freed.
    UseAfterFree {
        /// The walker's vCPU.
        cpu: usize,
        /// What it read, where.
        hit: PoisonHit,
    },
    /// The race scheduler stopped the run (a deadlock between racers, a diverging replay).
    Race(SchedError),
    /// A vCPU touched a quarantined page-table frame (freed, its access revoked by the VMM).
    QuarantineHit {
        /// The vCPU.
        cpu: usize,
        /// The guest-physical address touched.
        gpa: u64,
        /// A write (else a read or a page walk).
        write: bool,
        /// How many page-table frees ago the frame was freed (0 = the latest).
        frees_ago: usize,
        /// Where.
        rip: u64,
    },
    /// The probes found broken ordering rules or unwalkable guest structures.
    ProbeViolations {
        /// How many violations and walk errors.
        count: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Verdict(v) => write!(f, "guest reported failure (verdict {v})"),
            Failure::Abort {
                cpu,
                message,
                file,
                line,
            } => {
                write!(f, "guest aborted on vCPU {cpu}: {message} at {file}:{line}")
            }
            Failure::Exception {
                cpu,
                vector,
                error_code,
                cr2,
                rip,
            } => write!(
                f,
                "guest exception on vCPU {cpu}: {} (vector {vector}), error code {error_code:#x}, \
                 CR2 {cr2:#x}, RIP {rip:#x}",
                exception::name(*vector)
            ),
            Failure::TripleFault { cpu, regs } => write!(
                f,
                "guest triple fault on vCPU {cpu} (KVM shutdown)\n  {regs}"
            ),
            Failure::VcpuFailed { cpu, reason, regs } => {
                write!(f, "vCPU {cpu} failed: {reason}")?;
                match regs {
                    Some(regs) => write!(f, "\n  {regs}"),
                    None => Ok(()),
                }
            }
            Failure::MissingCheckIn { cpus } => {
                write!(
                    f,
                    "guest finished but vCPU(s) {cpus:?} never reached the scenario"
                )
            }
            // A table of 0: the CPU's own page walk met the poison (a reserved-bit fault).
            Failure::UseAfterFree { cpu, hit } if hit.report.table == 0 => write!(
                f,
                "use-after-free: vCPU {cpu}'s page walk for {:#x} went through a freed page table \
                 ({}), RIP {:#x}",
                hit.report.va, hit.file, hit.report.rip
            ),
            Failure::UseAfterFree {
                cpu,
                hit: PoisonHit { report: r, file },
            } => write!(
                f,
                "use-after-free: the walker on vCPU {cpu} read entry {} of page table {:#x} after \
                 it was freed (poison {:#x}) walking {:#x}, RIP {:#x}, at {}:{}",
                r.index, r.table, r.value, r.va, r.rip, file, r.line
            ),
            Failure::Race(e) => write!(f, "race: {e}"),
            Failure::QuarantineHit {
                cpu,
                gpa,
                write,
                frees_ago,
                rip,
            } => write!(
                f,
                "use-after-free: vCPU {cpu} {} guest-physical {gpa:#x}, in a page table freed {} \
                 (quarantined by the VMM), RIP {rip:#x}",
                if *write { "wrote" } else { "read" },
                match frees_ago {
                    0 => "by the latest table free".to_string(),
                    n => format!("{n} table free(s) before the latest"),
                }
            ),
            Failure::ProbeViolations { count } => {
                write!(
                    f,
                    "the probes found {count} violation(s) of the page-table ordering rule"
                )
            }
            Failure::Timeout(t) => write!(
                f,
                "watchdog: guest did not finish within {:.1} s",
                t.as_secs_f64()
            ),
        }
    }
}

/// What a finished run saw.
#[derive(Debug)]
pub struct RunReport {
    /// `None` when the guest passed.
    pub failure: Option<Failure>,
    /// Process start to the guest's `Sync(READY)`.
    pub ready_after: Option<Duration>,
    /// Which vCPUs reached the scenario.
    pub in_scenario: Vec<bool>,
    /// The last console lines.
    pub console_tail: Vec<String>,
    /// What the probes saw.
    pub probes: Summary,
    /// What the probe engine held at the end, per structure.
    pub held: Held,
    /// Exit timing (ping round trip, check cost per page-table free).
    pub timing: ExitTiming,
    /// Process start to the outcome (before the vCPUs are stopped).
    pub ended_after: Duration,
    /// The scenario's output buffer (`VmConfig::output_len` bytes) as the guest left it.
    pub output: Vec<u8>,
    /// The interleaving the race scheduler chose, when vCPUs raced one at a time.
    pub schedule: Option<Schedule>,
}

impl RunReport {
    /// True when the guest passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Building the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Creating a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The signal used to kick vCPUs could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// A vCPU thread could not be spawned.
    #[error("cannot spawn a vCPU thread: {0}")]
    Thread(std::io::Error),
    /// Guest RAM could not be prepared for the quarantine.
    #[error("cannot set up the page-table quarantine: {0}")]
    Quarantine(String),
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal only makes KVM_RUN return EINTR.
}

fn install_kick_handler() -> Result<(), RunError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick).map_err(RunError::Signal)
    });
    result
}

/// Boots the guest and runs it to an outcome.
pub fn run(config: RunConfig<'_>) -> Result<RunReport, RunError> {
    install_kick_handler()?;
    let vm = Vm::new(&config.vm)?;
    let vcpus = (0..config.vm.vcpus)
        .map(|i| Vcpu::new(&vm, i))
        .collect::<Result<Vec<_>, _>>()?;

    // The VM handle moves to the quarantine, which changes memory slots from vCPU threads.
    let Vm {
        fd, mem, boot_info, ..
    } = vm;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| RunError::Quarantine(e.to_string()))? as u64;
    let ram = config.vm.ram_size;
    let quarantine = Quarantine::new(Arc::new(fd), host, ram, QUARANTINE_TABLES);
    let quarantine = Some(Arc::new(Mutex::new(quarantine)));
    let gate = Arc::new(PauseGate::new(config.vm.vcpus, kick_signal()));
    let serial = Arc::new(Mutex::new(Serial::new(config.console)));
    let stop = Arc::new(AtomicBool::new(false));
    let (events, rx) = mpsc::channel();
    let mut probe = Probe::new(mem.clone(), config.thorough);
    // Free-running racers change rss under their own locks while a sweep reads it.
    probe.set_rss_racy(matches!(config.schedule, Mode::Free(_)));
    // A walk in progress when the watchdog fires gives up instead of holding the run past it.
    probe.set_stop(stop.clone());
    let probe = Arc::new(Mutex::new(probe));
    let timing = Arc::new(Mutex::new(ExitTiming::default()));
    let sched = Arc::new(Scheduler::new(config.vm.vcpus, config.schedule.clone()));
    let shared = VcpuShared {
        mem: mem.clone(),
        serial: serial.clone(),
        stop: stop.clone(),
        events,
        probe: probe.clone(),
        timing: timing.clone(),
        sched: sched.clone(),
        quarantine,
        gate,
        trace: config.trace,
    };
    let mut threads = Vec::with_capacity(vcpus.len());
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || vcpu.run(shared))
            .map_err(RunError::Thread);
        match thread {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_vcpus(&stop, &threads);
                return Err(e);
            }
        }
    }
    drop(shared);

    let deadline = Instant::now() + config.timeout;
    let mut ready_after = None;
    let mut in_scenario = vec![false; config.vm.vcpus];
    let failure = loop {
        let event = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => break Some(Failure::Timeout(config.timeout)),
            Err(RecvTimeoutError::Disconnected) => {
                break Some(Failure::VcpuFailed {
                    cpu: 0,
                    reason: "every vCPU stopped without an outcome".into(),
                    regs: None,
                })
            }
        };
        match event {
            VcpuEvent::Sync { cpu, stage } => match stage {
                Ucall::STAGE_READY => {
                    let after = config.started.elapsed();
                    log::debug!("guest ready after {:.2} ms", after.as_secs_f64() * 1e3);
                    ready_after = Some(after);
                }
                Ucall::STAGE_SCENARIO => {
                    log::debug!("vCPU {cpu} reached the scenario");
                    in_scenario[cpu] = true;
                }
                stage => log::debug!("vCPU {cpu} reached stage {stage}"),
            },
            VcpuEvent::Violations { cpu, violations } => {
                for v in &violations {
                    log::debug!("vCPU {cpu}: {v}");
                }
            }
            VcpuEvent::End { cpu, end } => match decide(cpu, end, &in_scenario) {
                Decision::Pass => break None,
                Decision::Fail(failure) => break Some(failure),
                Decision::Undecided => continue,
            },
        }
    };

    let ended_after = config.started.elapsed();
    stop_vcpus(&stop, &threads);
    let output = read_output(&mem, &boot_info);
    let (probes, held) = probe
        .lock()
        .map(|p| (p.summary().clone(), p.held()))
        .unwrap_or_default();
    let timing = timing.lock().map(|t| t.clone()).unwrap_or_default();
    // The guest may think it passed; a broken ordering rule still fails the run.
    let failure = failure.or_else(|| {
        let count = probes.violation_total() as usize + probes.errors.len();
        (count > 0).then_some(Failure::ProbeViolations { count })
    });
    let console_tail = serial.lock().map(|s| s.tail()).unwrap_or_default();
    let schedule = Some(sched.schedule()).filter(|s| !s.0.is_empty());
    Ok(RunReport {
        failure,
        ready_after,
        in_scenario,
        console_tail,
        probes,
        held,
        timing,
        ended_after,
        output,
        schedule,
    })
}

/// The scenario's output buffer, or nothing if it has none or it cannot be read.
fn read_output(mem: &GuestMemoryMmap, info: &BootInfo) -> Vec<u8> {
    let (gpa, len) = (info.output_gpa, info.output_len);
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    if gpa == 0 || mem.read_slice(&mut buf, GuestAddress(gpa)).is_err() {
        buf.clear();
    }
    buf
}

/// What one vCPU's end means for the run.
enum Decision {
    Pass,
    Fail(Failure),
    /// A vCPU stopped on request: the outcome comes from elsewhere.
    Undecided,
}

/// Decides the run when vCPU `cpu` ended with `end`; a pass needs every vCPU checked in.
fn decide(cpu: usize, end: VcpuEnd, in_scenario: &[bool]) -> Decision {
    Decision::Fail(match end {
        VcpuEnd::Call(GuestCall::Done { verdict: 0 }) => {
            let missing: Vec<usize> = (0..in_scenario.len())
                .filter(|&i| !in_scenario[i])
                .collect();
            if missing.is_empty() {
                return Decision::Pass;
            }
            Failure::MissingCheckIn { cpus: missing }
        }
        VcpuEnd::Call(GuestCall::Done { verdict }) => Failure::Verdict(verdict),
        VcpuEnd::Call(GuestCall::Abort {
            message,
            file,
            line,
        }) => Failure::Abort {
            cpu,
            message,
            file,
            line,
        },
        VcpuEnd::Call(GuestCall::Exception {
            vector,
            error_code,
            cr2,
            rip,
        }) => Failure::Exception {
            cpu,
            vector,
            error_code,
            cr2,
            rip,
        },
        VcpuEnd::Call(GuestCall::PoisonHit(hit)) => Failure::UseAfterFree { cpu, hit },
        VcpuEnd::Call(
            GuestCall::Sync { .. }
            | GuestCall::Probe { .. }
            | GuestCall::Race { .. }
            | GuestCall::BenchMark { .. },
        ) => {
            unreachable!("Sync, probe events, race calls and benchmark marks never end a vCPU")
        }
        VcpuEnd::Sched(e) => Failure::Race(e),
        VcpuEnd::Quarantined {
            gpa,
            write,
            frees_ago,
            rip,
        } => Failure::QuarantineHit {
            cpu,
            gpa,
            write,
            frees_ago,
            rip,
        },
        VcpuEnd::Shutdown(regs) => Failure::TripleFault { cpu, regs },
        VcpuEnd::Failed { reason, regs } => Failure::VcpuFailed { cpu, reason, regs },
        VcpuEnd::Stopped => return Decision::Undecided,
    })
}

/// Sets the stop flag and kicks every vCPU thread until it has left KVM_RUN, for up to
/// [`STOP_GRACE`]. The kick repeats because a signal that lands just before KVM_RUN is entered
/// would otherwise be missed.
fn stop_vcpus(stop: &AtomicBool, threads: &[JoinHandle<()>]) {
    stop.store(true, Ordering::Release);
    let give_up = Instant::now() + STOP_GRACE;
    while threads.iter().any(|t| !t.is_finished()) {
        if Instant::now() > give_up {
            log::warn!("a vCPU thread did not stop within {STOP_GRACE:?}; leaving it");
            return;
        }
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(kick_signal());
        }
        std::thread::sleep(KICK_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_needs_every_vcpu_checked_in() {
        let done = || VcpuEnd::Call(GuestCall::Done { verdict: 0 });
        assert!(matches!(decide(0, done(), &[true, true]), Decision::Pass));
        match decide(0, done(), &[true, false, false]) {
            Decision::Fail(Failure::MissingCheckIn { cpus }) => assert_eq!(cpus, vec![1, 2]),
            _ => panic!("a missing check-in must fail the run"),
        }
    }

    #[test]
    fn a_failing_verdict_or_a_dead_vcpu_fails_the_run() {
        let verdict = VcpuEnd::Call(GuestCall::Done { verdict: 3 });
        assert!(matches!(
            decide(0, verdict, &[true]),
            Decision::Fail(Failure::Verdict(3))
        ));
        let shutdown = VcpuEnd::Shutdown(RegisterDump::default());
        assert!(matches!(
            decide(1, shutdown, &[true, true]),
            Decision::Fail(Failure::TripleFault { cpu: 1, .. })
        ));
        assert!(matches!(
            decide(1, VcpuEnd::Stopped, &[true, true]),
            Decision::Undecided
        ));
    }

    #[test]
    fn exceptions_are_named_by_vector() {
        let f = Failure::Exception {
            cpu: 0,
            vector: 14,
            error_code: 2,
            cr2: 0x1000,
            rip: 0x10_0000,
        };
        let text = f.to_string();
        assert!(
            text.contains("#PF page fault (vector 14)")
                && text.contains("CR2 0x1000")
                && text.contains("RIP 0x100000")
        );
    }
}
