//! Ring-3 programs, in the user segment (`.user.text`): the only code ring 3 can reach.
//!
//! They may not call into the kernel's code or read its data (those pages are supervisor-only), so
//! they are written in assembly and talk to the kernel only through system calls (`int3`, see
//! `trap`). Workloads are not programs of their own: [`script`] runs a [`Script`] — a list of system
//! calls and memory touches the kernel builds in Rust — natively in ring 3.

use crate::kernel::syscall::nr;
use alloc::vec::Vec;
use core::arch::global_asm;

/// Script opcodes and layouts (words): see the interpreter below.
mod op {
    pub const END: u64 = 0;
    pub const SYSCALL: u64 = 1;
    pub const TOUCH: u64 = 2;
    pub const SERIES: u64 = 3;
    /// SYSCALL: opcode, number, six arguments, expected result, check flag.
    pub const SYSCALL_WORDS: usize = 10;
    /// TOUCH: opcode, address, length, stride, kind, delta.
    pub const TOUCH_WORDS: usize = 6;
    /// SERIES: opcode, number, six arguments, count, step of the first argument, check flag.
    pub const SERIES_WORDS: usize = 11;
}

/// Exit status of a script whose step `i` failed: `SCRIPT_FAILED + i`.
pub const SCRIPT_FAILED: u64 = 0x5c00_0000;
/// Exit status of a script with an unknown opcode at step `i`: `SCRIPT_BAD_OP + i`.
pub const SCRIPT_BAD_OP: u64 = 0x5b00_0000;

/// How a TOUCH step touches each address.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Touch {
    /// Read a word.
    Read = 0,
    /// Write the address (less the step's delta) as the word.
    Write = 1,
    /// Read the word and fail unless it is the address less the delta (what `Write` left).
    Verify = 2,
}

