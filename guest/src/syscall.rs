//! System calls: ring 3 raises `int3` with the number in rax and arguments in rdi, rsi, rdx, r10,
//! r8, r9 (Linux's x86_64 registers and numbers); the result comes back in rax, a negative errno
//! on failure.

use crate::trap::TrapFrame;
use crate::user::{exit_to_kernel, Exit};

/// `exit(status)`.
pub const SYS_EXIT: u64 = 60;
/// `getcpu()`: this kernel's variant returns the vCPU index.
pub const SYS_GETCPU: u64 = 309;

/// Errno for an unknown system call.
const ENOSYS: u64 = 38;

/// Serves the system call in `frame`.
pub fn dispatch(frame: &mut TrapFrame) {
    frame.rax = match frame.rax {
        SYS_EXIT => exit_to_kernel(Exit::Code(frame.rdi)),
        SYS_GETCPU => crate::percpu::this_cpu() as u64,
        _ => crate::process::syscall(frame).unwrap_or(ENOSYS.wrapping_neg()),
    };
}
