//! P5 (the free is what was announced, on the table's own span) and P6 (the sweep) against
//! hand-laid guest memory.

use super::*;
use crate::probe::Check;
use mm_core::abi::FreePath;

fn checks_of(v: &[Violation]) -> Vec<Check> {
    v.iter().map(|v| v.check).collect()
}

/// An mm with one VMA at `USER_BASE` on its list, a page mapped in it, and the counters its
/// tables give (PUD, PMD and PTE table; one anonymous page).
fn mm_with_a_page(f: &mut Fake) -> (Mm, u64) {
    let mm = f.mm();
    let va = USER_BASE.0;
    let vma = f.vma(mm, va, va + 0x4000);
    f.w(mm.addr + offset_of!(MmStruct, mmap) as u64, vma);
    let pte = f.ensure_table(mm, Level::Pte, va);
    // The page's rmap: the VMA's anon_vma and its linear index (0), as a fault leaves them.
    f.w(vma + offset_of!(Vma, anon_vma) as u64, 0x1000);
    let page = f.anon_page(0x1000);
    f.w(
        pte,
        PageTableEntry::new(PhysAddr(page), PteFlags::TABLE).bits(),
    );
    counters(f, mm, 1, 3, 1);
    (mm, pte)
}

/// Sets `mm`'s `nr_ptes`, its `pgtables_bytes` (as `tables` tables) and its `anon_rss`.
fn counters(f: &Fake, mm: Mm, ptes: u64, tables: u64, anon_rss: u64) {
    f.w(mm.addr + offset_of!(MmStruct, nr_ptes) as u64, ptes);
    f.w(
        mm.addr + offset_of!(MmStruct, pgtables_bytes) as u64,
        tables * 4096,
    );
    f.w(mm.addr + offset_of!(MmStruct, anon_rss) as u64, anon_rss);
}

fn quiescent(p: &mut Probe) -> Vec<Violation> {
    feed(p, &[ProbeEvent::Quiescent { mm: 0 }])
}

#[test]
fn a_table_freed_with_no_announcement_is_p5() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let mut p = f.probe(false);
    let [unhook, flush, _] = correct_free(s);
    let free = ProbeEvent::TableFreed {
        frame: s.frame,
        claim: None,
        path: FreePath::Other,
    };
    let v = feed(&mut p, &[unhook, flush, free]);
    assert_eq!(checks_of(&v), [Check::P5]);
    assert!(
        v[0].detail.contains("behind the mmu_gather's back"),
        "{}",
        v[0]
    );
    // The span checked is the descriptor's, not left empty for want of an announcement.
    assert_eq!((v[0].start, v[0].end), (s.start, s.end));
}

#[test]
fn an_announced_span_narrower_than_the_tables_own_is_p5_and_p1_still_checks_the_whole_span() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    // A VMA still on its anon_vma, inside the real span but outside the announced one.
    let av = f.anon_vma();
    f.anon_link(av, vma);
    let narrow = TableSpan {
        start: s.start + 0x10_0000,
        end: s.start + 0x10_1000,
        ..s
    };
    let mut p = f.probe_indexed(false);
    let [unhook, flush, _] = correct_free(s);
    let v = feed(&mut p, &[unhook, flush, announced_free(narrow)]);
    assert_eq!(checks_of(&v), [Check::P1, Check::P5]);
    assert!(v[1].detail.contains("the mmu_gather announced"), "{}", v[1]);
}

#[test]
fn an_announcement_for_another_frame_is_p5() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let mut p = f.probe(false);
    let [unhook, flush, _] = correct_free(s);
    let other = TableSpan {
        frame: s.frame + 4096,
        ..s
    };
    let free = ProbeEvent::TableFreed {
        frame: s.frame,
        claim: Some(other),
        path: FreePath::Other,
    };
    let v = feed(&mut p, &[unhook, flush, free]);
    assert_eq!(checks_of(&v), [Check::P5]);
    assert!(v[0].detail.contains("not this one"), "{}", v[0]);
}

#[test]
fn a_sweep_of_consistent_tables_finds_nothing() {
    let mut f = Fake::new();
    mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    assert!(quiescent(&mut p).is_empty());
    assert_eq!(p.summary().sweeps, 1);
    assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
}

#[test]
fn a_table_unhooked_and_never_freed_is_lost_and_told_once() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    // Cleared and forgotten; the counters dropped as if it were freed.
    f.unhook(mm, Level::Pte, USER_BASE.0);
    counters(&f, mm, 0, 2, 0);
    let mut p = f.probe(false);
    let v = quiescent(&mut p);
    assert_eq!(checks_of(&v), [Check::P6]);
    assert_eq!((v[0].frame, v[0].level), (pte, 1));
    assert!(v[0].detail.starts_with("lost"), "{}", v[0]);
    assert!(quiescent(&mut p).is_empty(), "told once");
}

