//! Tearing mappings down: `munmap`, `exit_mmap`, and the seed's structure.
//!
//! Order (Invariant 3, the seed and "unlink vma before pagetables"):
//! `unmap_vmas` (zap PTEs, gather pages) → `free_pgtables` (for each VMA: `anon_vma_unlink` +
//! `unlink_file_vma`, then `free_pgd_range`) → `MmuGather::finish` (TLB flush, then free tables and
//! pages) → `remove_vma` (close, fput, free). Truncate and rmap walk page tables without `mmap_sem`,
//! so a VMA must be out of their reach before the tables under it are freed.

use crate::addr::{
    PhysAddr, VirtAddr, FIRST_USER_ADDRESS, PAGE_SIZE, PMD_SIZE, TASK_SIZE, USER_BASE,
};
use crate::kernel::Kernel;
use crate::mm::anon::anon_vma_unlink;
use crate::mm::error::MunmapError;
use crate::mm::file::{fput, unlink_file_vma};
use crate::mm::mm_struct::{Mm, MmStruct};
use crate::mm::mmap::SplitError;
use crate::mm::rmap::page_remove_rmap;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::{free_pgd_range, walk, MmuGather, PageTableEntry};
use crate::variant::Variant;

/// Clears every PTE of `[start, end)` in `mm`, dropping the pages' rmap and queueing their
/// references on `tlb` (Linux's `zap_page_range`). The page tables stay.
pub(crate) fn zap_range(
    k: &Kernel<'_>,
    mm: &MmStruct,
    tlb: &mut MmuGather,
    start: VirtAddr,
    end: VirtAddr,
) {
    zap_range_where(k, mm, tlb, start, end, |_| true);
}

/// [`zap_range`], for the leaves whose frame `zap` accepts only (the rest stay mapped).
pub(crate) fn zap_range_where(
    k: &Kernel<'_>,
    mm: &MmStruct,
    tlb: &mut MmuGather,
    start: VirtAddr,
    end: VirtAddr,
    zap: impl Fn(PhysAddr) -> bool,
) {
    let _ptl = mm.page_table_lock.lock(k);
    walk::for_each_leaf(k, mm.pgd(), start, end, &mut |va, slot, e| {
        if !e.holds_frame() || !zap(e.frame()) {
            return;
        }
        slot.write(k, PageTableEntry::NONE);
        if k.is_zero_page(e.frame()) {
            tlb.unmap_zero_page(va);
            return;
        }
        page_remove_rmap(k, mm, e.frame());
        tlb.remove_page(e.frame(), va);
    });
}

/// Zaps the part of each VMA from `first` on that lies in `[start, end)` (Linux's `unmap_vmas`).
pub(crate) fn unmap_vmas(
    k: &Kernel<'_>,
    mm: &MmStruct,
    tlb: &mut MmuGather,
    first: VmaPtr,
    start: VirtAddr,
    end: VirtAddr,
) {
    let mut vma = Some(first);
    while let Some(v) = vma {
        let r = v.get();
        if r.start() >= end {
            break;
        }
        zap_range(k, mm, tlb, r.start().max(start), r.end().min(end));
        vma = r.next();
    }
}

/// Hides `vma` from rmap and truncate before its page tables go (skipped, per variant, to be done
/// late by `remove_vma`).
fn unlink_for_free(k: &Kernel<'_>, vma: VmaPtr) {
    if !k.variant().defers_anon_unlink() {
        anon_vma_unlink(k, vma);
    }
    if !k.variant().defers_file_unlink() {
        unlink_file_vma(k, vma);
    }
}

/// Frees the page tables under the VMA chain starting at `vma` (linked by `vm_next`, ending in 0),
/// unlinking each VMA from rmap first; `floor` and `ceiling` bound what may be freed (Linux's
/// `free_pgtables`). VMAs closer than `PMD_SIZE` are gathered into one `free_pgd_range` call.
pub fn free_pgtables(
    k: &Kernel<'_>,
    tlb: &mut MmuGather,
    mm: &MmStruct,
    vma: VmaPtr,
    floor: VirtAddr,
    ceiling: VirtAddr,
) {
    // The patched order frees tables without page_table_lock, so the unlinks (which take
    // i_mmap_lock and the anon_vma lock, both above it) may run here; the variant shows why not.
    let _ptl = (k.variant() == Variant::UnlinkUnderPtl).then(|| mm.page_table_lock.lock(k));
    let mut cur = Some(vma);
    while let Some(first) = cur {
        let addr = first.get().start();
        let mut last = first;
        let mut next = first.get().next();
        unlink_for_free(k, first);
        // Gather neighbours whose tables overlap ours, so each table is considered once.
        while let Some(n) = next {
            if n.get().start() > last.get().end() + PMD_SIZE {
                break;
            }
            last = n;
            next = n.get().next();
            if k.variant() != Variant::GatherSkipsUnlink {
                unlink_for_free(k, n);
            }
        }
        let top = next.map_or(ceiling, |n| n.get().start());
        free_pgd_range(k, tlb, mm, addr, last.get().end(), floor, top);
        cur = next;
    }
}

