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
    /// Resizes or moves the mapping at `old` (Linux's `sys_mremap`, as of 6.17); returns where
    /// it is now. A shrink, or a resize to the same length, needs only `old` to be mapped (the
    /// unmapped tail may span several VMAs and holes); a growth or a move needs
    /// `[old, old + old_len)` inside one VMA, except a same-length `MREMAP_FIXED` move, which
    /// moves every VMA of the range, keeping the gaps between them.
    pub fn mremap(
        &mut self,
        k: &Kernel<'_>,
        old: VirtAddr,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: VirtAddr,
    ) -> Result<VirtAddr, MremapError> {
        // PAGE_ALIGN first; one that wraps is 0, as in Linux.
        let page = |n: u64| VirtAddr(n).checked_align_up(PAGE_SIZE).map_or(0, |a| a.0);
        let (old_len, new_len) = (page(old_len), page(new_len));
        let known = MremapFlags::MAYMOVE.0 | MremapFlags::FIXED.0 | MremapFlags::DONTUNMAP.0;
        if flags.0 & !known != 0
            || !old.is_aligned(PAGE_SIZE)
            || new_len == 0
            || new_len > TASK_SIZE.0
        {
            return Err(MremapError::Invalid);
        }
        if implies_new_addr(flags) {
            let overlap = new_addr < old + old_len && old < new_addr + new_len;
            // mm-core's user space starts at USER_BASE: nothing may move below it.
            let below = flags.contains(MremapFlags::FIXED) && new_addr < USER_BASE;
            if new_addr.0 > TASK_SIZE.0 - new_len
                || below
                || !new_addr.is_aligned(PAGE_SIZE)
                || !flags.contains(MremapFlags::MAYMOVE)
                || (flags.contains(MremapFlags::DONTUNMAP) && old_len != new_len)
                || overlap
            {
                return Err(MremapError::Invalid);
            }
        }
        if flags.contains(MremapFlags::FIXED) && old_len == new_len {
            return self.remap_move(k, old, old_len, flags, new_addr);
        }
        let vma = self.vma_at(old).ok_or(MremapError::NotMapped)?;
        self.remap_one(k, vma, old, old_len, new_len, flags, new_addr)
    }

    /// A same-length `MREMAP_FIXED` move of every VMA in `[old, old + len)` (Linux's
    /// `remap_move`): `old` must be mapped; each piece goes to the previous piece's new end plus
    /// the gap before it. Returns where the first piece went.
    fn remap_move(
        &mut self,
        k: &Kernel<'_>,
        old: VirtAddr,
        len: u64,
        flags: MremapFlags,
        new_addr: VirtAddr,
    ) -> Result<VirtAddr, MremapError> {
        let end = old + len;
        let mut at = old;
        let mut target = new_addr;
        let mut last_end: Option<VirtAddr> = None;
        while at < end {
            let Some(vma) = self.find_vma(at).filter(|v| v.get().start() < end) else {
                break;
            };
            let (start, vma_end) = (vma.get().start(), vma.get().end());
            if last_end.is_none() && old < start {
                return Err(MremapError::NotMapped);
            }
            let piece = start.max(old);
            let piece_len = vma_end.min(end) - piece;
            let to = target + last_end.map_or(0, |e| start - e);
            last_end = Some(vma_end);
            let moved = self.remap_one(k, vma, piece, piece_len, piece_len, flags, to)?;
            target = moved + piece_len;
            at = piece + piece_len;
        }
        if last_end.is_none() {
            return Err(MremapError::NotMapped);
        }
        Ok(new_addr)
    }

    /// One VMA's part of an mremap (Linux's `check_prep_vma`, then `mremap_to` or `mremap_at`).
    #[allow(clippy::too_many_arguments)] // mremap(2)'s arguments, the VMA, the mm and the kernel
    fn remap_one(
        &mut self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        old: VirtAddr,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: VirtAddr,
    ) -> Result<VirtAddr, MremapError> {
        let (shrink, expand) = (new_len < old_len, new_len > old_len);
        if !expand && !implies_new_addr(flags) {
            // No new range: nothing to check but that `old` is mapped.
            if shrink {
                self.munmap(k, old + new_len, old_len - new_len)
                    .map_err(|_| MremapError::NoMemory)?;
            }
            return Ok(old);
        }
        let v = vma.get();
        let may_share =
            v.flags().contains(VmFlags::SHARED) || v.flags().contains(VmFlags::MAYSHARE);
        if old_len == 0 && !may_share {
            return Err(MremapError::Invalid);
        }
        let kept = if shrink { new_len } else { old_len };
        if kept > v.end() - old {
            return Err(MremapError::NotMapped);
        }
        let pgoff = v.pgoff() + ((old - v.start()) >> PAGE_SHIFT);
        if new_len != kept && pgoff.checked_add(new_len >> PAGE_SHIFT).is_none() {
            return Err(MremapError::Invalid);
        }
        let locked = v.flags().contains(VmFlags::LOCKED);
        let at = if implies_new_addr(flags) {
            self.remap_to(k, old, old_len, new_len, flags, new_addr)?
        } else if old_len == v.end() - old && self.expandable(vma, new_len - old_len) {
            let new_end = v.end() + (new_len - old_len);
            self.expand(k, vma, new_end);
            old
        } else if !flags.contains(MremapFlags::MAYMOVE) {
            return Err(MremapError::NoMemory);
        } else {
            let to = self
                .get_unmapped_area(old, new_len)
                .ok_or(MremapError::NoMemory)?;
            self.move_vma(k, vma, old, old_len, to, new_len, false)?;
            to
        };
        if locked && new_len > old_len {
            let _ = self.populate(k, at + old_len, at + new_len, true);
        }
        Ok(at)
    }

    /// Linux's `mremap_to`: a move to `new_addr` (`MREMAP_FIXED`, replacing what is there) or,
    /// for `MREMAP_DONTUNMAP` alone, near it; a shrink first unmaps the tail.
    fn remap_to(
        &mut self,
        k: &Kernel<'_>,
        old: VirtAddr,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: VirtAddr,
    ) -> Result<VirtAddr, MremapError> {
        let fixed = flags.contains(MremapFlags::FIXED);
        if fixed {
            self.munmap(k, new_addr, new_len)
                .map_err(|_| MremapError::NoMemory)?;
            self.vma_at(old).ok_or(MremapError::NotMapped)?;
        }
        let mut old_len = old_len;
        if new_len < old_len {
            self.munmap(k, old + new_len, old_len - new_len)
                .map_err(|_| MremapError::NoMemory)?;
            old_len = new_len;
        }
        let vma = self.vma_at(old).ok_or(MremapError::NotMapped)?;
        if old_len > vma.get().end() - old {
            return Err(MremapError::NotMapped);
        }
        let to = if fixed {
            new_addr
        } else {
            self.get_unmapped_area(new_addr, new_len)
                .ok_or(MremapError::NoMemory)?
        };
        let dontunmap = flags.contains(MremapFlags::DONTUNMAP);
        self.move_vma(k, vma, old, old_len, to, new_len, dontunmap)?;
        Ok(to)
    }

    /// Whether `vma` can grow by `delta` bytes where it is (`vma_expandable`).
    fn expandable(&self, vma: VmaPtr, delta: u64) -> bool {
        let end = vma.get().end();
        end.0
            .checked_add(delta)
            .is_some_and(|e| e <= TASK_SIZE.0 && self.range_is_free(end, VirtAddr(e)))
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
    #[allow(clippy::too_many_arguments)] // the two ranges, the VMA, the mm and the kernel
    fn move_vma(
        &mut self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        old: VirtAddr,
        old_len: u64,
        to: VirtAddr,
        new_len: u64,
        dontunmap: bool,
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
        new.get().share_anon(v);
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
        if !dontunmap && old_len > 0 {
            // The old range is empty now: unmapping it frees its tables, checked like any munmap.
            self.munmap(k, old, old_len)
                .map_err(|_| MremapError::NoMemory)?;
        }
        self.merge_with_neighbours(k, new);
        if dontunmap {
            // The old range stays mapped, empty; the whole VMA holding it (into which the new one
            // may just have merged) is no longer locked, unsplit, as Linux's `dontunmap_complete`
            // clears the flags of the VMA it has. It stays accounted (`ac` in 6.18's smaps): the
            // range can fill again.
            if let Some(src) = self.vma_at(old) {
                let v = src.get();
                let was = v.flags();
                let clear = VmFlags::LOCKED.0 | VmFlags::LOCKONFAULT.0;
                v.vm_flags.set(was.0 & !clear);
                if was.contains(VmFlags::LOCKED) {
                    let raw = self.raw();
                    raw.locked_vm
                        .set(raw.locked_vm.get().saturating_sub(v.pages()));
                }
            }
        }
        Ok(())
    }
}

/// Whether the flags name a destination (`MREMAP_FIXED` or `MREMAP_DONTUNMAP`).
fn implies_new_addr(flags: MremapFlags) -> bool {
    flags.0 & (MremapFlags::FIXED.0 | MremapFlags::DONTUNMAP.0) != 0
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
