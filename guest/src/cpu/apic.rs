//! The local APIC in x2APIC mode (MSR access, no MMIO mapping): interprocessor interrupts for TLB
//! shootdown, through the VMM's in-kernel irqchip.
//!
//! Each vCPU enables its own APIC in [`init`]. The kernel runs with interrupts off; an IPI is taken
//! only where a CPU waits — spinning on a busy lock, waiting for shootdown acknowledgements — in
//! [`interrupt_window`], and the handler (`tlb::handle_ipi`) neither takes locks nor calls the host.

use crate::cpu::percpu::{rdmsr, wrmsr};
use core::sync::atomic::{AtomicBool, Ordering};

/// The vector TLB-shootdown IPIs arrive on.
pub const TLB_VECTOR: u8 = 0xf0;
/// The APIC's spurious-interrupt vector (never acknowledged).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
/// APIC_BASE: the APIC is enabled.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// APIC_BASE: x2APIC mode (registers are MSRs).
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// x2APIC spurious-interrupt vector register; bit 8 software-enables the APIC.
const X2APIC_SVR: u32 = 0x80f;
const SVR_ENABLE: u64 = 1 << 8;
/// x2APIC end-of-interrupt register.
const X2APIC_EOI: u32 = 0x80b;
/// x2APIC interrupt command register: destination in bits 32..64, vector in 0..8.
const X2APIC_ICR: u32 = 0x830;
/// x2APIC task-priority register: 0 accepts every vector.
const X2APIC_TPR: u32 = 0x808;
/// CPUID 1 ECX: x2APIC supported.
const CPUID_X2APIC: u32 = 1 << 21;

/// Whether every vCPU has an x2APIC (vCPU 0 decides in [`init`]; the others follow).
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Whether IPIs can be sent (the CPU model has an x2APIC).
pub fn available() -> bool {
    AVAILABLE.load(Ordering::Acquire)
}

/// Enables this vCPU's APIC in x2APIC mode, if the CPU has one.
pub fn init(cpu: usize) {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & CPUID_X2APIC == 0 {
        if cpu == 0 {
            log::warn!("no x2APIC: TLB shootdown IPIs are off, each CPU flushes only itself");
        }
        return;
    }
    // SAFETY: the CPU reports an x2APIC, so APIC_BASE accepts the enable and x2APIC bits together
    // (from the disabled or the xAPIC state we boot in), and the x2APIC MSRs exist afterwards.
    // Interrupts stay off, so nothing is delivered before the IDT is ready for it.
    unsafe {
        let base = rdmsr(IA32_APIC_BASE);
        wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        wrmsr(X2APIC_TPR, 0);
        wrmsr(X2APIC_SVR, SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
    }
    if cpu == 0 {
        AVAILABLE.store(true, Ordering::Release);
    }
}

/// Sends the TLB-shootdown IPI to vCPU `cpu` (its APIC ID is its index).
pub fn send_tlb_ipi(cpu: usize) {
    // SAFETY: x2APIC mode is on (callers check `available`); a fixed-delivery IPI with a vector the
    // IDT handles only interrupts the target.
    unsafe { wrmsr(X2APIC_ICR, (cpu as u64) << 32 | u64::from(TLB_VECTOR)) };
}

/// Tells the APIC the current interrupt is handled.
pub fn eoi() {
    // SAFETY: x2APIC mode is on (the interrupt came from it); writing 0 to EOI has no other effect.
    unsafe { wrmsr(X2APIC_EOI, 0) };
}

/// Lets pending interrupts in for one instruction, then turns them off again: what a CPU does
/// while it waits, so a shootdown aimed at it is answered.
pub fn interrupt_window() {
    // SAFETY: interrupts are on for the `out` (STI's one-instruction shadow covers only the nop);
    // the only interrupt enabled is the shootdown IPI, whose handler saves every register.
    unsafe {
        core::arch::asm!("sti", "nop", "out 0x80, al", "cli", in("al") 0u8, options(nomem, nostack))
    };
}
