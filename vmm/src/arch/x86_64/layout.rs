//! The guest-physical memory map: every fixed address the VMM and the guest agree on.
//!
//! ```text
//! 0x0000_0000  null page, never used by the VMM or the guest
//! 0x0000_1000  GDT                  (GDT_START)
//! 0x0000_2000  boot info            (BOOT_INFO_START)
//! 0x0000_3000  TSS                  (TSS_START)
//! 0x0000_8000  boot PML4            (PML4_START)
//! 0x0000_9000  boot PDPT            (PDPT_START)
//! 0x0000_a000  boot PDs, 4 pages    (PD_START): identity map of RAM in 2 MiB pages
//! 0x0010_0000  kernel image         (KERNEL_START), up to the end of its last PT_LOAD segment
//!              per-CPU stacks       (STACK_SIZE each, right after the kernel, 4 KiB aligned)
//!              free RAM             frame allocator, up to the end of RAM (at most MAX_RAM)
//! 0xfffb_d000  KVM's real-mode TSS  (KVM_TSS_ADDRESS), three pages, Intel hosts only
//! ```

use vm_memory::GuestAddress;

/// The GDT the VMM writes: null, kernel code, kernel data, TSS (two slots).
pub const GDT_START: GuestAddress = GuestAddress(0x1000);
/// The boot-info page (`mm_core::abi::BootInfo`), passed to every vCPU in `rdi`.
pub const BOOT_INFO_START: GuestAddress = GuestAddress(0x2000);
/// A zeroed 64-bit TSS: long mode requires a valid task register.
pub const TSS_START: GuestAddress = GuestAddress(0x3000);
/// Top-level table of the boot page tables.
pub const PML4_START: GuestAddress = GuestAddress(0x8000);
/// The one PDPT: the boot tables cover the first 512 GiB, of which RAM uses at most 4 GiB.
pub const PDPT_START: GuestAddress = GuestAddress(0x9000);
/// First of [`PD_PAGES`] page directories mapping RAM with 2 MiB pages.
pub const PD_START: GuestAddress = GuestAddress(0xa000);
/// Page directories reserved for the identity map: one per GiB of RAM.
pub const PD_PAGES: u64 = 4;
/// Where the kernel image may start; the low megabyte belongs to the VMM.
pub const KERNEL_START: GuestAddress = GuestAddress(0x10_0000);
/// Size of each vCPU's kernel stack.
pub const STACK_SIZE: u64 = 64 << 10;

/// Size of one boot page-table page (mm-core's page size: one definition).
pub use mm_core::addr::PAGE_SIZE;
/// Size of one large page of the identity map: what one PMD entry maps.
pub const LARGE_PAGE_SIZE: u64 = mm_core::addr::PMD_SIZE;

/// Smallest RAM the VM accepts.
pub const MIN_RAM: u64 = 16 << 20;
/// Where the real-mode TSS goes on Intel hosts (KVM_SET_TSS_ADDR): three pages just below 4 GiB,
/// above any RAM the VM can have ([`MAX_RAM`]).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Largest RAM the boot page tables can map.
pub const MAX_RAM: u64 = PD_PAGES << 30;
/// RAM when the user names none.
pub const DEFAULT_RAM: u64 = 256 << 20;
