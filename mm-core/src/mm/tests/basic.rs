//! mmap, munmap, mprotect, brk, faults and exit on one address space.

use super::*;
use crate::addr::{PhysAddr, USER_BASE};
use crate::mm::file::{fput, AddressSpace, File};
use crate::mm::{truncate, FaultError, MmapError, MunmapError, VmFlags};
use crate::paging::walk::lookup;
use crate::paging::PteFlags;
use crate::phys::AllocKind;

const BASE: u64 = USER_BASE.0 + (1 << 30);

fn frame_at(k: &Kernel<'_>, mm: &Mm, va: u64) -> Option<PhysAddr> {
    let slot = lookup(k, mm.raw().pgd(), VirtAddr(va))?;
    let e = slot.read(k);
    e.is_present().then(|| e.frame())
}

#[test]
fn an_anonymous_mapping_faults_in_zeroed_pages_and_exit_returns_every_frame() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let a = map_anon(&k, &mut mm, BASE, 4);
    touch(&k, &mut mm, a.0, 4);
    let f = frame_at(&k, &mm, a.0 + PAGE_SIZE).expect("mapped");
    assert_eq!(k.read_byte(f, 17), 0);
    assert_eq!(mm.raw().anon_rss.get(), 4);
    assert_eq!(mm.raw().nr_ptes.get(), 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
    assert!(tlb.flushes() > 0);
}

#[test]
fn find_vma_returns_the_first_vma_ending_above_the_address() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    mm.mprotect(&k, VirtAddr(BASE), PAGE_SIZE, Prot::READ)
        .expect("split");
    assert_eq!(mm.raw().map_count.get(), 2);
    let v = mm.find_vma(VirtAddr(BASE - 1)).expect("vma");
    assert_eq!(v.get().start().0, BASE);
    let v = mm.find_vma(VirtAddr(BASE + PAGE_SIZE)).expect("vma");
    assert_eq!(v.get().start().0, BASE + PAGE_SIZE);
    assert!(mm.find_vma(VirtAddr(BASE + 2 * PAGE_SIZE)).is_none());
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn adjacent_anonymous_mappings_merge_into_one_vma() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    map_anon(&k, &mut mm, BASE + 2 * PAGE_SIZE, 2);
    assert_eq!(mm.raw().map_count.get(), 1);
    assert_eq!(mm.raw().total_vm.get(), 4);
    assert_valid(&k, &mm);
    mm.destroy(&k);
}

#[test]
fn munmap_of_the_middle_splits_a_vma_in_two_and_frees_only_the_middle_pages() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 6);
    touch(&k, &mut mm, BASE, 6);
    mm.munmap(&k, VirtAddr(BASE + 2 * PAGE_SIZE), 2 * PAGE_SIZE)
        .expect("munmap");
    assert_eq!(mm.raw().map_count.get(), 2);
    assert_eq!(mm.raw().total_vm.get(), 4);
    assert_eq!(mm.raw().anon_rss.get(), 4);
    assert!(frame_at(&k, &mm, BASE + 2 * PAGE_SIZE).is_none());
    assert!(frame_at(&k, &mm, BASE + 4 * PAGE_SIZE).is_some());
    // The neighbours still share the PTE table, so it must survive.
    assert_eq!(mm.raw().nr_ptes.get(), 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn munmap_rejects_unaligned_and_empty_ranges() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    assert_eq!(
        mm.munmap(&k, VirtAddr(BASE + 1), PAGE_SIZE),
        Err(MunmapError::Invalid)
    );
    assert_eq!(mm.munmap(&k, VirtAddr(BASE), 0), Err(MunmapError::Invalid));
    assert_eq!(mm.munmap(&k, VirtAddr(BASE), PAGE_SIZE), Ok(()));
    mm.destroy(&k);
}

