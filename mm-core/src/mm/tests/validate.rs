//! validate_mm notices each kind of corruption it claims to check.

use super::*;
use crate::addr::USER_BASE;
use crate::mm::Violation;
use crate::paging::walk::lookup;
use crate::paging::{PageTableEntry, PteFlags};

const BASE: u64 = USER_BASE.0 + (11 << 30);

#[test]
fn a_pte_wider_than_its_vma_is_reported() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 1);
    touch(&k, &mut mm, BASE, 1);
    mm.mprotect(&k, VirtAddr(BASE), PAGE_SIZE, Prot::READ)
        .expect("mprotect");
    let slot = lookup(&k, mm.raw().pgd(), VirtAddr(BASE)).expect("slot");
    let e = slot.read(&k);
    slot.write(&k, e.with_flags(e.flags() | PteFlags::WRITABLE));
    let v = mm.validate_mm(&k);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::PteTooPermissive { va, .. } if *va == BASE)),
        "{v:?}"
    );
    slot.write(&k, e);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_pte_outside_every_vma_and_a_wrong_counter_are_reported() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 2);
    touch(&k, &mut mm, BASE, 1);
    let slot = lookup(&k, mm.raw().pgd(), VirtAddr(BASE)).expect("slot");
    let stray = lookup(&k, mm.raw().pgd(), VirtAddr(BASE + 4 * PAGE_SIZE)).expect("same table");
    stray.write(&k, slot.read(&k));
    mm.raw().total_vm.add(1);
    let v = mm.validate_mm(&k);
    assert!(
        v.contains(&Violation::PteOutsideVma {
            va: BASE + 4 * PAGE_SIZE
        }),
        "{v:?}"
    );
    assert!(
        v.iter().any(|x| matches!(
            x,
            Violation::Counter {
                name: "total_vm",
                ..
            }
        )),
        "{v:?}"
    );
    stray.write(&k, PageTableEntry::NONE);
    mm.raw().total_vm.sub(1);
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn a_vma_missing_from_its_anon_vma_is_reported() {
    rig!(ram, tlb, k);
    let mut mm = Mm::new(&k, None).expect("mm");
    map_anon(&k, &mut mm, BASE, 1);
    touch(&k, &mut mm, BASE, 1);
    let vma = mm.first_vma().expect("vma");
    let anon = vma.get().anon().expect("anon_vma");
    // Hide the VMA from its anon_vma's list, as a skipped link would.
    anon.get().head.set(0);
    let v = mm.validate_mm(&k);
    assert!(
        v.contains(&Violation::AnonVmaMissing { vma: vma.addr() }),
        "{v:?}"
    );
    anon.get().head.set(vma.addr());
    assert_valid(&k, &mm);
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}

#[test]
fn creating_an_mm_fails_cleanly_when_its_pgd_cannot_be_allocated() {
    rig!(ram, tlb, k);
    k.inject
        .fail_nth(1, Some(crate::phys::AllocKind::PageTable));
    assert!(Mm::new(&k, None).is_err());
    assert_eq!(ram.frames_in_use(), 0);
}
