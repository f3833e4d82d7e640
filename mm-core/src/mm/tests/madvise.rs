//! `madvise`: dropping pages keeps the VMA and its tables; flag advice splits and merges.

use super::*;
use crate::addr::USER_BASE;
use crate::mm::{Advice, MadviseError, VmFlags};
use crate::paging::walk::lookup;

const BASE: u64 = USER_BASE.0 + (1 << 30);

fn present(k: &Kernel<'_>, mm: &Mm, va: u64) -> bool {
    lookup(k, mm.raw().pgd(), VirtAddr(va)).is_some_and(|s| s.read(k).holds_frame())
}

#[test]
fn dontneed_drops_the_pages_but_keeps_the_vma_and_its_page_table() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 4);
    touch(&k, &mut mm, BASE, 4);
    let frames = ram.frames_in_use();
    mm.madvise(
        &k,
        VirtAddr(BASE + PAGE_SIZE),
        2 * PAGE_SIZE,
        Advice::DONTNEED,
    )
    .expect("madvise");
    assert_eq!(ram.frames_in_use(), frames - 2);
    assert!(present(&k, &mm, BASE) && !present(&k, &mm, BASE + PAGE_SIZE));
    assert_eq!(mm.raw().map_count.get(), 1);
    assert_eq!(mm.raw().nr_ptes.get(), 1);
    // The next touch finds a fresh page.
    touch(&k, &mut mm, BASE + PAGE_SIZE, 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn dontfork_on_the_middle_splits_the_vma_and_dofork_merges_it_back() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 4);
    mm.madvise(&k, VirtAddr(BASE + PAGE_SIZE), PAGE_SIZE, Advice::DONTFORK)
        .expect("madvise");
    assert_eq!(mm.raw().map_count.get(), 3);
    let middle = mm.vma_at(VirtAddr(BASE + PAGE_SIZE)).expect("vma");
    assert!(middle.get().flags().contains(VmFlags::DONTCOPY));
    mm.madvise(&k, VirtAddr(BASE), 4 * PAGE_SIZE, Advice::DOFORK)
        .expect("madvise");
    assert_eq!(mm.raw().map_count.get(), 1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_hole_fails_with_enomem_after_the_mapped_parts_got_the_advice() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    map_anon(&k, &mut mm, BASE + 3 * PAGE_SIZE, 2);
    let got = mm.madvise(&k, VirtAddr(BASE), 5 * PAGE_SIZE, Advice::DONTDUMP);
    assert_eq!(got, Err(MadviseError::NotMapped));
    assert_eq!(got.unwrap_err().errno(), 12);
    for at in [BASE, BASE + 3 * PAGE_SIZE] {
        let v = mm.vma_at(VirtAddr(at)).expect("vma");
        assert!(v.get().flags().contains(VmFlags::DONTDUMP));
    }
    assert_valid(&k, &mm);
    mm.destroy(&k);
}

#[test]
fn unknown_or_refused_advice_is_einval_and_strace_names_parse() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 1);
    assert_eq!(
        mm.madvise(&k, VirtAddr(BASE), PAGE_SIZE, Advice(77)),
        Err(MadviseError::Invalid)
    );
    assert_eq!(
        mm.madvise(&k, VirtAddr(BASE + 1), PAGE_SIZE, Advice::DONTNEED),
        Err(MadviseError::Invalid)
    );
    // Page-only advice that mm-core has no use for is accepted.
    assert_eq!(Advice::from_name("MADV_COLD"), Some(Advice(20)));
    mm.madvise(&k, VirtAddr(BASE), PAGE_SIZE, Advice(20))
        .expect("MADV_COLD");
    assert_eq!(Advice::from_name("MADV_DONTNEED"), Some(Advice::DONTNEED));
    assert_eq!(Advice::from_name("0x12"), Some(Advice::WIPEONFORK));
    assert_eq!(Advice::from_name("MADV_BOGUS"), None);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}