#[test]
fn a_table_waiting_in_a_gather_is_not_lost() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    f.unhook(mm, Level::Pte, USER_BASE.0);
    counters(&f, mm, 0, 2, 0);
    let mut p = f.probe(false);
    let s = span(mm, Level::Pte, pte, USER_BASE.0);
    assert!(feed(&mut p, &[ProbeEvent::TableUnhooked(s)]).is_empty());
    assert!(quiescent(&mut p).is_empty());
}

#[test]
fn counters_that_disagree_with_the_tables_are_p6() {
    let mut f = Fake::new();
    let (mm, _) = mm_with_a_page(&mut f);
    f.w(mm.addr + offset_of!(MmStruct, nr_ptes) as u64, 2);
    f.w(mm.addr + offset_of!(MmStruct, anon_rss) as u64, 5);
    let mut p = f.probe(false);
    let v = quiescent(&mut p);
    let details: Vec<&str> = v.iter().map(|v| v.detail.as_str()).collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[0].contains("nr_ptes is 2, its page tables hold 1"),
        "{details:?}"
    );
    assert!(
        details[1].contains("anon_rss is 5, its page tables hold 1"),
        "{details:?}"
    );
    // Free-running walkers may be mid-update: rss is then not compared.
    let mut racy = f.probe(false);
    racy.set_rss_racy(true);
    assert_eq!(quiescent(&mut racy).len(), 1);
}

#[test]
fn a_table_over_no_vma_is_leaked_and_a_misdescribed_one_is_named() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    // A second PTE table 2 MiB further on, where no VMA is.
    let far = USER_BASE.0 + (2 << 20);
    let leaked = f.ensure_table(mm, Level::Pte, far);
    f.w(mm.addr + offset_of!(MmStruct, nr_ptes) as u64, 2);
    f.w(
        mm.addr + offset_of!(MmStruct, pgtables_bytes) as u64,
        4 * 4096,
    );
    // And the first table's descriptor says it maps from somewhere else.
    f.describe(pte, mm.addr, 1, far);
    let mut p = f.probe(false);
    let v = quiescent(&mut p);
    let leak = v
        .iter()
        .find(|v| v.frame == leaked)
        .expect("the leaked table");
    assert!(leak.detail.starts_with("leaked"), "{leak}");
    let odd = v
        .iter()
        .find(|v| v.frame == pte)
        .expect("the misdescribed table");
    assert!(odd.detail.contains("its Page describes"), "{odd}");
    assert_eq!(v.len(), 2, "{v:?}");
}

#[test]
fn a_pgd_freed_while_tables_of_its_mm_are_left_is_p6_and_needs_no_announcement() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    let free = ProbeEvent::TableFreed {
        frame: mm.pgd,
        claim: None,
        path: FreePath::Other,
    };
    let v = feed(&mut p, &[free]);
    // It still maps its PUD table (P4), and its PUD, PMD and PTE table are left behind (P6).
    assert_eq!(
        checks_of(&v),
        [Check::P4, Check::P6, Check::P6, Check::P6],
        "{v:?}"
    );
    let v: Vec<_> = v.into_iter().filter(|v| v.check == Check::P6).collect();
    assert!(
        v.iter()
            .any(|v| v.frame == pte && v.detail.starts_with("leaked")),
        "{v:?}"
    );
}

#[test]
fn a_table_freed_with_no_report_is_found_by_the_next_sweep() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    assert!(quiescent(&mut p).is_empty());
    // The table goes back to the allocator (its Page reset) and nobody tells the host.
    f.unhook(mm, Level::Pte, USER_BASE.0);
    f.w(f.page(pte) + offset_of!(Page, flags) as u64, 0);
    counters(&f, mm, 0, 2, 0);
    // The page the table mapped left the tables with no flush either (P3 for leaves).
    let v = quiescent(&mut p);
    assert_eq!(checks_of(&v), [Check::P3, Check::P6]);
    let v = &v[1..];
    assert_eq!(v[0].frame, pte);
    assert!(v[0].detail.starts_with("freed unreported"), "{}", v[0]);
    // A reported free is no such thing.
    let mut q = f.probe(false);
    f.w(
        f.page(pte) + offset_of!(Page, flags) as u64,
        PageFlags::ALLOCATED.0 | PageFlags::PAGETABLE.0,
    );
    f.describe(pte, mm.addr, 1, USER_BASE.0);
    let slot = f.parent_slot(mm, Level::Pte, USER_BASE.0);
    f.w(
        slot,
        PageTableEntry::new(PhysAddr(pte), PteFlags::TABLE).bits(),
    );
    counters(&f, mm, 1, 3, 1);
    assert!(quiescent(&mut q).is_empty());
    f.w(slot, 0);
    f.w(pte, 0);
    let s = span(mm, Level::Pte, pte, USER_BASE.0);
    assert!(feed(&mut q, &correct_free(s)).is_empty());
    f.w(f.page(pte) + offset_of!(Page, flags) as u64, 0);
    counters(&f, mm, 0, 2, 0);
    assert!(quiescent(&mut q).is_empty());
}

