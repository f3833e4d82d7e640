//! vCPU check-in: the few flags the vCPUs share while the kernel starts.

use crate::host::ucall;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm_core::abi::{BootInfo, Ucall};

static IDT_READY: AtomicBool = AtomicBool::new(false);
static IN_SCENARIO: AtomicU64 = AtomicU64::new(0);

/// Lets the other vCPUs load the IDT vCPU 0 built.
pub fn mark_idt_ready() {
    IDT_READY.store(true, Ordering::Release);
}

/// Spins until vCPU 0 has built the IDT.
pub fn wait_for_idt() {
    while !IDT_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// Checks vCPU `cpu` into the scenario and waits until every vCPU has.
///
/// A vCPU counts itself only after its `Sync(SCENARIO)` returned, so once vCPU 0 leaves this
/// barrier the host has seen every check-in before anything vCPU 0 reports next.
pub fn enter_scenario(cpu: usize, info: &BootInfo) {
    ucall::sync(cpu, Ucall::STAGE_SCENARIO);
    IN_SCENARIO.fetch_add(1, Ordering::AcqRel);
    while IN_SCENARIO.load(Ordering::Acquire) < info.vcpus {
        core::hint::spin_loop();
    }
}

/// This vCPU's index, read from its local APIC ID (the VMM numbers them from 0).
pub fn this_cpu() -> usize {
    let ebx = core::arch::x86_64::__cpuid(1).ebx;
    (ebx >> 24) as usize
}