/// Closes, fputs and frees `vma`, returning the next one (the seed's `remove_vma`). The VMA is
/// already hidden from rmap (except under the variants that defer the unlinks to here).
#[allow(unsafe_code)] // frees an object after its last unlink
pub fn remove_vma(k: &Kernel<'_>, vma: VmaPtr) -> Option<VmaPtr> {
    let v = vma.get();
    let next = v.next();
    if k.variant() != Variant::Correct {
        anon_vma_unlink(k, vma);
        unlink_file_vma(k, vma);
    }
    if let Some(file) = v.file() {
        if let Some(ops) = file.get().vm_ops() {
            ops.close(v);
        }
        fput(k, file);
    }
    k.hooks().vma_freed(k, v.vm_mm.get(), vma.addr());
    // SAFETY: Invariant 7: the VMA is off the mm's list and index and (unlinked above or in
    // free_pgtables) off its anon_vma and i_mmap; its successor was read before the free.
    unsafe { vma.free() };
    next
}

impl Mm {
    /// Unmaps `[start, start + len)` (Linux's `do_munmap`), splitting VMAs that straddle an end.
    pub fn munmap(&mut self, k: &Kernel<'_>, start: VirtAddr, len: u64) -> Result<(), MunmapError> {
        if !start.is_aligned(PAGE_SIZE) || len == 0 || start < USER_BASE {
            return Err(MunmapError::Invalid);
        }
        let len = VirtAddr(len)
            .checked_align_up(PAGE_SIZE)
            .ok_or(MunmapError::Invalid)?
            .0;
        if start.0 > TASK_SIZE.0 || len > TASK_SIZE.0 - start.0 {
            return Err(MunmapError::Invalid);
        }
        let end = start + len;
        let Some(mut vma) = self.find_vma(start) else {
            return Ok(());
        };
        if vma.get().start() >= end {
            return Ok(());
        }
        let split_err = |e| match e {
            SplitError::MapCount => MunmapError::MapCount,
            SplitError::VmaAlloc => MunmapError::VmaAlloc,
        };
        if start > vma.get().start() {
            // Linux refuses up front if the middle of one VMA would need two splits.
            if end < vma.get().end() && self.raw().map_count.get() >= self.raw().max_map_count.get()
            {
                return Err(MunmapError::MapCount);
            }
            vma = self.split_vma(k, vma, start).map_err(split_err)?;
        }
        if let Some(last) = self.find_vma(end - 1) {
            if last.get().start() < end && end < last.get().end() {
                self.split_vma(k, last, end).map_err(split_err)?;
            }
        }
        let prev = vma.get().prev();
        // Detach [start, end): the VMAs keep their vm_next chain, cut after the last one.
        let mut last = vma;
        let mut cur = Some(vma);
        while let Some(v) = cur {
            if v.get().start() >= end {
                break;
            }
            let next = v.get().next();
            self.account_removal(v);
            self.unlink_list(v);
            last = v;
            cur = next;
        }
        let next = cur;
        last.get().vm_next.set(0);
        vma.get().vm_prev.set(0);

        let raw = self.raw();
        let mut tlb = MmuGather::new(raw.addr(), raw.pgd());
        unmap_vmas(k, raw, &mut tlb, vma, start, end);
        let floor = prev.map_or(FIRST_USER_ADDRESS, |p| p.get().end());
        let ceiling = next.map_or(VirtAddr(0), |n| n.get().start());
        free_pgtables(k, &mut tlb, raw, vma, floor, ceiling);
        tlb.finish(k);

        let mut cur = Some(vma);
        while let Some(v) = cur {
            cur = remove_vma(k, v);
        }
        if start < self.free_area_cache() {
            self.set_free_area_cache(start);
        }
        Ok(())
    }

    fn account_removal(&self, vma: VmaPtr) {
        let v = vma.get();
        let raw = self.raw();
        raw.total_vm.sub(v.pages());
        if v.flags().contains(VmFlags::LOCKED) {
            raw.locked_vm.sub(v.pages());
        }
    }

    /// Tears down every mapping (Linux's `exit_mmap`) and asserts the postcondition: no page table
    /// below the PGD is left, no page is mapped, no VMA remains.
    pub fn exit_mmap(&mut self, k: &Kernel<'_>) {
        let raw = self.raw();
        if let Some(first) = self.first_vma() {
            let mut tlb = MmuGather::new(raw.addr(), raw.pgd());
            unmap_vmas(k, raw, &mut tlb, first, USER_BASE, TASK_SIZE);
            free_pgtables(k, &mut tlb, raw, first, FIRST_USER_ADDRESS, VirtAddr(0));
            tlb.finish(k);
            self.clear_list();
            let mut cur = Some(first);
            while let Some(v) = cur {
                cur = remove_vma(k, v);
            }
        }
        self.mark_exited();
        let raw = self.raw();
        let mut tables = 0;
        walk::for_each_user_table(k, raw.pgd(), &mut |_, _, _| tables += 1);
        // Only ignore-floor-ceiling may orphan tables (it frees a parent still used by a neighbour).
        if k.variant() != Variant::IgnoreFloorCeiling {
            assert_eq!(tables, 0, "exit_mmap left {tables} page tables");
            assert_eq!(raw.nr_ptes.get(), 0, "exit_mmap: nr_ptes");
            assert_eq!(raw.pgtables_bytes.get(), 0, "exit_mmap: pgtables_bytes");
            assert_eq!(raw.anon_rss.get() + raw.file_rss.get(), 0, "exit_mmap: rss");
        }
        assert_eq!(raw.map_count.get(), 0, "exit_mmap: map_count");
    }
}
