//! Each check passes a correct free and catches its own kind of wrong one.

use super::*;
use crate::probe::pgtable::poison;
use crate::probe::{Check, UnlinkKind, VmaInfo};

fn checks_of(v: &[Violation]) -> Vec<Check> {
    v.iter().map(|v| v.check).collect()
}

#[test]
fn a_clean_free_passes_all_five_checks_and_poisons_all_but_entry_zero() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    f.w(s.frame, 0x1234_5000); // what the guest allocator would leave in entry 0
    for thorough in [false, true] {
        let mut p = f.probe(thorough);
        let v = feed(&mut p, &correct_free(s));
        assert!(v.is_empty(), "thorough {thorough}: {v:?}");
        assert_eq!(p.summary().checks, [1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(p.summary().events, 4);
        assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
        assert_eq!(f.r(s.frame), 0x1234_5000);
        assert_eq!(f.r(s.frame + 8), poison(1));
        assert_eq!(f.r(s.frame + 4088), poison(1));
        // The next test round reuses the frame: the guest zeroes a table it allocates.
        for i in 1..512 {
            f.w(s.frame + i * 8, 0);
        }
    }
}

#[test]
fn a_vma_still_on_its_anon_vma_list_is_p1_naming_it_via_anon() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    // A neighbour of another mm on the same anon_vma meets the span's addresses but is not ours.
    let other = f.mm();
    let stranger = f.vma(other, s.start, s.end);
    f.anon_link(av, stranger);
    f.anon_link(av, vma);
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P1]);
    assert_eq!(
        v[0].vma,
        Some(VmaInfo {
            addr: vma,
            start: USER_BASE.0,
            end: USER_BASE.0 + 0x4000,
            flags: FLAGS,
            via: UnlinkKind::Anon,
        })
    );
    assert_eq!((v[0].frame, v[0].level, v[0].rip), (s.frame, 1, RIP));
    assert!(v[0].to_string().contains("anon rmap"), "{}", v[0]);
    assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
}

#[test]
fn a_vma_still_in_an_i_mmap_tree_is_p1_naming_it_via_file() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let m = f.mapping();
    // Other VMAs of the mm, outside the span, around it in the tree.
    for (i, pgoff) in [(1u64, 10u64), (2, 0), (3, 20)] {
        let start = s.end + i * 0x10_0000;
        let v = f.vma(mm, start, start + 0x1000);
        f.file_link(m, v, pgoff);
    }
    f.file_link(m, vma, 15);
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P1]);
    let found = v[0].vma.as_ref().expect("P1 names the VMA");
    assert_eq!((found.addr, found.via), (vma, UnlinkKind::File));
    assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
    assert_eq!(p.last_cost().vmas, 4);
}

#[test]
fn a_vma_outside_the_span_or_of_another_mm_is_no_p1() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let after = f.vma(mm, s.end, s.end + 0x1000);
    let before = f.vma(mm, s.start - 0x1000, s.start);
    let other_mm = f.mm();
    let other = f.vma(other_mm, s.start, s.end);
    for v in [after, before, other] {
        f.anon_link(av, v);
    }
    let mut p = f.probe(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
}

#[test]
fn a_parent_entry_still_pointing_to_the_frame_is_p2() {
    let mut f = Fake::new();
    let mm = f.mm();
    let va = USER_BASE.0 + (5 << 21);
    let table = f.ensure_table(mm, Level::Pte, va);
    let s = span(mm, Level::Pte, table, va);
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P2]);
    assert!(v[0].detail.contains("parent entry 5 of table"), "{}", v[0]);
}

