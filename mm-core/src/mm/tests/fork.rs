//! fork (`Mm::fork`) and copy-on-write: what each process sees, what rmap finds, what exit
//! leaves, and that a failed fork leaves the parent as it was (issue 16).

use super::*;
use crate::addr::{PhysAddr, USER_BASE};
use crate::mm::file::{fput, iput, AddressSpace, File};
use crate::mm::{rmap, truncate, Advice, ForkError, MapFlags, VmFlags};
use crate::paging::walk::lookup;

const BASE: u64 = USER_BASE.0 + (7 << 30);
const P: u64 = PAGE_SIZE;

/// The frame mapped at `va`, if any.
fn frame_at(k: &Kernel<'_>, mm: &Mm, va: u64) -> Option<PhysAddr> {
    let e = lookup(k, mm.raw().pgd(), VirtAddr(va))?.read(k);
    e.holds_frame().then(|| e.frame())
}

/// Writes `value` at `va` as a store from user space would: the fault first, then the byte.
fn write(k: &Kernel<'_>, mm: &mut Mm, va: u64, value: u8) {
    mm.handle_mm_fault(k, VirtAddr(va), Access::Write)
        .expect("write fault");
    let frame = frame_at(k, mm, va).expect("mapped");
    k.write_byte(frame, va % P, value);
}

/// Reads the byte at `va` as a load from user space would.
fn read(k: &Kernel<'_>, mm: &mut Mm, va: u64) -> u8 {
    mm.handle_mm_fault(k, VirtAddr(va), Access::Read)
        .expect("read fault");
    let frame = frame_at(k, mm, va).expect("mapped");
    k.read_byte(frame, va % P)
}

/// A parent with `pages` written pages at BASE, page `i` holding `i + 1`.
fn parent(k: &Kernel<'_>, pages: u64) -> Mm {
    let mut mm = Mm::new(k, None).expect("mm");
    map_anon(k, &mut mm, BASE, pages);
    for i in 0..pages {
        write(k, &mut mm, BASE + i * P, i as u8 + 1);
    }
    mm
}

