//! A vCPU: long-mode register setup and the run loop, which hands every exit to
//! [`handle_exit`](super::exit::handle_exit) and reports what matters to the run's controller.

use super::exit::{handle_exit, ExitAction};
use super::pause::PauseGate;
use super::vm::Vm;
use crate::arch::x86_64::layout::BOOT_INFO_START;
use crate::arch::x86_64::regs;
use crate::calls::{Calls, Next, Revoke, VcpuEvent};
use crate::devices::serial::Serial;
use crate::probe::Probe;
use crate::quarantine::Quarantine;
use crate::sched::{SchedError, Scheduler};
use crate::timing::ExitTiming;
use crate::trace_events::TraceRecorder;
use crate::ucall::GuestCall;
use kvm_bindings::{kvm_mp_state, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::VcpuFd;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vm_memory::GuestMemoryMmap;

/// Registers worth showing when a vCPU dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterDump {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// Control registers.
    pub cr0: u64,
    /// Last page-fault address.
    pub cr2: u64,
    /// Page-table root.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// Extended feature enable register.
    pub efer: u64,
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RIP {:#018x} RSP {:#018x} RFLAGS {:#x}\n  CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x}",
            self.rip, self.rsp, self.rflags, self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

/// How a vCPU's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuEnd {
    /// The guest sent a call that ends the run (Done, Abort, Exception).
    Call(GuestCall),
    /// Triple fault.
    Shutdown(RegisterDump),
    /// KVM could not go on (emulation failure, failed entry, ioctl error, undecodable call).
    Failed {
        /// What went wrong.
        reason: String,
        /// The registers at that point, when they could be read.
        regs: Option<RegisterDump>,
    },
    /// The race scheduler could not go on (a deadlock, a diverging replay).
    Sched(SchedError),
    /// The guest touched a quarantined page-table frame.
    Quarantined {
        /// The guest-physical address.
        gpa: u64,
        /// A write (else a read).
        write: bool,
        /// How many table frees ago the frame was freed.
        frees_ago: usize,
        /// Where.
        rip: u64,
    },
    /// The controller stopped it.
    Stopped,
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuShared {
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// The console.
    pub serial: Arc<Mutex<Serial>>,
    /// Set by the controller to stop every vCPU.
    pub stop: Arc<AtomicBool>,
    /// Where events go.
    pub events: Sender<VcpuEvent>,
    /// The probe engine every vCPU's probe events go to.
    pub probe: Arc<Mutex<Probe>>,
    /// Exit timing for the probe benchmark.
    pub timing: Arc<Mutex<ExitTiming>>,
    /// Interleaves racing vCPUs.
    pub sched: Arc<Scheduler>,
    /// Revokes freed page-table frames.
    pub quarantine: Option<Arc<Mutex<Quarantine>>>,
    /// Stops the other vCPUs while memory slots change.
    pub gate: Arc<PauseGate>,
    /// Records the run's trace events (`--trace-events`), when asked for.
    pub trace: Option<Arc<TraceRecorder>>,
}

/// A configured vCPU, ready to run.
pub struct Vcpu {
    fd: VcpuFd,
    index: usize,
}

/// Why a vCPU could not be created.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {index}: {step} failed: {source}")]
pub struct VcpuError {
    index: usize,
    step: &'static str,
    source: kvm_ioctls::Error,
}

impl Vcpu {
    /// Creates vCPU `index` and puts it at the kernel entry in long mode. Application processors
    /// are made runnable directly: the in-kernel irqchip would otherwise wait for INIT/SIPI.
    pub fn new(vm: &Vm, index: usize) -> Result<Vcpu, VcpuError> {
        let step = |step| {
            move |source| VcpuError {
                index,
                step,
                source,
            }
        };
        let fd = vm
            .fd
            .create_vcpu(index as u64)
            .map_err(step("KVM_CREATE_VCPU"))?;
        let cpuid = vm
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(step("KVM_GET_SUPPORTED_CPUID"))?;
        fd.set_cpuid2(&regs::vcpu_cpuid(cpuid, index as u8))
            .map_err(step("KVM_SET_CPUID2"))?;
        let sregs = fd.get_sregs().map_err(step("KVM_GET_SREGS"))?;
        fd.set_sregs(&regs::long_mode_sregs(sregs, vm.cr3))
            .map_err(step("KVM_SET_SREGS"))?;
        let entry = regs::entry_regs(
            vm.kernel.entry,
            vm.stack_top(index),
            BOOT_INFO_START.0,
            index as u64,
        );
        fd.set_regs(&entry).map_err(step("KVM_SET_REGS"))?;
        if index > 0 {
            let runnable = kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            };
            fd.set_mp_state(runnable)
                .map_err(step("KVM_SET_MP_STATE"))?;
        }
        Ok(Vcpu { fd, index })
    }

    /// Runs until the guest ends the run, the vCPU fails, or `shared.stop` is set; reports every
    /// stage and the end through `shared.events`.
    pub fn run(mut self, shared: VcpuShared) {
        shared.gate.register_thread(self.index);
        let end = self.run_loop(&shared);
        // The controller may be gone already (it stopped listening after the outcome).
        let _ = shared.events.send(VcpuEvent::End {
            cpu: self.index,
            end,
        });
    }

    fn run_loop(&mut self, shared: &VcpuShared) -> VcpuEnd {
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return VcpuEnd::Stopped;
            }
            shared.gate.enter(self.index);
            let exit = self.fd.run();
            shared.gate.leave(self.index);
            let action = match exit {
                Ok(exit) => handle_exit(exit, &shared.mem, &shared.serial),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    ExitAction::Interrupted
                }
                Err(e) => {
                    return VcpuEnd::Failed {
                        reason: format!("KVM_RUN failed: {e}"),
                        regs: self.dump(),
                    }
                }
            };
            match action {
                ExitAction::Continue | ExitAction::Interrupted => {}
                ExitAction::Ping => lock(&shared.timing).ping(Instant::now()),
                ExitAction::Call(call) => {
                    let revoke = |frame| {
                        let q = shared
                            .quarantine
                            .as_ref()
                            .expect("revoke only with a quarantine");
                        shared
                            .gate
                            .with_others_paused(self.index, || lock(q).revoke(frame))
                            .map_err(|e| e.to_string())
                    };
                    let calls = Calls {
                        cpu: self.index,
                        probe: &shared.probe,
                        timing: &shared.timing,
                        sched: &shared.sched,
                        stop: &shared.stop,
                        events: &shared.events,
                        revoke: shared.quarantine.as_ref().map(|_| &revoke as Revoke<'_>),
                        trace: shared.trace.as_deref(),
                    };
                    let mut rip = || self.fd.get_regs().map_or(0, |r| r.rip);
                    match calls.handle(call, &mut rip) {
                        Next::Resume => {}
                        Next::End(call) => return VcpuEnd::Call(call),
                        Next::Sched(e) => return VcpuEnd::Sched(e),
                        Next::Failed(reason) => {
                            return VcpuEnd::Failed {
                                reason,
                                regs: self.dump(),
                            }
                        }
                    }
                }
                ExitAction::BadCall(e) => {
                    return VcpuEnd::Failed {
                        reason: e.to_string(),
                        regs: self.dump(),
                    }
                }
                ExitAction::Halted => {
                    while !shared.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(std::time::Duration::from_millis(10));
                    }
                }
                ExitAction::Shutdown => return VcpuEnd::Shutdown(self.dump().unwrap_or_default()),
                ExitAction::Mmio { gpa, write } => {
                    let frees_ago = shared
                        .quarantine
                        .as_ref()
                        .and_then(|q| lock(q).frees_ago(gpa));
                    let rip = self.fd.get_regs().map_or(0, |r| r.rip);
                    return match frees_ago {
                        Some(frees_ago) => VcpuEnd::Quarantined {
                            gpa,
                            write,
                            frees_ago,
                            rip,
                        },
                        None => VcpuEnd::Failed {
                            reason: format!(
                                "the guest {} guest-physical {gpa:#x}, where there is no memory",
                                if write { "wrote" } else { "read" }
                            ),
                            regs: self.dump(),
                        },
                    };
                }
                ExitAction::Failed(reason) => {
                    return VcpuEnd::Failed {
                        reason,
                        regs: self.dump(),
                    }
                }
            }
        }
    }

    fn dump(&self) -> Option<RegisterDump> {
        let r = self.fd.get_regs().ok()?;
        let s = self.fd.get_sregs().ok()?;
        Some(RegisterDump {
            rip: r.rip,
            rsp: r.rsp,
            rflags: r.rflags,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        })
    }
}

/// Locks `m`; a poisoned lock (a vCPU thread panicked while holding it) still holds usable data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
