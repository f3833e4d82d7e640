//! Recorded real programs (tests/replay/, made by record.sh) replay to exactly Linux's maps.

use mm_replay::{maps, replay, trace};

/// Replays fixture `name` and returns the first difference from Linux's AFTER snapshot, if any.
fn replay_fixture(name: &str) -> Result<replay::Replayed, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay");
    let read =
        |ext: &str| std::fs::read_to_string(format!("{dir}/{name}.{ext}")).expect("fixture file");
    let before = maps::parse_maps(&read("before.maps")).expect("BEFORE parses");
    let after = maps::parse_maps(&read("after.maps")).expect("AFTER parses");
    let t = trace::parse_trace(&read("trace")).expect("trace parses");
    let out = replay::replay(&before, &t, &after).map_err(|e| e.to_string())?;
    maps::compare(&out.maps, &after).map_err(|m| m.to_string())?;
    Ok(out)
}

#[test]
fn python_starting_up_replays_to_linuxs_maps() {
    let out = replay_fixture("python3").unwrap_or_else(|e| panic!("{e}"));
    assert!(out.applied > 90, "applied only {}", out.applied);
}

#[test]
fn four_threads_allocating_and_a_realloc_through_mremap_replay_to_linuxs_maps() {
    let out = replay_fixture("threads").unwrap_or_else(|e| panic!("{e}"));
    assert!(out.applied > 20, "applied only {}", out.applied);
    // realloc moved the big block once and shrank it once.
    let mremaps = out.notes.get("mremap emulated with mmap and munmap");
    assert_eq!(mremaps, Some(&2), "{:?}", out.notes);
}

#[test]
fn ls_of_the_root_directory_replays_to_linuxs_maps() {
    let out = replay_fixture("ls").unwrap_or_else(|e| panic!("{e}"));
    assert!(out.applied > 5, "applied only {}", out.applied);
}
