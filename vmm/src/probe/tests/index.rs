//! The default mode with the VMA index: it checks only the VMAs meeting the span, verifies each in
//! guest memory, and finds what the full walks find.

use super::*;
use crate::probe::{Check, UnlinkKind};

/// `n` VMAs of the mm after the span, every other one pushed on one anon_vma's list, the others
/// in one file's tree.
fn add_vmas(f: &mut Fake, mm: Mm, s: TableSpan, n: u64) -> (u64, u64) {
    let m = f.mapping();
    let av = f.anon_vma();
    add_vmas_to(f, mm, s, n, av, m);
    (av, m)
}

fn add_vmas_to(f: &mut Fake, mm: Mm, s: TableSpan, n: u64, av: u64, m: u64) {
    let mut key = 1u64;
    for i in 0..n {
        let start = s.end + i * 0x2000;
        let v = f.vma(mm, start, start + 0x1000);
        if i % 2 == 0 {
            f.anon_link(av, v);
        } else {
            key = key
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f.file_link(m, v, key >> 20);
        }
    }
}

#[test]
fn the_index_finds_a_vma_deep_in_an_anon_vma_list_reading_only_the_list_before_it() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let (av, m) = (f.anon_vma(), f.mapping());
    // Linked first, so the 200 anonymous VMAs pushed after it are before it on the list.
    f.anon_link(av, vma);
    add_vmas_to(&mut f, mm, s, 400, av, m);
    let mut p = f.probe_indexed(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0].check, v[0].vma.as_ref().map(|i| (i.addr, i.via))),
        (Check::P1, Some((vma, UnlinkKind::Anon)))
    );
    let c = p.last_cost();
    assert_eq!(
        (c.candidates, c.vmas, c.anon_vmas, c.mappings),
        (1, 201, 0, 0)
    );
}

#[test]
fn the_index_finds_a_vma_in_a_big_i_mmap_tree_reading_only_its_ancestors() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let (_, m) = add_vmas(&mut f, mm, s, 400);
    f.file_link(m, vma, 12345);
    let mut p = f.probe_indexed(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].vma.as_ref().map(|i| (i.addr, i.via)),
        Some((vma, UnlinkKind::File))
    );
    assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
    assert!(p.last_cost().steps < 64, "{:?}", p.last_cost());
}

#[test]
fn a_candidate_off_every_rmap_structure_is_not_reported() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let (av, m) = add_vmas(&mut f, mm, s, 10);
    // The VMA still names its anon_vma and file, as an unlinked VMA may, but neither links to it.
    f.w(vma + offset_of!(Vma, anon_vma) as u64, av);
    f.set_file(vma, m);
    let mut p = f.probe_indexed(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    assert_eq!(p.last_cost().candidates, 1);
}

#[test]
fn a_candidate_whose_neighbour_does_not_link_back_is_not_on_the_list() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let neighbour = f.vma(mm, s.end, s.end + 0x1000);
    f.anon_link(av, vma);
    f.anon_link(av, neighbour);
    // Unlinked by hand, but only the neighbour's side: the VMA's prev still names it.
    f.w(neighbour + offset_of!(Vma, anon_vma_next) as u64, 0);
    f.w(av + offset_of!(AnonVma, nr_vmas) as u64, 1);
    let mut p = f.probe_indexed(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
}

#[test]
fn a_vma_freed_or_moved_out_of_the_span_is_no_candidate() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    f.anon_link(av, vma);
    let mut p = f.probe_indexed(false);
    // The guest reports the VMA moved out of the span: the index proposes nothing, so the (stale)
    // list entry is not looked at.
    let moved = ProbeEvent::VmaRange {
        mm: mm.addr,
        vma,
        start: s.end,
        end: s.end + 0x1000,
    };
    assert!(feed(&mut p, &[moved]).is_empty());
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    assert_eq!(p.last_cost().candidates, 0);
    // Back in the span: found again.
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    let back = ProbeEvent::VmaRange {
        mm: mm.addr,
        vma,
        start: s.start,
        end: s.start + 0x4000,
    };
    assert!(feed(&mut p, &[back]).is_empty());
    assert_eq!(feed(&mut p, &correct_free(s)).len(), 1);
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    assert!(feed(&mut p, &[ProbeEvent::VmaFreed { mm: mm.addr, vma }]).is_empty());
    assert!(feed(&mut p, &correct_free(s)).is_empty());
}

#[test]
fn indexed_default_full_walk_and_thorough_find_the_same_vmas() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let (av, m) = add_vmas(&mut f, mm, s, 30);
    f.anon_link(av, vma);
    f.anon_page(av);
    let inside = f.vma(mm, s.start + 0x8000, s.start + 0x9000);
    f.anon_link(av, inside);
    f.file_link(m, inside, 77);
    let across = f.vma(mm, s.start - 0x1000, s.start + 0x1000);
    f.file_link(m, across, 3);
    let mut found = Vec::new();
    for (indexed, thorough) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut p = if indexed {
            f.probe_indexed(thorough)
        } else {
            f.probe(thorough)
        };
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
    let mut want = vec![
        (vma, true),
        (inside, true),
        (inside, false),
        (across, false),
    ];
    want.sort();
    for (i, got) in found.iter().enumerate() {
        assert_eq!(got, &want, "mode {i}");
    }
}

#[test]
fn a_flood_of_vma_ranges_turns_the_index_off_and_p1_still_finds_the_vma() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    f.anon_link(av, vma);
    let mut p = f.probe_indexed(false);
    // More VMAs than the index holds, none of them real: the index gives up rather than grow.
    for i in 0..crate::probe::index::MAX_INDEXED_VMAS as u64 + 1 {
        let start = 1 << 40 | i << 12;
        let ev = ProbeEvent::VmaRange {
            mm: 0x7000,
            vma: 0x100_0000 + i * 0x100,
            start,
            end: start + 0x1000,
        };
        assert!(p.handle(0, &ev, "", &mut || RIP).is_empty());
    }
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(
        v.iter()
            .map(|v| (v.check, v.vma.as_ref().map(|i| i.addr)))
            .collect::<Vec<_>>(),
        [(Check::P1, Some(vma))]
    );
    // Found by walking the registries, not by the index.
    assert_eq!(p.last_cost().candidates, 0);
    assert!(p.last_cost().anon_vmas >= 1);
}
