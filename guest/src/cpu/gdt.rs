//! Each vCPU's own GDT and TSS: kernel and user segments, and the TSS whose `rsp0` is the stack the
//! CPU switches to when an exception or interrupt arrives in ring 3.

use core::arch::asm;
use core::cell::UnsafeCell;
use mm_core::abi::MAX_VCPUS;

/// Kernel code segment (the VMM's boot GDT uses the same selectors).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data and stack segment.
pub const KERNEL_DS: u16 = 0x10;
/// User data and stack segment, RPL 3.
pub const USER_DS: u16 = 0x18 | 3;
/// User code segment, RPL 3.
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS (a 16-byte descriptor).
const TSS_SELECTOR: u16 = 0x28;

/// Flat descriptors: present, DPL, code/data, long mode (code) or 32-bit default size (data), 4 KiB
/// granularity, limit 0xfffff.
const fn flat(dpl: u64, code: bool) -> u64 {
    let access = if code { 0x9b } else { 0x93 } | (dpl << 5);
    let flags = if code { 0xa } else { 0xc };
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
pub struct Tss {
    reserved0: u32,
    /// Stack for traps from ring 3.
    pub rsp0: u64,
    rsp1: u64,
    rsp2: u64,
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const _: () = assert!(core::mem::size_of::<Tss>() == 104);

/// One vCPU's descriptor table: null, kernel code, kernel data, user data, user code, TSS.
#[repr(C, align(16))]
struct Gdt([u64; 7]);

struct PerCpuTables {
    gdt: UnsafeCell<[Gdt; MAX_VCPUS]>,
    tss: UnsafeCell<[Tss; MAX_VCPUS]>,
}

// SAFETY: vCPU `i` touches only entry `i` of each array (in `init` and through `tss_of`).
unsafe impl Sync for PerCpuTables {}

const EMPTY_TSS: Tss = Tss {
    reserved0: 0,
    rsp0: 0,
    rsp1: 0,
    rsp2: 0,
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    // No I/O permission bitmap: ring 3 may not use port I/O.
    iomap_base: core::mem::size_of::<Tss>() as u16,
};

static TABLES: PerCpuTables = PerCpuTables {
    gdt: UnsafeCell::new([const { Gdt([0; 7]) }; MAX_VCPUS]),
    tss: UnsafeCell::new([EMPTY_TSS; MAX_VCPUS]),
};

/// The TSS of vCPU `cpu`.
pub fn tss_of(cpu: usize) -> *mut Tss {
    // SAFETY: in bounds for cpu < MAX_VCPUS (the VMM never starts more vCPUs).
    unsafe { (TABLES.tss.get() as *mut Tss).add(cpu) }
}

/// Builds and loads vCPU `cpu`'s GDT and TSS, with `rsp0` as the ring-3 trap stack.
pub fn init(cpu: usize, rsp0: u64) {
    let tss = tss_of(cpu);
    // SAFETY: only this vCPU touches its entries, and it does so before loading them.
    let gdt = unsafe {
        (*tss).rsp0 = rsp0;
        &mut (*TABLES.gdt.get())[cpu]
    };
    let base = tss as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    // Present, DPL 0, type 9 (available 64-bit TSS).
    let tss_low = limit | ((base & 0xff_ffff) << 16) | (0x89 << 40) | (((base >> 24) & 0xff) << 56);
    gdt.0 = [
        0,
        flat(0, true),
        flat(0, false),
        flat(3, false),
        flat(3, true),
        tss_low,
        base >> 32,
    ];

    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: gdt as *const Gdt as u64,
    };
    // SAFETY: the new table keeps the kernel code and data selectors of the boot GDT with the same
    // descriptors, so reloading CS (far return) and the data segments is seamless; `ltr` marks the
    // TSS busy, which is why each vCPU has its own.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "ltr {tr:x}",
            ptr = in(reg) &pointer,
            cs = const KERNEL_CS as u64,
            tmp = out(reg) _,
            ds = in(reg) KERNEL_DS as u64,
            tr = in(reg) TSS_SELECTOR as u64,
        );
    }
}
