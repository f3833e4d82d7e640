//! `mremap`, which mm-core lacks, built from `mmap` and `munmap`.

use alloc::format;
use alloc::string::String;
use mm_core::addr::{PAGE_SHIFT, TASK_SIZE};
use mm_core::mm::{MapFlags, Prot, VmFlags};
use mm_core::VirtAddr;

use super::{page_end, Replayer};
use crate::trace::Call;

impl Replayer<'_, '_> {
    /// mm-core has no `mremap`: grow, shrink and move are built here from `mmap` (same backing,
    /// permissions and file offset, `MAP_FIXED`) and `munmap`. Pages are not copied (a replay
    /// never faults any in), and a moved anonymous VMA's `vm_pgoff` is its new address rather than
    /// the old one Linux keeps, which matters only to merges mm-core does not check for anon VMAs.
    pub(super) fn mremap(&mut self, call: &Call, linux: Result<u64, String>) -> Result<(), String> {
        let Call::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            ..
        } = *call
        else {
            return Ok(());
        };
        let Ok(ret) = linux else {
            self.note("failed mremap not replayed");
            return Ok(());
        };
        let (k, off) = (self.k, self.offset);
        let old = VirtAddr(old_addr.wrapping_add(off));
        // mm-core's find_vma overflows on the last address: ask only about user addresses.
        let vma = (old < TASK_SIZE)
            .then(|| self.mm.vma_at(old))
            .flatten()
            .ok_or_else(|| format!("mremap of {old_addr:#x}, unmapped in mm-core"))?;
        let v = vma.get();
        let vflags = v.flags();
        // Linux's new VMA keeps every flag; mmap sets the access bits, VM_SHARED and VM_LOCKED
        // (which mm-core accounts) itself, the rest (hidden bits, madvise's) are carried here.
        let hidden = vflags.0 & !(VmFlags::ACCESS.0 | VmFlags::SHARED.0 | VmFlags::LOCKED.0);
        let prot = Prot(vflags.0 & VmFlags::ACCESS.0);
        let file = v.file();
        let pgoff_at = |a: VirtAddr| v.pgoff().saturating_add((a - v.start()) >> PAGE_SHIFT);
        let mut mf = MapFlags::FIXED.union(if vflags.contains(VmFlags::SHARED) {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        });
        if file.is_none() {
            mf = mf.union(MapFlags::ANONYMOUS);
        }
        let page = |n: u64| page_end(VirtAddr(0), n).0;
        let (old_len, new_len) = (page(old_len), page(new_len));
        let new = VirtAddr(ret.wrapping_add(off));
        let err = |e: &dyn core::fmt::Display| format!("mremap in mm-core: {e}");
        if new == old {
            if new_len < old_len {
                self.mm
                    .munmap(k, page_end(old, new_len), old_len - new_len)
                    .map_err(|e| err(&e))?;
            } else if new_len > old_len {
                let tail = page_end(old, old_len);
                let pgoff = pgoff_at(tail);
                self.mm
                    .mmap(k, tail, new_len - old_len, prot, mf, file, pgoff)
                    .map_err(|e| err(&e))?;
                self.add_hidden(tail, page_end(old, new_len), hidden);
                self.touch(tail, page_end(old, new_len));
            }
        } else {
            let pgoff = pgoff_at(old);
            self.mm
                .mmap(k, new, new_len, prot, mf, file, pgoff)
                .map_err(|e| err(&e))?;
            self.add_hidden(new, page_end(new, new_len), hidden);
            self.touch(new, page_end(new, new_len));
            if flags & 4 == 0 {
                self.mm.munmap(k, old, old_len).map_err(|e| err(&e))?;
            } else {
                self.note("MREMAP_DONTUNMAP: old range kept as it was (Linux empties it)");
            }
        }
        self.note("mremap emulated with mmap and munmap");
        self.applied += 1;
        Ok(())
    }
}
