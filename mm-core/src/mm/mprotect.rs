//! `mprotect`: change the access bits of a range, splitting and merging VMAs as needed.

use crate::addr::{VirtAddr, PAGE_SIZE, TASK_SIZE, USER_BASE};
use crate::kernel::Kernel;
use crate::mm::error::MprotectError;
use crate::mm::fault::leaf_flags;
use crate::mm::mm_struct::Mm;
use crate::mm::mmap::SplitError;
use crate::mm::vma::{Prot, VmFlags, VmaPtr};
use crate::paging::{walk, PteFlags};

impl Mm {
    /// Sets the access of `[start, start + len)` to `prot` (Linux's `sys_mprotect`). The whole range
    /// must be mapped; it is checked before anything changes.
    pub fn mprotect(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        prot: Prot,
    ) -> Result<(), MprotectError> {
        if !start.is_aligned(PAGE_SIZE) || !prot.is_valid() || start < USER_BASE {
            return Err(MprotectError::Invalid);
        }
        let len = VirtAddr(len)
            .checked_align_up(PAGE_SIZE)
            .ok_or(MprotectError::Invalid)?
            .0;
        if start.0 > TASK_SIZE.0 || len > TASK_SIZE.0 - start.0 {
            return Err(MprotectError::Invalid);
        }
        if len == 0 {
            return Ok(());
        }
        let end = start + len;
        // The range must be covered without holes.
        let mut at = start;
        while at < end {
            match self.vma_at(at) {
                Some(v) => at = v.get().end(),
                None => return Err(MprotectError::NotMapped),
            }
        }
        let split_err = |e| match e {
            SplitError::MapCount => MprotectError::MapCount,
            SplitError::VmaAlloc => MprotectError::VmaAlloc,
        };
        let mut at = start;
        while at < end {
            let Some(vma) = self.vma_at(at) else {
                return Err(MprotectError::NotMapped);
            };
            let newflags = vma.get().flags().with_prot(prot);
            let piece_end = vma.get().end().min(end);
            self.modify_flags(k, vma, at, piece_end, newflags, change_protection)
                .map_err(split_err)?;
            at = piece_end;
        }
        Ok(())
    }

    /// Gives `[at, end)` of `vma` (which covers it) the flags `newflags`: splits it out, sets them,
    /// calls `changed` on it, then merges it with its neighbours where flags now match (Linux's
    /// `vma_modify_flags`; the merge runs even if nothing changed, as `vma_merge`'s cases do).
    pub(crate) fn modify_flags(
        &mut self,
        k: &Kernel<'_>,
        mut vma: VmaPtr,
        at: VirtAddr,
        end: VirtAddr,
        newflags: VmFlags,
        changed: fn(&Kernel<'_>, &Mm, VmaPtr),
    ) -> Result<(), SplitError> {
        if newflags != vma.get().flags() {
            if vma.get().start() < at {
                vma = self.split_vma(k, vma, at)?;
            }
            if end < vma.get().end() {
                self.split_vma(k, vma, end)?;
            }
            vma.get().vm_flags.set(newflags.0);
            changed(k, self, vma);
        }
        // Merge with the neighbours now that flags may match.
        self.merge_with_neighbours(k, vma);
        Ok(())
    }
}

/// Rewrites every leaf under `vma` to match its flags, then flushes the TLB for it. Private
/// mappings lose write access in the PTEs: the next write faults and reuses or copies the page.
fn change_protection(k: &Kernel<'_>, mm: &Mm, vma: VmaPtr) {
    let v = vma.get();
    let flags = v.flags();
    let shared = flags.contains(VmFlags::SHARED);
    let raw = mm.raw();
    let ptl = raw.page_table_lock.lock(k);
    walk::for_each_leaf(k, raw.pgd(), v.start(), v.end(), &mut |_, slot, e| {
        if !e.holds_frame() {
            return;
        }
        let keep = e.flags() & (PteFlags::ACCESSED | PteFlags::DIRTY);
        let writable =
            shared || (e.flags().contains(PteFlags::WRITABLE) && flags.contains(VmFlags::WRITE));
        let mut f = leaf_flags(flags, writable);
        if f.contains(PteFlags::PRESENT) {
            f = f | keep;
        }
        slot.write(k, e.with_flags(f));
    });
    drop(ptl);
    k.flush_tlb_range(raw.addr(), raw.pgd(), v.start(), v.end());
}
