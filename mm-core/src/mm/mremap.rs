//! `mremap` (Linux's mm/mremap.c): shrink a mapping in place, grow it in place when the space after
//! it is free, or move it — a new VMA with the same flags, backing and offset, the present pages'
//! entries moved to it (`move_page_tables`), then the old range unmapped, which frees the old
//! tables through `free_pgtables` like any munmap.
//!
//! A moved anonymous VMA keeps its `vm_pgoff` when it has an anon_vma (its pages' `index` is
//! relative to it, for rmap), and takes its new address's when it has none, as `copy_vma` does.

use alloc::vec::Vec;

use crate::addr::{VirtAddr, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, USER_BASE};
use crate::kernel::Kernel;
use crate::mm::error::MremapError;
use crate::mm::file::get_file;
use crate::mm::mm_struct::Mm;
use crate::mm::mmap::new_vma;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::walk::{self, lookup, pte_alloc};
use crate::paging::PageTableEntry;
use crate::phys::AllocKind;

/// `MREMAP_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MremapFlags(pub u64);

impl MremapFlags {
    /// `MREMAP_MAYMOVE`: the mapping may move if it cannot grow in place.
    pub const MAYMOVE: Self = Self(1);
    /// `MREMAP_FIXED`: move to exactly `new_addr` (with `MAYMOVE`).
    pub const FIXED: Self = Self(2);
    /// `MREMAP_DONTUNMAP`: leave the old range mapped but empty (not supported here: `EINVAL`).
    pub const DONTUNMAP: Self = Self(4);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl Mm {
    /// Resizes or moves the mapping at `old` (Linux's `sys_mremap`); returns where it is now.
    /// `[old, old + old_len)` must lie in one VMA.
    pub fn mremap(
        &mut self,
        k: &Kernel<'_>,
        old: VirtAddr,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: VirtAddr,
    ) -> Result<VirtAddr, MremapError> {
        let fixed = flags.contains(MremapFlags::FIXED);
        let known = MremapFlags::MAYMOVE.0 | MremapFlags::FIXED.0;
        if flags.0 & !known != 0
            || (fixed && !flags.contains(MremapFlags::MAYMOVE))
            || !old.is_aligned(PAGE_SIZE)
            || old < USER_BASE
        {
            return Err(MremapError::Invalid);
        }
        let page = |n: u64| VirtAddr(n).checked_align_up(PAGE_SIZE).map(|a| a.0);
        let (Some(old_len), Some(new_len)) = (page(old_len), page(new_len)) else {
            return Err(MremapError::Invalid);
        };
        let fits =
            |start: VirtAddr, len: u64| start.0 <= TASK_SIZE.0 && len <= TASK_SIZE.0 - start.0;
        if new_len == 0 || old_len == 0 || !fits(old, old_len) {
            return Err(MremapError::Invalid);
        }
        if fixed {
            let overlap = new_addr < old + old_len && old < new_addr + new_len;
            if !new_addr.is_aligned(PAGE_SIZE)
                || new_addr < USER_BASE
                || !fits(new_addr, new_len)
                || overlap
            {
                return Err(MremapError::Invalid);
            }
        }
        let vma = self.vma_at(old).ok_or(MremapError::NotMapped)?;
        if old + old_len > vma.get().end() {
            return Err(MremapError::NotMapped);
        }
        if fixed {
            self.munmap(k, new_addr, new_len)
                .map_err(|_| MremapError::NoMemory)?;
        }
        // Shrinking unmaps the tail first; a fixed move then moves what is left.
        let old_len = if new_len < old_len {
            self.munmap(k, old + new_len, old_len - new_len)
                .map_err(|_| MremapError::NoMemory)?;
            if !fixed {
                return Ok(old);
            }
            new_len
        } else {
            old_len
        };
        let vma = self.vma_at(old).ok_or(MremapError::NotMapped)?;
        if !fixed && new_len == old_len {
            return Ok(old);
        }
        if !fixed && old + old_len == vma.get().end() && fits(old, new_len) {
            let (end, new_end) = (old + old_len, old + new_len);
            if self.range_is_free(end, new_end) {
                self.expand(k, vma, new_end);
                return Ok(old);
            }
        }
        if !flags.contains(MremapFlags::MAYMOVE) {
            return Err(MremapError::NoMemory);
        }
        let to = if fixed {
            new_addr
        } else if new_len > TASK_SIZE - USER_BASE {
            return Err(MremapError::NoMemory);
        } else {
            self.get_unmapped_area(VirtAddr(0), new_len)
                .ok_or(MremapError::NoMemory)?
        };
        self.move_vma(k, vma, old, old_len, to, new_len)?;
        Ok(to)
    }

    /// Grows `vma` to end at `end` (the space is free), then merges it with its successor.
    fn expand(&mut self, k: &Kernel<'_>, vma: VmaPtr, end: VirtAddr) {
        let pages = (end - vma.get().end()) >> PAGE_SHIFT;
        self.set_vma_end(k, vma, end);
        let raw = self.raw();
        raw.total_vm.add(pages);
        if vma.get().flags().contains(VmFlags::LOCKED) {
            raw.locked_vm.add(pages);
        }
        if let Some(next) = vma.get().next() {
            self.try_merge(k, vma, next);
        }
    }

    /// Moves `[old, old + old_len)` of `vma` to a new VMA at `[to, to + new_len)` (free), with its
    /// pages, then unmaps the old range (Linux's `move_vma`).
    fn move_vma(
        &mut self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        old: VirtAddr,
        old_len: u64,
        to: VirtAddr,
        new_len: u64,
    ) -> Result<(), MremapError> {
        if self.raw().map_count.get() >= self.raw().max_map_count.get() {
            return Err(MremapError::NoMemory);
        }
        let v = vma.get();
        let present = present_pages(k, self, old, old + old_len);
        // Every destination table first, so a failed allocation changes nothing but empty tables.
        for &va in &present {
            pte_alloc(k, self.raw(), to + (va - old)).ok_or(MremapError::NoMemory)?;
        }
        if !k.may_alloc(AllocKind::Vma) {
            return Err(MremapError::NoMemory);
        }
        let pgoff = if v.file().is_none() && v.anon().is_none() {
            to.page_index()
        } else {
            v.pgoff() + ((old - v.start()) >> PAGE_SHIFT)
        };
        let new = new_vma(self, to, to + new_len, v.flags(), v.file(), pgoff);
        new.get().anon_vma.set(v.anon_vma.get());
        if let Some(f) = v.file() {
            get_file(f);
        }
        let prev = self.find_vma_prev(to);
        self.vma_link(k, new, prev);
        let pages = new_len >> PAGE_SHIFT;
        let raw = self.raw();
        raw.total_vm.add(pages);
        if v.flags().contains(VmFlags::LOCKED) {
            raw.locked_vm.add(pages);
        }
        move_ptes(k, self, vma, old, old + old_len, to);
        // The old range is empty now: unmapping it frees its tables, checked like any munmap.
        self.munmap(k, old, old_len)
            .map_err(|_| MremapError::NoMemory)?;
        self.merge_with_neighbours(k, new);
        Ok(())
    }
}

/// Addresses in `[start, end)` of `mm` whose entries hold a frame.
fn present_pages(k: &Kernel<'_>, mm: &Mm, start: VirtAddr, end: VirtAddr) -> Vec<VirtAddr> {
    let raw = mm.raw();
    let _ptl = raw.page_table_lock.lock(k);
    let mut out = Vec::new();
    walk::for_each_leaf(k, raw.pgd(), start, end, &mut |va, _, e| {
        if e.holds_frame() {
            out.push(va);
        }
    });
    out
}

/// Moves every entry holding a frame in `[start, end)` of `vma` to the same offset from `to`,
/// whose tables exist (Linux's `move_ptes`), then flushes the old range. An entry that appeared
/// since the tables were allocated (none can: faults need `&mut Mm`) would stay, to be zapped
/// with the old range.
///
/// The rmap locks are held across the move, as Linux's `take_rmap_locks` does: a walker (reclaim,
/// truncate) that found the old or the new VMA must not miss a page between the two.
fn move_ptes(k: &Kernel<'_>, mm: &Mm, vma: VmaPtr, start: VirtAddr, end: VirtAddr, to: VirtAddr) {
    let v = vma.get();
    let mapping = v.file().map(|f| f.get().mapping());
    let _i_mmap = mapping.as_ref().map(|m| m.get().lock_i_mmap(k));
    let anon = v.anon();
    let _anon = anon.as_ref().map(|a| a.get().lock.lock(k));
    let raw = mm.raw();
    let ptl = raw.page_table_lock.lock(k);
    walk::for_each_leaf(k, raw.pgd(), start, end, &mut |va, slot, e| {
        if !e.holds_frame() {
            return;
        }
        if let Some(dst) = lookup(k, raw.pgd(), to + (va - start)) {
            dst.write(k, e);
            slot.write(k, PageTableEntry::NONE);
        }
    });
    drop(ptl);
    k.flush_tlb_range(raw.addr(), raw.pgd(), start, end);
}
