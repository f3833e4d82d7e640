//! Trap entry and dispatch: CPU exceptions build a [`TrapFrame`] on the kernel stack and end in
//! [`dispatch`].
//!
//! System calls enter the same way, as `int3` from ring 3 (the breakpoint gate is the only one ring
//! 3 may raise): that is the one user→kernel transition that behaves alike on hardware KVM and on
//! this machine's software KVM, where `syscall` reaches `IA32_LSTAR` without leaving ring 3 and
//! `int 0x80` raises #UD. Every return is an `iretq`.

use crate::cpu::{apic, idt, smp, user};
use crate::host::ucall;
use core::arch::global_asm;

/// Page-fault vector.
pub const PAGE_FAULT: u64 = 14;

/// Registers saved on entry, lowest address first; ends with the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector.
    pub vector: u64,
    /// The CPU's error code (0 where it pushes none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// True when the trap came from ring 3.
    pub fn is_from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

// Registers are saved in TrapFrame order (rax pushed first, so it sits highest) onto a stack that
// is 16-byte aligned after the 7 words of interrupt frame, error code and vector (the CPU aligns
// before pushing), so the 15 registers leave it aligned for the call. GS is swapped when the trap
// came from ring 3 (CS's RPL is 3), so the kernel always runs with its per-CPU GS.
global_asm!(
    r#"
    .section .text
    .global trap_common
    trap_common:
        test qword ptr [rsp + 24], 3
        jz 1f
        swapgs
    1:
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        call {dispatch}
        pop r15
        pop r14
        pop r13
        pop r12
        pop r11
        pop r10
        pop r9
        pop r8
        pop rbp
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rbx
        pop rax
        add rsp, 16
        test qword ptr [rsp + 8], 3
        jz 2f
        swapgs
    2:
        iretq
    "#,
    dispatch = sym dispatch,
);

/// Reads CR2, the address of the last page fault.
pub fn cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags))
    };
    cr2
}

/// Handles a trap. From ring 3: a system call is served, a page fault goes to the memory manager,
/// anything else ends the program. A fault in the kernel is reported to the host.
extern "sysv64" fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == u64::from(apic::TLB_VECTOR) => {
            crate::kernel::tlb::handle_ipi();
            apic::eoi();
            return;
        }
        v if v == u64::from(apic::SPURIOUS_VECTOR) => return,
        _ => {}
    }
    let cr2 = cr2();
    if frame.is_from_user() {
        if frame.vector == idt::SYSCALL_VECTOR as u64 {
            crate::kernel::syscall::dispatch(frame);
            return;
        }
        if frame.vector == PAGE_FAULT && user::handle_page_fault(frame, cr2) {
            return;
        }
        user::exit_to_kernel(user::Exit::Fault {
            vector: frame.vector,
            error_code: frame.error_code,
            cr2,
            rip: frame.rip,
        });
    }
    if frame.vector == PAGE_FAULT && user::fixup_user_read(frame, cr2) {
        return;
    }
    // The kernel touching a process's memory (copying its script in) faults pages in like ring 3.
    if frame.vector == PAGE_FAULT && crate::kernel::process::handle_fault(cr2, frame.error_code) {
        return;
    }
    ucall::exception(
        smp::this_cpu(),
        frame.vector,
        frame.error_code,
        cr2,
        frame.rip,
    )
}
