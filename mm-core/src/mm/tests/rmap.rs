//! Reverse mapping through i_mmap and anon_vma: rmap finds every mapping, and only live ones.

use super::*;
use crate::addr::USER_BASE;
use crate::mm::file::{fput, iput, AddressSpace, File};
use crate::mm::{rmap, truncate};
use crate::paging::walk::lookup;

const BASE: u64 = USER_BASE.0 + (9 << 30);

#[test]
fn rmap_finds_a_file_page_in_every_vma_that_maps_it_and_truncate_zaps_them_all() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let n = 100;
    for i in 0..n {
        // Every other page, so the VMAs (all at pgoff 0) cannot merge.
        let at = VirtAddr(BASE + 2 * i * PAGE_SIZE);
        let flags = MapFlags(MapFlags::SHARED.0 | MapFlags::FIXED.0);
        mm.mmap(&k, at, PAGE_SIZE, Prot::READ, flags, Some(file), 0)
            .expect("mmap");
        mm.handle_mm_fault(&k, at, Access::Read).expect("fault");
    }
    assert_eq!(mm.raw().map_count.get(), n);
    let page = mapping.get().find_get_page(0).expect("cached");
    assert_eq!(k.page(page).mapcount.get(), n);
    assert_eq!(
        rmap::page_referenced(&k, page),
        n,
        "every mapping was accessed"
    );
    assert_eq!(
        rmap::page_referenced(&k, page),
        0,
        "the accessed bits were cleared"
    );
    assert_valid(&k, &mm);
    // Unmap half of them: rmap must no longer find those.
    for i in (0..n).step_by(2) {
        mm.munmap(&k, VirtAddr(BASE + 2 * i * PAGE_SIZE), PAGE_SIZE)
            .expect("munmap");
    }
    assert_eq!(rmap::rmap_walk(&k, page, &mut |_, _, _| {}), n / 2);
    truncate::vmtruncate(&k, mapping, 0);
    assert_eq!(mm.raw().file_rss.get(), 0);
    assert!(lookup(&k, mm.raw().pgd(), VirtAddr(BASE + 2 * PAGE_SIZE))
        .is_some_and(|s| s.read(&k).is_none()));
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn try_to_unmap_takes_an_anonymous_page_out_of_its_only_mapping() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    touch(&k, &mut mm, BASE, 2);
    let slot = lookup(&k, mm.raw().pgd(), VirtAddr(BASE + PAGE_SIZE)).expect("slot");
    let frame = slot.read(&k).frame();
    assert!(rmap::try_to_unmap(&k, frame));
    assert!(slot.read(&k).is_none());
    assert!(
        !ram.is_allocated(frame),
        "the page was freed with its last mapping"
    );
    assert_eq!(mm.raw().anon_rss.get(), 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn splitting_and_merging_file_vmas_keeps_the_interval_tree_keyed_right() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 16).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let flags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::FIXED.0);
    mm.mmap(
        &k,
        VirtAddr(BASE),
        8 * PAGE_SIZE,
        Prot::RW,
        flags,
        Some(file),
        4,
    )
    .expect("mmap");
    mm.mprotect(
        &k,
        VirtAddr(BASE + 2 * PAGE_SIZE),
        3 * PAGE_SIZE,
        Prot::READ,
    )
    .expect("split");
    assert_eq!(mm.raw().map_count.get(), 3);
    assert_valid(&k, &mm);
    let i_mmap = mapping.get().lock_i_mmap(&k);
    let hits = i_mmap.vmas_overlapping(7, 7);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].get().start().0, BASE + 2 * PAGE_SIZE);
    drop(i_mmap);
    mm.mprotect(&k, VirtAddr(BASE + 2 * PAGE_SIZE), 3 * PAGE_SIZE, Prot::RW)
        .expect("merge");
    assert_eq!(mm.raw().map_count.get(), 1);
    assert_eq!(
        mapping.get().lock_i_mmap(&k).vmas_overlapping(11, 11).len(),
        1
    );
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn truncate_zaps_a_shared_file_in_every_address_space_and_exit_of_one_leaves_the_other() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let flags = MapFlags(MapFlags::SHARED.0 | MapFlags::FIXED.0);
    let mut a = Mm::new(&k, None).expect("mm a");
    let mut b = Mm::new(&k, None).expect("mm b");
    for mm in [&mut a, &mut b] {
        mm.mmap(
            &k,
            VirtAddr(BASE),
            4 * PAGE_SIZE,
            Prot::RW,
            flags,
            Some(file),
            0,
        )
        .expect("mmap");
        touch(&k, mm, BASE, 4);
    }
    let page = mapping.get().find_get_page(3).expect("cached");
    assert_eq!(rmap::rmap_walk(&k, page, &mut |_, _, _| {}), 2);
    truncate::vmtruncate(&k, mapping, 3);
    assert_eq!((a.raw().file_rss.get(), b.raw().file_rss.get()), (3, 3));
    assert!(
        !ram.is_allocated(page),
        "the truncated page went with its last mapping"
    );
    a.destroy(&k);
    let page = mapping.get().find_get_page(0).expect("cached");
    assert_eq!(
        rmap::rmap_walk(&k, page, &mut |_, _, _| {}),
        1,
        "only b maps it now"
    );
    assert_valid(&k, &b);
    b.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

/// Records the walker events rmap reports.
#[derive(Default)]
struct WalkerLog {
    points: core::cell::RefCell<alloc::vec::Vec<crate::hooks::WalkerPoint>>,
    hits: core::cell::RefCell<alloc::vec::Vec<crate::hooks::PoisonHit>>,
}

impl crate::hooks::MmHooks for WalkerLog {
    fn walker_point(&self, _k: &crate::Kernel<'_>, point: crate::hooks::WalkerPoint) {
        self.points.borrow_mut().push(point);
    }
    fn poison_hit(&self, _k: &crate::Kernel<'_>, hit: &crate::hooks::PoisonHit) {
        self.hits.borrow_mut().push(*hit);
    }
}

#[test]
fn a_walker_that_meets_a_freed_tables_poison_reports_it_and_does_not_follow_it() {
    use crate::hooks::WalkerPoint;
    use crate::paging::entry::FREED_TABLE_POISON_TAG;
    use crate::paging::PageTableEntry;

    rig!(ram, tlb, k);
    let log = WalkerLog::default();
    let k = k.with_hooks(&log);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    touch(&k, &mut mm, BASE, 2);
    let va = VirtAddr(BASE + PAGE_SIZE);
    let slot = lookup(&k, mm.raw().pgd(), va).expect("slot");
    let entry = slot.read(&k);
    assert_eq!(rmap::page_referenced(&k, entry.frame()), 1);
    assert_eq!(
        *log.points.borrow(),
        [WalkerPoint::RmapVma, WalkerPoint::RmapPte],
        "one VMA, one PTE"
    );
    assert!(log.hits.borrow().is_empty());

    // What a walker finds in a PTE table the probes poisoned on its way to the allocator.
    let poison = PageTableEntry::from_bits(FREED_TABLE_POISON_TAG | 1);
    slot.write(&k, poison);
    assert_eq!(rmap::page_referenced(&k, entry.frame()), 0);
    let hits = log.hits.borrow();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        (hits[0].table, hits[0].index, hits[0].va),
        (slot.table, slot.index, va)
    );
    assert!(
        hits[0].location.file().ends_with("rmap.rs"),
        "{:?}",
        hits[0].location
    );
    drop(hits);
    slot.write(&k, entry);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}