/// A workload for [`script`]: steps run in order in ring 3; the program exits 0 after the last,
/// or `SCRIPT_FAILED + i` as soon as step `i` does not do what it expected.
#[derive(Clone, Debug, Default)]
pub struct Script(Vec<u64>);

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Script(Vec::new())
    }

    /// System call `nr` with `args`; when `expect` is `Some`, the result must equal it.
    pub fn syscall(mut self, nr: u64, args: [u64; 6], expect: Option<u64>) -> Self {
        self.0.extend_from_slice(&[op::SYSCALL, nr]);
        self.0.extend_from_slice(&args);
        self.0
            .extend_from_slice(&[expect.unwrap_or(0), expect.is_some() as u64]);
        self
    }

    /// System call `nr` `count` times, the first argument growing by `step` each time; with
    /// `check_first`, each result must equal that call's first argument (as MAP_FIXED returns).
    pub fn series(
        mut self,
        nr: u64,
        args: [u64; 6],
        count: u64,
        step: u64,
        check_first: bool,
    ) -> Self {
        self.0.extend_from_slice(&[op::SERIES, nr]);
        self.0.extend_from_slice(&args);
        self.0.extend_from_slice(&[count, step, check_first as u64]);
        self
    }

    /// Touches `[addr, addr + len)` every `stride` bytes.
    pub fn touch(self, addr: u64, len: u64, stride: u64, kind: Touch) -> Self {
        self.touch_as(addr, len, stride, kind, 0)
    }

    /// Like [`Script::touch`], for memory that another mapping `delta` bytes lower also shows: the
    /// pattern is that mapping's addresses.
    pub fn touch_as(mut self, addr: u64, len: u64, stride: u64, kind: Touch, delta: u64) -> Self {
        let words = [op::TOUCH, addr, len, stride.max(1), kind as u64, delta];
        const _: () = assert!(op::TOUCH_WORDS == 6);
        self.0.extend_from_slice(&words);
        self
    }

    /// The script's words, ending with END.
    pub fn words(&self) -> Vec<u64> {
        let mut words = self.0.clone();
        words.push(op::END);
        words
    }
}

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

    // script(rdi = words): rbx walks the steps, r12 counts them.
    .global uprog_script
    uprog_script:
        mov rbx, rdi
        xor r12d, r12d
    script_next:
        mov rax, [rbx]
        cmp rax, {op_syscall}
        je script_syscall
        cmp rax, {op_touch}
        je script_touch
        cmp rax, {op_series}
        je script_series
        test rax, rax
        jz script_end
        lea rdi, [r12 + {bad_op}]
        jmp script_exit
    script_syscall:
        mov rax, [rbx + 8]
        mov rdi, [rbx + 16]
        mov rsi, [rbx + 24]
        mov rdx, [rbx + 32]
        mov r10, [rbx + 40]
        mov r8, [rbx + 48]
        mov r9, [rbx + 56]
        int3
        test qword ptr [rbx + 72], 1
        jz 1f
        cmp rax, [rbx + 64]
        jne script_fail
    1:
        add rbx, {syscall_bytes}
        inc r12
        jmp script_next
    script_touch:
        mov rsi, [rbx + 8]
        mov rcx, [rbx + 16]
        add rcx, rsi
        mov rdx, [rbx + 24]
        mov r8, [rbx + 32]
        mov r9, [rbx + 40]
    2:
        cmp rsi, rcx
        jae 5f
        mov r10, rsi
        sub r10, r9
        cmp r8, 1
        je 3f
        mov rax, [rsi]
        cmp r8, 2
        jne 4f
        cmp rax, r10
        jne script_fail
        jmp 4f
    3:
        mov [rsi], r10
    4:
        add rsi, rdx
        jmp 2b
    5:
        add rbx, {touch_bytes}
        inc r12
        jmp script_next
    script_series:
        mov r13, [rbx + 64]
        mov r14, [rbx + 16]
        mov r15, [rbx + 72]
    6:
        test r13, r13
        jz 7f
        mov rax, [rbx + 8]
        mov rdi, r14
        mov rsi, [rbx + 24]
        mov rdx, [rbx + 32]
        mov r10, [rbx + 40]
        mov r8, [rbx + 48]
        mov r9, [rbx + 56]
        int3
        test qword ptr [rbx + 80], 1
        jz 8f
        cmp rax, r14
        jne script_fail
    8:
        add r14, r15
        dec r13
        jmp 6b
    7:
        add rbx, {series_bytes}
        inc r12
        jmp script_next
    script_fail:
        lea rdi, [r12 + {failed}]
        jmp script_exit
    script_end:
        xor edi, edi
    script_exit:
        mov eax, {exit}
        int3
        ud2

    // A built-in script for testing the interpreter without user memory: getcpu must return 0.
    .balign 8
    .global uprog_selftest_script
    uprog_selftest_script:
        .quad {op_syscall}, {getcpu}, 0, 0, 0, 0, 0, 0, 0, 1
        .quad {op_syscall}, {getcpu}, 0, 0, 0, 0, 0, 0, 7, 1
        .quad 0

    .popsection
    "#,
    exit = const nr::EXIT,
    getcpu = const nr::GETCPU,
    op_syscall = const op::SYSCALL,
    op_touch = const op::TOUCH,
    syscall_bytes = const op::SYSCALL_WORDS * 8,
    touch_bytes = const op::TOUCH_WORDS * 8,
    op_series = const op::SERIES,
    series_bytes = const op::SERIES_WORDS * 8,
    failed = const SCRIPT_FAILED,
    bad_op = const SCRIPT_BAD_OP,
);

extern "C" {
    fn uprog_exit_with_arg();
    fn uprog_getcpu();
    fn uprog_read();
    fn uprog_script();
    static uprog_selftest_script: u64;
}

/// Entry point of the script interpreter: `script(words)`.
pub fn script() -> u64 {
    uprog_script as *const () as u64
}

/// A script in the user segment whose second step fails (it expects getcpu() == 7 on vCPU 0).
pub fn selftest_script() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &uprog_selftest_script as *const u64 as u64 }
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
