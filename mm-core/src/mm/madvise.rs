//! `madvise` (Linux's mm/madvise.c): advice that drops pages zaps them and keeps the page tables;
//! advice that changes `vm_flags` splits and merges VMAs as `mprotect` does
//! (`madvise_update_vma`); advice about read-ahead, reclaim or population is accepted and changes
//! nothing here (mm-core has no swap, no read-ahead and no huge pages).

use crate::addr::{VirtAddr, PAGE_SIZE, TASK_SIZE, USER_BASE};
use crate::kernel::Kernel;
use crate::mm::error::MadviseError;
use crate::mm::fault::Access;
use crate::mm::mm_struct::Mm;
use crate::mm::mmap::SplitError;
use crate::mm::unmap::zap_range;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::MmuGather;

/// One `MADV_*` advice, by Linux's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advice(pub u64);

impl Advice {
    /// `MADV_NORMAL`: no read-ahead hint.
    pub const NORMAL: Self = Self(0);
    /// `MADV_RANDOM`.
    pub const RANDOM: Self = Self(1);
    /// `MADV_SEQUENTIAL`.
    pub const SEQUENTIAL: Self = Self(2);
    /// `MADV_WILLNEED`.
    pub const WILLNEED: Self = Self(3);
    /// `MADV_DONTNEED`: drop the pages; the next touch finds zeroes or the file's contents.
    pub const DONTNEED: Self = Self(4);
    /// `MADV_FREE`: the pages may be dropped (here: at once).
    pub const FREE: Self = Self(8);
    /// `MADV_REMOVE`: drop the pages of a shared mapping (here: as `DONTNEED`, the file keeps its
    /// contents).
    pub const REMOVE: Self = Self(9);
    /// `MADV_DONTFORK`.
    pub const DONTFORK: Self = Self(10);
    /// `MADV_DOFORK`.
    pub const DOFORK: Self = Self(11);
    /// `MADV_MERGEABLE` (KSM).
    pub const MERGEABLE: Self = Self(12);
    /// `MADV_UNMERGEABLE`.
    pub const UNMERGEABLE: Self = Self(13);
    /// `MADV_HUGEPAGE`.
    pub const HUGEPAGE: Self = Self(14);
    /// `MADV_NOHUGEPAGE`.
    pub const NOHUGEPAGE: Self = Self(15);
    /// `MADV_DONTDUMP`.
    pub const DONTDUMP: Self = Self(16);
    /// `MADV_DODUMP`.
    pub const DODUMP: Self = Self(17);
    /// `MADV_WIPEONFORK`.
    pub const WIPEONFORK: Self = Self(18);
    /// `MADV_KEEPONFORK`.
    pub const KEEPONFORK: Self = Self(19);
    /// `MADV_DONTNEED_LOCKED`: `DONTNEED` that also drops locked pages.
    pub const DONTNEED_LOCKED: Self = Self(24);
    /// `MADV_COLD`: deactivate the pages (nothing to do without reclaim).
    pub const COLD: Self = Self(20);
    /// `MADV_PAGEOUT`: reclaim the pages (nothing to do without swap).
    pub const PAGEOUT: Self = Self(21);
    /// `MADV_POPULATE_READ`: fault the pages in for reading.
    pub const POPULATE_READ: Self = Self(22);
    /// `MADV_POPULATE_WRITE`: fault the pages in for writing.
    pub const POPULATE_WRITE: Self = Self(23);

