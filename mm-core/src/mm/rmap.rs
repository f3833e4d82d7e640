//! Reverse mapping: from a page to every PTE that maps it.
//!
//! Lock order for walkers (see the crate root): `i_mmap_lock` or the anon_vma lock, then each
//! VMA's page tables, descended without `mmap_sem`. That is why a VMA must leave i_mmap and its
//! anon_vma before its page tables are freed (Invariant 3).

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::hooks::WalkerPoint;
use crate::kernel::Kernel;
use crate::mm::anon::{anon_mapping_value, AnonVma, AnonVmaPtr};
use crate::mm::file::AddressSpace;
use crate::mm::i_mmap::IMmapGuard;
use crate::mm::kobj::KPtr;
use crate::mm::lock::MmLockGuard;
use crate::mm::mm_struct::MmStruct;
use crate::mm::vma::VmaPtr;
use crate::paging::walk::{lookup, read_entry, PteSlot};
use crate::paging::{PageTableEntry, PteFlags};
use crate::phys::{PageFlags, PAGE_MAPPING_ANON};

/// Records a new anonymous mapping of `frame` at `va` of `vma` (Linux's `page_add_anon_rmap` on a
/// fresh page).
pub(crate) fn page_add_new_anon_rmap(
    k: &Kernel<'_>,
    mm: &MmStruct,
    frame: PhysAddr,
    anon: AnonVmaPtr,
    index: u64,
) {
    let page = k.page(frame);
    page.flags.set(page.flags.get() | PageFlags::ANON.0);
    page.mapping.set(anon_mapping_value(anon));
    page.index.set(index);
    page.refcount.set(1);
    page.mapcount.set(1);
    mm.anon_rss.add(1);
}

/// Records one more mapping of page-cache page `frame` (takes a reference).
pub(crate) fn page_add_file_rmap(k: &Kernel<'_>, mm: &MmStruct, frame: PhysAddr) {
    let page = k.page(frame);
    page.refcount.add(1);
    page.mapcount.add(1);
    mm.file_rss.add(1);
}

/// Drops one mapping of `frame` from `mm`'s accounting; the reference is dropped by the caller
/// (after the TLB flush). An anonymous page's last unmap forgets its anon_vma, which may be freed
/// next (Invariant 7).
pub(crate) fn page_remove_rmap(k: &Kernel<'_>, mm: &MmStruct, frame: PhysAddr) {
    let page = k.page(frame);
    let anon = page.page_flags().contains(PageFlags::ANON);
    if anon {
        mm.anon_rss.sub(1);
    } else {
        mm.file_rss.sub(1);
    }
    if page.mapcount.sub(1) == 0 && anon {
        page.mapping.set(0);
    }
}