/// Checks each address space, destroys them all, and checks that no frame is left.
fn finish<const N: usize>(k: &Kernel<'_>, ram: &crate::phys::SimRam, mms: [Mm; N]) {
    for mm in &mms {
        assert_valid(k, mm);
    }
    for mm in mms {
        mm.destroy(k);
    }
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn cow_gives_each_process_its_own_copy_after_a_write_and_shares_until_then() {
    rig!(ram, tlb, k);
    let mut a = parent(&k, 4);
    let mut b = a.fork(&k, None).expect("fork");
    for i in 0..4 {
        let va = BASE + i * P;
        assert_eq!(
            frame_at(&k, &a, va),
            frame_at(&k, &b, va),
            "shared until written"
        );
        assert_eq!(read(&k, &mut b, va), i as u8 + 1);
    }
    let shared = frame_at(&k, &a, BASE).expect("mapped");
    assert_eq!(k.page(shared).mapcount.get(), 2);
    // The child writes: it gets a copy, the parent keeps the page (now its alone).
    write(&k, &mut b, BASE, 0xb0);
    assert_ne!(frame_at(&k, &b, BASE), Some(shared));
    assert_eq!(frame_at(&k, &a, BASE), Some(shared));
    assert_eq!((read(&k, &mut a, BASE), read(&k, &mut b, BASE)), (1, 0xb0));
    assert_eq!(k.page(shared).mapcount.get(), 1);
    // The parent writes that page: reused in place, no copy.
    write(&k, &mut a, BASE, 0xa0);
    assert_eq!(frame_at(&k, &a, BASE), Some(shared));
    // The parent writes a page still shared: it copies, the child keeps the original.
    let second = frame_at(&k, &a, BASE + P).expect("mapped");
    write(&k, &mut a, BASE + P, 0xa1);
    assert_ne!(frame_at(&k, &a, BASE + P), Some(second));
    assert_eq!(frame_at(&k, &b, BASE + P), Some(second));
    assert_eq!(
        (read(&k, &mut a, BASE + P), read(&k, &mut b, BASE + P)),
        (0xa1, 2)
    );
    for mm in [&a, &b] {
        assert_eq!(mm.raw().anon_rss.get(), 4);
        assert_valid(&k, mm);
    }
    // Both on one anon_vma list (the shared anon_vma).
    let anon = a
        .vma_at(VirtAddr(BASE))
        .expect("vma")
        .get()
        .anon()
        .expect("anon_vma");
    assert_eq!(anon.get().nr_vmas.get(), 2);
    assert_eq!(
        b.vma_at(VirtAddr(BASE)).expect("vma").get().anon(),
        Some(anon)
    );
    b.destroy(&k);
    assert_eq!(anon.get().nr_vmas.get(), 1);
    assert_valid(&k, &a);
    a.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn rmap_finds_every_mapping_of_a_shared_page_and_try_to_unmap_takes_it_from_all() {
    rig!(ram, tlb, k);
    let a = parent(&k, 2);
    let mut b = a.fork(&k, None).expect("fork");
    let c = b.fork(&k, None).expect("fork of the child");
    let page = frame_at(&k, &a, BASE).expect("mapped");
    let mut mms = alloc::vec::Vec::new();
    let found = rmap::rmap_walk(&k, page, &mut |vma, va, _| {
        assert_eq!(va, VirtAddr(BASE));
        mms.push(vma.get().vm_mm.get());
    });
    assert_eq!(found, 3);
    mms.sort_unstable();
    let mut want = [a.raw().addr(), b.raw().addr(), c.raw().addr()];
    want.sort_unstable();
    assert_eq!(mms, want);
    assert!(rmap::try_to_unmap(&k, page));
    for mm in [&a, &b, &c] {
        assert_eq!(frame_at(&k, mm, BASE), None);
        assert_eq!(mm.raw().anon_rss.get(), 1);
        assert_valid(&k, mm);
    }
    // The next access faults a fresh page in each, as after reclaim without swap.
    assert_eq!(read(&k, &mut b, BASE), 0);
    for mm in [a, b, c] {
        mm.destroy(&k);
    }
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn exit_of_any_process_in_a_tree_leaves_the_others_intact() {
    for dies in 0..3 {
        rig!(ram, tlb, k);
        let a = parent(&k, 3);
        let mut b = a.fork(&k, None).expect("fork");
        write(&k, &mut b, BASE + 2 * P, 0xbb);
        let c = b.fork(&k, None).expect("fork of the child");
        let mut tree = alloc::vec![Some(a), Some(b), Some(c)];
        tree[dies].take().expect("alive").destroy(&k);
        for (i, mm) in tree.iter_mut().enumerate() {
            let Some(mm) = mm else { continue };
            assert_valid(&k, mm);
            assert_eq!(read(&k, mm, BASE), 1, "process {i} after {dies} exited");
            let third = if i == 0 { 3 } else { 0xbb };
            assert_eq!(
                read(&k, mm, BASE + 2 * P),
                third,
                "process {i} after {dies} exited"
            );
        }
        for mm in tree.into_iter().flatten() {
            mm.destroy(&k);
        }
        assert_eq!(ram.frames_in_use(), 0, "{dies} exited first");
    }
}

#[test]
fn fork_leaves_out_dontfork_wipes_wipeonfork_and_does_not_inherit_locks() {
    rig!(ram, tlb, k);
    let mut a = parent(&k, 6);
    a.madvise(&k, VirtAddr(BASE), 2 * P, Advice::DONTFORK)
        .expect("dontfork");
    a.madvise(&k, VirtAddr(BASE + 2 * P), 2 * P, Advice::WIPEONFORK)
        .expect("wipeonfork");
    a.mlock(&k, VirtAddr(BASE + 4 * P), 2 * P, 0)
        .expect("mlock");
    let mut b = a.fork(&k, None).expect("fork");
    assert!(b.vma_at(VirtAddr(BASE)).is_none(), "DONTFORK is not copied");
    assert_eq!(
        read(&k, &mut b, BASE + 2 * P),
        0,
        "WIPEONFORK: fresh memory"
    );
    assert_eq!(read(&k, &mut a, BASE + 2 * P), 3);
    let locked = b
        .vma_at(VirtAddr(BASE + 4 * P))
        .expect("copied")
        .get()
        .flags();
    assert!(!locked.contains(VmFlags::LOCKED));
    assert_eq!((a.raw().locked_vm.get(), b.raw().locked_vm.get()), (2, 0));
    assert_eq!(read(&k, &mut b, BASE + 5 * P), 6);
    assert_eq!(b.raw().total_vm.get(), 4);
    finish(&k, &ram, [a, b]);
}

#[test]
fn a_shared_file_mapping_is_shared_after_fork_and_truncate_zaps_both() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut a = Mm::new(&k, None).expect("mm");
    let shared = MapFlags(MapFlags::SHARED.0 | MapFlags::FIXED.0);
    a.mmap(&k, VirtAddr(BASE), 4 * P, Prot::RW, shared, Some(file), 0)
        .expect("mmap");
    write(&k, &mut a, BASE, 7);
    let mut b = a.fork(&k, None).expect("fork");
    // No anon_vma: the child's tables are not copied; it faults the cached page in.
    assert_eq!(frame_at(&k, &b, BASE), None);
    assert_eq!(read(&k, &mut b, BASE), 7);
    write(&k, &mut b, BASE, 8);
    assert_eq!(read(&k, &mut a, BASE), 8, "one page, both see the write");
    let page = mapping.get().find_get_page(0).expect("cached");
    assert_eq!(rmap::rmap_walk(&k, page, &mut |_, _, _| {}), 2);
    truncate::vmtruncate(&k, mapping, 0);
    for mm in [&a, &b] {
        assert_eq!(frame_at(&k, mm, BASE), None);
        assert_valid(&k, mm);
    }
    a.destroy(&k);
    b.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn every_allocation_of_fork_and_of_the_cow_fault_can_fail_cleanly() {
    let mut fork_sites = 0;
    for n in 1.. {
        rig!(ram, tlb, k);
        let mut a = parent(&k, 3);
        // A second VMA far away: the child needs tables at every level for it.
        map_anon(&k, &mut a, BASE + (1 << 40), 1);
        write(&k, &mut a, BASE + (1 << 40), 9);
        let before = ram.frames_in_use();
        k.inject.fail_nth(n, None);
        let result = a.fork(&k, None);
        let fired = k.inject.fired();
        k.inject.fail_nth(0, None);
        match result {
            Err(e) => {
                assert!(fired, "fork failed without an injected failure: {e:?}");
                assert!(matches!(
                    e,
                    ForkError::Mm | ForkError::Vma | ForkError::Tables
                ));
                assert_eq!(
                    ram.frames_in_use(),
                    before,
                    "allocation {n}: the child leaked"
                );
                assert_valid(&k, &a);
                for i in 0..3 {
                    assert_eq!(read(&k, &mut a, BASE + i * P), i as u8 + 1);
                }
            }
            Ok(b) => {
                assert!(!fired, "allocation {n} failed but fork succeeded");
                b.destroy(&k);
            }
        }
        a.destroy(&k);
        assert_eq!(ram.frames_in_use(), 0, "allocation {n}: leaked frames");
        if !fired {
            fork_sites = n - 1;
            break;
        }
    }
    assert!(fork_sites >= 5, "mm, PGD, VMAs, tables ({fork_sites})");
    // The copy-on-write fault: its page allocation fails, and both processes stay as they were.
    rig!(ram, tlb, k);
    let mut a = parent(&k, 1);
    let mut b = a.fork(&k, None).expect("fork");
    k.inject.fail_nth(1, None);
    let r = b.handle_mm_fault(&k, VirtAddr(BASE), Access::Write);
    assert!(k.inject.fired() && r.is_err(), "{r:?}");
    k.inject.fail_nth(0, None);
    assert_eq!(frame_at(&k, &a, BASE), frame_at(&k, &b, BASE));
    assert_eq!((read(&k, &mut a, BASE), read(&k, &mut b, BASE)), (1, 1));
    finish(&k, &ram, [a, b]);
}

#[test]
fn a_vma_copied_by_fork_merges_only_with_pieces_of_its_own_copy() {
    rig!(ram, tlb, k);
    let mut a = parent(&k, 4);
    let mut b = a.fork(&k, None).expect("fork");
    // Linux gives the child's copy an anon_vma of its own chained to the parent's: a new mapping
    // next to it does not merge in the child, where the same mapping merges in the parent.
    for mm in [&mut a, &mut b] {
        map_anon(&k, mm, BASE + 4 * P, 2);
    }
    assert_eq!(
        a.vmas().count(),
        1,
        "the parent's VMA takes the new range in"
    );
    assert_eq!(b.vmas().count(), 2, "the child's copy does not");
    // Split and joined again, the copy's pieces merge: one copy, one anon_vma.
    b.mprotect(&k, VirtAddr(BASE + P), P, Prot::READ)
        .expect("split");
    assert_eq!(b.vmas().count(), 4);
    b.mprotect(&k, VirtAddr(BASE + P), P, Prot::RW)
        .expect("join");
    assert_eq!(b.vmas().count(), 2);
    // The new range's first fault does not borrow the copy's anon_vma.
    write(&k, &mut b, BASE + 4 * P, 1);
    let anon = |mm: &Mm, at: u64| mm.vma_at(VirtAddr(at)).expect("vma").get().anon();
    assert_ne!(anon(&b, BASE + 4 * P), anon(&b, BASE));
    finish(&k, &ram, [a, b]);
}
