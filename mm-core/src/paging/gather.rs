//! The mmu_gather: pages and page-table pages wait here until the TLB has been flushed.
//!
//! Order enforced by [`MmuGather::finish`] (Invariant 4): flush the TLB for everything gathered,
//! then free the page-table pages, then drop the data pages' references. A CPU that still caches a
//! translation through a freed table would otherwise walk a frame someone else now owns.

use alloc::vec::Vec;
use core::cell::Cell;

use crate::addr::{PhysAddr, VirtAddr};
use crate::hooks::TableEvent;
use crate::kernel::Kernel;
use crate::phys::AllocKind;
use crate::variant::Variant;

/// The architecture's TLB shootdown primitive.
pub trait TlbFlush {
    /// Invalidates every translation of `[start, end)` cached for the address space rooted at `pgd`
    /// (on every CPU that may cache it), including paging-structure caches.
    fn flush_range(&self, pgd: PhysAddr, start: VirtAddr, end: VirtAddr);
}

/// A host TLB that only counts flushes.
#[derive(Debug, Default)]
pub struct CountingTlb {
    flushes: Cell<u64>,
}

impl CountingTlb {
    /// Flushes so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.get()
    }
}

impl TlbFlush for CountingTlb {
    fn flush_range(&self, _pgd: PhysAddr, _start: VirtAddr, _end: VirtAddr) {
        self.flushes.set(self.flushes.get() + 1);
    }
}

/// Pages and tables unmapped from one mm, waiting for the TLB flush.
pub struct MmuGather {
    mm: u64,
    pgd: PhysAddr,
    start: VirtAddr,
    end: VirtAddr,
    pages: Vec<PhysAddr>,
    tables: Vec<TableEvent>,
}

impl MmuGather {
    /// Starts gathering for the mm at address `mm` rooted at `pgd` (Linux's `tlb_gather_mmu`).
    pub fn new(mm: u64, pgd: PhysAddr) -> Self {
        Self {
            mm,
            pgd,
            start: VirtAddr(u64::MAX),
            end: VirtAddr(0),
            pages: Vec::new(),
            tables: Vec::new(),
        }
    }

    fn track(&mut self, start: VirtAddr, end: VirtAddr) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
    }

    /// Queues one reference to data page `frame`, unmapped at `va` (Linux's `tlb_remove_page`).
    pub fn remove_page(&mut self, frame: PhysAddr, va: VirtAddr) {
        self.track(va, va + crate::addr::PAGE_SIZE);
        self.pages.push(frame);
    }

    /// Records that the zero page was unmapped at `va`: the range needs its flush, but the page
    /// has no reference to drop.
    pub fn unmap_zero_page(&mut self, va: VirtAddr) {
        self.track(va, va + crate::addr::PAGE_SIZE);
    }

    /// Queues a page-table page that was just unhooked from its parent (Linux's `pte_free_tlb` and
    /// friends). Under [`Variant::FreeBeforeFlush`] it is freed at once instead.
    pub fn free_table(&mut self, k: &Kernel<'_>, ev: TableEvent) {
        self.track(ev.start, ev.end);
        let ev = if k.variant() == Variant::WrongSpan {
            TableEvent {
                end: ev.start + ev.level.entry_span(),
                ..ev
            }
        } else {
            ev
        };
        k.hooks().table_unhooked(k, &ev);
        if k.variant() == Variant::FreeBeforeFlush {
            k.hooks().table_freeing(k, &ev);
            k.free_frame(ev.frame, AllocKind::PageTable);
        } else {
            self.tables.push(ev);
        }
    }

    /// Whether anything is waiting for a flush.
    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    /// Flushes the TLB for everything gathered, then frees the tables and pages (Linux's
    /// `tlb_finish_mmu`).
    pub fn finish(mut self, k: &Kernel<'_>) {
        if !self.is_empty() {
            k.flush_tlb_range(self.mm, self.pgd, self.start, self.end);
        }
        for ev in self.tables.drain(..) {
            k.hooks().table_freeing(k, &ev);
            k.free_frame(ev.frame, AllocKind::PageTable);
        }
        for frame in self.pages.drain(..) {
            k.put_page(frame);
        }
    }
}

impl Drop for MmuGather {
    fn drop(&mut self) {
        debug_assert!(
            self.pages.is_empty() && self.tables.is_empty(),
            "MmuGather dropped without finish(): frames would leak"
        );
    }
}
