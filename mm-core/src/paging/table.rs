//! Raw access to page-table memory: the only place entries are read or written.
//!
//! Callers pass frames that are page-table pages of a live mm: the PGD, or a frame read from a
//! present upper-level entry (Invariant 6 in the crate root). Every access checks that the frame
//! is RAM mm-core manages (it has a `Page`), which `PhysMem` maps for as long as the kernel runs,
//! and every write that its `Page` says page table: `read` and `write` are safe because a wrong
//! frame panics here instead of touching memory mm-core does not own. A read of a table just freed
//! is allowed (debug builds still refuse it): it is the use after free a racing walker can commit
//! when the ordering rule is broken, and the poison the host wrote there is how it is caught.

use crate::addr::{PhysAddr, PTRS_PER_TABLE};
use crate::kernel::Kernel;
use crate::paging::PageTableEntry;
use crate::phys::PageFlags;

fn slot(k: &Kernel<'_>, table: PhysAddr, index: usize, write: bool) -> *mut u64 {
    assert!(
        index < PTRS_PER_TABLE,
        "page-table index {index} out of range"
    );
    // `page` panics for a frame outside the mem_map.
    let is_table = k.page(table).page_flags().contains(PageFlags::PAGETABLE);
    if write {
        assert!(is_table, "write to {table}, which is not a page-table page");
    } else {
        debug_assert!(is_table, "read of {table}, which is not a page-table page");
    }
    // SAFETY: the frame has a `Page`, so it is RAM `PhysMem` maps (its contract); index < 512
    // keeps the offset inside its 4 KiB.
    unsafe { k.phys().frame_ptr(table).cast::<u64>().add(index) }
}

/// A page-table root mm-core did not allocate (the boot page tables), whose kernel entries new
/// address spaces copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPgd(PhysAddr);

impl KernelPgd {
    /// The root at `frame`.
    ///
    /// # Safety
    /// `frame` is a page-table root that `PhysMem` maps (valid for 4 KiB of reads) for as long as
    /// the value is used: mm-core reads its entries without the page-table check `read` makes.
    pub const unsafe fn new(frame: PhysAddr) -> Self {
        KernelPgd(frame)
    }

    /// Its frame.
    pub fn frame(self) -> PhysAddr {
        self.0
    }

    /// Its entry `index`.
    pub(crate) fn entry(self, k: &Kernel<'_>, index: usize) -> PageTableEntry {
        assert!(
            index < PTRS_PER_TABLE,
            "page-table index {index} out of range"
        );
        // SAFETY: `new`'s caller promised the frame is mapped for reads; index < 512 keeps the
        // 8-byte read inside it.
        let p = unsafe { k.phys().frame_ptr(self.0).cast::<u64>().add(index) };
        // SAFETY: as above; volatile as in `read`.
        PageTableEntry::from_bits(unsafe { p.read_volatile() })
    }
}

/// Entry `index` of `table`.
pub(crate) fn read(k: &Kernel<'_>, table: PhysAddr, index: usize) -> PageTableEntry {
    let p = slot(k, table, index, false);
    // SAFETY: `slot` returns an 8-byte-aligned pointer inside an allocated page-table frame
    // (PhysMem contract: valid for reads); volatile because the MMU writes A/D bits behind our back.
    PageTableEntry::from_bits(unsafe { p.read_volatile() })
}

/// Sets entry `index` of `table` to `entry`.
pub(crate) fn write(k: &Kernel<'_>, table: PhysAddr, index: usize, entry: PageTableEntry) {
    let p = slot(k, table, index, true);
    // SAFETY: as in `read`; a single aligned 8-byte store is atomic on x86_64, so the MMU never sees
    // a torn entry.
    unsafe { p.write_volatile(entry.bits()) }
}
