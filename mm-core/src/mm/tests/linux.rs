//! Behaviours `vmm difftest` found mm-core getting wrong against Linux (6.18), one test each,
//! named after the behaviour (issue 12).

use super::*;
use crate::addr::{PAGE_SHIFT, USER_BASE};
use crate::mm::{
    fput, AddressSpace, Advice, File, MadviseError, MapFlags, MmapError, MprotectError,
    MremapError, MremapFlags, VmFlags,
};
use alloc::vec::Vec;

const BASE: u64 = USER_BASE.0 + (1 << 30);
const P: u64 = PAGE_SIZE;

fn flags(mm: &Mm, at: u64) -> VmFlags {
    mm.vma_at(VirtAddr(at)).expect("mapped").get().flags()
}

/// `(start, end)` of every VMA, in pages from BASE.
fn layout(mm: &Mm) -> Vec<(u64, u64)> {
    mm.vmas()
        .map(|v| {
            let v = v.get();
            (
                (v.start().0 - BASE) >> PAGE_SHIFT,
                (v.end().0 - BASE) >> PAGE_SHIFT,
            )
        })
        .collect()
}

fn map(k: &Kernel<'_>, mm: &mut Mm, page: u64, pages: u64, prot: Prot) {
    mm.mmap(
        k,
        VirtAddr(BASE + page * P),
        pages * P,
        prot,
        ANON_FIXED,
        None,
        0,
    )
    .expect("mmap");
}

#[test]
fn mprotect_making_an_unfaulted_range_read_only_uncharges_it_so_it_merges_back() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 8, Prot::EXEC);
    mm.mprotect(&k, VirtAddr(BASE), 3 * P, Prot(7))
        .expect("rwx");
    assert!(flags(&mm, BASE).contains(VmFlags::ACCOUNT));
    mm.mprotect(&k, VirtAddr(BASE), 4 * P, Prot::READ)
        .expect("r");
    assert_eq!(layout(&mm), [(0, 4), (4, 8)]);
    assert!(!flags(&mm, BASE).contains(VmFlags::ACCOUNT));
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn mprotect_meeting_a_hole_fails_after_changing_the_part_before_it() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::RW);
    map(&k, &mut mm, 3, 2, Prot::RW);
    let got = mm.mprotect(&k, VirtAddr(BASE), 5 * P, Prot::READ);
    assert_eq!(got, Err(MprotectError::NotMapped));
    assert_eq!(flags(&mm, BASE).0 & 7, Prot::READ.0);
    assert_eq!(flags(&mm, BASE + 3 * P).0 & 7, Prot::RW.0);
    // A hole at the start changes nothing.
    let got = mm.mprotect(&k, VirtAddr(BASE + 2 * P), 2 * P, Prot::NONE);
    assert_eq!(got, Err(MprotectError::NotMapped));
    assert_eq!(flags(&mm, BASE + 3 * P).0 & 7, Prot::RW.0);
    mm.destroy(&k);
}

#[test]
fn a_shared_mapping_of_a_read_only_file_is_never_writable() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let mapping = AddressSpace::create(&k, 8).expect("file");
    let ro = File::open_read_only(&k, mapping, None).expect("open");
    let shared = MapFlags::SHARED.union(MapFlags::FIXED);
    let at = VirtAddr(BASE);
    let rw = mm.mmap(&k, at, 4 * P, Prot::RW, shared, Some(ro), 0);
    assert_eq!(rw, Err(MmapError::Access));
    mm.mmap(&k, at, 4 * P, Prot::READ, shared, Some(ro), 0)
        .expect("read-only");
    assert_eq!(mm.mprotect(&k, at, P, Prot::RW), Err(MprotectError::Access));
    mm.destroy(&k);
    fput(&k, ro);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn map_fixed_noreplace_over_a_mapping_fails_with_eexist() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 2, 2, Prot::RW);
    let noreplace =
        MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0 | MapFlags::FIXED_NOREPLACE.0);
    let got = mm.mmap(&k, VirtAddr(BASE), 3 * P, Prot::RW, noreplace, None, 0);
    assert_eq!(got, Err(MmapError::Exists));
    assert_eq!(layout(&mm), [(2, 4)]);
    mm.destroy(&k);
}