#[test]
fn a_page_rmap_cannot_find_from_its_vma_is_p6() {
    let mut f = Fake::new();
    let (_, pte) = mm_with_a_page(&mut f);
    let e = PageTableEntry::from_bits(f.r(pte));
    // The page says it is at page offset 7 of its anon_vma; its VMA maps it at offset 0.
    f.w(f.page(e.frame().0) + offset_of!(Page, index) as u64, 7);
    let mut p = f.probe(false);
    let v = quiescent(&mut p);
    assert_eq!(checks_of(&v), [Check::P6]);
    assert!(v[0].detail.contains("rmap cannot find it"), "{}", v[0]);
}

#[test]
fn a_light_sweep_finds_a_table_lost_since_the_last_sweep() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    assert!(
        quiescent(&mut p).is_empty(),
        "the first sweep reads the whole mem_map"
    );
    f.unhook(mm, Level::Pte, USER_BASE.0);
    counters(&f, mm, 0, 2, 0);
    // The page the table mapped left the tables with no flush either (P3 for leaves).
    let v = quiescent(&mut p);
    assert_eq!(checks_of(&v), [Check::P3, Check::P6]);
    let v = &v[1..];
    assert_eq!(v[0].frame, pte);
    assert!(v[0].detail.starts_with("lost"), "{}", v[0]);
}

#[test]
fn a_table_freed_while_it_still_maps_a_page_is_p4() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    f.unhook(mm, Level::Pte, USER_BASE.0);
    let mut p = f.probe(false);
    let v = feed(
        &mut p,
        &correct_free(span(mm, Level::Pte, pte, USER_BASE.0)),
    );
    assert_eq!(checks_of(&v), [Check::P4]);
    assert!(v[0].detail.contains("1 live entry (entry 0"), "{}", v[0]);
}

/// The mm of `mm_with_a_page` swept once, then its leaf rewritten to `new` (rss kept right).
fn leaf_changed(new: impl Fn(u64) -> u64, flushed: bool) -> Vec<Violation> {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    assert!(quiescent(&mut p).is_empty());
    let new = new(f.r(pte));
    f.w(pte, new);
    let present = PageTableEntry::from_bits(new).holds_frame();
    counters(&f, mm, 1, 3, u64::from(present));
    if flushed {
        let va = USER_BASE.0;
        feed(
            &mut p,
            &[ProbeEvent::TlbFlushed {
                mm: mm.addr,
                start: va,
                end: va + 4096,
            }],
        );
    }
    quiescent(&mut p)
}

#[test]
fn a_leaf_cleared_without_a_flush_is_p3_at_the_next_sweep() {
    let v = leaf_changed(|_| 0, false);
    assert_eq!(checks_of(&v), [Check::P3], "{v:?}");
    let va = USER_BASE.0;
    assert_eq!((v[0].start, v[0].end), (va, va + 4096));
    assert!(v[0].detail.contains("no TLB flush"), "{}", v[0]);
    assert!(leaf_changed(|_| 0, true).is_empty());
}

#[test]
fn write_access_taken_away_needs_a_flush_and_the_cpus_own_bits_do_not() {
    let ro = |e: u64| e & !PteFlags::WRITABLE.bits();
    assert_eq!(checks_of(&leaf_changed(ro, false)), [Check::P3]);
    assert!(leaf_changed(ro, true).is_empty());
    let touched = |e: u64| e | PteFlags::ACCESSED.bits() | PteFlags::DIRTY.bits();
    assert!(leaf_changed(touched, false).is_empty());
}

#[test]
fn the_leaves_of_a_mm_torn_down_between_sweeps_are_not_compared() {
    let mut f = Fake::new();
    let (mm, pte) = mm_with_a_page(&mut f);
    let mut p = f.probe(false);
    assert!(quiescent(&mut p).is_empty());
    // The mm's PGD goes (exit); a new mm at the same address maps another page there.
    let pgd = mm.pgd;
    feed(
        &mut p,
        &[ProbeEvent::TableFreed {
            frame: pgd,
            claim: None,
            path: FreePath::Exit,
        }],
    );
    f.describe(pgd, mm.addr, 4, 0);
    let other = f.anon_page(0x1000);
    f.w(
        pte,
        PageTableEntry::new(PhysAddr(other), PteFlags::TABLE).bits(),
    );
    let v = quiescent(&mut p);
    assert!(!checks_of(&v).contains(&Check::P3), "{v:?}");
}
