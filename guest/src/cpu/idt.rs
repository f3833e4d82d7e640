//! The interrupt descriptor table: every CPU exception goes to `trap::dispatch`, which handles
//! user page faults and reports anything else to the host (`Ucall::Exception`).
//!
//! Besides the 32 exception vectors only the APIC's TLB-shootdown and spurious vectors are
//! installed; any other vector's gate is not present, so a stray interrupt arrives as #NP and is
//! reported too.

use crate::cpu::apic;
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// Kernel code segment selector in the VMM's GDT.
const KERNEL_CS: u16 = 0x08;
/// Number of exception vectors.
const EXCEPTIONS: usize = 32;
/// Number of gates in the table (every vector).
const VECTORS: usize = 256;
/// The breakpoint vector, which ring 3 uses for system calls (`int3`; see `trap`).
pub const SYSCALL_VECTOR: usize = 3;

/// One 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// Present, DPL 0, 64-bit interrupt gate (interrupts stay off in the handler).
    const INTERRUPT_GATE: u8 = 0x8e;
    /// Descriptor privilege level 3: ring 3 may raise this vector with `int`.
    const DPL3: u8 = 3 << 5;

    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: 0,
            type_attr: Self::INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

struct Idt(UnsafeCell<[Gate; VECTORS]>);

// SAFETY: vCPU 0 writes the table once in `init`, before `smp::mark_idt_ready` releases the other
// vCPUs; afterwards it is only read (by the CPUs).
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; VECTORS]));

// One stub per vector: vectors without a CPU-pushed error code push 0 so every frame looks alike;
// then `trap_common` (in trap.rs) saves the registers and dispatches.
global_asm!(
    r#"
    .macro EXC_STUB vec, has_error
    .global exc_stub_\vec
    exc_stub_\vec:
    .if \has_error == 0
        push 0
    .endif
        push \vec
        jmp trap_common
    .endm

    .section .text
    EXC_STUB 0,0
    EXC_STUB 1,0
    EXC_STUB 2,0
    EXC_STUB 3,0
    EXC_STUB 4,0
    EXC_STUB 5,0
    EXC_STUB 6,0
    EXC_STUB 7,0
    EXC_STUB 8,1
    EXC_STUB 9,0
    EXC_STUB 10,1
    EXC_STUB 11,1
    EXC_STUB 12,1
    EXC_STUB 13,1
    EXC_STUB 14,1
    EXC_STUB 15,0
    EXC_STUB 16,0
    EXC_STUB 17,1
    EXC_STUB 18,0
    EXC_STUB 19,0
    EXC_STUB 20,0
    EXC_STUB 21,1
    EXC_STUB 22,0
    EXC_STUB 23,0
    EXC_STUB 24,0
    EXC_STUB 25,0
    EXC_STUB 26,0
    EXC_STUB 27,0
    EXC_STUB 28,0
    EXC_STUB 29,1
    EXC_STUB 30,1
    EXC_STUB 31,0
    EXC_STUB 0xf0,0
    EXC_STUB 0xff,0

    .section .rodata
    .balign 8
    exc_stub_table:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc_stub_\vec
    .endr
    .global exc_stub_table
    "#,
);

extern "C" {
    /// Addresses of the 32 stubs, from the assembly above.
    static exc_stub_table: [u64; EXCEPTIONS];
    /// The TLB-shootdown IPI's stub.
    fn exc_stub_0xf0();
    /// The APIC's spurious-interrupt stub.
    fn exc_stub_0xff();
}

/// Builds the table and loads it on this vCPU. Called once, by vCPU 0.
pub fn init() {
    // SAFETY: see `Idt`'s Sync: no other vCPU reads the table before `mark_idt_ready`, and the stub
    // table is immutable data from the assembly above.
    unsafe {
        let gates = &mut *IDT.0.get();
        for (gate, &stub) in gates.iter_mut().zip(exc_stub_table.iter()) {
            *gate = Gate::interrupt(stub);
        }
        gates[SYSCALL_VECTOR].type_attr |= Gate::DPL3;
        gates[usize::from(apic::TLB_VECTOR)] = Gate::interrupt(exc_stub_0xf0 as *const () as u64);
        gates[usize::from(apic::SPURIOUS_VECTOR)] =
            Gate::interrupt(exc_stub_0xff as *const () as u64);
    }
    load();
}

/// Loads the shared table on this vCPU.
pub fn load() {
    lidt(
        IDT.0.get() as u64,
        (VECTORS * core::mem::size_of::<Gate>() - 1) as u16,
    );
}

/// Loads an empty table: any exception after this ends in a triple fault.
pub fn unload() {
    lidt(0, 0);
}

fn lidt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit, base };
    // SAFETY: the pointer names either the static IDT, complete with valid gates, or an empty
    // table (limit 0), which is what the triple-fault scenario asks for.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}
