//! `mprotect`: change the access bits of a range, splitting and merging VMAs as needed.

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::kernel::Kernel;
use crate::mm::error::MprotectError;
use crate::mm::fault::leaf_flags;
use crate::mm::mm_struct::Mm;
use crate::mm::mmap::SplitError;
use crate::mm::vma::{Prot, VmFlags, VmaPtr};
use crate::paging::{walk, PteFlags};

/// `PROT_GROWSDOWN`: extend the change down to the start of a growing stack.
const PROT_GROWSDOWN: u64 = 0x0100_0000;
/// `PROT_GROWSUP` (no VMA grows up on x86_64).
const PROT_GROWSUP: u64 = 0x0200_0000;
/// `PROT_SEM`, accepted and ignored.
const PROT_SEM: u64 = 0x8;

impl Mm {
    /// Sets the access of `[start, start + len)` to `prot` (Linux's `do_mprotect_pkey`): VMA by
    /// VMA from the one holding `start`, so a hole found later fails the call with `ENOMEM` after
    /// the pieces before it have changed, as in Linux. `prot` is the raw word a program passes
    /// (`PROT_GROWSDOWN` and `PROT_SEM` included).
    pub fn mprotect(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        prot: Prot,
    ) -> Result<(), MprotectError> {
        let grows = prot.0 & (PROT_GROWSDOWN | PROT_GROWSUP);
        let prot = prot.0 & !grows;
        if grows == PROT_GROWSDOWN | PROT_GROWSUP || !start.is_aligned(PAGE_SIZE) {
            return Err(MprotectError::Invalid);
        }
        if len == 0 {
            return Ok(());
        }
        let end = start
            .0
            .checked_add(len)
            .and_then(|e| VirtAddr(e).checked_align_up(PAGE_SIZE))
            .ok_or(MprotectError::NotMapped)?;
        if prot & !(VmFlags::ACCESS.0 | PROT_SEM) != 0 {
            return Err(MprotectError::Invalid);
        }
        let prot = Prot(prot & VmFlags::ACCESS.0);
        let mut start = start;
        let first = self
            .find_vma(start)
            .filter(|v| v.get().start() < end)
            .ok_or(MprotectError::NotMapped)?;
        if grows & PROT_GROWSDOWN != 0 {
            if !first.get().flags().contains(VmFlags::GROWSDOWN) {
                return Err(MprotectError::Invalid);
            }
            start = start.min(first.get().start());
        } else if grows != 0 {
            return Err(MprotectError::Invalid);
        } else if first.get().start() > start {
            return Err(MprotectError::NotMapped);
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
            let old = vma.get().flags();
            let new = old.with_prot(prot);
            // `newflags >> 4` puts each VM_MAY* bit where its access bit is.
            if new.0 & !(new.0 >> 4) & VmFlags::ACCESS.0 != 0 {
                return Err(MprotectError::Access);
            }
            let piece_end = vma.get().end().min(end);
            let new = account(
                old,
                new,
                vma.get().file().is_none() && vma.get().anon().is_none(),
            );
            if new != old {
                self.modify_flags(k, vma, at, piece_end, new, change_protection)
                    .map_err(split_err)?;
                // A private locked range made writable is copied now, not at the next write.
                let cow_locked = VmFlags::WRITE.0 | VmFlags::SHARED.0 | VmFlags::LOCKED.0;
                if old.0 & cow_locked == VmFlags::LOCKED.0 && new.contains(VmFlags::WRITE) {
                    let _ = self.populate(k, at, piece_end, true);
                }
            }
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
        // Linux returns at once when nothing changes: no split, and no merge either.
        if newflags == vma.get().flags() {
            return Ok(());
        }
        if vma.get().start() < at {
            vma = self.split_vma(k, vma, at)?;
        }
        if end < vma.get().end() {
            self.split_vma(k, vma, end)?;
        }
        vma.get().vm_flags.set(newflags.0);
        changed(k, self, vma);
        // Merge with the neighbours now that flags may match.
        self.merge_with_neighbours(k, vma);
        Ok(())
    }
}

/// `mprotect_fixup`'s accounting: a private range becoming writable is charged (`VM_ACCOUNT`)
/// unless it already is, is shared or `VM_NORESERVE`; an anonymous range no page was ever
/// faulted into (`unfaulted`) stops being charged when it becomes read-only.
fn account(old: VmFlags, new: VmFlags, unfaulted: bool) -> VmFlags {
    if new == old {
        return new;
    }
    let exempt = VmFlags::ACCOUNT.0 | VmFlags::WRITE.0 | VmFlags::SHARED.0 | VmFlags::NORESERVE.0;
    if new.contains(VmFlags::WRITE) {
        if old.0 & exempt == 0 {
            return new.union(VmFlags::ACCOUNT);
        }
    } else if old.contains(VmFlags::ACCOUNT) && unfaulted {
        return VmFlags(new.0 & !VmFlags::ACCOUNT.0);
    }
    new
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
