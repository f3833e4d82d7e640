//! `vmm bench --quick`: the whole benchmark suite's smoke run, so the benchmarks cannot rot — the
//! table, the JSON and the picture all come out, each figure against its anchor; and the guest's
//! workload scenario, whose phase marks the host times.

mod common;

use common::{expect_exit, kvm_available, run_with_report};
use serde_json::Value;

/// The six workloads, as the JSON names them.
const WORKLOADS: [&str; 6] = [
    "map_touch_unmap_4k",
    "touch_anon",
    "munmap_populated",
    "create_vmas",
    "munmap_vmas",
    "truncate_shared",
];

/// The two tests that run the whole quick suite take turns: side by side on a 2-core machine each
/// would time the other's load (the scaling rows assert that larger n takes longer).
static WHOLE_SUITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `{median, min, max}` figure with min <= median <= max, all positive.
fn sane(figure: &Value) -> bool {
    let get = |k: &str| figure[k].as_f64().unwrap_or(-1.0);
    let (median, min, max) = (get("median"), get("min"), get("max"));
    min > 0.0 && min <= median && median <= max
}

/// Rows of the six workloads, each with sane figures for itself and Linux and a positive ratio.
fn assert_workload_rows(rows: &Value, what: &str) {
    let rows = rows.as_array().unwrap_or_else(|| panic!("no {what} rows"));
    let names: Vec<&str> = rows.iter().filter_map(|r| r["workload"].as_str()).collect();
    assert_eq!(names, WORKLOADS, "{what}");
    for r in rows {
        assert!(
            sane(&r["value"]) && sane(&r["linux"]),
            "{what}: bad figures in {r}"
        );
        assert!(r["ratio"].as_f64().is_some_and(|q| q > 0.0), "{what}: {r}");
    }
}