#[test]
fn a_shrinking_mremap_may_span_several_vmas_and_holes() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::RW);
    map(&k, &mut mm, 2, 2, Prot::READ);
    map(&k, &mut mm, 6, 2, Prot::RW);
    let got = mm.mremap(&k, VirtAddr(BASE), 8 * P, P, MremapFlags(0), VirtAddr(0));
    assert_eq!(got, Ok(VirtAddr(BASE)));
    assert_eq!(layout(&mm), [(0, 1)]);
    // Growing still needs the old range inside one VMA.
    map(&k, &mut mm, 1, 1, Prot::READ);
    let grow = mm.mremap(
        &k,
        VirtAddr(BASE),
        2 * P,
        3 * P,
        MremapFlags::MAYMOVE,
        VirtAddr(0),
    );
    assert_eq!(grow, Err(MremapError::NotMapped));
    mm.destroy(&k);
}

#[test]
fn a_same_length_fixed_mremap_moves_every_vma_of_the_range_keeping_the_gaps() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::RW);
    map(&k, &mut mm, 3, 1, Prot::READ);
    touch(&k, &mut mm, BASE, 1);
    let fixed = MremapFlags(MremapFlags::MAYMOVE.0 | MremapFlags::FIXED.0);
    let to = VirtAddr(BASE + 16 * P);
    let got = mm.mremap(&k, VirtAddr(BASE), 4 * P, 4 * P, fixed, to);
    assert_eq!(got, Ok(to));
    assert_eq!(layout(&mm), [(16, 18), (19, 20)]);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_null_mmap_goes_top_down_and_leaves_the_guard_gap_below_a_stack_free() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let top = BASE + 1024 * P;
    mm.set_mmap_top_down(VirtAddr(top));
    let anon = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0);
    let a = mm
        .mmap(&k, VirtAddr(0), 2 * P, Prot::RW, anon, None, 0)
        .expect("mmap");
    assert_eq!(a.0, top - 2 * P);
    let stack = MapFlags(anon.0 | MapFlags::GROWSDOWN.0);
    let s = mm
        .mmap(&k, VirtAddr(0), P, Prot::RW, stack, None, 0)
        .expect("stack");
    assert_eq!(s.0, top - 3 * P);
    // The gap right below the stack is its guard gap: the next mapping goes below that.
    let b = mm
        .mmap(&k, VirtAddr(0), P, Prot::RW, anon, None, 0)
        .expect("mmap");
    assert_eq!(b.0, s.0 - crate::mm::mmap::STACK_GUARD_GAP - P);
    mm.destroy(&k);
}

