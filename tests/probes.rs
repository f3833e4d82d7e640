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

/// Runs the vmm with `--trace-events` (and `--report`); returns the exit code, the report, the
/// parsed trace and stderr.
fn run_traced(name: &str, args: &[&str]) -> (Option<i32>, Value, Value, String) {
    let path =
        std::env::temp_dir().join(format!("mm-trace-test-{}-{name}.json", std::process::id()));
    let mut all = args.to_vec();
    all.extend([
        "--trace-events",
        path.to_str().expect("temp paths are UTF-8"),
    ]);
    let (code, report, stderr) = run_with_report(name, &all);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("vmm {all:?} wrote no trace events ({e}):\n{stderr}"));
    let _ = std::fs::remove_file(&path);
    let trace = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the trace events are not JSON ({e}):\n{text}"));
    (code, report, trace, stderr)
}

fn trace_events(trace: &Value) -> &[Value] {
    trace["traceEvents"]
        .as_array()
        .map_or(&[], |v| v.as_slice())
}

/// The trace's events of phase `ph` ("X" slice, "i" instant) named `name`.
fn traced<'a>(trace: &'a Value, ph: &str, name: &str) -> Vec<&'a Value> {
    trace_events(trace)
        .iter()
        .filter(|e| e["ph"] == ph && e["name"] == name)
        .collect()
}

#[test]
fn the_trace_of_a_tour_has_a_track_per_vcpu_and_a_slice_per_checked_event() {
    if !kvm_available("the_trace_of_a_tour_has_a_track_per_vcpu_and_a_slice_per_checked_event") {
        return;
    }
    let (code, report, trace, stderr) =
        run_traced("tour", &["run", "--scenario", "tour", "--vcpus", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(trace["displayTimeUnit"], "ns");
    assert_eq!(
        trace["otherData"]["events_dropped"], 0,
        "{}",
        trace["otherData"]
    );
    let events = trace_events(&trace);
    let tracks: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tracks, [(0, "vCPU 0"), (1, "vCPU 1")]);
    for e in events.iter().filter(|e| e["ph"] != "M") {
        assert_eq!(e["pid"], 1, "{e}");
        assert!(e["tid"].as_u64().is_some_and(|t| t < 2), "{e}");
        assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
    }
    // The run's own counts: a slice per checked free and per sweep, one entry per probe event.
    let timing = &report["timing"];
    let frees = traced(&trace, "X", "check TableFreed");
    assert_eq!(
        Some(frees.len() as u64),
        timing["checked_frees"].as_u64(),
        "{timing}"
    );
    let sweeps = traced(&trace, "X", "sweep");
    assert_eq!(
        Some(sweeps.len() as u64),
        timing["sweeps"].as_u64(),
        "{timing}"
    );
    let probe_events = events.iter().filter(|e| e["cat"] == "probe").count();
    assert_eq!(Some(probe_events as u64), report["events"].as_u64());
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(slices
        .iter()
        .all(|s| s["dur"].as_f64().is_some_and(|d| d >= 0.0)));
    // The checks the slices say they ran add up to the report's count of each.
    for check in ["P1", "P2", "P3", "P4", "P5", "P6", "P7"] {
        let ran = slices
            .iter()
            .filter(|e| {
                e["args"]["checks"]
                    .as_array()
                    .unwrap()
                    .contains(&check.into())
            })
            .count();
        assert_eq!(
            Some(ran as u64),
            report["checks"][check].as_u64(),
            "{check}"
        );
    }
    // Every checked free is quarantined; both vCPUs ran and recorded something.
    assert_eq!(traced(&trace, "i", "quarantine").len(), frees.len());
    for name in ["unhook", "TLB flush", "VMA unlink"] {
        assert!(!traced(&trace, "i", name).is_empty(), "no {name} instant");
    }
    let in_scenario = traced(&trace, "i", "in scenario");
    for cpu in 0..2 {
        assert!(in_scenario.iter().any(|e| e["tid"] == cpu), "vCPU {cpu}");
    }
    assert_eq!(traced(&trace, "i", "run passed").len(), 1);
    assert!(stderr.contains("trace events written to"), "{stderr}");
}

#[test]
fn a_failed_run_still_writes_its_trace_with_each_violation_marked() {
    if !kvm_available("a_failed_run_still_writes_its_trace_with_each_violation_marked") {
        return;
    }
    let (code, report, trace, stderr) = run_traced(
        "violation",
        &[
            "run",
            "--scenario",
            "munmap-whole",
            "--variant",
            "skip-anon-unlink",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let marked: Vec<&Value> = trace_events(&trace)
        .iter()
        .filter(|e| e["cat"] == "violation")
        .collect();
    assert_eq!(marked.len(), violations(&report).len(), "{trace}");
    for (mark, v) in marked.iter().zip(violations(&report)) {
        assert_eq!(
            (&mark["ph"], &mark["s"]),
            (&"i".into(), &"p".into()),
            "{mark}"
        );
        assert_eq!(
            mark["name"],
            format!("violation {}", v["check"].as_str().unwrap())
        );
        assert_eq!(mark["args"]["detail"], v["detail"], "{mark}");
        assert_eq!(mark["args"]["vcpu"], mark["tid"], "{mark}");
    }
    let failed = traced(&trace, "i", "run failed");
    assert_eq!(failed.len(), 1, "{trace}");
    assert_eq!(failed[0]["args"]["failure"], report["failure"]);
}

#[test]
fn a_trace_path_in_a_missing_directory_exits_2_with_one_line_before_the_run() {
    // No KVM needed: the path is refused before any VM exists.
    let missing = std::env::temp_dir().join(format!("mm-no-such-dir-{}", std::process::id()));
    let path = missing.join("trace.json");
    let path = path.to_str().unwrap();
    for args in [
        &["run", "--scenario", "tour", "--trace-events", path][..],
        &[
            "replay",
            "--maps",
            "m",
            "--trace",
            "t",
            "--trace-events",
            path,
        ],
        // The report's path is checked the same way.
        &["run", "--scenario", "tour", "--report", path],
    ] {
        let (stdout, stderr) = common::expect_exit(args, 2);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(path) && stderr.contains("does not exist"),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "the guest never ran: {stdout}");
    }
}
