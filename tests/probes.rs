//! The host probes against the guest's real page-table frees: the correct order passes every
//! check in every scenario, and each deliberately wrong ordering variant is caught by the check
//! that guards against it, naming the VMA and the frame.

mod common;

use common::{kvm_available, run_with_report};
use serde_json::Value;

fn violations(report: &Value) -> &[Value] {
    report["violations"]
        .as_array()
        .map_or(&[], |v| v.as_slice())
}

/// Runs `scenario` under `variant` and returns its report, checking it failed (exit 1).
fn caught(name: &str, scenario: &str, variant: &str) -> Value {
    let (code, report, stderr) =
        run_with_report(name, &["run", "--scenario", scenario, "--variant", variant]);
    assert_eq!(
        code,
        Some(1),
        "{variant} in {scenario} was not caught:\n{stderr}"
    );
    assert!(
        !violations(&report).is_empty(),
        "{variant} in {scenario}: no violation in {report}"
    );
    report
}

/// The violations of kind `check`, each naming a frame (P7, the guest's validate_mm, names an
/// mm only).
fn of_check<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = violations(report)
        .iter()
        .filter(|v| v["check"] == check)
        .collect();
    for v in found.iter().filter(|_| check != "P7") {
        assert!(
            v["frame"].as_u64().is_some_and(|f| f > 0 && f % 4096 == 0),
            "no frame in {v}"
        );
    }
    found
}

/// Asserts a P1 violation naming a VMA reachable through `kind` ("anon" or "file").
fn assert_p1_names_a_vma(report: &Value, kind: &str) {
    let p1 = of_check(report, "P1");
    let named = p1.iter().find(|v| v["vma"]["kind"] == kind);
    let vma = named.unwrap_or_else(|| panic!("no P1 violation naming a {kind} VMA in {report}"));
    let (start, end) = (
        vma["vma"]["start"].as_u64().unwrap(),
        vma["vma"]["end"].as_u64().unwrap(),
    );
    let (span_start, span_end) = (vma["start"].as_u64().unwrap(), vma["end"].as_u64().unwrap());
    assert!(
        start < span_end && span_start < end,
        "the named VMA does not meet the freed span: {vma}"
    );
}

#[test]
fn the_correct_order_passes_every_check_in_every_scenario() {
    if !kvm_available("the_correct_order_passes_every_check_in_every_scenario") {
        return;
    }
    for thorough in [false, true] {
        let mut args = vec!["run", "--scenario", "tour"];
        if thorough {
            args.push("--thorough");
        }
        let (code, report, stderr) = run_with_report("correct", &args);
        assert_eq!(code, Some(0), "thorough={thorough}:\n{stderr}");
        assert!(violations(&report).is_empty(), "{report}");
        assert_eq!(
            report["errors"].as_array().map(Vec::len),
            Some(0),
            "{report}"
        );
        for check in ["P1", "P2", "P3", "P4", "P5", "P6"] {
            let ran = report["checks"][check].as_u64().unwrap_or(0);
            assert!(ran > 0, "{check} never ran (thorough={thorough}): {report}");
        }
        assert!(
            report["sweeps"].as_u64().unwrap_or(0) > 0,
            "no sweep: {report}"
        );
    }
}

#[test]
fn skipping_the_anon_vma_unlink_is_caught_by_p1() {
    if !kvm_available("skipping_the_anon_vma_unlink_is_caught_by_p1") {
        return;
    }
    let report = caught("skip-anon", "munmap-whole", "skip-anon-unlink");
    assert_p1_names_a_vma(&report, "anon");
}

#[test]
fn skipping_the_file_unlink_is_caught_by_p1() {
    if !kvm_available("skipping_the_file_unlink_is_caught_by_p1") {
        return;
    }
    let report = caught("skip-file", "shared-pmd", "skip-file-unlink");
    assert_p1_names_a_vma(&report, "file");
}

#[test]
fn the_prepatch_order_is_caught_by_p1_for_anon_and_file_vmas() {
    if !kvm_available("the_prepatch_order_is_caught_by_p1_for_anon_and_file_vmas") {
        return;
    }
    let report = caught("prepatch", "exit-mmap", "prepatch-order");
    assert_p1_names_a_vma(&report, "anon");
    assert_p1_names_a_vma(&report, "file");
}

