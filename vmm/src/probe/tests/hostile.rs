//! Hostile guest memory: cycles, broken back links, wild pointers and absurd counts become
//! errors naming the structure, never a panic or a hang; a property test corrupts random words.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::probe::guest_mem::{GuestView, WalkError, STEP_BUDGET};
use crate::probe::{Check, UnlinkKind};

fn errors(p: &Probe) -> String {
    p.summary().errors.join("\n")
}

#[test]
fn an_anon_vma_list_that_loops_is_an_error_not_a_hang() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let other = f.vma(mm, s.end, s.end + 0x1000);
    f.anon_link(av, other);
    f.anon_link(av, vma);
    // The last VMA links back to the first: its prev link gives the loop away.
    f.w(other + offset_of!(Vma, anon_vma_next) as u64, vma);
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    // The VMA met before the loop is still reported.
    assert_eq!(v.iter().map(|v| v.check).collect::<Vec<_>>(), [Check::P1]);
    assert!(
        errors(&p).contains(&format!(
            "VMA {vma:#x}: anon_vma_prev is 0x0, expected {other:#x}"
        )),
        "{}",
        errors(&p)
    );
}

#[test]
fn a_broken_prev_link_is_reported_naming_the_vma_and_field() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let second = f.vma(mm, s.end, s.end + 0x1000);
    f.anon_link(av, second);
    f.anon_link(av, vma);
    f.w(second + offset_of!(Vma, anon_vma_prev) as u64, 0x5000);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    let want = format!("VMA {second:#x}: anon_vma_prev is 0x5000, expected {vma:#x}");
    assert!(errors(&p).contains(&want), "{}", errors(&p));
}

#[test]
fn a_wild_registry_pointer_is_an_error_and_the_other_registry_is_still_walked() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    let m = f.mapping();
    f.file_link(m, vma, 0);
    f.w(
        ROOTS + offset_of!(KernelRoots, anon_vmas) as u64,
        0xdead_beef_0000,
    );
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(
        v.iter()
            .filter_map(|v| v.vma.as_ref())
            .map(|i| (i.addr, i.via))
            .collect::<Vec<_>>(),
        [(vma, UnlinkKind::File)]
    );
    assert!(
        errors(&p).contains("anon_vma 0xdeadbeef0000: not an 8-aligned address inside guest RAM"),
        "{}",
        errors(&p)
    );
}

#[test]
fn an_i_mmap_tree_whose_child_points_back_up_is_an_error() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let m = f.mapping();
    f.file_link(m, vma, 5);
    let child = f.vma(mm, s.end, s.end + 0x1000);
    f.file_link(m, child, 9);
    let shared = offset_of!(Vma, shared) as u64;
    // The child's right link points back to the root.
    f.w(child + shared + node::RIGHT as u64, vma + shared);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    assert!(
        errors(&p).contains(&format!("i_mmap node {:#x}: parent is 0x0", vma + shared)),
        "{}",
        errors(&p)
    );
}

#[test]
fn an_i_mmap_node_with_the_same_child_twice_is_an_error_not_a_double_visit() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let m = f.mapping();
    f.file_link(m, vma, 5);
    let child = f.vma(mm, s.end, s.end + 0x1000);
    f.file_link(m, child, 9);
    let shared = offset_of!(Vma, shared) as u64;
    f.w(vma + shared + node::LEFT as u64, child + shared);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    let want = format!(
        "i_mmap node {:#x}: right is {:#x}",
        vma + shared,
        child + shared
    );
    assert!(errors(&p).contains(&want), "{}", errors(&p));
}

#[test]
fn a_list_longer_than_its_count_stops_at_the_count() {
    let mut f = Fake::new();
    let (mm, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    let later = f.vma(mm, s.end, s.end + 0x1000);
    f.anon_link(av, later);
    f.anon_link(av, vma);
    f.w(av + offset_of!(AnonVma, nr_vmas) as u64, 1);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    let want = format!("anon_vma {av:#x}: list goes on past nr_vmas (1) at VMA {later:#x}");
    assert!(errors(&p).contains(&want), "{}", errors(&p));
}

#[test]
fn absurd_counts_are_reported() {
    let mut f = Fake::new();
    let (_, vma, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    f.anon_link(av, vma);
    f.w(av + offset_of!(AnonVma, nr_vmas) as u64, u64::MAX);
    let mut p = f.probe(true);
    let roots = ProbeEvent::Roots {
        roots: ROOTS,
        mem_map: MEM_MAP,
        mem_map_len: u64::MAX,
        kernel_pgd: 0x2000,
        layout_magic: LAYOUT_MAGIC,
        layout_version: LAYOUT_VERSION,
    };
    feed(&mut p, &[roots]);
    feed(&mut p, &correct_free(s));
    let e = errors(&p);
    assert!(
        e.contains("list holds 1 VMAs but nr_vmas is 18446744073709551615"),
        "{e}"
    );
    assert!(
        e.contains("mem_map 0x100000: 18446744073709551615 entries"),
        "{e}"
    );
}

#[test]
fn a_page_table_pointing_to_itself_is_a_cycle_in_thorough_mode() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let pud = f.ensure_table(mm, Level::Pud, s.start);
    f.w(
        pud + 8 * 7,
        PageTableEntry::new(PhysAddr(pud), PteFlags::TABLE).bits(),
    );
    let mut p = f.probe(true);
    feed(&mut p, &correct_free(s));
    assert!(
        errors(&p).contains(&format!("page table {pud:#x}: reached twice")),
        "{}",
        errors(&p)
    );
}

#[test]
fn the_same_corruption_is_reported_once() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    f.w(ROOTS + offset_of!(KernelRoots, mappings) as u64, 3);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    let n = p.summary().errors.len();
    assert!(n >= 1);
    for i in 1..512 {
        f.w(s.frame + i * 8, 0);
    }
    feed(&mut p, &correct_free(s));
    assert_eq!(p.summary().errors.len(), n, "{}", errors(&p));
}

