//! Running code in ring 3: the user segment, entering user mode, and coming back.
//!
//! [`enter_user`] saves the kernel's callee-saved registers and stack, then `iretq`s into ring 3.
//! The program comes back only through [`exit_to_kernel`] — its `exit` system call or a fault the
//! kernel cannot fix — which drops whatever trap frames are on the kernel stack and returns from
//! `enter_user` with an [`Exit`]. The kernel stack below the saved registers is the trap stack.

use crate::cpu::gdt::{USER_CS, USER_DS};
use crate::cpu::percpu::{OFF_RESUME_RSP, OFF_TSS};
use crate::cpu::trap::TrapFrame;
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use mm_core::abi::{Call, PoisonReport, MAX_VCPUS};
use mm_core::paging::{PageTableEntry, PteFlags};

/// How a user program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` with this status.
    Code(u64),
    /// It took an exception the kernel could not handle.
    Fault {
        /// Exception vector.
        vector: u64,
        /// Error code.
        error_code: u64,
        /// CR2 (the faulting address for a page fault).
        cr2: u64,
        /// Where.
        rip: u64,
    },
}

struct Exits(UnsafeCell<[Exit; MAX_VCPUS]>);
// SAFETY: vCPU `i` touches only entry `i`.
unsafe impl Sync for Exits {}
static EXITS: Exits = Exits(UnsafeCell::new([Exit::Code(0); MAX_VCPUS]));

/// The x86 rflags a program starts with: only the reserved bit (interrupts stay off for now).
const USER_RFLAGS: u64 = 0x2;

global_asm!(
    r#"
    .section .text
    .global enter_user_asm
    // rdi = entry, rsi = user stack, rdx = argument; returns when the program exits.
    enter_user_asm:
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        sub rsp, 8
        mov gs:[{resume}], rsp
        mov rax, gs:[{tss}]
        mov [rax + 4], rsp
        push {user_ds}
        push rsi
        push {rflags}
        push {user_cs}
        push rdi
        mov rdi, rdx
        xor eax, eax
        xor ebx, ebx
        xor ecx, ecx
        xor edx, edx
        xor esi, esi
        xor ebp, ebp
        xor r8d, r8d
        xor r9d, r9d
        xor r10d, r10d
        xor r11d, r11d
        xor r12d, r12d
        xor r13d, r13d
        xor r14d, r14d
        xor r15d, r15d
        swapgs
        iretq

    .global exit_to_kernel_asm
    exit_to_kernel_asm:
        mov eax, {kernel_ds}
        mov ss, eax
        mov rsp, gs:[{resume}]
        add rsp, 8
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbp
        pop rbx
        ret
    "#,
    resume = const OFF_RESUME_RSP,
    kernel_ds = const crate::cpu::gdt::KERNEL_DS as u64,
    tss = const OFF_TSS,
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    rflags = const USER_RFLAGS,
);

extern "sysv64" {
    fn enter_user_asm(entry: u64, user_rsp: u64, arg: u64);
    fn exit_to_kernel_asm() -> !;
}

/// Runs `entry(arg)` in ring 3 on `user_rsp` until the program exits.
pub fn enter_user(cpu: usize, entry: u64, user_rsp: u64, arg: u64) -> Exit {
    // SAFETY: enter_user_asm saves everything the SysV ABI asks a callee to keep and returns only
    // through exit_to_kernel_asm, which restores it; GS points at this vCPU's per-CPU data.
    unsafe { enter_user_asm(entry, user_rsp, arg) };
    // SAFETY: only this vCPU touches its entry.
    unsafe { (*EXITS.0.get())[cpu] }
}

/// Ends the running program with `exit`, from a trap handler on this vCPU's trap stack.
pub fn exit_to_kernel(exit: Exit) -> ! {
    let cpu = crate::cpu::percpu::this_cpu();
    // SAFETY: only this vCPU touches its entry; exit_to_kernel_asm returns into enter_user on this
    // vCPU, discarding only trap frames below the saved kernel state.
    unsafe {
        (*EXITS.0.get())[cpu] = exit;
        exit_to_kernel_asm()
    }
}

/// A page fault in ring 3: true if the memory manager fixed it and the program may go on.
pub fn handle_page_fault(frame: &mut TrapFrame, cr2: u64) -> bool {
    crate::kernel::process::handle_fault(cr2, frame.error_code)
}

