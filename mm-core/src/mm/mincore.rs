//! `mincore`: which pages of a range are resident, as Linux's `sys_mincore` reports them.

use crate::addr::{PhysAddr, VirtAddr, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE};
use crate::kernel::Kernel;
use crate::mm::error::MincoreError;
use crate::mm::mm_struct::Mm;
use crate::paging::walk;

impl Mm {
    /// The frame a present entry maps at `va` (Linux's `follow_page`), if any.
    pub fn frame_at(&self, k: &Kernel<'_>, va: VirtAddr) -> Option<PhysAddr> {
        let e = walk::lookup(k, self.raw().pgd(), va)?.read(k);
        e.is_present().then(|| e.frame())
    }

    /// Fills `vec[i]` with 1 if page `i` of `[start, start + len)` is resident, else 0 (Linux's
    /// `sys_mincore`): a page whose PTE maps a frame is resident; an unmapped page of a file
    /// mapping (shared anonymous memory included) is resident if it is in the file's page cache;
    /// one of private anonymous memory is not. `vec` must hold a byte per page. Every page must be
    /// mapped: the first hole fails the call with `ENOMEM`, the bytes before it already written.
    pub fn mincore(
        &self,
        k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        vec: &mut [u8],
    ) -> Result<(), MincoreError> {
        if !start.is_aligned(PAGE_SIZE) {
            return Err(MincoreError::Invalid);
        }
        let end = start
            .0
            .checked_add(len)
            .and_then(|e| VirtAddr(e).checked_align_up(PAGE_SIZE))
            .filter(|e| *e <= TASK_SIZE)
            .ok_or(MincoreError::NotMapped)?;
        let pages = ((end - start) >> PAGE_SHIFT) as usize;
        if vec.len() < pages {
            return Err(MincoreError::Fault);
        }
        // VMA by VMA, one table walk each (Linux's `walk_page_range`), not a walk per page.
        let pgd = self.raw().pgd();
        let mut at = start;
        while at < end {
            let vma = self.vma_at(at).ok_or(MincoreError::NotMapped)?;
            let v = vma.get();
            let stop = v.end().min(end);
            let first = ((at - start) >> PAGE_SHIFT) as usize;
            let bytes = &mut vec[first..first + ((stop - at) >> PAGE_SHIFT) as usize];
            bytes.fill(0);
            walk::for_each_leaf(k, pgd, at, stop, &mut |va, _, e| {
                if e.holds_frame() {
                    bytes[((va - at) >> PAGE_SHIFT) as usize] = 1;
                }
            });
            if let Some(f) = v.file() {
                let first = v.linear_page_index(at);
                let range = first..first + bytes.len() as u64;
                f.get()
                    .mapping()
                    .get()
                    .for_each_cached(range, |pgoff| bytes[(pgoff - first) as usize] = 1);
            }
            at = stop;
        }
        Ok(())
    }
}
