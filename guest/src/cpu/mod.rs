//! CPU set-up and the ring boundary: what every vCPU needs before the kernel can run on it.
//!
//! - [`gdt`], [`percpu`]: each vCPU's GDT, TSS and per-CPU data (reached through GS).
//! - [`idt`]: the interrupt descriptor table.
//! - [`apic`]: the local APIC (x2APIC), for TLB-shootdown IPIs.
//! - [`trap`]: trap entry and dispatch (exceptions, interrupts and system calls).
//! - [`user`]: entering ring 3 and coming back; the user segment.
//! - [`smp`]: vCPU check-in and the start barrier.
pub mod apic;
pub mod gdt;
pub mod idt;
pub mod percpu;
pub mod smp;
pub mod trap;
pub mod user;