extern "C" {
    static __user_start: u8;
    static __user_end: u8;
}

/// Lets ring 3 run the user segment: marks its 2 MiB page of the identity map user-accessible and
/// read-only, and the PML4 and PDPT entries above it user-accessible (every other leaf of the
/// identity map stays supervisor-only, so the rest of the kernel stays out of reach).
pub fn expose_user_segment() {
    // SAFETY: linker symbols; only their addresses are used.
    let (start, end) = unsafe {
        (
            &__user_start as *const u8 as u64,
            &__user_end as *const u8 as u64,
        )
    };
    assert!(
        end - start == 2 << 20 && start < 1 << 30,
        "user segment must be one 2 MiB page in the first GiB"
    );
    let (user, present_huge) = (
        PteFlags::USER.bits(),
        PteFlags::PRESENT.bits() | PteFlags::HUGE.bits(),
    );
    let table_of = |entry: u64| PageTableEntry::from_bits(entry).frame().0 as *mut u64;
    // SAFETY: the boot page tables are identity-mapped RAM owned by the kernel; vCPU 0 edits them
    // once, before any other vCPU or ring-3 code runs, and flushes the changed translation.
    unsafe {
        let pml4 = table_of(crate::kernel::mm::read_cr3());
        *pml4 |= user;
        let pdpt = table_of(*pml4);
        *pdpt |= user;
        let pde = table_of(*pdpt).add((start >> 21) as usize);
        assert!(
            *pde & present_huge == present_huge,
            "user segment not mapped by a 2 MiB page"
        );
        *pde = (*pde | user) & !PteFlags::WRITABLE.bits();
        asm!("invlpg [{}]", in(reg) start, options(nostack, preserves_flags));
    }
}

/// The user segment's bounds.
pub fn segment() -> (u64, u64) {
    // SAFETY: linker symbols; only their addresses are used.
    unsafe {
        (
            &__user_start as *const u8 as u64,
            &__user_end as *const u8 as u64,
        )
    }
}

// `read_user_word`: one load from a user address that may fault; the fault handler sends a fault at
// `read_user_insn` to `read_user_fixup` instead of serving it (Linux's exception table).
global_asm!(
    r#"
    .section .text
    .global read_user_word
    // rdi = address; returns rax = the word, rdx = 0, or rax = 0, rdx = 1 when the load faulted.
    read_user_word:
        xor edx, edx
    .global read_user_insn
    read_user_insn:
        mov rax, [rdi]
        ret
    .global read_user_fixup
    read_user_fixup:
        xor eax, eax
        mov edx, 1
        ret
    "#,
);

extern "sysv64" {
    fn read_user_insn();
    fn read_user_fixup();
}

/// Page-fault error code: a reserved bit was set in an entry the walk read.
const PF_RESERVED: u64 = 1 << 3;

/// Reads the word at user address `addr` in the loaded address space the way `copy_from_user`
/// does: a fault is not served, just reported as `None`.
pub fn read_user(addr: u64) -> Option<u64> {
    #[repr(C)]
    struct Pair(u64, u64);
    extern "sysv64" {
        fn read_user_word(addr: u64) -> Pair;
    }
    // SAFETY: the load may only fault, and a fault at it resumes at the fixup (`fixup_user_read`),
    // which returns the failure; the routine clobbers only rax and rdx, the return registers.
    let Pair(word, failed) = unsafe { read_user_word(addr) };
    (failed == 0).then_some(word)
}

/// A kernel page fault at [`read_user`]'s load: resume at its fixup (true), unless the fault says
/// the hardware page walk read a reserved bit — which, for a user address, means it walked into a
/// page table freed and poisoned while this CPU still cached a path to it: reported to the host.
pub fn fixup_user_read(frame: &mut TrapFrame, cr2: u64) -> bool {
    if frame.rip != read_user_insn as *const () as u64 {
        return false;
    }
    if frame.error_code & PF_RESERVED != 0 {
        let hit = PoisonReport {
            va: cr2,
            rip: frame.rip,
            ..PoisonReport::default()
        };
        crate::host::ucall::call_with_text(
            crate::cpu::percpu::this_cpu(),
            Call::PoisonHit(hit),
            "a hardware page walk (reserved-bit page fault)",
        );
    }
    frame.rip = read_user_fixup as *const () as u64;
    true
}
