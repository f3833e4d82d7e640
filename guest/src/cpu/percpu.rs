//! Per-CPU data, reached through the GS base while in the kernel.
//!
//! In the kernel, `IA32_GS_BASE` points at this vCPU's [`PerCpu`] and `IA32_KERNEL_GS_BASE` holds
//! the user's GS base (0); `swapgs` exchanges them on every crossing between ring 3 and ring 0. The
//! assembly of `user` addresses the fields by the offsets below.

use crate::cpu::gdt;
use core::cell::UnsafeCell;
use mm_core::abi::MAX_VCPUS;

/// One vCPU's data.
#[repr(C)]
pub struct PerCpu {
    /// Where `user::exit_to_kernel` resumes the kernel (the stack of `user::enter_user`); traps
    /// from ring 3 start just below it (the TSS's `rsp0` holds the same value).
    pub resume_rsp: u64,
    /// This vCPU's TSS.
    pub tss: u64,
    /// This vCPU's index.
    pub cpu: u64,
}

/// Offset of [`PerCpu::resume_rsp`], for the assembly.
pub const OFF_RESUME_RSP: usize = core::mem::offset_of!(PerCpu, resume_rsp);
/// Offset of [`PerCpu::tss`], for the assembly.
pub const OFF_TSS: usize = core::mem::offset_of!(PerCpu, tss);

struct Table(UnsafeCell<[PerCpu; MAX_VCPUS]>);

// SAFETY: vCPU `i` touches only entry `i`.
unsafe impl Sync for Table {}

static PERCPU: Table = Table(UnsafeCell::new(
    [const {
        PerCpu {
            resume_rsp: 0,
            tss: 0,
            cpu: 0,
        }
    }; MAX_VCPUS],
));

const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the caller owns the consequences.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags));
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

const IA32_EFER: u32 = 0xc000_0080;
/// EFER: the no-execute bit of page-table entries is honoured (mm-core sets it on non-exec pages).
const EFER_NXE: u64 = 1 << 11;
/// CPUID 0x8000_0001 EDX: NX supported.
const CPUID_NX: u32 = 1 << 20;

/// Turns on no-execute pages: without EFER.NXE a PTE with bit 63 set is a reserved-bit fault.
fn enable_nx() {
    let edx = core::arch::x86_64::__cpuid(0x8000_0001).edx;
    assert!(
        edx & CPUID_NX != 0,
        "this CPU has no NX bit; mm-core's page tables need it"
    );
    // SAFETY: EFER exists in long mode; NXE only changes how bit 63 of a PTE is read.
    unsafe { wrmsr(IA32_EFER, rdmsr(IA32_EFER) | EFER_NXE) };
}

/// Sets up vCPU `cpu`'s per-CPU data, GDT and TSS; `stack_top` is its kernel stack's top.
pub fn init(cpu: usize, stack_top: u64) {
    // SAFETY: only this vCPU touches entry `cpu`, here, before GS points at it.
    let this = unsafe { &mut (*PERCPU.0.get())[cpu] };
    this.cpu = cpu as u64;
    this.tss = gdt::tss_of(cpu) as u64;
    gdt::init(cpu, stack_top);
    enable_nx();
    // SAFETY: both MSRs exist on x86_64; GS is not used by compiled code, only by the trap entry.
    unsafe {
        wrmsr(IA32_GS_BASE, this as *mut PerCpu as u64);
        wrmsr(IA32_KERNEL_GS_BASE, 0);
    }
}

/// This vCPU's index, from its per-CPU data (valid after [`init`], in the kernel).
pub fn this_cpu() -> usize {
    let cpu: u64;
    // SAFETY: in the kernel GS points at this vCPU's PerCpu; `cpu` is at a fixed offset.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) cpu, off = const core::mem::offset_of!(PerCpu, cpu),
            options(nostack, readonly, preserves_flags));
    }
    cpu as usize
}