#[test]
fn the_quick_suite_writes_a_table_json_and_a_picture() {
    if !kvm_available("the_quick_suite_writes_a_table_json_and_a_picture") {
        return;
    }
    let _turn = WHOLE_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir();
    let json = dir.join(format!("mm-bench-{}.json", std::process::id()));
    let svg = dir.join(format!("mm-bench-{}.svg", std::process::id()));
    let args = [
        "bench",
        "--quick",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    let (stdout, stderr) = expect_exit(&args, 0);
    assert!(
        stderr.contains("in all on this machine") && stderr.contains("bench: [1/10] boot"),
        "the bench says up front how long it takes and which row runs: {stderr}"
    );
    for section in [
        "platform:",
        "boot time",
        "probe cost",
        "mm-core (host build",
        "exit_mmap with n VMAs — mm-core",
        "mm workloads in the guest",
        "campaign throughput",
        "difftest (mm-core's host build",
        "difftest --guest (mm-core in the VM",
    ] {
        assert!(
            stdout.contains(section),
            "no {section} in:\n{stdout}\n{stderr}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["complete"], true, "{report}");
    assert!(
        report["boot"]["ratio"].as_f64().is_some_and(|r| r > 1.0),
        "{report}"
    );
    assert_eq!(
        report["probes"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_workload_rows(&report["mm_workloads"]["rows"], "mm-core");
    assert_eq!(report["mm_workloads"]["leaked_frames"], 0, "{report}");
    let forks = report["mm_workloads"]["forks"]
        .as_array()
        .expect("fork rows");
    assert_eq!(forks.len(), 2, "{report}");
    for r in forks {
        assert!(
            r["ratio"].as_f64().is_some_and(|q| q > 0.0),
            "fork measured on both sides: {r}"
        );
    }
    let difftest = &report["difftest"];
    assert_eq!(difftest["seeds"], 40, "{report}");
    assert!(
        difftest["seeds_per_minute"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{report}"
    );
    let guest = &report["difftest_guest"];
    assert_eq!(guest["seeds"], 2, "{report}");
    assert_eq!(guest["mode"], "guest", "{report}");
    assert_eq!(guest["clean"], 2, "{report}");
    assert_eq!(guest["probes"]["violations"], 0, "{report}");
    assert!(
        guest["seeds_per_minute"].as_f64().is_some_and(|r| r > 0.0)
            && guest["probes"]["checks"].as_u64().is_some_and(|c| c > 0),
        "{report}"
    );
    assert_workload_rows(&report["guest_workloads"]["rows"], "guest");
    let label = report["guest_workloads"]["platform"].as_str().unwrap_or("");
    assert!(
        label.contains("emulates guest ring 0") || label.starts_with("hardware KVM"),
        "{label}"
    );
    // munmap on both sides and exit_mmap on mm-core, each over growing n, taking longer as n grows.
    let scaling = report["scaling"].as_array().expect("scaling");
    let series: Vec<String> = scaling
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["side"].as_str().unwrap_or(""),
                s["op"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        series,
        ["Linux munmap", "mm-core munmap", "mm-core exit_mmap"],
        "{report}"
    );
    for s in scaling {
        let points = s["points"].as_array().expect("points");
        assert!(points.len() >= 2, "{s}");
        assert!(points.iter().all(|p| sane(&p["total_ms"])), "{s}");
        let first = &points[0];
        let last = &points[points.len() - 1];
        assert!(last["n"].as_u64() > first["n"].as_u64(), "{s}");
        assert!(
            last["total_ms"]["median"].as_f64() > first["total_ms"]["median"].as_f64(),
            "{s}"
        );
    }
    let campaigns = report["campaigns"].as_array().expect("campaigns");
    assert!(campaigns
        .iter()
        .all(|c| c["failed"] == 0 && c["runs_per_minute"].as_f64().unwrap_or(0.0) > 0.0));
    assert!(
        campaigns.iter().any(|c| c["scenario"] == "race-exit"),
        "the race scenarios' throughput is measured: {campaigns:?}"
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.starts_with("<svg") && picture.contains("boot / KVM floor"),
        "{picture}"
    );
    for curve in ["Linux munmap", "mm-core munmap", "mm-core exit_mmap"] {
        assert!(
            picture.contains(&format!(r#"class="curve" data-series="{curve}""#)),
            "no {curve} curve in {picture}"
        );
    }
    assert!(picture.contains(r#"class="bound""#), "no n log n line");
    assert!(picture.contains("guest / Linux: "), "no guest bars");
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn the_guest_workloads_mark_every_phase_and_keep_the_probes_quiet() {
    if !kvm_available("the_guest_workloads_mark_every_phase_and_keep_the_probes_quiet") {
        return;
    }
    let args = ["run", "--scenario", "mm-workloads", "--scale", "8"];
    let (code, report, stderr) = run_with_report("mm-workloads", &args);
    assert_eq!(code, Some(0), "{stderr}");
    let timing = &report["timing"];
    assert_eq!(timing["unpaired_marks"], 0, "{timing}");
    let phases = timing["phases"].as_array().expect("phases");
    // Three repeats of each of the six workloads, each phase 8 units long and taking some time.
    assert_eq!(phases.len(), 3 * WORKLOADS.len(), "{timing}");
    for w in WORKLOADS {
        let mine: Vec<&Value> = phases.iter().filter(|p| p["workload"] == w).collect();
        assert_eq!(mine.len(), 3, "{w}: {timing}");
        assert!(
            mine.iter()
                .all(|p| p["units"] == 8 && p["ns"].as_u64().is_some_and(|ns| ns > 0)),
            "{w}: {timing}"
        );
    }
    // Only the memory manager's start-up report reached the host: the probes were off.
    assert_eq!(report["events"], 1, "{report}");
}

#[test]
fn a_row_that_fails_is_reported_and_the_others_still_measure() {
    if !kvm_available("a_row_that_fails_is_reported_and_the_others_still_measure") {
        return;
    }
    let _turn = WHOLE_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir();
    let json = dir.join(format!("mm-bench-failing-{}.json", std::process::id()));
    let svg = dir.join(format!("mm-bench-failing-{}.svg", std::process::id()));
    // A watchdog of 1 ms: the 10-VMA probe row's guest cannot finish in time.
    let args = [
        "bench",
        "--quick",
        "--row-timeout",
        "probes-10=0.001",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    let (stdout, stderr) = expect_exit(&args, 1);
    assert!(
        stderr.contains("bench: probes-10 FAILED") && stderr.contains("1 row(s) failed"),
        "{stderr}"
    );
    // The table has every other row, and the failed one with its reason and reproduction.
    for section in [
        "boot time",
        "mm-core (host build",
        "mm workloads in the guest",
        "campaign throughput",
        "FAILED rows (1):",
        "  probes-10: ",
        "reproduce: ",
    ] {
        assert!(stdout.contains(section), "no {section} in:\n{stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["complete"], false, "{report}");
    let failed = report["failed"].as_array().expect("failed rows");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["row"], "probes-10");
    let command = failed[0]["command"].as_str().unwrap_or("");
    assert!(
        command.contains("--scenario probe-bench --scale 10 --timeout 0.001"),
        "the command reproduces the row: {command}"
    );
    assert!(!failed[0]["reason"].as_str().unwrap_or("").is_empty());
    // The other probe row and every other section still measured.
    let probes: Vec<u64> = report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .filter_map(|r| r["vmas"].as_u64())
        .collect();
    assert_eq!(probes, [100], "{report}");
    assert!(report["boot"]["ratio"].as_f64().is_some(), "{report}");
    assert_workload_rows(&report["mm_workloads"]["rows"], "mm-core");
    assert_workload_rows(&report["guest_workloads"]["rows"], "guest");
    assert_eq!(report["campaigns"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["pending"].as_array().map(Vec::len), Some(0));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("probes-10: FAILED"), "{picture}");
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn a_row_timeout_for_a_row_the_bench_does_not_have_is_a_usage_error() {
    let (stdout, stderr) = expect_exit(&["bench", "--row-timeout", "probes-7=1"], 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no row \"probes-7\""), "{stderr}");
}
