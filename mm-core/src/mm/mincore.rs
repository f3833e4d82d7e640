//! `mincore`: which pages of a range are resident, as Linux's `sys_mincore` reports them.

use crate::addr::{VirtAddr, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE};
use crate::kernel::Kernel;
use crate::mm::error::MincoreError;
use crate::mm::mm_struct::Mm;
use crate::paging::walk;

impl Mm {
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
        let pgd = self.raw().pgd();
        for (i, byte) in vec.iter_mut().take(pages).enumerate() {
            let at = start + ((i as u64) << PAGE_SHIFT);
            let vma = self.vma_at(at).ok_or(MincoreError::NotMapped)?;
            let mapped = walk::lookup(k, pgd, at).is_some_and(|slot| slot.read(k).holds_frame());
            let cached = || {
                vma.get().file().is_some_and(|f| {
                    let pgoff = vma.get().linear_page_index(at);
                    f.get().mapping().get().find_get_page(pgoff).is_some()
                })
            };
            *byte = u8::from(mapped || cached());
        }
        Ok(())
    }
}