#[test]
fn a_gather_that_skips_the_unlink_is_caught_by_p1() {
    if !kvm_available("a_gather_that_skips_the_unlink_is_caught_by_p1") {
        return;
    }
    let report = caught("gather", "munmap-several", "gather-skips-unlink");
    assert!(!of_check(&report, "P1").is_empty(), "{report}");
}

#[test]
fn ignoring_floor_and_ceiling_is_caught_by_p1_or_p2() {
    if !kvm_available("ignoring_floor_and_ceiling_is_caught_by_p1_or_p2") {
        return;
    }
    let report = caught("floor", "shared-pte", "ignore-floor-ceiling");
    let p1_or_p2 = of_check(&report, "P1").len() + of_check(&report, "P2").len();
    assert!(p1_or_p2 > 0, "{report}");
}

#[test]
fn freeing_before_the_flush_is_caught_by_p3() {
    if !kvm_available("freeing_before_the_flush_is_caught_by_p3") {
        return;
    }
    let report = caught("flush", "munmap-whole", "free-before-flush");
    assert!(!of_check(&report, "P3").is_empty(), "{report}");
}

#[test]
fn unlinking_under_the_page_table_lock_is_caught_by_lockdep() {
    if !kvm_available("unlinking_under_the_page_table_lock_is_caught_by_lockdep") {
        return;
    }
    let (stdout, stderr) = common::expect_exit(
        &[
            "run",
            "--scenario",
            "munmap-whole",
            "--variant",
            "unlink-under-ptl",
        ],
        1,
    );
    assert!(
        stderr.contains("lockdep")
            && stderr.contains("anon_vma_lock taken while holding page_table_lock"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn thorough_mode_finds_what_the_default_finds() {
    if !kvm_available("thorough_mode_finds_what_the_default_finds") {
        return;
    }
    let key = |r: &Value| {
        let mut v: Vec<(String, u64)> = violations(r)
            .iter()
            .map(|v| {
                (
                    v["check"].as_str().unwrap_or("").to_string(),
                    v["frame"].as_u64().unwrap_or(0),
                )
            })
            .filter(|(c, _)| c == "P1")
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let args = [
        "run",
        "--scenario",
        "exit-mmap",
        "--variant",
        "prepatch-order",
    ];
    let (_, default, _) = run_with_report("default", &args);
    let mut thorough_args = args.to_vec();
    thorough_args.push("--thorough");
    let (_, thorough, _) = run_with_report("thorough", &thorough_args);
    assert!(!key(&default).is_empty());
    assert_eq!(key(&default), key(&thorough));
}

#[test]
fn the_probe_benchmark_smoke_run_reports_a_cost_per_checked_free() {
    if !kvm_available("the_probe_benchmark_smoke_run_reports_a_cost_per_checked_free") {
        return;
    }
    let (stdout, stderr) = common::expect_exit(&["bench", "probes", "--quick"], 0);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with('x'))
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "expected a row per VMA count:\n{stdout}\n{stderr}"
    );
    for row in rows {
        let ratio: f64 = row
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches('x')
            .parse()
            .unwrap();
        assert!(
            ratio >= 1.0,
            "a checked event cannot cost less than a bare exit: {row}"
        );
    }
}

#[test]
fn a_seeded_random_workload_passes_in_order_and_catches_a_wrong_one() {
    if !kvm_available("a_seeded_random_workload_passes_in_order_and_catches_a_wrong_one") {
        return;
    }
    let args = [
        "run",
        "--scenario",
        "random-mm",
        "--seed",
        "7",
        "--scale",
        "120",
    ];
    let (code, report, stderr) = run_with_report("random-correct", &args);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(report["checks"]["P1"].as_u64().unwrap_or(0) > 0, "{report}");
    let mut wrong = args.to_vec();
    wrong.extend(["--variant", "skip-file-unlink"]);
    let (code, report, stderr) = run_with_report("random-wrong", &wrong);
    assert_eq!(code, Some(1), "{stderr}");
    assert_p1_names_a_vma(&report, "file");
}

/// The violations of kind `check` whose detail mentions `text`.
fn with_detail<'a>(report: &'a Value, check: &str, text: &str) -> Vec<&'a Value> {
    of_check(report, check)
        .into_iter()
        .filter(|v| v["detail"].as_str().is_some_and(|d| d.contains(text)))
        .collect()
}

