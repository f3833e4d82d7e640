//! Creating mappings: `mmap`, `brk`, and the VMA surgery they share (split, merge, link).

use crate::addr::{VirtAddr, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, TASK_UNMAPPED_BASE, USER_BASE};
use crate::hooks::VmaRangeEvent;
use crate::kernel::Kernel;
use crate::mm::anon::{anon_vma_link, anon_vma_unlink};
use crate::mm::error::{BrkError, MmapError};
use crate::mm::file::{
    fput, get_file, iput, unlink_file_vma, vma_link_file, AddressSpace, File, FilePtr,
};
use crate::mm::kobj::{addr_of, KPtr};
use crate::mm::mm_struct::Mm;
use crate::mm::vma::{MapFlags, Prot, VmFlags, Vma, VmaPtr};
use crate::phys::AllocKind;

/// Why a VMA could not be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// `max_map_count` reached.
    MapCount,
    /// No memory for the new VMA.
    VmaAlloc,
}

impl Mm {
    /// Maps `len` bytes (Linux's `do_mmap`): anonymous if `flags` has `MAP_ANONYMOUS`, else `file`
    /// from page `pgoff`; at `addr` exactly with [`MapFlags::FIXED`] (replacing what is there) or
    /// [`MapFlags::FIXED_NOREPLACE`] (failing if anything is there), else at `addr` if it is free
    /// or wherever there is room. `flags` are Linux's `MAP_*` bits as a program passes them; the
    /// checks and their order are Linux's, so each failure has Linux's errno. Returns the
    /// mapping's start.
    #[allow(clippy::too_many_arguments)] // mmap(2)'s own six arguments, plus the mm and the kernel
    pub fn mmap(
        &mut self,
        k: &Kernel<'_>,
        addr: VirtAddr,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<FilePtr>,
        pgoff: u64,
    ) -> Result<VirtAddr, MmapError> {
        let file = if flags.contains(MapFlags::ANONYMOUS) {
            None
        } else {
            Some(file.ok_or(MmapError::BadFd)?)
        };
        let mut flags = flags;
        if flags.contains(MapFlags::FIXED_NOREPLACE) {
            flags = flags.union(MapFlags::FIXED);
        }
        let fixed = flags.contains(MapFlags::FIXED);
        if len == 0 {
            return Err(MmapError::Invalid);
        }
        let len = VirtAddr(len)
            .checked_align_up(PAGE_SIZE)
            .ok_or(MmapError::TooLarge)?
            .0;
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(MmapError::Overflow);
        }
        if self.raw().map_count.get() > self.raw().max_map_count.get() {
            return Err(MmapError::MapCount);
        }
        let mut vm_flags = VmFlags(0)
            .with_prot(Prot(prot.0 & VmFlags::ACCESS.0))
            .union(VmFlags::MAY)
            .union(self.def_flags());
        for (map, vm) in [
            (MapFlags::GROWSDOWN, VmFlags::GROWSDOWN),
            (MapFlags::LOCKED, VmFlags::LOCKED),
            (MapFlags::STACK, VmFlags::NOHUGEPAGE),
        ] {
            if flags.contains(map) {
                vm_flags = vm_flags.union(vm);
            }
        }
        if len > TASK_SIZE.0 - USER_BASE.0 {
            return Err(MmapError::TooLarge);
        }
        let addr = if fixed {
            if addr.0 > TASK_SIZE.0 - len || addr < USER_BASE {
                return Err(MmapError::TooLarge);
            }
            if !addr.is_aligned(PAGE_SIZE) {
                return Err(MmapError::Invalid);
            }
            addr
        } else {
            self.get_unmapped_area(addr, len)
                .ok_or(MmapError::NoSpace)?
        };
        if flags.contains(MapFlags::FIXED_NOREPLACE) && !self.range_is_free(addr, addr + len) {
            return Err(MmapError::Exists);
        }
        let shared = match flags.0 & MapFlags::TYPE.0 {
            1 | 3 => true,
            2 => false,
            _ => return Err(MmapError::Invalid),
        };
        if let Some(f) = file {
            if shared {
                let known = if flags.0 & MapFlags::TYPE.0 == 3 {
                    MapFlags::LEGACY_MASK.0
                } else {
                    u64::MAX
                };
                if flags.0 & !known != 0 {
                    return Err(MmapError::NotSupported);
                }
                vm_flags = vm_flags.union(VmFlags::SHARED).union(VmFlags::MAYSHARE);
                if !f.get().is_writable() {
                    if prot.contains(Prot::WRITE) {
                        return Err(MmapError::Access);
                    }
                    vm_flags = VmFlags(vm_flags.0 & !(VmFlags::MAYWRITE.0 | VmFlags::SHARED.0));
                }
            }
            if vm_flags.contains(VmFlags::GROWSDOWN) {
                return Err(MmapError::Invalid);
            }
        } else if shared {
            if flags.0 & MapFlags::TYPE.0 != 1 || vm_flags.contains(VmFlags::GROWSDOWN) {
                return Err(MmapError::Invalid);
            }
            vm_flags = vm_flags.union(VmFlags::SHARED).union(VmFlags::MAYSHARE);
        }
        if flags.contains(MapFlags::NORESERVE) {
            vm_flags = vm_flags.union(VmFlags::NORESERVE);
        }
        if fixed {
            self.munmap(k, addr, len).map_err(|_| MmapError::Unmap)?;
        }
        if self.raw().map_count.get() >= self.raw().max_map_count.get() {
            return Err(MmapError::MapCount);
        }
        // A private writable mapping is charged to the commit limit (`accountable_mapping`).
        let accountable = VmFlags::NORESERVE.0 | VmFlags::SHARED.0 | VmFlags::WRITE.0;
        if vm_flags.0 & accountable == VmFlags::WRITE.0 {
            vm_flags = vm_flags.union(VmFlags::ACCOUNT);
        }
        // Shared anonymous memory is a file of its own from offset 0 (Linux's
        // `shmem_zero_setup`): its pages live in that file's page cache, rmap and truncate find
        // them through its i_mmap, and the VMA never merges with another.
        let shmem = match (shared, file) {
            (true, None) => Some(shmem_zero_setup(k, len >> PAGE_SHIFT)?),
            _ => None,
        };
        let (file, pgoff) = match (shmem, file) {
            (Some(f), _) => (Some(f), 0),
            (None, Some(f)) => (Some(f), pgoff),
            (None, None) => (None, addr.page_index()),
        };
        let mapped = self.map_region(k, addr, addr + len, vm_flags, file, pgoff);
        if let Some(f) = shmem {
            // The VMA holds its own reference, if it was made.
            fput(k, f);
        }
        mapped?;
        let populate = flags.0 & (MapFlags::POPULATE.0 | MapFlags::NONBLOCK.0);
        if vm_flags.contains(VmFlags::LOCKED) || populate == MapFlags::POPULATE.0 {
            // As `mm_populate`: errors are ignored, the mapping stays.
            let _ = self.populate(k, addr, addr + len, true);
        }
        Ok(addr)
    }

    /// `mmap(2)` as a program calls it: `off` is in bytes and must be page aligned.
    #[allow(clippy::too_many_arguments)] // mmap(2)'s own six arguments, plus the mm and the kernel
    pub fn sys_mmap(
        &mut self,
        k: &Kernel<'_>,
        addr: VirtAddr,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<FilePtr>,
        off: u64,
    ) -> Result<VirtAddr, MmapError> {
        if !off.is_multiple_of(PAGE_SIZE) {
            return Err(MmapError::Invalid);
        }
        self.mmap(k, addr, len, prot, flags, file, off >> PAGE_SHIFT)
    }

    /// Installs `[addr, end)` (known to be free) with `flags`, extending a neighbour when it can.
    fn map_region(
        &mut self,
        k: &Kernel<'_>,
        addr: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
        file: Option<FilePtr>,
        pgoff: u64,
    ) -> Result<VmaPtr, MmapError> {
        let pages = (end - addr) >> PAGE_SHIFT;
        let prev = self.find_vma_prev(addr);
        let vma = match prev.filter(|p| can_extend(p.get(), addr, flags, file, pgoff)) {
            Some(p) => {
                self.set_vma_end(k, p, end);
                p
            }
            None => {
                if !k.may_alloc(AllocKind::Vma) {
                    return Err(MmapError::VmaAlloc);
                }
                let v = new_vma(self, addr, end, flags, file, pgoff);
                if let Some(f) = file {
                    get_file(f);
                }
                self.vma_link(k, v, prev);
                v
            }
        };
        let raw = self.raw();
        raw.total_vm.add(pages);
        if flags.contains(VmFlags::LOCKED) {
            raw.locked_vm.add(pages);
        }
        if let Some(next) = vma.get().next() {
            self.try_merge(k, vma, next);
        }
        Ok(vma)
    }

    /// Links a new VMA into the list, the index, its anon_vma and its file's i_mmap (`vma_link`).
    pub(crate) fn vma_link(&mut self, k: &Kernel<'_>, vma: VmaPtr, prev: Option<VmaPtr>) {
        self.link_list(vma, prev);
        anon_vma_link(k, vma);
        vma_link_file(k, vma);
        report_vma_range(k, vma);
    }

    /// Finds `len` free bytes: at `hint` if possible, else (top-down layout, Linux's default on
    /// x86_64) the highest gap below `mmap_base`, falling back to a search upwards; in the legacy
    /// layout, the first gap from the search cache. A gap just below a `VM_GROWSDOWN` mapping is
    /// shortened by the stack guard gap in both.
    pub(crate) fn get_unmapped_area(&mut self, hint: VirtAddr, len: u64) -> Option<VirtAddr> {
        let hint = hint.align_down(PAGE_SIZE);
        if hint >= USER_BASE && hint.0 <= TASK_SIZE.0 - len {
            let above = self.find_vma(hint);
            if above.is_none_or(|v| hint + len <= start_gap(v.get())) {
                return Some(hint);
            }
        }
        let base = VirtAddr(self.raw().mmap_base.get());
        if self.top_down() {
            // Linux falls back to a bottom-up search from the legacy base.
            return self
                .unmapped_area_topdown(len, USER_BASE.0, base.0)
                .or_else(|| self.unmapped_area(len, TASK_UNMAPPED_BASE.0, TASK_SIZE.0));
        }
        for start in [self.free_area_cache().max(base), base, USER_BASE] {
            let mut addr = start;
            while addr.0 <= TASK_SIZE.0 - len {
                match self.find_vma(addr) {
                    Some(v) if start_gap(v.get()) < addr + len => addr = v.get().end(),
                    _ => {
                        self.set_free_area_cache(addr + len);
                        return Some(addr);
                    }
                }
            }
        }
        None
    }

    /// The start of the lowest gap of `len` bytes inside `[low, high)` (Linux's `unmapped_area`):
    /// a gap right below a `VM_GROWSDOWN` mapping must leave its guard gap free, or the search
    /// goes on above that mapping.
    fn unmapped_area(&self, len: u64, low: u64, high: u64) -> Option<VirtAddr> {
        let mut gap_start = low;
        let mut vmas = self.vmas_above(low);
        loop {
            let next = vmas.next();
            let gap_end = next.map_or(high, |v| start_gap(v.get()).0.min(high));
            if gap_end >= gap_start && gap_end - gap_start >= len {
                return Some(VirtAddr(gap_start));
            }
            let v = next?;
            gap_start = gap_start.max(v.get().end().0);
            if gap_start >= high {
                return None;
            }
        }
    }

    /// The top of the highest gap of `len` bytes inside `[low, high)` (Linux's
    /// `unmapped_area_topdown`). When that gap lies right below a `VM_GROWSDOWN` mapping whose
    /// guard gap reaches into it, the search starts again from below the guard gap, so every gap
    /// above that point is out of reach, not only this one: Linux lowers the limit, it does not
    /// skip the gap.
    fn unmapped_area_topdown(&self, len: u64, low: u64, high: u64) -> Option<VirtAddr> {
        let mut high = high;
        'retry: loop {
            let mut gap_end = high;
            let mut above: Option<VmaPtr> = None;
            for v in self.vmas_below(high).chain(core::iter::once(None)) {
                let gap_start = v.map_or(low, |v| v.get().end().0).max(low);
                if gap_end >= gap_start && gap_end - gap_start >= len {
                    if let Some(next) = above {
                        let guard = start_gap(next.get()).0;
                        if guard < gap_end {
                            high = guard;
                            continue 'retry;
                        }
                    }
                    return Some(VirtAddr(gap_end - len));
                }
                let Some(v) = v else { break };
                gap_end = v.get().start().0.min(high);
                above = Some(v);
                if v.get().start().0 <= low {
                    break;
                }
            }
            return None;
        }
    }

    /// Whether no VMA meets `[start, end)`.
    pub(crate) fn range_is_free(&self, start: VirtAddr, end: VirtAddr) -> bool {
        self.find_vma(start).is_none_or(|v| v.get().start() >= end)
    }

    /// Splits `vma` at `addr` (page aligned, strictly inside); the new VMA is the upper part
    /// `[addr, end)` and is returned (Linux's `split_vma(..., new_below = 0)`).
    pub(crate) fn split_vma(
        &mut self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        addr: VirtAddr,
    ) -> Result<VmaPtr, SplitError> {
        if self.raw().map_count.get() >= self.raw().max_map_count.get() {
            return Err(SplitError::MapCount);
        }
        if !k.may_alloc(AllocKind::Vma) {
            return Err(SplitError::VmaAlloc);
        }
        let v = vma.get();
        debug_assert!(v.start() < addr && addr < v.end());
        let pgoff = v.pgoff() + ((addr - v.start()) >> PAGE_SHIFT);
        let upper = new_vma(self, addr, v.end(), v.flags(), v.file(), pgoff);
        upper.get().share_anon(v);
        if let Some(f) = v.file() {
            get_file(f);
        }
        self.set_vma_end(k, vma, addr);
        self.vma_link(k, upper, Some(vma));
        Ok(upper)
    }

    /// Merges `b` into `a` if they are adjacent and compatible (`vma_merge`'s effect); `true` if
    /// merged. `b` is unlinked and freed.
    #[allow(unsafe_code)] // frees an object after its last unlink
    pub(crate) fn try_merge(&mut self, k: &Kernel<'_>, a: VmaPtr, b: VmaPtr) -> bool {
        let (av, bv) = (a.get(), b.get());
        // Anonymous VMAs too: a moved one keeps the pgoff its pages' index is relative to
        // (mremap), so only contiguous ones may become one VMA, as in Linux's vma_merge.
        let b_pgoff_ok = av.pgoff() + av.pages() == bv.pgoff();
        let anon_ok = av.anon_mergeable(bv);
        if av.end() != bv.start()
            || av.flags() != bv.flags()
            || av.file() != bv.file()
            || !b_pgoff_ok
            || !anon_ok
        {
            return false;
        }
        if av.anon().is_none() && bv.anon().is_some() {
            av.share_anon(bv);
            anon_vma_link(k, a);
        }
        let end = bv.end();
        self.unlink_list(b);
        anon_vma_unlink(k, b);
        unlink_file_vma(k, b);
        if let Some(f) = bv.file() {
            fput(k, f);
        }
        k.hooks().vma_freed(k, bv.vm_mm.get(), b.addr());
        // SAFETY: b is off the list, the index, its anon_vma and i_mmap (Invariant 7), and its
        // handle is not used again.
        unsafe { b.free() };
        self.set_vma_end(k, a, end);
        true
    }

    /// Merges `vma` with its predecessor, then the result with its successor, where they are
    /// compatible (`vma_merge`'s cases, pairwise).
    pub(crate) fn merge_with_neighbours(&mut self, k: &Kernel<'_>, vma: VmaPtr) {
        let mut cur = vma;
        if let Some(p) = cur.get().prev() {
            if self.try_merge(k, p, cur) {
                cur = p;
            }
        }
        if let Some(n) = cur.get().next() {
            self.try_merge(k, cur, n);
        }
    }

    /// Moves the program break (Linux's `sys_brk`); returns the new break.
    pub fn brk(&mut self, k: &Kernel<'_>, new: VirtAddr) -> Result<VirtAddr, BrkError> {
        let raw = self.raw();
        let (start_brk, cur) = (VirtAddr(raw.start_brk.get()), VirtAddr(raw.brk.get()));
        // A heap that was never placed (start_brk below user space) cannot move.
        if start_brk < USER_BASE || new < start_brk || new > TASK_SIZE {
            return Err(BrkError::Invalid);
        }
        let align = |a: VirtAddr| a.checked_align_up(PAGE_SIZE).unwrap_or(TASK_SIZE);
        let (newbrk, oldbrk) = (align(new), align(cur));
        if newbrk < oldbrk {
            self.munmap(k, newbrk, oldbrk - newbrk)
                .map_err(|_| BrkError::NoMemory)?;
        } else if newbrk > oldbrk {
            // Keep a guard page free above the heap, as Linux does.
            let guard_end = if newbrk < TASK_SIZE {
                newbrk + PAGE_SIZE
            } else {
                newbrk
            };
            if !self.range_is_free(oldbrk, guard_end) {
                return Err(BrkError::Overlap);
            }
            if self.raw().map_count.get() >= self.raw().max_map_count.get() {
                return Err(BrkError::NoMemory);
            }
            // `do_brk_flags`: the heap is always accounted.
            let flags = VmFlags(0)
                .with_prot(Prot::RW)
                .union(VmFlags::MAY)
                .union(VmFlags::ACCOUNT)
                .union(self.def_flags());
            self.map_region(k, oldbrk, newbrk, flags, None, oldbrk.page_index())
                .map_err(|_| BrkError::NoMemory)?;
        }
        self.raw().brk.set(new.0);
        Ok(new)
    }
}

