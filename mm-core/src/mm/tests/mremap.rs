//! `mremap`: shrink, grow in place, and move with the pages, the old tables freed.

use super::*;
use crate::addr::{PhysAddr, USER_BASE};
use crate::mm::rmap::try_to_unmap;
use crate::mm::{MremapError, MremapFlags};
use crate::paging::walk::lookup;
use alloc::vec::Vec;

const BASE: u64 = USER_BASE.0 + (1 << 30);
const P: u64 = PAGE_SIZE;
const MAYMOVE: MremapFlags = MremapFlags::MAYMOVE;
const FIXED: MremapFlags = MremapFlags(MremapFlags::MAYMOVE.0 | MremapFlags::FIXED.0);

fn frame_at(k: &Kernel<'_>, mm: &Mm, va: u64) -> Option<PhysAddr> {
    let e = lookup(k, mm.raw().pgd(), VirtAddr(va))?.read(k);
    e.holds_frame().then(|| e.frame())
}

#[test]
fn shrinking_unmaps_the_tail_and_growing_into_free_space_extends_in_place() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 4);
    touch(&k, &mut mm, BASE, 4);
    let at = mm
        .mremap(
            &k,
            VirtAddr(BASE),
            4 * P,
            2 * P,
            MremapFlags(0),
            VirtAddr(0),
        )
        .expect("shrink");
    assert_eq!(at.0, BASE);
    assert!(frame_at(&k, &mm, BASE + 2 * P).is_none());
    assert_eq!(mm.raw().total_vm.get(), 2);
    let at = mm
        .mremap(
            &k,
            VirtAddr(BASE),
            2 * P,
            8 * P,
            MremapFlags(0),
            VirtAddr(0),
        )
        .expect("grow");
    assert_eq!(at.0, BASE);
    let v = mm.vma_at(VirtAddr(BASE)).expect("vma");
    assert_eq!(v.get().end().0, BASE + 8 * P);
    assert_eq!(mm.raw().total_vm.get(), 8);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_blocked_grow_moves_the_vma_with_its_pages_and_rmap_finds_them_there() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 4);
    touch(&k, &mut mm, BASE, 4);
    // A read-only neighbour right after it blocks growing in place.
    mm.mmap(
        &k,
        VirtAddr(BASE + 4 * P),
        P,
        Prot::READ,
        ANON_FIXED,
        None,
        0,
    )
    .expect("neighbour");
    let frames: Vec<_> = (0..4).map(|i| frame_at(&k, &mm, BASE + i * P)).collect();
    let to = mm
        .mremap(&k, VirtAddr(BASE), 4 * P, 8 * P, MAYMOVE, VirtAddr(0))
        .expect("move");
    assert_ne!(to.0, BASE);
    let moved: Vec<_> = (0..4).map(|i| frame_at(&k, &mm, to.0 + i * P)).collect();
    assert_eq!(moved, frames, "the same pages, at the new address");
    assert!(mm.vma_at(VirtAddr(BASE)).is_none());
    assert_eq!(mm.raw().anon_rss.get(), 4);
    assert_valid(&k, &mm);
    // rmap follows the pages to their new address.
    let f = moved[1].expect("mapped");
    assert!(try_to_unmap(&k, f));
    assert!(frame_at(&k, &mm, to.0 + P).is_none());
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_fixed_move_replaces_the_target_and_a_moved_vma_keeps_apart_from_new_neighbours() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    touch(&k, &mut mm, BASE, 2);
    let target = BASE + (4 << 20);
    map_anon(&k, &mut mm, target, 8);
    let to = mm
        .mremap(&k, VirtAddr(BASE), 2 * P, 2 * P, FIXED, VirtAddr(target))
        .expect("fixed move");
    assert_eq!(to.0, target);
    // The moved VMA kept the page offset its pages are indexed by, so it does not merge with
    // the rest of the old target (Linux's vma_merge checks anonymous pgoffs too).
    assert_eq!(mm.raw().map_count.get(), 2);
    assert_eq!(mm.raw().total_vm.get(), 8);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn bad_mremap_arguments_fail_as_in_linux_and_change_nothing() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    mm.mmap(
        &k,
        VirtAddr(BASE + 2 * P),
        P,
        Prot::READ,
        ANON_FIXED,
        None,
        0,
    )
    .expect("neighbour");
    let cases = [
        (BASE, 3 * P, 4 * P, MAYMOVE, 0, MremapError::NotMapped),
        (BASE, 2 * P, 4 * P, MremapFlags(0), 0, MremapError::NoMemory),
        (
            BASE,
            2 * P,
            4 * P,
            MremapFlags::FIXED,
            BASE + P,
            MremapError::Invalid,
        ),
        (BASE, 2 * P, 2 * P, FIXED, BASE + P, MremapError::Invalid),
        (BASE + 1, P, 2 * P, MAYMOVE, 0, MremapError::Invalid),
        (BASE, 2 * P, 0, MAYMOVE, 0, MremapError::Invalid),
        (
            BASE,
            P,
            2 * P,
            MremapFlags::DONTUNMAP,
            0,
            MremapError::Invalid,
        ),
        (
            BASE + (8 << 20),
            P,
            2 * P,
            MAYMOVE,
            0,
            MremapError::NotMapped,
        ),
        // Larger than the user range: Linux refuses the length itself.
        (BASE, 2 * P, !(P - 1), MAYMOVE, 0, MremapError::Invalid),
    ];
    for (old, old_len, new_len, flags, new, err) in cases {
        let got = mm.mremap(&k, VirtAddr(old), old_len, new_len, flags, VirtAddr(new));
        assert_eq!(
            got,
            Err(err),
            "mremap({old:#x}, {old_len}, {new_len}, {flags:?})"
        );
    }
    assert_eq!(mm.raw().map_count.get(), 2);
    assert_eq!(mm.raw().total_vm.get(), 3);
    assert_valid(&k, &mm);
    mm.destroy(&k);
}

#[test]
fn truncate_finds_the_pages_of_a_moved_shared_file_mapping_at_their_new_address() {
    use crate::mm::file::{fput, AddressSpace, File};
    use crate::mm::{iput, truncate, MapFlags};
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let shared = MapFlags(MapFlags::SHARED.0 | MapFlags::FIXED.0);
    mm.mmap(&k, VirtAddr(BASE), 4 * P, Prot::RW, shared, Some(file), 0)
        .expect("mmap");
    touch(&k, &mut mm, BASE, 4);
    let to = BASE + (64 << 20);
    mm.mremap(&k, VirtAddr(BASE), 4 * P, 4 * P, FIXED, VirtAddr(to))
        .expect("move");
    assert_eq!(
        frame_at(&k, &mm, to + 3 * P),
        mapping.get().find_get_page(3)
    );
    truncate::vmtruncate(&k, mapping, 2);
    assert!(
        frame_at(&k, &mm, to + 3 * P).is_none(),
        "i_mmap found the moved VMA"
    );
    assert!(frame_at(&k, &mm, to + P).is_some());
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}