    /// The advice strace names `name` (`MADV_DONTNEED`), or a number as strace prints unknown
    /// ones.
    pub fn from_name(name: &str) -> Option<Self> {
        const NAMES: [(&str, u64); 26] = [
            ("MADV_NORMAL", 0),
            ("MADV_RANDOM", 1),
            ("MADV_SEQUENTIAL", 2),
            ("MADV_WILLNEED", 3),
            ("MADV_DONTNEED", 4),
            ("MADV_FREE", 8),
            ("MADV_REMOVE", 9),
            ("MADV_DONTFORK", 10),
            ("MADV_DOFORK", 11),
            ("MADV_MERGEABLE", 12),
            ("MADV_UNMERGEABLE", 13),
            ("MADV_HUGEPAGE", 14),
            ("MADV_NOHUGEPAGE", 15),
            ("MADV_DONTDUMP", 16),
            ("MADV_DODUMP", 17),
            ("MADV_WIPEONFORK", 18),
            ("MADV_KEEPONFORK", 19),
            ("MADV_COLD", 20),
            ("MADV_PAGEOUT", 21),
            ("MADV_POPULATE_READ", 22),
            ("MADV_POPULATE_WRITE", 23),
            ("MADV_DONTNEED_LOCKED", 24),
            ("MADV_COLLAPSE", 25),
            ("MADV_HWPOISON", 100),
            ("MADV_SOFT_OFFLINE", 101),
            ("MADV_GUARD_INSTALL", 102),
        ];
        if let Some(&(_, n)) = NAMES.iter().find(|(n, _)| *n == name) {
            return Some(Self(n));
        }
        let n = match name.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => name.parse().ok()?,
        };
        Some(Self(n))
    }

    /// The `vm_flags` bits this advice sets and clears, if it changes flags (`madvise_vma_behavior`).
    pub fn flag_change(self) -> Option<(VmFlags, VmFlags)> {
        let (set, clear) = match self {
            Self::NORMAL => (0, VmFlags::SEQ_READ.0 | VmFlags::RAND_READ.0),
            Self::SEQUENTIAL => (VmFlags::SEQ_READ.0, VmFlags::RAND_READ.0),
            Self::RANDOM => (VmFlags::RAND_READ.0, VmFlags::SEQ_READ.0),
            Self::DONTFORK => (VmFlags::DONTCOPY.0, 0),
            Self::DOFORK => (0, VmFlags::DONTCOPY.0),
            Self::WIPEONFORK => (VmFlags::WIPEONFORK.0, 0),
            Self::KEEPONFORK => (0, VmFlags::WIPEONFORK.0),
            Self::DONTDUMP => (VmFlags::DONTDUMP.0, 0),
            Self::DODUMP => (0, VmFlags::DONTDUMP.0),
            Self::MERGEABLE => (VmFlags::MERGEABLE.0, 0),
            Self::UNMERGEABLE => (0, VmFlags::MERGEABLE.0),
            Self::HUGEPAGE => (VmFlags::HUGEPAGE.0, VmFlags::NOHUGEPAGE.0),
            Self::NOHUGEPAGE => (VmFlags::NOHUGEPAGE.0, VmFlags::HUGEPAGE.0),
            _ => return None,
        };
        Some((VmFlags(set), VmFlags(clear)))
    }

    /// Whether the advice drops the pages of the range.
    fn drops_pages(self) -> bool {
        matches!(
            self,
            Self::DONTNEED | Self::DONTNEED_LOCKED | Self::FREE | Self::REMOVE
        )
    }

    /// Whether Linux knows the advice (else `EINVAL`); the ones mm-core has no use for are
    /// accepted and change nothing.
    fn is_known(self) -> bool {
        matches!(self.0, 0..=4 | 8..=25)
    }
}

