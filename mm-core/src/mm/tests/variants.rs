//! Each ordering variant other than `correct` is caught by a host-side check (OrderCheck's P1/P3,
//! lockdep, or validate_mm), while `correct` passes the same checks.
//!
//! Scenario: a shared file VMA V1 and an anonymous VMA V2 share a PTE table (V2 is gathered with
//! V1 by free_pgtables); V4 lives in the next PTE table under the same PMD table; V3 is far away.
//! Everything is faulted in, then V1 and V2 are unmapped in one call, then the mm exits.

use alloc::vec::Vec;

use super::*;
use crate::addr::{PGDIR_SIZE, PMD_SIZE, USER_BASE};
use crate::check::{OrderCheck, OrderViolation};
use crate::hooks::UnlinkKind;
use crate::lockdep::{Lockdep, Violation as LockViolation};
use crate::mm::file::{fput, iput, AddressSpace, File};
use crate::mm::Violation;
use crate::variant::Variant;

const G: u64 = USER_BASE.0 + 4 * PGDIR_SIZE;
const V1: u64 = G;
const V2: u64 = G + 4 * PAGE_SIZE;
const V4: u64 = G + PMD_SIZE;
const V3: u64 = G + 2 * PGDIR_SIZE;

struct Outcome {
    order: Vec<OrderViolation>,
    lockdep: Vec<LockViolation>,
    validate: Vec<Violation>,
    frees_checked: u64,
    leaked_frames: u64,
    vma_at: [(u64, u64); 4],
}

fn run(variant: Variant) -> Outcome {
    rig!(ram, tlb, k);
    let check = OrderCheck::default();
    let lockdep = Lockdep::new();
    lockdep.set_enabled(true);
    let k = k
        .with_hooks(&check)
        .with_variant(variant)
        .with_lockdep(&lockdep);
    let mapping = AddressSpace::create(&k, 2).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    let shared = MapFlags(MapFlags::SHARED.0 | MapFlags::FIXED.0);
    mm.mmap(
        &k,
        VirtAddr(V1),
        2 * PAGE_SIZE,
        Prot::RW,
        shared,
        Some(file),
        0,
    )
    .expect("mmap");
    map_anon(&k, &mut mm, V2, 2);
    map_anon(&k, &mut mm, V4, 1);
    map_anon(&k, &mut mm, V3, 1);
    for at in [V1, V2, V4, V3] {
        touch(&k, &mut mm, at, 1);
    }
    let vma_at = [V1, V2, V4, V3].map(|a| (a, mm.vma_at(VirtAddr(a)).expect("vma").addr()));
    mm.munmap(&k, VirtAddr(V1), 6 * PAGE_SIZE).expect("munmap");
    let validate = mm.validate_mm(&k);
    mm.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    Outcome {
        order: check.violations(),
        lockdep: lockdep.take_violations().violations,
        validate,
        frees_checked: check.frees_checked(),
        leaked_frames: ram.frames_in_use(),
        vma_at,
    }
}

fn p1_vmas(o: &Outcome, via: UnlinkKind) -> Vec<u64> {
    let mut v: Vec<u64> = o
        .order
        .iter()
        .filter_map(|x| match x {
            OrderViolation::P1 { vma, via: w, .. } if *w == via => Some(*vma),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

fn vma(o: &Outcome, at: u64) -> u64 {
    o.vma_at.iter().find(|(a, _)| *a == at).expect("known").1
}

#[test]
fn correct_passes_every_check_and_frees_every_frame() {
    let o = run(Variant::Correct);
    assert!(o.frees_checked >= 4, "tables were freed and checked");
    assert_eq!(o.order, []);
    assert_eq!(o.lockdep, []);
    assert_eq!(o.validate, []);
    assert_eq!(o.leaked_frames, 0);
}

#[test]
fn prepatch_order_is_caught_by_p1_for_both_the_file_and_the_anon_vma() {
    let o = run(Variant::PrepatchOrder);
    assert!(p1_vmas(&o, UnlinkKind::File).contains(&vma(&o, V1)));
    assert!(p1_vmas(&o, UnlinkKind::Anon).contains(&vma(&o, V2)));
}

#[test]
fn skip_file_unlink_is_caught_by_p1_through_i_mmap_only() {
    let o = run(Variant::SkipFileUnlink);
    assert_eq!(p1_vmas(&o, UnlinkKind::File), [vma(&o, V1)]);
    assert_eq!(p1_vmas(&o, UnlinkKind::Anon), []);
}

#[test]
fn skip_anon_unlink_is_caught_by_p1_through_the_anon_vma_only() {
    let o = run(Variant::SkipAnonUnlink);
    assert!(p1_vmas(&o, UnlinkKind::Anon).contains(&vma(&o, V2)));
    assert_eq!(p1_vmas(&o, UnlinkKind::File), []);
}

#[test]
fn gather_skips_unlink_is_caught_by_p1_naming_the_gathered_vma() {
    let o = run(Variant::GatherSkipsUnlink);
    assert!(p1_vmas(&o, UnlinkKind::Anon).contains(&vma(&o, V2)));
    assert!(!p1_vmas(&o, UnlinkKind::File).contains(&vma(&o, V1)));
}

#[test]
fn ignore_floor_ceiling_is_caught_by_p1_naming_the_neighbour_and_by_validate_mm() {
    let o = run(Variant::IgnoreFloorCeiling);
    assert!(p1_vmas(&o, UnlinkKind::Anon).contains(&vma(&o, V4)));
    assert!(!o.validate.is_empty(), "the neighbour lost its mapping");
}

#[test]
fn free_before_flush_is_caught_by_p3() {
    let o = run(Variant::FreeBeforeFlush);
    assert!(o
        .order
        .iter()
        .any(|v| matches!(v, OrderViolation::P3 { .. })));
    assert!(!o
        .order
        .iter()
        .any(|v| matches!(v, OrderViolation::P1 { .. })));
}

#[test]
fn unlink_under_ptl_is_caught_by_lockdep_naming_both_locks() {
    let o = run(Variant::UnlinkUnderPtl);
    let inverted: Vec<(&str, &str)> = o
        .lockdep
        .iter()
        .filter_map(|v| match v {
            LockViolation::Order(x) => Some((x.held, x.acquired)),
            _ => None,
        })
        .collect();
    assert!(
        inverted.contains(&("page_table_lock", "i_mmap_lock")),
        "{inverted:?}"
    );
    assert!(
        inverted.contains(&("page_table_lock", "anon_vma_lock")),
        "{inverted:?}"
    );
    assert_eq!(o.order, [], "the order of events is otherwise right");
}
