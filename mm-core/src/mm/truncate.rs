//! Truncate: shrink a file, zapping every mapping of the pages that go, then dropping them from the
//! page cache (Linux's `vmtruncate`).
//!
//! Truncate finds mappings only through `i_mmap` and walks their page tables without `mmap_sem`:
//! a VMA whose tables are being freed must already be out of `i_mmap` (Invariant 3).

use crate::hooks::WalkerPoint;
use crate::kernel::Kernel;
use crate::mm::file::MappingPtr;
use crate::mm::kobj::KPtr;
use crate::mm::mm_struct::MmStruct;
use crate::mm::unmap::zap_range_where;
use crate::paging::MmuGather;
use crate::phys::PageFlags;

/// Zaps, in every VMA mapping `mapping`, the PTEs of page offsets `[first, last]` — including
/// private copies made from them (Linux's `unmap_mapping_range` with `even_cows`).
pub fn unmap_mapping_range(k: &Kernel<'_>, mapping: MappingPtr, first: u64, last: u64) {
    unmap_mapping_pages(k, mapping, first, last, true);
}

/// [`unmap_mapping_range`]; without `even_cows`, the private copies stay mapped (a private
/// mapping keeps what it wrote when the file's pages go, as after a hole is punched).
fn unmap_mapping_pages(
    k: &Kernel<'_>,
    mapping: MappingPtr,
    first: u64,
    last: u64,
    even_cows: bool,
) {
    let i_mmap = mapping.get().lock_i_mmap(k);
    for vma in i_mmap.vmas_overlapping(first, last) {
        k.hooks().walker_point(k, WalkerPoint::TruncateVma);
        let v = vma.get();
        let lo = first.max(v.pgoff());
        let hi = last.min(v.last_pgoff());
        let (Some(start), Some(end_page)) = (v.address_of(lo), v.address_of(hi)) else {
            continue;
        };
        let Some(mm) = KPtr::<MmStruct>::from_addr(v.vm_mm.get()) else {
            continue;
        };
        let mm = mm.get();
        let mut tlb = MmuGather::new(mm.addr(), mm.pgd());
        let end = end_page + crate::addr::PAGE_SIZE;
        zap_range_where(k, mm, &mut tlb, start, end, |frame| {
            even_cows || !k.page(frame).page_flags().contains(PageFlags::ANON)
        });
        tlb.finish(k);
    }
}

/// Sets the file size to `new_size_pages`: zaps every mapping of the pages beyond it, then drops
/// them from the page cache. Later faults there get SIGBUS.
pub fn vmtruncate(k: &Kernel<'_>, mapping: MappingPtr, new_size_pages: u64) {
    let m = mapping.get();
    let old = m.i_size_pages.get();
    m.i_size_pages.set(new_size_pages);
    if new_size_pages >= old {
        return;
    }
    unmap_mapping_range(k, mapping, new_size_pages, u64::MAX);
    for (pgoff, _) in m.cached_from(new_size_pages) {
        m.delete_from_page_cache(k, pgoff);
    }
}

/// Frees page offsets `[first, last]` of the file, keeping its size (`fallocate` with
/// `FALLOC_FL_PUNCH_HOLE`, what `MADV_REMOVE` does): zaps every mapping of them, then drops them
/// from the page cache; the next touch reads zeroes. Private copies made from them stay (Linux's
/// `shmem_fallocate`: `unmap_mapping_range` without `even_cows`).
pub fn punch_hole(k: &Kernel<'_>, mapping: MappingPtr, first: u64, last: u64) {
    unmap_mapping_pages(k, mapping, first, last, false);
    let m = mapping.get();
    for (pgoff, _) in m.cached_from(first) {
        if pgoff > last {
            break;
        }
        m.delete_from_page_cache(k, pgoff);
    }
}
