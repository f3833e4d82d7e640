//! Raw access to page-table memory: the only place entries are read or written.
//!
//! Callers pass frames that are page-table pages of a live mm: the PGD, or a frame read from a
//! present upper-level entry (Invariant 6 in the crate root). Debug builds check the frame's
//! `PAGETABLE` flag on every access.

use crate::addr::{PhysAddr, PTRS_PER_TABLE};
use crate::kernel::Kernel;
use crate::paging::PageTableEntry;
use crate::phys::PageFlags;

fn slot(k: &Kernel<'_>, table: PhysAddr, index: usize) -> *mut u64 {
    assert!(
        index < PTRS_PER_TABLE,
        "page-table index {index} out of range"
    );
    debug_assert!(
        k.page(table).page_flags().contains(PageFlags::PAGETABLE),
        "{table} is not a page-table page"
    );
    // SAFETY: index < 512 keeps the offset inside the 4 KiB frame that PhysMem maps for us.
    unsafe { k.phys().frame_ptr(table).cast::<u64>().add(index) }
}

/// Entry `index` of `table`.
pub(crate) fn read(k: &Kernel<'_>, table: PhysAddr, index: usize) -> PageTableEntry {
    let p = slot(k, table, index);
    // SAFETY: `slot` returns an 8-byte-aligned pointer inside an allocated page-table frame
    // (PhysMem contract: valid for reads); volatile because the MMU writes A/D bits behind our back.
    PageTableEntry::from_bits(unsafe { p.read_volatile() })
}

/// Sets entry `index` of `table` to `entry`.
pub(crate) fn write(k: &Kernel<'_>, table: PhysAddr, index: usize, entry: PageTableEntry) {
    let p = slot(k, table, index);
    // SAFETY: as in `read`; a single aligned 8-byte store is atomic on x86_64, so the MMU never sees
    // a torn entry.
    unsafe { p.write_volatile(entry.bits()) }
}
