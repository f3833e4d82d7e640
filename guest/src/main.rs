//! The guest kernel: a `no_std` x86_64 kernel the VMM boots directly in long mode.
//!
//! Every vCPU enters [`_start`] with the boot-info address in `rdi`, its index in `rsi` and `rsp` at
//! the top of its own stack (the VMM sets all three). vCPU 0 initialises the kernel, reports
//! `Sync(READY)` and runs the scenario the boot info names; the others check in and wait.
//!
//! Layers, each importing only those below it (scenarios on top, the kernel never imports one):
//! - [`cpu`]: GDT, IDT, APIC, per-CPU data, trap entry, ring-3 entry, vCPU check-in.
//! - [`host`]: the call channel to the VMM, the console, the probe hooks, race points.
//! - [`kernel`]: frames, heap, mm-core's context, TLB shootdown, processes, system calls.
//! - [`scenarios`]: the registry of scenarios the boot info chooses from.
#![no_std]
#![no_main]

extern crate alloc;

mod cpu;
mod host;
mod kernel;
mod scenarios;

use core::panic::PanicInfo;
use cpu::{apic, idt, percpu, smp, user};
use host::{console, probes, ucall};
use kernel::{frame, heap, mm};
use mm_core::abi::{BootInfo, Ucall};

/// Entry point of every vCPU.
///
/// # Safety
/// Called only by the VMM's register setup: `boot_info` points to a valid [`BootInfo`] in
/// identity-mapped RAM, `cpu` is this vCPU's index, below `boot_info.vcpus`, and `rsp` is the top
/// of this vCPU's own stack.
#[no_mangle]
#[link_section = ".text.entry"]
pub unsafe extern "sysv64" fn _start(boot_info: *const BootInfo, cpu: u64) -> ! {
    // SAFETY: the VMM wrote the boot info before starting any vCPU and never changes it again.
    let info: &'static BootInfo = unsafe { &*boot_info };
    let cpu = cpu as usize;
    if cpu == 0 {
        boot_cpu(info)
    } else {
        secondary_cpu(info, cpu)
    }
}

fn boot_cpu(info: &'static BootInfo) -> ! {
    idt::init();
    user::expose_user_segment();
    smp::mark_idt_ready();
    cpu_init(info, 0);
    console::init(info.log_level);
    if !info.is_valid() {
        ucall::abort(
            0,
            "boot info has a wrong magic or ABI version",
            file!(),
            line!(),
        );
    }
    frame::init(info);
    heap::init();
    let Some(&variant) = mm_core::Variant::ALL.get(info.variant as usize) else {
        ucall::abort(
            0,
            "the boot info names an unknown ordering variant",
            file!(),
            line!(),
        )
    };
    probes::init(info);
    mm::init(info.ram_size, variant);
    ucall::sync(0, Ucall::STAGE_ONLINE);
    ucall::sync(0, Ucall::STAGE_READY);

    let name = info.scenario().unwrap_or("");
    log::info!(
        "mm guest kernel {}: {} vCPU(s), {} MiB RAM, scenario '{}'",
        env!("CARGO_PKG_VERSION"),
        info.vcpus,
        info.ram_size >> 20,
        name
    );
    smp::enter_scenario(0, info);
    let verdict = scenarios::run(name, info);
    ucall::done(0, verdict)
}

fn secondary_cpu(info: &'static BootInfo, cpu: usize) -> ! {
    smp::wait_for_idt();
    idt::load();
    cpu_init(info, cpu);
    ucall::sync(cpu, Ucall::STAGE_ONLINE);
    smp::enter_scenario(cpu, info);
    scenarios::run_secondary(info.scenario().unwrap_or(""), cpu, info);
    halt_forever()
}

/// Per-vCPU set-up: GDT, TSS, per-CPU data.
fn cpu_init(info: &BootInfo, cpu: usize) {
    percpu::init(cpu, info.stacks_base + (cpu as u64 + 1) * info.stack_size);
    apic::init(cpu);
}

/// Stops this vCPU for good: interrupts off, `hlt` in a loop.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt touch no memory; this vCPU has nothing left to do.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let (file, line) = info
        .location()
        .map_or(("<unknown>", 0), |l| (l.file(), l.line()));
    ucall::abort_fmt(
        smp::this_cpu(),
        format_args!("{}", info.message()),
        file,
        line,
    )
}