/// Linux's `stack_guard_gap`: the pages kept free below a `VM_GROWSDOWN` mapping.
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;

/// Where the free space below `vma` ends: its start, less the guard gap for a stack
/// (`vm_start_gap`).
pub(crate) fn start_gap(vma: &Vma) -> VirtAddr {
    if vma.flags().contains(VmFlags::GROWSDOWN) {
        VirtAddr(vma.start().0.saturating_sub(STACK_GUARD_GAP))
    } else {
        vma.start()
    }
}

/// Tells the hooks `vma`'s current range (see [`crate::hooks::VmaRangeEvent`]).
pub(crate) fn report_vma_range(k: &Kernel<'_>, vma: VmaPtr) {
    let v = vma.get();
    let ev = VmaRangeEvent {
        mm: v.vm_mm.get(),
        vma: vma.addr(),
        start: v.start(),
        end: v.end(),
    };
    k.hooks().vma_range(k, &ev);
}

/// Whether `prev` (ending at `addr`) can simply grow to cover a new mapping starting at `addr`.
fn can_extend(
    prev: &Vma,
    addr: VirtAddr,
    flags: VmFlags,
    file: Option<FilePtr>,
    pgoff: u64,
) -> bool {
    // The new range has no anon_vma: a VMA copied by fork with one cannot take it in.
    let anon_ok = prev.anon().is_none() || prev.anon_lineage.get() == 0;
    prev.end() == addr
        && prev.flags() == flags
        && prev.file() == file
        && prev.pgoff() + prev.pages() == pgoff
        && anon_ok
}

/// A fresh, unlinked VMA of `mm` (the caller has checked the allocation may proceed).
pub(crate) fn new_vma(
    mm: &Mm,
    start: VirtAddr,
    end: VirtAddr,
    flags: VmFlags,
    file: Option<FilePtr>,
    pgoff: u64,
) -> VmaPtr {
    let v = KPtr::alloc(Vma::default());
    let r = v.get();
    r.vm_mm.set(mm.raw().addr());
    r.vm_start.set(start.0);
    r.vm_end.set(end.0);
    r.vm_flags.set(flags.0);
    r.vm_pgoff.set(pgoff);
    r.vm_file.set(addr_of(file));
    v
}

/// A new file of `pages` pages for a shared anonymous mapping, one reference held by the caller.
fn shmem_zero_setup(k: &Kernel<'_>, pages: u64) -> Result<FilePtr, MmapError> {
    let mapping = AddressSpace::create(k, pages).map_err(|_| MmapError::ShmemAlloc)?;
    let file = File::open(k, mapping, None);
    // The file holds the mapping now (or nothing does).
    iput(k, mapping);
    file.map_err(|_| MmapError::ShmemAlloc)
}