#[test]
fn a_walk_stops_when_its_step_budget_is_spent() {
    let f = Fake::new();
    let mut view = GuestView::new(&f.mem);
    for _ in 0..STEP_BUDGET {
        view.step("VMA", 0x1000).expect("within budget");
    }
    assert_eq!(
        view.step("VMA", 0x2000),
        Err(WalkError::Budget {
            what: "VMA",
            addr: 0x2000
        })
    );
}

/// A healthy guest with a bit of everything, and the addresses of the words worth corrupting.
fn healthy_guest() -> (Fake, Vec<TableSpan>, Vec<u64>, Vec<u64>) {
    let mut f = Fake::new();
    let mm = f.mm();
    let base = USER_BASE.0;
    let av = f.anon_vma();
    let m = f.mapping();
    let mut objects = vec![ROOTS, av, m, mm.addr];
    let mut spans = Vec::new();
    for i in 0..6u64 {
        let va = base + i * (1 << 21);
        let v = f.vma(mm, va, va + 0x3000);
        objects.push(v);
        if i % 2 == 0 {
            f.anon_link(av, v);
            f.anon_page(av);
        } else {
            f.file_link(m, v, i * 7 % 5);
        }
        let t = f.ensure_table(mm, Level::Pte, va);
        spans.push(span(mm, Level::Pte, t, va));
    }
    let heap_end = f.heap;
    let mut words: Vec<u64> = (ROOTS..ROOTS + 32).step_by(8).collect();
    words.extend((HEAP..heap_end).step_by(8));
    for frame in (FRAMES..f.next_frame).step_by(4096) {
        words.extend((frame..frame + 64).step_by(8));
        words.push(f.page(frame) + offset_of!(Page, mapping) as u64);
        words.push(f.page(frame) + offset_of!(Page, mapcount) as u64);
    }
    (f, spans, words, objects)
}

/// What a corrupted word becomes.
#[derive(Clone, Debug)]
enum Garbage {
    Zero,
    /// The word's own address: a one-step cycle.
    Itself,
    /// Another object of the guest, plus a small offset.
    Object(usize, u8),
    /// Any value at all.
    Wild(u64),
    /// A huge count.
    Huge,
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        Just(Garbage::Zero),
        Just(Garbage::Itself),
        (any::<usize>(), 0u8..64).prop_map(|(i, o)| Garbage::Object(i, o)),
        any::<u64>().prop_map(Garbage::Wild),
        Just(Garbage::Huge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn corrupted_guest_memory_never_panics_or_hangs(
        corruptions in prop::collection::vec((any::<usize>(), garbage()), 1..12),
        thorough in any::<bool>(),
        indexed in any::<bool>(),
    ) {
        let (f, spans, words, objects) = healthy_guest();
        for (at, g) in &corruptions {
            let addr = words[at % words.len()];
            let value = match g {
                Garbage::Zero => 0,
                Garbage::Itself => addr,
                Garbage::Object(i, o) => objects[i % objects.len()] + u64::from(*o),
                Garbage::Wild(v) => *v,
                Garbage::Huge => u64::MAX,
            };
            f.w(addr, value);
        }
        let mut p = if indexed { f.probe_indexed(thorough) } else { f.probe(thorough) };
        let before = p.summary().events;
        let began = Instant::now();
        for s in &spans {
            // Unhooked in memory or not, flushed or not: whatever the checks say, they return.
            feed(&mut p, &correct_free(*s));
            feed(&mut p, &[announced_free(*s)]);
        }
        prop_assert!(began.elapsed() < Duration::from_secs(10), "took {:?}", began.elapsed());
        prop_assert_eq!(p.summary().events, before + 4 * spans.len() as u64);
        prop_assert_eq!(p.summary().checks[0], 2 * spans.len() as u64);
    }
}