impl Mm {
    /// Applies `advice` to `[start, start + len)` (Linux's `do_madvise`). As in Linux, the mapped
    /// parts get the advice even when the range has holes, and then the call fails with
    /// `NotMapped` (`ENOMEM`).
    pub fn madvise(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        advice: Advice,
    ) -> Result<(), MadviseError> {
        if !start.is_aligned(PAGE_SIZE) || start < USER_BASE || !advice.is_known() {
            return Err(MadviseError::Invalid);
        }
        let len = VirtAddr(len)
            .checked_align_up(PAGE_SIZE)
            .ok_or(MadviseError::Invalid)?
            .0;
        if start.0 > TASK_SIZE.0 || len > TASK_SIZE.0 - start.0 {
            return Err(MadviseError::Invalid);
        }
        let end = start + len;
        if matches!(advice, Advice::POPULATE_READ | Advice::POPULATE_WRITE) {
            return self.madvise_populate(k, start, end, advice == Advice::POPULATE_WRITE);
        }
        let split_err = |e| match e {
            SplitError::MapCount => MadviseError::MapCount,
            SplitError::VmaAlloc => MadviseError::VmaAlloc,
        };
        let mut hole = false;
        let mut at = start;
        while at < end {
            let Some(vma) = self.find_vma(at).filter(|v| v.get().start() < end) else {
                hole = true;
                break;
            };
            let v = vma.get();
            if v.start() > at {
                hole = true;
                at = v.start();
            }
            let piece_end = v.end().min(end);
            let shared = v.flags().0 & (VmFlags::SHARED.0 | VmFlags::MAYSHARE.0) != 0;
            let locked = v.flags().contains(VmFlags::LOCKED);
            if advice == Advice::MERGEABLE && shared {
                // KSM ignores what it cannot merge (`vma_ksm_compatible`): no split, no error.
            } else if matches!(advice, Advice::COLD | Advice::PAGEOUT) {
                // Without swap nothing is reclaimed; locked pages are refused.
                if locked {
                    return Err(MadviseError::Invalid);
                }
            } else if advice == Advice::REMOVE {
                self.madvise_remove(k, vma, at, piece_end)?;
            } else if let Some((set, clear)) = advice.flag_change() {
                if advice == Advice::WIPEONFORK
                    && (v.file().is_some() || v.flags().contains(VmFlags::SHARED))
                {
                    return Err(MadviseError::Invalid);
                }
                let newflags = VmFlags((v.flags().0 | set.0) & !clear.0);
                self.modify_flags(k, vma, at, piece_end, newflags, |_, _, _| {})
                    .map_err(split_err)?;
            } else if advice.drops_pages() {
                let refused = (locked && advice != Advice::DONTNEED_LOCKED)
                    || (advice == Advice::FREE && v.file().is_some());
                if refused {
                    return Err(MadviseError::Invalid);
                }
                // MADV_FREE only marks the pages lazily freeable: they stay mapped until memory
                // runs short, which mm-core never sees.
                if advice != Advice::FREE {
                    self.zap(k, vma, at, piece_end);
                }
            }
            at = piece_end;
        }
        if hole {
            Err(MadviseError::NotMapped)
        } else {
            Ok(())
        }
    }

    /// `MADV_REMOVE` (Linux's `madvise_remove`): frees the file's pages behind `[start, end)` of
    /// a shared writable mapping, in the file itself.
    fn madvise_remove(
        &self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), MadviseError> {
        let v = vma.get();
        let Some(file) = v.file() else {
            return Err(MadviseError::Invalid);
        };
        if v.flags().contains(VmFlags::LOCKED) {
            return Err(MadviseError::Invalid);
        }
        if !v.flags().contains(VmFlags::SHARED) || !v.flags().contains(VmFlags::MAYWRITE) {
            return Err(MadviseError::Access);
        }
        let first = v.linear_page_index(start);
        let last = v.linear_page_index(end - PAGE_SIZE);
        crate::mm::truncate::punch_hole(k, file.get().mapping(), first, last);
        Ok(())
    }

    /// `MADV_POPULATE_READ` / `_WRITE` (Linux's `madvise_populate`): faults every page in, VMA
    /// by VMA; a hole is `ENOMEM`, a VMA that forbids the access `EINVAL`, a page that cannot be
    /// faulted in (beyond the end of a file) `EFAULT`, each after the pages before it.
    fn madvise_populate(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> Result<(), MadviseError> {
        let mut at = start;
        while at < end {
            let vma = self.vma_at(at).ok_or(MadviseError::NotMapped)?;
            let flags = vma.get().flags();
            let allowed = if write {
                flags.contains(VmFlags::WRITE)
            } else {
                flags.contains(VmFlags::READ)
            };
            if !allowed {
                return Err(MadviseError::Invalid);
            }
            let access = if write { Access::Write } else { Access::Read };
            let vma_end = vma.get().end().min(end);
            while at < vma_end {
                self.handle_mm_fault(k, at, access).map_err(|e| match e {
                    crate::mm::FaultError::Oom => MadviseError::NotMapped,
                    _ => MadviseError::Fault,
                })?;
                at = at + PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Drops the pages of `[start, end)` inside `vma`, keeping its page tables (Linux's
    /// `zap_page_range_single`): the TLB is flushed before the pages are freed.
    fn zap(&self, k: &Kernel<'_>, vma: VmaPtr, start: VirtAddr, end: VirtAddr) {
        debug_assert!(vma.get().start() <= start && end <= vma.get().end());
        let raw = self.raw();
        let mut tlb = MmuGather::new(raw.addr(), raw.pgd());
        zap_range(k, raw, &mut tlb, start, end);
        tlb.finish(k);
    }
}
