//! Register state that enters a vCPU directly in 64-bit long mode.

use super::gdt::{boot_segments, gdt_entries};
use super::layout::{GDT_START, TSS_START};
use kvm_bindings::{kvm_regs, kvm_sregs, CpuId};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// CR0: protection on.
const CR0_PE: u64 = 1 << 0;
/// CR0: x87 errors reported natively.
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
/// CR0: ring 0 honours read-only pages.
const CR0_WP: u64 = 1 << 16;
/// CR0: paging on.
const CR0_PG: u64 = 1 << 31;
/// CR4: physical address extension (required for long mode).
const CR4_PAE: u64 = 1 << 5;
/// EFER: long mode enabled and active.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Writes the GDT and an empty TSS to guest memory. Done once per VM.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    let entries = gdt_entries(&boot_segments(TSS_START.0));
    for (i, entry) in entries.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START.0 + 8 * i as u64))?;
    }
    Ok(())
}

/// Special registers for long mode with the boot GDT, no IDT (the guest loads its own) and `cr3`.
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let segs = boot_segments(TSS_START.0);
    sregs.gdt.base = GDT_START.0;
    sregs.gdt.limit = (gdt_entries(&segs).len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = segs.code;
    sregs.ds = segs.data;
    sregs.es = segs.data;
    sregs.fs = segs.data;
    sregs.gs = segs.data;
    sregs.ss = segs.data;
    sregs.tr = segs.tss;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers at entry: `rip` at the kernel entry, `rsp` at the top of the vCPU's stack, the
/// boot-info address in `rdi` and the vCPU index in `rsi` (the SysV argument registers).
pub fn entry_regs(entry: u64, stack_top: u64, boot_info: u64, cpu: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        // As if `call` had pushed a return address: the SysV ABI expects rsp % 16 == 8 at entry.
        rsp: stack_top - 8,
        rdi: boot_info,
        rsi: cpu,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// The CPUID KVM supports, with this vCPU's index as its initial APIC ID (leaf 1, EBX[31:24]).
pub fn vcpu_cpuid(mut cpuid: CpuId, cpu: u8) -> CpuId {
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(cpu) << 24);
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_sregs_enable_paging_pae_and_lma() {
        let s = long_mode_sregs(kvm_sregs::default(), 0x8000);
        assert_eq!(s.cr3, 0x8000);
        assert!(s.cr0 & CR0_PG != 0 && s.cr0 & CR0_PE != 0);
        assert!(s.cr4 & CR4_PAE != 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1, "64-bit code segment");
    }

    #[test]
    fn entry_stack_is_aligned_as_after_a_call() {
        let r = entry_regs(0x10_0000, 0x20_0000, 0x2000, 1);
        assert_eq!(r.rsp % 16, 8);
        assert_eq!((r.rdi, r.rsi), (0x2000, 1));
    }
}
