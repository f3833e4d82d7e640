//! What a KVM exit means for the run: a plain function from an exit to an [`ExitAction`], so tests
//! can feed it made-up exits.

use crate::devices::serial::Serial;
use crate::ucall::{read_call, CallError, GuestCall};
use kvm_ioctls::VcpuExit;
use mm_core::abi::{PING_PORT, UCALL_PORT};
use std::sync::Mutex;
use vm_memory::GuestMemoryMmap;

/// What the vCPU loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Handled (console I/O): run the vCPU again.
    Continue,
    /// A bare exit on the ping port: count it, run the vCPU again.
    Ping,
    /// The guest made a call; the loop reports it and decides.
    Call(GuestCall),
    /// The guest sent a call the host cannot decode.
    BadCall(CallError),
    /// `hlt` reached user space (no in-kernel irqchip): the vCPU has nothing to do until stopped.
    Halted,
    /// KVM_RUN was interrupted by a signal: check whether the run is being stopped.
    Interrupted,
    /// Triple fault: KVM shut the vCPU down.
    Shutdown,
    /// The guest accessed a guest-physical address no memory slot covers.
    Mmio {
        /// The address.
        gpa: u64,
        /// A write (else a read).
        write: bool,
    },
    /// KVM could not run the guest (emulation failure, failed entry, unexpected exit).
    Failed(String),
}

/// Decides what `exit` means. Console I/O is served here, through `serial`.
pub fn handle_exit(
    exit: VcpuExit<'_>,
    mem: &GuestMemoryMmap,
    serial: &Mutex<Serial>,
) -> ExitAction {
    match exit {
        VcpuExit::IoOut(UCALL_PORT, data) => match read_call(mem, data) {
            Ok(call) => ExitAction::Call(call),
            Err(e) => ExitAction::BadCall(e),
        },
        VcpuExit::IoOut(PING_PORT, _) => ExitAction::Ping,
        VcpuExit::IoOut(port, data) if Serial::decodes(port) => {
            lock(serial).write(port, data);
            ExitAction::Continue
        }
        VcpuExit::IoIn(port, data) if Serial::decodes(port) => {
            lock(serial).read(port, data);
            ExitAction::Continue
        }
        // Other ports have no device: writes vanish and reads float high, as on a bare board.
        VcpuExit::IoOut(..) => ExitAction::Continue,
        VcpuExit::IoIn(_, data) => {
            data.fill(0xff);
            ExitAction::Continue
        }
        VcpuExit::Hlt => ExitAction::Halted,
        VcpuExit::Intr => ExitAction::Interrupted,
        VcpuExit::Shutdown => ExitAction::Shutdown,
        VcpuExit::MmioRead(gpa, _) => ExitAction::Mmio { gpa, write: false },
        VcpuExit::MmioWrite(gpa, _) => ExitAction::Mmio { gpa, write: true },
        VcpuExit::InternalError => {
            ExitAction::Failed("KVM internal error (emulation failure)".into())
        }
        VcpuExit::FailEntry(reason, cpu) => ExitAction::Failed(format!(
            "VM entry failed: hardware reason {reason:#x} on CPU {cpu}"
        )),
        other => ExitAction::Failed(format!("unexpected KVM exit {other:?}")),
    }
}

/// Locks the console; a poisoned lock (a vCPU thread panicked mid-write) still holds a usable UART.
fn lock(serial: &Mutex<Serial>) -> std::sync::MutexGuard<'_, Serial> {
    serial
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial::COM1_BASE;
    use crate::ucall::write_call;
    use mm_core::abi::{Ucall, UcallCmd};
    use vm_memory::GuestAddress;

    fn setup() -> (GuestMemoryMmap, Mutex<Serial>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        (mem, Mutex::new(Serial::new(Box::new(std::io::sink()))))
    }

    #[test]
    fn a_ucall_port_write_becomes_the_guests_call() {
        let (mem, serial) = setup();
        let mut call = Ucall::new(UcallCmd::Sync, 1);
        call.args[0] = Ucall::STAGE_READY;
        write_call(&mem, GuestAddress(0x8000), call).unwrap();
        let data = 0x8000u32.to_le_bytes();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(UCALL_PORT, &data), &mem, &serial),
            ExitAction::Call(GuestCall::Sync {
                stage: Ucall::STAGE_READY
            })
        );
    }

    #[test]
    fn a_garbage_ucall_is_reported_not_trusted() {
        let (mem, serial) = setup();
        let data = 0xdead_0000u32.to_le_bytes();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(UCALL_PORT, &data), &mem, &serial),
            ExitAction::BadCall(CallError::BadAddress(0xdead_0000))
        );
    }

    #[test]
    fn console_output_is_served_and_the_vcpu_continues() {
        let (mem, serial) = setup();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(COM1_BASE, b"hi\n"), &mem, &serial),
            ExitAction::Continue
        );
        assert_eq!(serial.lock().unwrap().tail(), vec!["hi".to_string()]);
    }

    #[test]
    fn reads_from_unknown_ports_float_high() {
        let (mem, serial) = setup();
        let mut data = [0u8; 2];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x60, &mut data), &mem, &serial),
            ExitAction::Continue
        );
        assert_eq!(data, [0xff, 0xff]);
    }

    #[test]
    fn shutdown_and_internal_errors_end_the_vcpu() {
        let (mem, serial) = setup();
        assert_eq!(
            handle_exit(VcpuExit::Shutdown, &mem, &serial),
            ExitAction::Shutdown
        );
        assert!(matches!(
            handle_exit(VcpuExit::InternalError, &mem, &serial),
            ExitAction::Failed(_)
        ));
        assert!(
            matches!(handle_exit(VcpuExit::FailEntry(7, 0), &mem, &serial), ExitAction::Failed(m) if m.contains("0x7"))
        );
    }
}
