//! Hostile guest memory: cycles, broken back links, wild pointers and absurd counts become
//! errors naming the structure, never a panic or a hang; a property test corrupts random words.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::probe::engine::MAX_VIOLATIONS;
use crate::probe::guest_mem::{GuestView, WalkError, MAX_EVENT_ERRORS, STEP_BUDGET};
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

/// Lays a registry of `n` anon_vmas 16 bytes apart from `base` (only their `all` links are
/// sane; every other field reads a neighbour's link) and points the roots at it.
fn long_registry(f: &Fake, base: u64, n: u64) {
    let next_at = offset_of!(AnonVma, all.next) as u64;
    let node = |k: u64| base + 16 * k;
    let mut bytes = vec![0u8; (16 * n + next_at + 16) as usize];
    for k in 0..n {
        let next = if k + 1 == n { 0 } else { node(k + 1) };
        let prev = if k == 0 { 0 } else { node(k - 1) };
        let at = (16 * k + next_at) as usize;
        bytes[at..at + 8].copy_from_slice(&next.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&prev.to_le_bytes());
    }
    f.mem
        .write_slice(&bytes, GuestAddress(base))
        .expect("registry inside test RAM");
    f.w(ROOTS + offset_of!(KernelRoots, anon_vmas) as u64, node(0));
    f.w(ROOTS + offset_of!(KernelRoots, nr_anon_vmas) as u64, n);
}

#[test]
fn a_registry_longer_than_the_budget_costs_the_budget_and_one_error() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    // Past the heap the fake guest has used: more anon_vmas than the budget has steps.
    let base = f.alloc(0) + 0x1000;
    long_registry(&f, base, STEP_BUDGET + 1000);
    let mut p = f.probe(false);
    feed(&mut p, &correct_free(s));
    let errors = &p.summary().errors;
    let budget: Vec<_> = errors.iter().filter(|e| e.contains("budget")).collect();
    assert_eq!(budget.len(), 1, "{}", errors.join("\n"));
    // The budget's line, the kept errors, and one line counting the rest.
    assert!(
        errors.len() <= MAX_EVENT_ERRORS + 2,
        "{} errors: {}",
        errors.len(),
        errors.join("\n")
    );
    assert!(p.last_cost().steps <= STEP_BUDGET);
}

#[test]
fn a_walk_gives_up_once_the_run_is_stopping() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let base = f.alloc(0) + 0x1000;
    long_registry(&f, base, 1 << 16);
    let mut p = f.probe(false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    p.set_stop(stop);
    feed(&mut p, &correct_free(s));
    let errors = p.summary().errors.join("\n");
    assert!(
        errors.contains("walk cut short, the run is stopping"),
        "{errors}"
    );
    assert!(p.last_cost().steps <= 1024, "{} steps", p.last_cost().steps);
}

#[test]
fn events_naming_frames_outside_ram_are_errors_and_leave_no_state() {
    let f = Fake::new();
    let mut p = f.probe(false);
    let span = |frame| TableSpan {
        mm: 0x5000,
        level: 1,
        frame,
        start: USER_BASE.0,
        end: USER_BASE.0 + (1 << 21),
    };
    for i in 0..10_000u64 {
        let frame = RAM + (i << 12);
        feed(
            &mut p,
            &[
                ProbeEvent::TableUnhooked(span(frame)),
                announced_free(span(frame | 1)),
            ],
        );
    }
    let s = p.summary();
    // Nothing was checked: no frame of RAM was named.
    assert_eq!(s.checks[Check::P1.index()], 0);
    assert!(s.errors.len() <= 257, "{}", s.errors.len());
    assert!(
        s.errors[0].contains("not a page-aligned frame of guest RAM"),
        "{}",
        s.errors[0]
    );
}

#[test]
fn violations_past_the_cap_are_counted_not_kept() {
    let f = Fake::new();
    let mut p = f.probe(false);
    let n = MAX_VIOLATIONS as u64 + 500;
    for i in 0..n {
        let ev = ProbeEvent::MmInvalid { mm: i, count: 1 };
        assert_eq!(p.handle(0, &ev, "broken", &mut || RIP).len(), 1);
    }
    let s = p.summary();
    assert_eq!(s.violations.len(), MAX_VIOLATIONS);
    assert_eq!(s.violation_counts[Check::P7.index()], n);
    assert_eq!((s.violation_total(), s.violations_dropped()), (n, 500));
}

#[test]
fn the_flush_logs_of_many_mms_stay_bounded_and_a_live_mm_keeps_its_own() {
    let mut f = Fake::new();
    let (_, _, s) = unhooked_pte_table(&mut f);
    let mut p = f.probe(false);
    feed(&mut p, &[ProbeEvent::TableUnhooked(s)]);
    // A flood of flushes of other mms, then this mm's own flush and free: P3 still sees it.
    for mm in 0..100_000u64 {
        let ev = ProbeEvent::TlbFlushed {
            mm: 0x100_0000 + mm * 8,
            start: 0,
            end: 0x1000,
        };
        feed(&mut p, &[ev]);
    }
    let flush = ProbeEvent::TlbFlushed {
        mm: s.mm,
        start: s.start,
        end: s.end,
    };
    let v = feed(&mut p, &[flush, announced_free(s)]);
    assert!(v.is_empty(), "{v:?}");
    let held = p.held();
    assert!(held.flush_mms <= 64, "{held:?}");
    assert!(held.flushes <= 64 * 4096, "{held:?}");
}

#[test]
fn one_free_reports_at_most_max_found_vmas() {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let av = f.anon_vma();
    // 200 VMAs inside the freed span, every one still on the anon_vma list.
    for i in 0..200u64 {
        let start = s.start + 0x4000 + i * 0x2000;
        let v = f.vma(mm, start, start + 0x1000);
        f.anon_link(av, v);
    }
    let mut p = f.probe(false);
    let v = feed(&mut p, &correct_free(s));
    assert_eq!(
        v.len(),
        crate::probe::rmap::MAX_FOUND,
        "{} violations",
        v.len()
    );
    assert!(v.iter().all(|v| v.check == Check::P1));
}
