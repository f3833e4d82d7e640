//! The registry of scenarios the boot info chooses from (the memory-manager ones are in [`mm`]);
//! names and descriptions live in `mm_core::abi::SCENARIOS`, which the VMM reads too.

mod difftest;
mod mm;
pub(crate) mod race;
mod random;
mod replay;
mod shapes;
mod workloads;

use crate::cpu::user::{enter_user, Exit};
use crate::cpu::{idt, trap};
use crate::host::ucall;
use crate::kernel::{frame, programs};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::abi::BootInfo;

/// Verdict of a scenario that passed.
pub const PASS: u64 = 0;

/// The workload size the user asked for (`--scale`), 0 when none.
static SCALE: AtomicU64 = AtomicU64::new(0);
/// The seed the user gave (`--seed`).
static SEED: AtomicU64 = AtomicU64::new(0);
/// How many vCPUs the VMM runs.
static VCPUS: AtomicU64 = AtomicU64::new(1);

/// `--inject`: which allocation of each process fails (0 = none), and of which kind (0 = any).
static INJECT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The fault injection the user asked for: (nth allocation, `AllocKind` value or 0 for any).
pub fn injection() -> (u64, u64) {
    (
        INJECT[0].load(Ordering::Relaxed),
        INJECT[1].load(Ordering::Relaxed),
    )
}

/// The seed for this run's random choices.
pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// How many vCPUs this run has.
pub fn vcpus() -> u64 {
    VCPUS.load(Ordering::Relaxed)
}

/// The workload size for this run, or `default` when the user gave none.
pub fn scale_or(default: u64) -> u64 {
    match SCALE.load(Ordering::Relaxed) {
        0 => default,
        n => n,
    }
}

/// Runs scenario `name` on vCPU 0 and returns its verdict.
pub fn run(name: &str, info: &BootInfo) -> u64 {
    SCALE.store(info.scale, Ordering::Relaxed);
    SEED.store(info.seed, Ordering::Relaxed);
    VCPUS.store(info.vcpus, Ordering::Relaxed);
    INJECT[0].store(info.inject_nth, Ordering::Relaxed);
    INJECT[1].store(info.inject_kind, Ordering::Relaxed);
    match name {
        "hello" => hello(info),
        "boot" => PASS,
        "panic" => panic!("the panic scenario panicked on purpose"),
        "page-fault" => page_fault(info),
        "invalid-opcode" => invalid_opcode(),
        "triple-fault" => triple_fault(),
        "hang" => hang(),
        "user-mode" => user_mode(),
        "replay" => replay::replay(info),
        "difftest" => difftest::difftest(info),
        name => match mm::find(name) {
            Some(scenario) => scenario(),
            None => ucall::abort_fmt(
                0,
                format_args!("unknown scenario '{name}'"),
                file!(),
                line!(),
            ),
        },
    }
}

/// What vCPU `cpu` (not 0) does once every vCPU has entered the scenario: the race scenarios'
/// walkers; nothing for the others.
pub fn run_secondary(name: &str, cpu: usize, info: &BootInfo) {
    if name.starts_with("race-") {
        race::walker(cpu, info);
    }
}

/// Shows that the frame allocator and the heap work: frames come back to the free list, heap
/// memory is usable.
fn hello(info: &BootInfo) -> u64 {
    let before = frame::allocated();
    let frames: Vec<u64> = (0..8).filter_map(|_| frame::alloc()).collect();
    assert_eq!(frames.len(), 8, "the frame allocator ran dry");
    assert!(frames
        .iter()
        .all(|&f| f % frame::FRAME_SIZE == 0 && f < info.ram_size));
    for &f in &frames {
        // SAFETY: each frame came from `frame::alloc` above and is not used any more.
        unsafe { frame::free(f) };
    }
    assert_eq!(frame::allocated(), before, "frames leaked");

    let squares: Vec<u64> = (0..64).map(|i| i * i).collect();
    assert_eq!(squares.iter().sum::<u64>(), 85_344);
    log::info!(
        "hello from {} vCPU(s): {} frames in use, heap and frame allocator OK",
        info.vcpus,
        frame::allocated()
    );
    PASS
}

fn page_fault(info: &BootInfo) -> u64 {
    // The boot page tables map RAM and nothing above it.
    let unmapped = (info.ram_size + (1 << 30)) as *const u64;
    // SAFETY: not safe at all, on purpose: the read faults and the IDT reports it.
    unsafe { core::ptr::read_volatile(unmapped) }
}

fn invalid_opcode() -> u64 {
    // SAFETY: ud2 raises #UD, which the IDT reports; nothing after it runs.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    1
}

fn triple_fault() -> u64 {
    idt::unload();
    // SAFETY: with no IDT the #UD cannot be delivered: #GP, #DF, then the CPU shuts down.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    1
}

fn hang() -> u64 {
    loop {
        core::hint::spin_loop();
    }
}

/// Ring 3 runs, makes system calls, comes back through `exit`, and cannot touch the kernel.
fn user_mode() -> u64 {
    assert_eq!(
        enter_user(0, programs::exit_with_arg(), 0, 42),
        Exit::Code(42)
    );
    assert_eq!(enter_user(0, programs::getcpu(), 0, 0), Exit::Code(100));
    let kernel_text = programs::exit_with_arg as *const () as u64;
    match enter_user(0, programs::read(), 0, kernel_text) {
        Exit::Fault {
            vector: trap::PAGE_FAULT,
            cr2,
            error_code,
            ..
        } => {
            assert_eq!(cr2, kernel_text);
            // Present, read, from user mode: a protection fault, not a missing page.
            assert_eq!(error_code & 0b111, 0b101, "error code {error_code:#x}");
        }
        other => panic!("reading kernel memory from ring 3 gave {other:?}"),
    }
    let (user_start, _) = crate::cpu::user::segment();
    assert_eq!(
        enter_user(0, programs::read(), 0, user_start),
        Exit::Code(unsafe_read(user_start))
    );
    let failed_at_step_1 = Exit::Code(programs::SCRIPT_FAILED + 1);
    assert_eq!(
        enter_user(0, programs::script(), 0, programs::selftest_script()),
        failed_at_step_1
    );
    log::info!(
        "ring 3: exit, getcpu, a script and a kernel-memory fault all came back as expected"
    );
    PASS
}

fn unsafe_read(addr: u64) -> u64 {
    // SAFETY: `addr` is the start of the user segment, mapped and readable by the kernel.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
