//! What a `TableFreeing` costs. A full walk (`--thorough`, or a guest reporting no VMA ranges)
//! reads every VMA on rmap once, whatever the span: the i_mmap tree is keyed by file offset, not
//! address, so the span cannot prune it. With the VMA index the default mode reads only the VMAs
//! meeting the span (and, for each, the anon_vma list before it and its tree ancestors). Run
//! `cargo test --release -p vmm --lib cost -- --ignored --nocapture` for timings.

use std::time::Instant;

use super::*;

/// A guest whose mm has `n` VMAs, every other one anonymous (each with its own anon_vma, as
/// mm-core gives one per VMA) and the rest in one file's i_mmap tree; the span meets none of them.
fn guest_with_vmas(n: u64) -> (Fake, TableSpan) {
    let mut f = Fake::new();
    let (mm, _, s) = unhooked_pte_table(&mut f);
    let m = f.mapping();
    let mut pgoff = 1u64;
    for i in 0..n {
        let start = s.end + i * 0x2000;
        let v = f.vma(mm, start, start + 0x1000);
        if i % 2 == 0 {
            let av = f.anon_vma();
            f.anon_link(av, v);
        } else {
            // A pseudo-random key keeps the unbalanced test tree shallow.
            pgoff = pgoff
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f.file_link(m, v, pgoff >> 20);
        }
    }
    (f, s)
}

#[test]
fn a_free_reads_every_vma_on_rmap_once_and_no_more() {
    let (f, s) = guest_with_vmas(301);
    let mut p = f.probe(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
    let c = p.last_cost();
    assert_eq!((c.vmas, c.anon_vmas, c.mappings), (301, 151, 1));
}

#[test]
fn with_the_index_a_free_reads_only_the_vmas_meeting_the_span() {
    let (f, s) = guest_with_vmas(301);
    let mut p = f.probe_indexed(false);
    assert!(feed(&mut p, &correct_free(s)).is_empty());
    let c = p.last_cost();
    // The one VMA meeting the span (on no rmap structure) is the one candidate.
    assert_eq!(
        (c.candidates, c.vmas, c.anon_vmas, c.mappings),
        (1, 1, 0, 0)
    );
}

#[test]
#[ignore = "timing; run in release with --nocapture"]
fn the_cost_of_a_free_at_10_1000_and_65530_vmas() {
    for n in [10, 1_000, 65_530] {
        let (f, s) = guest_with_vmas(n);
        for (indexed, thorough) in [(true, false), (false, false), (false, true)] {
            let mut p = if indexed {
                f.probe_indexed(thorough)
            } else {
                f.probe(thorough)
            };
            let rounds = 20;
            let began = Instant::now();
            for _ in 0..rounds {
                assert!(feed(&mut p, &correct_free(s)).is_empty());
                f.w(s.frame + 8, 0); // handed out again: not a double free
            }
            let per = began.elapsed() / rounds;
            let c = p.last_cost();
            println!(
                "{n:>6} VMAs, indexed {indexed:>5}, thorough {thorough:>5}: {per:>10.1?} per free \
                 ({} candidates, {} VMAs, {} anon_vmas, {} mappings, {} steps)",
                c.candidates, c.vmas, c.anon_vmas, c.mappings, c.steps
            );
            assert!(p.summary().errors.is_empty(), "{:?}", p.summary().errors);
        }
    }
}
