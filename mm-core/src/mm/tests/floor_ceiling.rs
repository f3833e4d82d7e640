//! free_pgtables' floor and ceiling: tables shared with a neighbour survive, the rest go.

use super::*;
use crate::addr::{PGDIR_SIZE, PMD_SIZE, PUD_SIZE, TASK_SIZE, USER_BASE};
use crate::paging::walk::lookup;

const G: u64 = USER_BASE.0 + 3 * PGDIR_SIZE;

fn tables(k: &Kernel<'_>, mm: &Mm) -> u64 {
    let mut n = 0;
    crate::paging::walk::for_each_user_table(k, mm.raw().pgd(), &mut |_, _, _| n += 1);
    n
}

fn mapped(k: &Kernel<'_>, mm: &Mm, va: u64) -> bool {
    lookup(k, mm.raw().pgd(), VirtAddr(va)).is_some_and(|s| s.read(k).is_present())
}

#[test]
fn neighbours_sharing_a_pte_table_keep_it_when_one_is_unmapped() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, G, 1);
    mm.mmap(
        &k,
        VirtAddr(G + 2 * PAGE_SIZE),
        PAGE_SIZE,
        Prot::READ,
        ANON_FIXED,
        None,
        0,
    )
    .expect("mmap");
    touch(&k, &mut mm, G, 1);
    mm.handle_mm_fault(&k, VirtAddr(G + 2 * PAGE_SIZE), Access::Read)
        .expect("fault");
    assert_eq!(tables(&k, &mm), 3);
    mm.munmap(&k, VirtAddr(G + 2 * PAGE_SIZE), PAGE_SIZE)
        .expect("munmap");
    assert!(mapped(&k, &mm, G), "the neighbour's mapping survived");
    assert_eq!(tables(&k, &mm), 3);
    assert_valid(&k, &mm);
    mm.munmap(&k, VirtAddr(G), PAGE_SIZE).expect("munmap");
    assert_eq!(tables(&k, &mm), 0, "the last VMA takes every table with it");
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn neighbours_sharing_a_pmd_table_keep_it_but_lose_their_own_pte_tables() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    // Two VMAs in different 2 MiB regions of the same 1 GiB region: own PTE tables, one PMD table.
    map_anon(&k, &mut mm, G, 1);
    map_anon(&k, &mut mm, G + 4 * PMD_SIZE, 1);
    touch(&k, &mut mm, G, 1);
    touch(&k, &mut mm, G + 4 * PMD_SIZE, 1);
    assert_eq!(mm.raw().nr_ptes.get(), 2);
    mm.munmap(&k, VirtAddr(G + 4 * PMD_SIZE), PAGE_SIZE)
        .expect("munmap");
    assert_eq!(mm.raw().nr_ptes.get(), 1, "the unshared PTE table goes");
    assert_eq!(
        tables(&k, &mm),
        3,
        "PUD and PMD tables stay for the neighbour"
    );
    assert!(mapped(&k, &mm, G));
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_vma_straddling_a_2mib_boundary_frees_both_pte_tables() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let at = G + PMD_SIZE - PAGE_SIZE;
    map_anon(&k, &mut mm, at, 2);
    touch(&k, &mut mm, at, 2);
    assert_eq!(mm.raw().nr_ptes.get(), 2);
    mm.munmap(&k, VirtAddr(at), 2 * PAGE_SIZE).expect("munmap");
    assert_eq!(tables(&k, &mm), 0);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_vma_across_1gib_and_512gib_boundaries_leaves_the_neighbours_upper_tables() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    // Neighbour below in the same PUD table, a different PMD table.
    map_anon(&k, &mut mm, G + PGDIR_SIZE - 2 * PUD_SIZE, 1);
    touch(&k, &mut mm, G + PGDIR_SIZE - 2 * PUD_SIZE, 1);
    // The victim crosses the 1 GiB boundary below the 512 GiB one, and the 512 GiB one itself.
    let at = G + PGDIR_SIZE - PAGE_SIZE;
    map_anon(&k, &mut mm, at, 2);
    touch(&k, &mut mm, at, 2);
    let before = tables(&k, &mm);
    mm.munmap(&k, VirtAddr(at), 2 * PAGE_SIZE).expect("munmap");
    // Left: the neighbour's PUD, PMD and PTE tables. Gone: the victim's own PMD + PTE tables on both
    // sides and the PUD table of the next 512 GiB.
    assert_eq!(before, 3 + 2 + 3);
    assert_eq!(tables(&k, &mm), 3);
    assert!(mapped(&k, &mm, G + PGDIR_SIZE - 2 * PUD_SIZE));
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
#[allow(unsafe_code)] // builds a kernel PGD template, as the guest does at boot
fn vmas_at_the_bottom_and_top_of_user_space_free_everything_and_never_touch_kernel_entries() {
    rig!(ram, tlb, k);
    // A kernel PGD whose entry 0 (the identity map) and 256 (the higher half) point at kernel tables.
    let kpgd = Mm::new(&k, None).expect("kernel");
    let kernel_table = k
        .alloc_frame(crate::phys::AllocKind::PageTable)
        .expect("frame");
    let entry = crate::paging::PageTableEntry::new(kernel_table, crate::paging::PteFlags::TABLE);
    crate::paging::table::write(&k, kpgd.raw().pgd(), 0, entry);
    crate::paging::table::write(&k, kpgd.raw().pgd(), 256, entry);
    // SAFETY: a page-table root of this rig's RAM, live until the end of the test.
    let template = unsafe { crate::paging::table::KernelPgd::new(kpgd.raw().pgd()) };
    let mut mm = Mm::new(&k, Some(template)).expect("mm");
    map_anon(&k, &mut mm, USER_BASE.0, 1);
    map_anon(&k, &mut mm, TASK_SIZE.0 - PAGE_SIZE, 1);
    touch(&k, &mut mm, USER_BASE.0, 1);
    touch(&k, &mut mm, TASK_SIZE.0 - PAGE_SIZE, 1);
    assert_eq!(tables(&k, &mm), 6);
    mm.munmap(&k, USER_BASE, PAGE_SIZE).expect("munmap");
    assert_eq!(tables(&k, &mm), 3);
    mm.exit_mmap(&k);
    assert_eq!(tables(&k, &mm), 0);
    assert_eq!(crate::paging::table::read(&k, mm.raw().pgd(), 0), entry);
    assert_eq!(crate::paging::table::read(&k, mm.raw().pgd(), 256), entry);
    mm.destroy(&k);
    kpgd.destroy(&k);
    k.free_frame(kernel_table, crate::phys::AllocKind::PageTable);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn vmas_closer_than_a_pmd_are_gathered_and_all_their_tables_go_at_exit() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    for i in 0..8u64 {
        let at = G + i * (PMD_SIZE + 3 * PAGE_SIZE);
        mm.mmap(
            &k,
            VirtAddr(at),
            PAGE_SIZE,
            if i % 2 == 0 { Prot::RW } else { Prot::READ },
            ANON_FIXED,
            None,
            0,
        )
        .expect("mmap");
        mm.handle_mm_fault(&k, VirtAddr(at), Access::Read)
            .expect("fault");
    }
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}
