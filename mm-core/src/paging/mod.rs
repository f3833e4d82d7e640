//! 4-level x86_64 page tables.
//!
//! - [`entry`]: typed entries ([`PageTableEntry`], [`PteFlags`]) and [`Level`]s.
//! - [`table`]: the only code that touches table memory (raw reads and writes of entries).
//! - [`walk`]: lookups, allocation on demand, and leaf iteration over a range.
//! - [`gather`]: the [`MmuGather`] that holds freed pages and tables until after the TLB flush.
//! - [`free`]: `free_pgd_range` with Linux's floor/ceiling rules.
//! - `native` (bare-metal builds only): `NativeTlb`, flushing with `invlpg` / a CR3 reload.
//!
//! Protocol: a page-table page is unhooked from its parent, then the TLB is flushed for its span,
//! then it goes back to the allocator (Invariant 4); the VMAs whose range it maps left rmap's reach
//! before it was unhooked (Invariant 3).

pub mod entry;
pub mod free;
pub mod gather;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[allow(unsafe_code)]
pub mod native;
#[allow(unsafe_code)]
pub mod table;
pub mod walk;

pub use entry::{Level, PageTableEntry, PteFlags};
pub use free::free_pgd_range;
pub use gather::{CountingTlb, MmuGather, TlbFlush};
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use native::NativeTlb;
