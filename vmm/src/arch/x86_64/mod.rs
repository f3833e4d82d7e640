//! x86_64 boot: the guest-physical memory map, the GDT, the boot page tables and the register
//! state that puts a vCPU straight into 64-bit long mode; the exception vectors' names.
pub mod exception;
pub mod gdt;
pub mod layout;
pub mod paging;
pub mod regs;