#[test]
fn thorough_p2_finds_a_stray_entry_elsewhere_in_the_mm_and_p4_calls_it_still_mapped() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    // Another PMD entry, far from the span, still points to the table.
    let far = USER_BASE.0 + (7 << 30) + (3 << 21);
    let slot = f.parent_slot(mm, Level::Pte, far);
    f.w(
        slot,
        PageTableEntry::new(PhysAddr(s.frame), PteFlags::TABLE).bits(),
    );
    let mut default = f.probe(false);
    assert!(feed(&mut default, &correct_free(s)).is_empty());
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    let mut thorough = f.probe(true);
    let v = feed(&mut thorough, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P2, Check::P4]);
    assert!(v[0].detail.contains("entry 3 of level-2 table"), "{}", v[0]);
    assert!(v[1].detail.contains("still mapped"), "{}", v[1]);
}

#[test]
fn no_flush_between_unhook_and_free_is_p3() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let flush = |mm: u64, start, end| ProbeEvent::TlbFlushed { mm, start, end };
    let other = f.mm();
    let cases: [(&str, Vec<ProbeEvent>, bool); 6] = [
        ("no flush", vec![ProbeEvent::TableUnhooked(s)], true),
        (
            "flush before the unhook",
            vec![flush(s.mm, s.start, s.end), ProbeEvent::TableUnhooked(s)],
            true,
        ),
        (
            "flush of another mm",
            vec![
                ProbeEvent::TableUnhooked(s),
                flush(other.addr, s.start, s.end),
            ],
            true,
        ),
        (
            "flush of part of the span",
            vec![
                ProbeEvent::TableUnhooked(s),
                flush(s.mm, s.start, s.end - 0x1000),
            ],
            true,
        ),
        (
            "flush of the whole user range",
            vec![ProbeEvent::TableUnhooked(s), flush(mm.addr, 0, u64::MAX)],
            false,
        ),
        (
            "flush of a wider range",
            vec![
                ProbeEvent::TableUnhooked(s),
                flush(mm.addr, s.start - 0x1000, s.end + 1),
            ],
            false,
        ),
    ];
    for (name, mut events, caught) in cases {
        let mut p = f.probe(false);
        events.push(announced_free(s));
        let v = feed(&mut p, &events);
        let want: &[Check] = if caught { &[Check::P3] } else { &[] };
        assert_eq!(checks_of(&v), want, "{name}");
        for i in 1..512 {
            f.w(s.frame + i * 8, 0);
        }
    }
}

#[test]
fn a_free_without_a_seen_unhook_needs_a_flush_since_the_previous_free() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let flush = ProbeEvent::TlbFlushed {
        mm: s.mm,
        start: s.start,
        end: s.end,
    };
    let mut p = f.probe(false);
    // Never unhooked, never flushed: P3 (unknown unhook, no flush since the run began).
    let v = feed(&mut p, &[announced_free(s)]);
    assert_eq!(checks_of(&v), [Check::P3]);
    assert!(v[0].detail.contains("since the run began"), "{}", v[0]);
    // The guest hands the frame out again (zeroing it): a flush since the previous free suffices.
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    assert!(feed(&mut p, &[flush, announced_free(s)]).is_empty());
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    // A flush before the previous free does not count for this one.
    let v = feed(&mut p, &[announced_free(s)]);
    assert_eq!(checks_of(&v), [Check::P3]);
    assert!(v[0].detail.contains("since its previous free"), "{}", v[0]);
}

#[test]
fn a_second_free_without_an_unhook_is_a_p4_double_free() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let mut p = f.probe(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    let v = feed(&mut p, &[announced_free(s)]);
    let p4: Vec<_> = v.iter().filter(|v| v.check == Check::P4).collect();
    assert_eq!(p4.len(), 1, "{v:?}");
    assert!(p4[0].detail.contains("double free"), "{}", p4[0]);
}

#[test]
fn a_frame_freed_reallocated_and_freed_again_is_no_double_free() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let mut p = f.probe(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    // Reallocated as a table (zeroed), hooked, used, unhooked and freed again.
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    let slot = f.parent_slot(mm, Level::Pte, s.start);
    f.w(
        slot,
        PageTableEntry::new(PhysAddr(s.frame), PteFlags::TABLE).bits(),
    );
    f.w(slot, 0);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
}