#[test]
fn mprotect_read_only_write_protects_ptes_and_a_write_then_faults_with_accerr() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 3);
    touch(&k, &mut mm, BASE, 3);
    mm.mprotect(&k, VirtAddr(BASE + PAGE_SIZE), PAGE_SIZE, Prot::READ)
        .expect("mprotect");
    assert_eq!(mm.raw().map_count.get(), 3);
    let e = lookup(&k, mm.raw().pgd(), VirtAddr(BASE + PAGE_SIZE))
        .expect("slot")
        .read(&k);
    assert!(!e.flags().contains(PteFlags::WRITABLE));
    assert_eq!(
        mm.handle_mm_fault(&k, VirtAddr(BASE + PAGE_SIZE), Access::Write),
        Err(FaultError::AccErr)
    );
    assert_valid(&k, &mm);
    // Back to RW: the three VMAs merge again and a write reuses the same anonymous page.
    mm.mprotect(&k, VirtAddr(BASE + PAGE_SIZE), PAGE_SIZE, Prot::RW)
        .expect("mprotect");
    assert_eq!(mm.raw().map_count.get(), 1);
    let before = frame_at(&k, &mm, BASE + PAGE_SIZE);
    touch(&k, &mut mm, BASE + PAGE_SIZE, 1);
    assert_eq!(frame_at(&k, &mm, BASE + PAGE_SIZE), before);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn prot_none_keeps_the_page_but_hides_it_and_restoring_access_brings_the_data_back() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 1);
    touch(&k, &mut mm, BASE, 1);
    let f = frame_at(&k, &mm, BASE).expect("mapped");
    k.write_byte(f, 0, 42);
    mm.mprotect(&k, VirtAddr(BASE), PAGE_SIZE, Prot::NONE)
        .expect("mprotect");
    assert!(frame_at(&k, &mm, BASE).is_none());
    assert_eq!(
        mm.handle_mm_fault(&k, VirtAddr(BASE), Access::Read),
        Err(FaultError::AccErr)
    );
    assert_valid(&k, &mm);
    mm.mprotect(&k, VirtAddr(BASE), PAGE_SIZE, Prot::READ)
        .expect("mprotect");
    assert_eq!(k.read_byte(frame_at(&k, &mm, BASE).expect("mapped"), 0), 42);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_fault_outside_every_vma_is_a_map_error() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    assert_eq!(
        mm.handle_mm_fault(&k, VirtAddr(BASE), Access::Read),
        Err(FaultError::MapErr)
    );
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn mmap_without_a_hint_finds_free_space_and_honours_a_free_hint() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let a = mm
        .mmap(&k, VirtAddr(0), PAGE_SIZE, Prot::READ, ANON, None, 0)
        .expect("mmap");
    let b = mm
        .mmap(&k, VirtAddr(0), PAGE_SIZE, Prot::RW, ANON, None, 0)
        .expect("mmap");
    assert!(a.is_user() && b.is_user() && a != b);
    let c = mm
        .mmap(&k, VirtAddr(BASE), PAGE_SIZE, Prot::RW, ANON, None, 0)
        .expect("mmap");
    assert_eq!(c.0, BASE);
    let d = mm
        .mmap(&k, VirtAddr(BASE), PAGE_SIZE, Prot::READ, ANON, None, 0)
        .expect("mmap");
    assert_ne!(d.0, BASE, "an occupied hint is not used without MAP_FIXED");
    assert_eq!(
        mm.mmap(&k, VirtAddr(0), 0, Prot::RW, ANON, None, 0),
        Err(MmapError::Invalid)
    );
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn map_count_stops_at_max_map_count_with_enomem() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    mm.set_max_map_count(3);
    for i in 0..3 {
        map_anon(&k, &mut mm, BASE + i * 2 * PAGE_SIZE, 1);
    }
    let r = mm.mmap(
        &k,
        VirtAddr(BASE + 6 * PAGE_SIZE),
        PAGE_SIZE,
        Prot::RW,
        ANON_FIXED,
        None,
        0,
    );
    assert_eq!(r, Err(MmapError::MapCount));
    assert_eq!(MmapError::MapCount.errno(), crate::mm::error::ENOMEM);
    assert_valid(&k, &mm);
    mm.destroy(&k);
}