#[test]
fn a_touch_below_a_growsdown_mapping_extends_it() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let stack = MapFlags(ANON_FIXED.0 | MapFlags::GROWSDOWN.0);
    let at = VirtAddr(BASE + 8 * P);
    mm.mmap(&k, at, P, Prot::RW, stack, None, 0).expect("stack");
    mm.handle_mm_fault(&k, VirtAddr(BASE + 5 * P), Access::Write)
        .expect("grows");
    assert_eq!(layout(&mm), [(5, 9)]);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn madvise_free_keeps_the_pages_until_reclaim_and_remove_needs_a_shared_writable_mapping() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::RW);
    touch(&k, &mut mm, BASE, 2);
    let frames = ram.frames_in_use();
    mm.madvise(&k, VirtAddr(BASE), 2 * P, Advice::FREE)
        .expect("free");
    assert_eq!(ram.frames_in_use(), frames);
    let got = mm.madvise(&k, VirtAddr(BASE), 2 * P, Advice::REMOVE);
    assert_eq!(got, Err(MadviseError::Invalid), "anonymous: no file");
    let mapping = AddressSpace::create(&k, 8).expect("file");
    let f = File::open(&k, mapping, None).expect("open");
    let private = MapFlags::PRIVATE.union(MapFlags::FIXED);
    mm.mmap(
        &k,
        VirtAddr(BASE + 4 * P),
        2 * P,
        Prot::RW,
        private,
        Some(f),
        0,
    )
    .expect("mmap");
    let got = mm.madvise(&k, VirtAddr(BASE + 4 * P), 2 * P, Advice::REMOVE);
    assert_eq!(got, Err(MadviseError::Access));
    mm.destroy(&k);
    fput(&k, f);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn madvise_populate_faults_pages_in_and_refuses_what_the_mapping_forbids() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::RW);
    map(&k, &mut mm, 2, 1, Prot::NONE);
    mm.madvise(&k, VirtAddr(BASE), 2 * P, Advice::POPULATE_WRITE)
        .expect("populate");
    let mut vec = [0u8; 2];
    mm.mincore(&k, VirtAddr(BASE), 2 * P, &mut vec)
        .expect("mincore");
    assert_eq!(vec, [1, 1]);
    let got = mm.madvise(&k, VirtAddr(BASE), 3 * P, Advice::POPULATE_READ);
    assert_eq!(got, Err(MadviseError::Invalid), "PROT_NONE");
    let got = mm.madvise(&k, VirtAddr(BASE), 4 * P, Advice::POPULATE_READ);
    assert_eq!(
        got,
        Err(MadviseError::Invalid),
        "PROT_NONE comes before the hole"
    );
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn madvise_mergeable_leaves_a_shared_mapping_alone() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let shared = MapFlags(MapFlags::SHARED.0 | MapFlags::ANONYMOUS.0 | MapFlags::FIXED.0);
    mm.mmap(&k, VirtAddr(BASE), 4 * P, Prot::RW, shared, None, 0)
        .expect("mmap");
    mm.madvise(&k, VirtAddr(BASE + P), P, Advice::MERGEABLE)
        .expect("ignored");
    assert_eq!(layout(&mm), [(0, 4)]);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn mlock_splits_out_locks_and_faults_in_the_range_and_munlock_merges_it_back() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 4, Prot::RW);
    mm.mlock(&k, VirtAddr(BASE + P), 2 * P, 0).expect("mlock");
    assert_eq!(layout(&mm), [(0, 1), (1, 3), (3, 4)]);
    assert_eq!(mm.raw().locked_vm.get(), 2);
    let mut vec = [0u8; 4];
    mm.mincore(&k, VirtAddr(BASE), 4 * P, &mut vec)
        .expect("mincore");
    assert_eq!(vec, [0, 1, 1, 0]);
    mm.munlock(&k, VirtAddr(BASE), 4 * P).expect("munlock");
    assert_eq!(layout(&mm), [(0, 4)]);
    assert_eq!(mm.raw().locked_vm.get(), 0);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn anonymous_neighbours_differing_only_in_access_share_an_anon_vma_so_they_can_merge() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    // NORESERVE: neither is accounted, so their flags differ only in the access bits.
    let anon = MapFlags(ANON_FIXED.0 | MapFlags::NORESERVE.0);
    mm.mmap(&k, VirtAddr(BASE), 2 * P, Prot::RW, anon, None, 0)
        .expect("rw");
    mm.mmap(&k, VirtAddr(BASE + 2 * P), 2 * P, Prot::READ, anon, None, 0)
        .expect("r");
    assert_eq!(layout(&mm), [(0, 2), (2, 4)]);
    touch(&k, &mut mm, BASE, 1);
    mm.handle_mm_fault(&k, VirtAddr(BASE + 2 * P), Access::Read)
        .expect("read");
    mm.mprotect(&k, VirtAddr(BASE + 2 * P), 2 * P, Prot::RW)
        .expect("rw");
    assert_eq!(layout(&mm), [(0, 4)]);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn mremap_dontunmap_of_a_locked_range_leaves_the_old_range_mapped_unlocked_and_the_count_exact() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let locked = MapFlags(ANON_FIXED.0 | MapFlags::LOCKED.0);
    mm.mmap(&k, VirtAddr(BASE), 2 * P, Prot::RW, locked, None, 0)
        .expect("mmap");
    let dontunmap = MremapFlags(MremapFlags::MAYMOVE.0 | MremapFlags::DONTUNMAP.0);
    let to = mm
        .mremap(&k, VirtAddr(BASE), 2 * P, 2 * P, dontunmap, VirtAddr(0))
        .expect("mremap");
    assert_ne!(to, VirtAddr(BASE));
    assert!(!flags(&mm, BASE).contains(VmFlags::LOCKED));
    assert!(flags(&mm, to.0).contains(VmFlags::LOCKED));
    assert_eq!(mm.raw().locked_vm.get(), 2);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn mremap_dontunmap_keeps_the_old_vma_accounted_so_it_merges_with_a_range_made_writable_later() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 11, Prot::RW);
    let dontunmap = MremapFlags(MremapFlags::MAYMOVE.0 | MremapFlags::DONTUNMAP.0);
    mm.mremap(&k, VirtAddr(BASE + 8 * P), P, P, dontunmap, VirtAddr(0))
        .expect("mremap");
    assert!(flags(&mm, BASE).contains(VmFlags::ACCOUNT));
    map(&k, &mut mm, 11, 4, Prot::EXEC);
    mm.mprotect(&k, VirtAddr(BASE + 11 * P), 4 * P, Prot::RW)
        .expect("rw");
    assert_eq!(
        layout(&mm)[0],
        (0, 15),
        "one accounted rw-p VMA, as in Linux"
    );
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_read_of_never_written_anonymous_memory_maps_the_zero_page_and_gives_no_anon_vma() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map(&k, &mut mm, 0, 2, Prot::READ);
    map(&k, &mut mm, 2, 2, Prot::RW);
    touch(&k, &mut mm, BASE + 2 * P, 1);
    let frames = ram.frames_in_use();
    mm.handle_mm_fault(&k, VirtAddr(BASE), Access::Read)
        .expect("read");
    assert_eq!(ram.frames_in_use(), frames, "no page of its own");
    assert!(mm
        .vma_at(VirtAddr(BASE))
        .expect("vma")
        .get()
        .anon()
        .is_none());
    let mut vec = [0u8; 1];
    mm.mincore(&k, VirtAddr(BASE), P, &mut vec)
        .expect("mincore");
    assert_eq!(vec, [1], "the zero page is resident");
    // No anon_vma: made writable, it merges with its written neighbour, as in Linux.
    mm.mprotect(&k, VirtAddr(BASE), 2 * P, Prot::RW)
        .expect("rw");
    assert_eq!(layout(&mm), [(0, 4)]);
    // A write copies it.
    touch(&k, &mut mm, BASE, 1);
    assert_eq!(ram.frames_in_use(), frames + 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_punched_hole_keeps_the_private_copies_made_of_its_pages() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let mapping = AddressSpace::create(&k, 8).expect("file");
    let f = File::open(&k, mapping, None).expect("open");
    let shared = MapFlags::SHARED.union(MapFlags::FIXED);
    let private = MapFlags::PRIVATE.union(MapFlags::FIXED);
    mm.mmap(&k, VirtAddr(BASE), 2 * P, Prot::RW, shared, Some(f), 0)
        .expect("shared");
    mm.mmap(
        &k,
        VirtAddr(BASE + 4 * P),
        2 * P,
        Prot::RW,
        private,
        Some(f),
        0,
    )
    .expect("private");
    touch(&k, &mut mm, BASE, 2);
    touch(&k, &mut mm, BASE + 4 * P, 1); // a private copy of page 0
    mm.handle_mm_fault(&k, VirtAddr(BASE + 5 * P), Access::Read)
        .expect("read page 1");
    mm.madvise(&k, VirtAddr(BASE), 2 * P, Advice::REMOVE)
        .expect("punch");
    let mut vec = [0u8; 2];
    mm.mincore(&k, VirtAddr(BASE + 4 * P), 2 * P, &mut vec)
        .expect("mincore");
    assert_eq!(vec, [1, 0], "the copy stays; the file's page went");
    mm.mincore(&k, VirtAddr(BASE), 2 * P, &mut vec)
        .expect("mincore");
    assert_eq!(vec, [0, 0]);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, f);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}
