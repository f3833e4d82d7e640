//! `vmm bench --quick`: the whole benchmark suite's smoke run, so the benchmarks cannot rot — the
//! table, the JSON and the picture all come out, each figure against its goal.

mod common;

use common::{expect_exit, kvm_available};

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
    let campaigns = report["campaigns"].as_array().expect("campaigns");
    assert!(campaigns
        .iter()
        .all(|c| c["failed"] == 0 && c["runs_per_minute"].as_f64().unwrap_or(0.0) > 0.0));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.starts_with("<svg") && picture.contains("boot / KVM floor"),
        "{picture}"
    );
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(svg);
}
