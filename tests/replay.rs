//! `vmm replay --host`: a recorded program's memory system calls replayed through mm-core end with
//! exactly Linux's maps, and a wrong comparison or bad input is reported (exit 1 / exit 2).

mod common;

use common::expect_exit;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../replay/tests/replay");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

#[test]
fn a_recorded_ls_replays_on_the_host_to_exactly_linuxs_maps() {
    let (before, trace, after) = (
        fixture("ls.before.maps"),
        fixture("ls.trace"),
        fixture("ls.after.maps"),
    );
    let (stdout, stderr) = expect_exit(
        &[
            "replay",
            "--host",
            "--maps",
            &before,
            "--trace",
            &trace,
            "--compare",
            &after,
        ],
        0,
    );
    let expected = std::fs::read_to_string(&after).unwrap();
    assert_eq!(
        stdout.lines().count(),
        expected.lines().count(),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("/usr/bin/ls"), "{stdout}");
}

#[test]
fn a_comparison_against_another_programs_maps_exits_1_naming_the_first_difference() {
    let (before, trace, other) = (
        fixture("ls.before.maps"),
        fixture("ls.trace"),
        fixture("python3.after.maps"),
    );
    let (_, stderr) = expect_exit(
        &[
            "replay",
            "--host",
            "--maps",
            &before,
            "--trace",
            &trace,
            "--compare",
            &other,
        ],
        1,
    );
    assert!(
        stderr.contains("maps differ at line 1") && stderr.contains("- linux:"),
        "{stderr}"
    );
}

#[test]
fn bad_replay_input_is_a_one_line_usage_error() {
    let (before, trace) = (fixture("ls.before.maps"), fixture("ls.trace"));
    let (_, stderr) = expect_exit(
        &[
            "replay",
            "--host",
            "--maps",
            "/nonexistent.maps",
            "--trace",
            &trace,
        ],
        2,
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent.maps"), "{stderr}");
    let (_, stderr) = expect_exit(
        &["replay", "--host", "--maps", &trace, "--trace", &trace],
        2,
    );
    assert!(stderr.contains("maps line 1"), "{stderr}");
    let (_, stderr) = expect_exit(&["replay", "--maps", &before, "--trace", &trace], 2);
    assert!(stderr.contains("--host"), "{stderr}");
}
