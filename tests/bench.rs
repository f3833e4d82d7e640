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
    for section in [
        "platform:",
        "boot time",
        "probe cost",
        "mm-core (host build",
        "exit_mmap with n VMAs — mm-core",
        "mm workloads in the guest",
        "campaign throughput",
    ] {
        assert!(
            stdout.contains(section),
            "no {section} in:\n{stdout}\n{stderr}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
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