#[test]
fn a_table_freed_behind_the_gathers_back_is_checked_where_the_allocator_frees_it() {
    if !kvm_available(
        "a_table_freed_behind_the_gathers_back_is_checked_where_the_allocator_frees_it",
    ) {
        return;
    }
    // The variant frees PTE tables straight to the allocator as a data page, with no hook: the
    // allocator still sees a page table in its metadata, and the host checks the free there.
    let report = caught("behind", "munmap-whole", "free-behind-gather");
    let p5 = with_detail(&report, "P5", "behind the mmu_gather's back");
    assert!(!p5.is_empty(), "{report}");
    assert!(p5.iter().all(|v| v["level"] == 1), "{report}");
    assert!(
        report["checks"]["P5"].as_u64() >= report["checks"]["P3"].as_u64(),
        "every table free is checked: {report}"
    );
}

#[test]
fn an_announced_span_that_is_not_the_tables_own_is_caught_by_p5() {
    if !kvm_available("an_announced_span_that_is_not_the_tables_own_is_caught_by_p5") {
        return;
    }
    let report = caught("span", "munmap-whole", "wrong-span");
    let p5 = with_detail(&report, "P5", "the mmu_gather announced");
    assert!(!p5.is_empty(), "{report}");
    for v in p5 {
        // The violation carries the span the table's own descriptor gives, not the guest's.
        let (start, end) = (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap());
        let level = v["level"].as_u64().unwrap() as u32;
        assert_eq!(end - start, 1u64 << (12 + 9 * level), "{v}");
    }
}

#[test]
fn a_lost_pte_table_is_found_by_the_sweep() {
    if !kvm_available("a_lost_pte_table_is_found_by_the_sweep") {
        return;
    }
    let (code, report, stderr) = run_with_report(
        "lost",
        &[
            "run",
            "--scenario",
            "munmap-part",
            "--variant",
            "lose-table",
            "--sweep-every",
            "1",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lost = with_detail(&report, "P6", "lost");
    assert!(!lost.is_empty(), "{report}");
    assert!(lost.iter().all(|v| v["level"] == 1), "{report}");
    // Each lost table is told once, however many sweeps see it.
    let mut frames: Vec<u64> = lost.iter().map(|v| v["frame"].as_u64().unwrap()).collect();
    let n = frames.len();
    frames.sort_unstable();
    frames.dedup();
    assert_eq!(frames.len(), n, "{report}");
    // And at the PGD's free, the tables it leaves behind.
    assert!(!with_detail(&report, "P6", "leaked").is_empty(), "{report}");
}

#[test]
fn miscounted_rss_is_found_by_the_sweep_and_by_the_guests_validate_mm() {
    if !kvm_available("miscounted_rss_is_found_by_the_sweep_and_by_the_guests_validate_mm") {
        return;
    }
    // Freeing a table a neighbour still maps through strands its pages: rss counts them, the page
    // tables no longer hold them.
    let (code, report, stderr) = run_with_report(
        "rss",
        &[
            "run",
            "--scenario",
            "shared-pte",
            "--variant",
            "ignore-floor-ceiling",
            "--thorough",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        !with_detail(&report, "P6", "anon_rss").is_empty(),
        "{report}"
    );
    assert!(
        !with_detail(&report, "P7", "anon_rss").is_empty(),
        "{report}"
    );
}

#[test]
fn tour_fills_every_cell_of_the_coverage_matrix_and_prints_it() {
    if !kvm_available("tour_fills_every_cell_of_the_coverage_matrix_and_prints_it") {
        return;
    }
    let (code, report, stderr) = run_with_report("coverage", &["run", "--scenario", "tour"]);
    assert_eq!(code, Some(0), "{stderr}");
    let coverage = &report["coverage"];
    for missing in ["missing_frees", "missing_unlinks"] {
        assert_eq!(
            coverage[missing].as_array().map(Vec::len),
            Some(0),
            "{missing}: {coverage}"
        );
    }
    // Every path that frees tables with a neighbour left, at every level.
    for path in ["munmap", "mmap-fixed", "mremap", "brk"] {
        let levels: Vec<u64> = coverage["frees"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["path"] == path && c["count"].as_u64() > Some(0))
            .map(|c| c["level"].as_u64().unwrap())
            .collect();
        for level in 1..=3 {
            assert!(
                levels.contains(&level),
                "{path} never freed a level-{level} table: {coverage}"
            );
        }
    }
    assert!(
        stderr.contains("coverage: checked table frees") && stderr.contains("PTE<PMD"),
        "{stderr}"
    );
}