/// The lock an rmap walk holds.
enum Held<'a> {
    AnonVma(#[allow(dead_code)] MmLockGuard<'a>),
    IMmap(#[allow(dead_code)] IMmapGuard<'a>),
}

/// Calls `f(vma, va, slot)` for every PTE that maps `frame`, found through its anon_vma or its
/// file's i_mmap (Linux's `rmap_walk`), with `page_table_lock` held. Returns how many were found.
///
/// Runs without `mmap_sem`, on any CPU, concurrently with munmap and exit; the caller holds a
/// reference to `frame` (as reclaim does), so the frame cannot be freed and reused under the walk.
pub fn rmap_walk(
    k: &Kernel<'_>,
    frame: PhysAddr,
    f: &mut dyn FnMut(VmaPtr, VirtAddr, PteSlot),
) -> u64 {
    let page = k.page(frame);
    if page.mapcount.get() == 0 {
        return 0;
    }
    let mapping = page.mapping.get();
    let index = page.index.get();
    // Walkers hold the anon_vma lock or i_mmap_lock for the whole walk: an unlinker that takes it
    // for writing waits for us, and once it has run we cannot find its VMA (Invariant 3). The
    // handles live as long as the lock guard that borrows the object.
    let (anon, m): (KPtr<AnonVma>, KPtr<AddressSpace>);
    let (_held, vmas): (Held<'_>, alloc::vec::Vec<VmaPtr>) = if mapping & PAGE_MAPPING_ANON != 0 {
        let Some(found) = KPtr::<AnonVma>::from_addr(mapping & !PAGE_MAPPING_ANON) else {
            return 0;
        };
        anon = found;
        // The anon_vma may have been freed since `mapping` was read: anon_vmas are type-stable
        // (`Kernel::free_anon_vma`), so its lock is still a lock, and the check below (Linux's
        // `page_lock_anon_vma_read`) tells whether it is still this page's.
        let a = anon.get();
        (Held::AnonVma(a.lock.lock(k)), a.vmas().collect())
    } else {
        let Some(found) = KPtr::<AddressSpace>::from_addr(mapping) else {
            return 0;
        };
        m = found;
        let i_mmap = m.get().lock_i_mmap(k);
        let vmas = i_mmap.vmas_overlapping(index, index);
        (Held::IMmap(i_mmap), vmas)
    };
    if page.mapping.get() != mapping || page.mapcount.get() == 0 {
        return 0;
    }
    let mut found = 0;
    for vma in vmas {
        k.hooks().walker_point(k, WalkerPoint::RmapVma);
        let v = vma.get();
        let Some(va) = v.address_of(index) else {
            continue;
        };
        let Some(mm) = KPtr::<MmStruct>::from_addr(v.vm_mm.get()) else {
            continue;
        };
        let mm = mm.get();
        // Descend without page_table_lock, as Linux's page_vma_mapped_walk does: the tables cannot
        // be freed under us because the VMA is still on the list we hold locked (Invariant 3) —
        // the rule this whole project checks. Only the PTE itself is read under the lock.
        let Some(slot) = lookup(k, mm.pgd(), va) else {
            continue;
        };
        k.hooks().walker_point(k, WalkerPoint::RmapPte);
        let _ptl = mm.page_table_lock.lock(k);
        let Some(e) = read_entry(k, slot.table, slot.index, va) else {
            continue;
        };
        if e.is_present() && e.frame() == frame {
            found += 1;
            f(vma, va, slot);
        }
    }
    found
}

fn flush_one(k: &Kernel<'_>, vma: VmaPtr, va: VirtAddr) {
    if let Some(m) = KPtr::<MmStruct>::from_addr(vma.get().vm_mm.get()) {
        k.flush_tlb_range(m.addr(), m.get().pgd(), va, va + PAGE_SIZE);
    }
}

/// Counts the PTEs mapping `frame` that the CPU marked accessed, clearing the bit (Linux's
/// `page_referenced`).
pub fn page_referenced(k: &Kernel<'_>, frame: PhysAddr) -> u64 {
    let mut referenced = 0;
    rmap_walk(k, frame, &mut |vma, va, slot| {
        let e = slot.read(k);
        if e.flags().contains(PteFlags::ACCESSED) {
            referenced += 1;
            slot.write(k, e.with_flags(e.flags() & !PteFlags::ACCESSED));
            flush_one(k, vma, va);
        }
    });
    referenced
}

/// Unmaps `frame` from every PTE that maps it (Linux's `try_to_unmap`); returns whether the page is
/// now unmapped. Anonymous contents are dropped (there is no swap).
pub fn try_to_unmap(k: &Kernel<'_>, frame: PhysAddr) -> bool {
    rmap_walk(k, frame, &mut |vma, va, slot| {
        slot.write(k, PageTableEntry::NONE);
        flush_one(k, vma, va);
        if let Some(mm) = KPtr::<MmStruct>::from_addr(vma.get().vm_mm.get()) {
            page_remove_rmap(k, mm.get(), frame);
        }
        k.put_page(frame);
    });
    k.page(frame).mapcount.get() == 0
}
