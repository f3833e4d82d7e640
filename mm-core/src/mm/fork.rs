//! fork's copy of an address space (Linux's `dup_mmap` and `copy_page_range`).
//!
//! Every VMA is copied but those marked `VM_DONTCOPY` (`MADV_DONTFORK`); the child's copies drop
//! `VM_LOCKED` (memory locks are not inherited). A private VMA's copy shares its anon_vma: this
//! is the 2.6.15 shared anon_vma, where one list holds the VMAs of every process that may map the
//! anon_vma's pages, parent and children alike. mm-core chose it over the later anon_vma_chain
//! because it is the structure the seed patch's rule is stated on (a child's `exit_mmap` frees
//! tables while a parent's rmap walk over the shared list can still reach the child's VMAs), and
//! the chain only narrows which VMAs a walk visits. A file VMA's copy goes into the file's i_mmap.
//!
//! Page tables are copied only for VMAs with an anon_vma, as Linux's `vma_needs_copy` decides:
//! the rest fault their pages in again from the page cache. A private writable mapping's pages
//! are write-protected in both processes (the next write copies, `do_wp_page`); every copied
//! page gains a reference and a mapping. `MADV_WIPEONFORK` gives the child fresh memory instead.

use crate::addr::VirtAddr;
use crate::kernel::Kernel;
use crate::mm::error::ForkError;
use crate::mm::file::get_file;
use crate::mm::mm_struct::{Mm, MmStruct};
use crate::mm::mmap::new_vma;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::table::KernelPgd;
use crate::paging::walk::{self, lookup, pte_alloc};
use crate::paging::{PageTableEntry, PteFlags};
use crate::phys::{AllocKind, PageFlags};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// The last lineage handed out ([`crate::mm::Vma::anon_lineage`]).
static LINEAGE: AtomicU64 = AtomicU64::new(0);

/// A lineage no VMA has had.
fn next_lineage() -> u64 {
    LINEAGE.fetch_add(1, Ordering::Relaxed) + 1
}

impl Mm {
    /// A copy of this address space for a child process (`dup_mmap`), its PGD made as
    /// [`Mm::new`] makes one from `kernel_pgd`. On failure (`ENOMEM`) nothing of the child is
    /// left and this address space maps what it did; pages it shared with the child stay
    /// write-protected, which only costs a later write a fault.
    pub fn fork(&self, k: &Kernel<'_>, kernel_pgd: Option<KernelPgd>) -> Result<Mm, ForkError> {
        let mut child = Mm::new(k, kernel_pgd).map_err(|_| ForkError::Mm)?;
        child.inherit_layout(self);
        match self.dup_vmas(k, &mut child) {
            Ok(()) => Ok(child),
            Err(e) => {
                child.destroy(k);
                Err(e)
            }
        }
    }

    /// Copies every VMA to `child`, with the page tables of those that have an anon_vma.
    fn dup_vmas(&self, k: &Kernel<'_>, child: &mut Mm) -> Result<(), ForkError> {
        let mut prev = None;
        for vma in self.vmas() {
            let v = vma.get();
            let flags = v.flags();
            if flags.contains(VmFlags::DONTCOPY) {
                continue;
            }
            if !k.may_alloc(AllocKind::Vma) {
                return Err(ForkError::Vma);
            }
            let locked = VmFlags::LOCKED.0 | VmFlags::LOCKONFAULT.0;
            let copy = new_vma(
                child,
                v.start(),
                v.end(),
                VmFlags(flags.0 & !locked),
                v.file(),
                v.pgoff(),
            );
            let wipe = flags.contains(VmFlags::WIPEONFORK);
            if !wipe && v.anon().is_some() {
                copy.get().anon_vma.set(v.anon_vma.get());
                copy.get().anon_lineage.set(next_lineage());
            }
            if let Some(f) = v.file() {
                get_file(f);
            }
            child.vma_link(k, copy, prev);
            child.raw().total_vm.add(v.pages());
            prev = Some(copy);
            if !wipe && v.anon().is_some() {
                copy_page_range(k, self.raw(), child.raw(), vma)?;
            }
        }
        Ok(())
    }

    /// What the child keeps of the parent's layout: where searches for free space go, the heap,
    /// the map-count limit. Not `def_flags`: `mlockall(MCL_FUTURE)` is not inherited either.
    fn inherit_layout(&mut self, parent: &Mm) {
        self.copy_search_state(parent);
        let (from, to) = (parent.raw(), self.raw());
        to.start_brk.set(from.start_brk.get());
        to.brk.set(from.brk.get());
        to.max_map_count.set(from.max_map_count.get());
        to.mmap_base.set(from.mmap_base.get());
    }
}

/// Copies the entries of `vma` (of `src`) that hold a frame into `dst` at the same addresses,
/// each page gaining a reference and a mapping, and write-protects a private writable mapping's
/// pages on both sides; then flushes what it write-protected in `src`.
///
/// The child's tables are allocated first, so a failure leaves only empty tables for the child's
/// teardown. The copy itself holds the child's `page_table_lock` and, nested, the parent's (as
/// Linux does): an rmap walk or truncate that zaps a parent entry meanwhile either runs before
/// (the entry is not copied) or after (it finds the child's VMA, already linked, and its entry).
fn copy_page_range(
    k: &Kernel<'_>,
    src: &MmStruct,
    dst: &MmStruct,
    vma: VmaPtr,
) -> Result<(), ForkError> {
    let v = vma.get();
    let (start, end) = (v.start(), v.end());
    let mut present: Vec<VirtAddr> = Vec::new();
    {
        let _ptl = src.page_table_lock.lock(k);
        walk::for_each_leaf(k, src.pgd(), start, end, &mut |va, _, e| {
            if e.holds_frame() {
                present.push(va);
            }
        });
    }
    for &va in &present {
        pte_alloc(k, dst, va).ok_or(ForkError::Tables)?;
    }
    let flags = v.flags();
    let cow = !flags.contains(VmFlags::SHARED) && flags.contains(VmFlags::MAYWRITE);
    let mut protected = false;
    {
        let _dst_ptl = dst.page_table_lock.lock(k);
        let _src_ptl = src.page_table_lock.lock_nested(k);
        for &va in &present {
            let (Some(from), Some(to)) = (lookup(k, src.pgd(), va), lookup(k, dst.pgd(), va))
            else {
                continue;
            };
            let mut e = from.read(k);
            if !e.holds_frame() {
                continue;
            }
            if cow && e.flags().contains(PteFlags::WRITABLE) {
                e = e.with_flags(e.flags() & !PteFlags::WRITABLE);
                from.write(k, e);
                protected = true;
            }
            let frame = e.frame();
            if !k.is_zero_page(frame) {
                let page = k.page(frame);
                page.refcount.add(1);
                page.mapcount.add(1);
                if page.page_flags().contains(PageFlags::ANON) {
                    dst.anon_rss.add(1);
                } else {
                    dst.file_rss.add(1);
                }
            }
            // The child's entry is old, and clean where writeback would see it (`pte_mkold`,
            // `pte_mkclean`).
            let mut f = e.flags() & !PteFlags::ACCESSED;
            if flags.contains(VmFlags::SHARED) {
                f = f & !PteFlags::DIRTY;
            }
            to.write(k, PageTableEntry::new(frame, f));
        }
    }
    if protected {
        k.flush_tlb_range(src.addr(), src.pgd(), start, end);
    }
    Ok(())
}