#[test]
fn brk_grows_and_shrinks_the_heap_and_refuses_to_overlap_a_mapping() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    mm.set_brk_base(VirtAddr(BASE));
    assert_eq!(
        mm.brk(&k, VirtAddr(BASE + 3 * PAGE_SIZE + 5)),
        Ok(VirtAddr(BASE + 3 * PAGE_SIZE + 5))
    );
    assert_eq!(mm.raw().total_vm.get(), 4);
    touch(&k, &mut mm, BASE, 4);
    mm.brk(&k, VirtAddr(BASE + PAGE_SIZE)).expect("shrink");
    assert_eq!(mm.raw().total_vm.get(), 1);
    assert_eq!(mm.raw().anon_rss.get(), 1);
    map_anon(&k, &mut mm, BASE + 4 * PAGE_SIZE, 1);
    assert_eq!(
        mm.brk(&k, VirtAddr(BASE + 4 * PAGE_SIZE)),
        Err(crate::mm::BrkError::Overlap)
    );
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_private_file_mapping_reads_the_page_cache_and_copies_on_write() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    mapping.get().write_byte(&k, 1, 0, 7).expect("write");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let flags = MapFlags::PRIVATE;
    let a = mm
        .mmap(
            &k,
            VirtAddr(BASE),
            4 * PAGE_SIZE,
            Prot::RW,
            flags,
            Some(file),
            0,
        )
        .expect("mmap");
    mm.handle_mm_fault(&k, a + PAGE_SIZE, Access::Read)
        .expect("read");
    let cached = mapping.get().find_get_page(1).expect("cached");
    assert_eq!(frame_at(&k, &mm, a.0 + PAGE_SIZE), Some(cached));
    assert_eq!(mm.raw().file_rss.get(), 1);
    mm.handle_mm_fault(&k, a + PAGE_SIZE, Access::Write)
        .expect("cow");
    let copy = frame_at(&k, &mm, a.0 + PAGE_SIZE).expect("mapped");
    assert_ne!(copy, cached);
    assert_eq!(k.read_byte(copy, 0), 7);
    assert_eq!((mm.raw().anon_rss.get(), mm.raw().file_rss.get()), (1, 0));
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, file);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_shared_file_mapping_writes_through_to_the_page_cache_and_truncate_zaps_it() {
    rig!(ram, tlb, k);
    let mapping = AddressSpace::create(&k, 4).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let a = mm
        .mmap(
            &k,
            VirtAddr(BASE),
            4 * PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED,
            Some(file),
            0,
        )
        .expect("mmap");
    assert!(mm
        .first_vma()
        .expect("vma")
        .get()
        .flags()
        .contains(VmFlags::SHARED));
    touch(&k, &mut mm, a.0, 4);
    assert_eq!(
        frame_at(&k, &mm, a.0 + 3 * PAGE_SIZE),
        mapping.get().find_get_page(3)
    );
    truncate::vmtruncate(&k, mapping, 2);
    assert!(frame_at(&k, &mm, a.0 + 3 * PAGE_SIZE).is_none());
    assert!(frame_at(&k, &mm, a.0 + PAGE_SIZE).is_some());
    assert_eq!(
        mm.handle_mm_fault(&k, a + 3 * PAGE_SIZE, Access::Read),
        Err(FaultError::Sigbus)
    );
    assert_eq!(mapping.get().nrpages.get(), 2);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    fput(&k, file);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn brk_without_a_heap_base_is_refused() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    assert_eq!(
        mm.brk(&k, VirtAddr(PAGE_SIZE)),
        Err(crate::mm::BrkError::Invalid)
    );
    assert_eq!(mm.raw().map_count.get(), 0);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

static CLOSES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

struct CountCloses;

impl crate::mm::VmOps for CountCloses {
    fn close(&self, _vma: &crate::mm::Vma) {
        CLOSES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn remove_vma_calls_close_once_per_vma_and_drops_each_file_reference() {
    rig!(ram, tlb, k);
    static OPS: CountCloses = CountCloses;
    let mapping = AddressSpace::create(&k, 8).expect("inode");
    let file = File::open(&k, mapping, Some(&OPS)).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let flags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::FIXED.0);
    mm.mmap(
        &k,
        VirtAddr(BASE),
        8 * PAGE_SIZE,
        Prot::READ,
        flags,
        Some(file),
        0,
    )
    .expect("mmap");
    let before = CLOSES.load(core::sync::atomic::Ordering::Relaxed);
    mm.munmap(&k, VirtAddr(BASE + 2 * PAGE_SIZE), PAGE_SIZE)
        .expect("split in two");
    assert_eq!(file.get().f_count.get(), 3, "the opener and two VMAs");
    mm.destroy(&k);
    assert_eq!(
        CLOSES.load(core::sync::atomic::Ordering::Relaxed) - before,
        3,
        "munmap'd piece + two at exit"
    );
    assert_eq!(file.get().f_count.get(), 1);
    fput(&k, file);
    crate::mm::iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn map_locked_counts_in_locked_vm_until_unmapped() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let flags = ANON_FIXED.union(MapFlags::LOCKED);
    mm.mmap(&k, VirtAddr(BASE), 4 * PAGE_SIZE, Prot::RW, flags, None, 0)
        .expect("mmap");
    assert_eq!(mm.raw().locked_vm.get(), 4);
    mm.munmap(&k, VirtAddr(BASE), PAGE_SIZE).expect("munmap");
    assert_eq!(mm.raw().locked_vm.get(), 3);
    assert_valid(&k, &mm);
    mm.destroy(&k);
}

#[test]
fn find_vma_at_the_very_top_of_the_address_space_finds_nothing() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).unwrap();
    map_anon(&k, &mut mm, 1 << 40, 1);
    assert!(mm.find_vma(VirtAddr(u64::MAX)).is_none());
    assert!(mm.find_vma(VirtAddr(0)).is_some());
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn shared_anonymous_memory_is_a_file_of_its_own_that_never_merges() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let shared = MapFlags::SHARED
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED);
    let mappings_before = k.roots().nr_mappings.get();
    for at in [BASE, BASE + 2 * PAGE_SIZE] {
        mm.mmap(&k, VirtAddr(at), 2 * PAGE_SIZE, Prot::RW, shared, None, 0)
            .expect("mmap");
    }
    // Two files, two VMAs: as Linux's shmem_zero_setup, each mapping has its own.
    assert_eq!(mm.raw().map_count.get(), 2);
    assert_eq!(k.roots().nr_mappings.get(), mappings_before + 2);
    let vma = mm.find_vma(VirtAddr(BASE)).expect("vma");
    let v = vma.get();
    assert!(v.flags().contains(VmFlags::SHARED));
    assert_eq!(v.vm_pgoff.get(), 0);
    let file = v.file().expect("a shmem file");
    touch(&k, &mut mm, BASE, 2);
    assert_eq!(mm.raw().file_rss.get(), 2);
    assert_eq!(mm.raw().anon_rss.get(), 0);
    assert!(file.get().mapping().get().find_get_page(1).is_some());
    assert_valid(&k, &mm);
    mm.munmap(&k, VirtAddr(BASE), 4 * PAGE_SIZE)
        .expect("munmap");
    assert_eq!(
        k.roots().nr_mappings.get(),
        mappings_before,
        "the files went with their VMAs"
    );
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_shared_anonymous_mapping_whose_file_cannot_be_made_fails_with_enomem_and_leaks_nothing() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    let shared = MapFlags::SHARED.union(MapFlags::ANONYMOUS);
    for nth in 1..=2 {
        k.inject.fail_nth(nth, Some(AllocKind::File));
        let e = mm.mmap(&k, VirtAddr(BASE), PAGE_SIZE, Prot::RW, shared, None, 0);
        assert_eq!(e, Err(MmapError::ShmemAlloc), "allocation {nth}");
        k.inject.fail_nth(0, None);
    }
    assert_eq!(mm.raw().map_count.get(), 0);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}
