//! Ring-3 programs, in the user segment (`.user.text`): the only code ring 3 can reach.
//!
//! They may not call into the kernel's code or read its data (those pages are supervisor-only), so
//! they are written in assembly for now and talk to the kernel only through system calls (`int3`,
//! see `trap`).

use crate::syscall::{SYS_EXIT, SYS_GETCPU};
use core::arch::global_asm;

global_asm!(
    r#"
    .pushsection .user.text, "ax"

    // exit(rdi): ends with the status it was given.
    .global uprog_exit_with_arg
    uprog_exit_with_arg:
        mov eax, {exit}
        int3
        ud2

    // exit(getcpu() + 100): a system call that returns to ring 3, then one that does not.
    .global uprog_getcpu
    uprog_getcpu:
        mov eax, {getcpu}
        int3
        lea rdi, [rax + 100]
        mov eax, {exit}
        int3
        ud2

    // Reads the address in rdi: a kernel address must fault.
    .global uprog_read
    uprog_read:
        mov rax, [rdi]
        mov rdi, rax
        mov eax, {exit}
        int3
        ud2

    .popsection
    "#,
    exit = const SYS_EXIT,
    getcpu = const SYS_GETCPU,
);

extern "C" {
    fn uprog_exit_with_arg();
    fn uprog_getcpu();
    fn uprog_read();
}

/// Entry point of `exit(arg)`.
pub fn exit_with_arg() -> u64 {
    uprog_exit_with_arg as *const () as u64
}

/// Entry point of `exit(getcpu() + 100)`.
pub fn getcpu() -> u64 {
    uprog_getcpu as *const () as u64
}

/// Entry point of `exit(*(u64 *)arg)`.
pub fn read() -> u64 {
    uprog_read as *const () as u64
}