#[test]
fn a_frame_whose_page_is_no_page_table_or_is_mapped_is_p4_and_not_poisoned() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma_unregistered();
    let data = f.anon_page(av);
    f.w(data + 8, 0x77);
    let s = TableSpan { frame: data, ..s };
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P4, Check::P5]);
    assert!(v[1].detail.contains("does not say page table"), "{}", v[1]);
    assert!(
        v[0].detail.contains("not a live page-table page"),
        "{}",
        v[0]
    );
    assert!(v[0].detail.contains("mapcount 1"), "{}", v[0]);
    assert_eq!(f.r(data + 8), 0x77, "a data page is never poisoned");
}

#[test]
fn a_walk_through_a_poisoned_table_is_reported_as_use_after_free() {
    let mut f = Fake::new();
    let mm = f.mm();
    let va = USER_BASE.0;
    // Entry 9 of the PMD table: entry 0 keeps the allocator's link, not poison.
    let pte = f.ensure_table(mm, Level::Pte, va + (9 << 21));
    let pmd = f.ensure_table(mm, Level::Pmd, va);
    // The PMD table is freed while its PUD entry still points to it (P2) and gets poisoned.
    let pmd_span = span(mm, Level::Pmd, pmd, va);
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(pmd_span));
    assert_eq!(checks_of(&v), [Check::P2, Check::P4]);
    assert!(
        v[1].detail
            .contains("freed while it still maps: 1 live entry"),
        "{}",
        v[1]
    );
    // A later free under it walks through the poison.
    let pte_span = span(mm, Level::Pte, pte, va + (9 << 21));
    let v = feed(&mut p, &correct_free(pte_span));
    assert_eq!(checks_of(&v), [Check::P4]);
    assert!(v[0].detail.contains("use after free"), "{}", v[0]);
    assert!(v[0].detail.contains(&format!("{pmd:#x}")), "{}", v[0]);
}

#[test]
fn thorough_mode_finds_a_vma_reachable_only_through_page_mapping() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    // The anon_vma fell off the registry, but a mapped page still names it.
    let av = f.anon_vma_unregistered();
    f.anon_link(av, vma);
    f.anon_page(av);
    let mut default = f.probe(false);
    assert!(feed(&mut default, &correct_free(s)).is_empty());
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    let mut thorough = f.probe(true);
    let v = feed(&mut thorough, &correct_free(s));
    assert_eq!(checks_of(&v), [Check::P1]);
    assert_eq!(
        v[0].vma.as_ref().map(|i| (i.addr, i.via)),
        Some((vma, UnlinkKind::Anon))
    );
}

#[test]
fn thorough_and_default_find_the_same_vmas_in_a_healthy_guest() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let m = f.mapping();
    f.anon_link(av, vma);
    f.anon_page(av);
    let second = f.vma(mm, s.start + 0x8000, s.start + 0x9000);
    f.anon_link(av, second);
    f.file_link(m, second, 3);
    let unrelated = f.vma(mm, s.end, s.end + 0x1000);
    f.file_link(m, unrelated, 7);
    // A page-cache page of the file.
    let pc = f.frame(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::PAGECACHE.0));
    f.w(f.page(pc) + offset_of!(Page, mapping) as u64, m);
    let mut found = Vec::new();
    for thorough in [false, true] {
        let mut p = f.probe(thorough);
        let mut v: Vec<_> = feed(&mut p, &correct_free(s))
            .into_iter()
            .filter_map(|v| v.vma)
            .map(|i| (i.addr, i.via == UnlinkKind::Anon))
            .collect();
        v.sort();
        found.push(v);
        assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
        for i in 1..512 {
            f.w(s.frame + i * 8, 0);
        }
    }
    let mut want = vec![(vma, true), (second, true), (second, false)];
    want.sort();
    assert_eq!(found[0], want);
    assert_eq!(found[1], want);
}
