//! Recorded real programs (tests/replay/, made by record.sh) replay to exactly Linux's maps.

use mm_replay::{maps, replay, trace};

/// Fixture `name`'s BEFORE snapshot, trace and AFTER snapshot.
fn load(name: &str) -> (Vec<maps::MapsLine>, trace::Trace, Vec<maps::MapsLine>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay");
    let read =
        |ext: &str| std::fs::read_to_string(format!("{dir}/{name}.{ext}")).expect("fixture file");
    let before = maps::parse_maps(&read("before.maps")).expect("BEFORE parses");
    let after = maps::parse_maps(&read("after.maps")).expect("AFTER parses");
    let t = trace::parse_trace(&read("trace")).expect("trace parses");
    (before, t, after)
}

/// Replays fixture `name` and returns the first difference from Linux's AFTER snapshot, if any.
fn replay_fixture(name: &str) -> Result<replay::Replayed, String> {
    let (before, t, after) = load(name);
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
    // realloc moved the big block once and shrank it once, through mm-core's own mremap; every
    // call, madvise included, was applied.
    let (_, t, _) = load("threads");
    let mremaps = t
        .events
        .iter()
        .filter(|e| matches!(e.call, trace::Call::Mremap { .. }));
    assert_eq!(mremaps.count(), 2);
    assert_eq!(out.applied, t.events.len(), "{:?}", out.notes);
}

#[test]
fn two_threads_racing_munmap_against_mmap_replay_to_linuxs_maps() {
    // One thread maps, locks, protects and unmaps blocks while the other maps with no hint and
    // gets the ranges just freed; strace interrupted hundreds of their calls.
    let out = replay_fixture("racing").unwrap_or_else(|e| panic!("{e}"));
    let (_, t, _) = load("racing");
    let interrupted = t.events.iter().filter(|e| e.start != e.line).count();
    assert!(interrupted > 100, "only {interrupted} interrupted calls");
    let locks = t.events.iter().filter(|e| {
        matches!(
            e.call,
            trace::Call::Mlock { .. } | trace::Call::Munlock { .. }
        )
    });
    assert!(locks.count() >= 200);
    assert_eq!(out.applied, t.events.len(), "{:?}", out.notes);
}

#[test]
fn shared_anonymous_memory_split_cut_and_moved_by_mremap_replays_to_linuxs_maps() {
    let out = replay_fixture("shmem").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.applied, 6, "{:?}", out.notes);
    let shmem = out.maps.iter().filter(|l| l.path == "/dev/zero (deleted)");
    // Two shmem files, inodes 105 and 106 in Linux's AFTER snapshot; the moved one is 106.
    assert_eq!(shmem.clone().count(), 5);
    assert!(shmem.clone().any(|l| l.inode == 106) && shmem.clone().any(|l| l.inode == 105));
}

#[test]
fn gccs_compiler_proper_compiling_a_file_replays_to_linuxs_maps_from_its_non_pie_layout() {
    let out = replay_fixture("cc1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.applied, 47, "{:?}", out.notes);
    // Non-PIE: the executable and heap below 512 GiB were moved up, and printed back down.
    assert_eq!(out.maps[0].start, 0x40_0000);
    assert_eq!(out.offset, mm_core::addr::USER_BASE.0);
}

#[test]
fn ls_of_the_root_directory_replays_to_linuxs_maps() {
    let out = replay_fixture("ls").unwrap_or_else(|e| panic!("{e}"));
    assert!(out.applied > 5, "applied only {}", out.applied);
}

/// Every shipped fixture, by name.
const FIXTURES: [&str; 5] = ["ls", "python3", "threads", "shmem", "cc1"];

#[test]
fn touching_pages_as_the_guest_does_changes_no_fixtures_maps_and_leaks_nothing() {
    use mm_core::mm::Mm;
    use mm_core::paging::CountingTlb;
    use mm_core::phys::SimRam;
    use mm_core::Kernel;
    for name in FIXTURES {
        let (before, t, after) = load(name);
        let ram = SimRam::new(4096);
        let tlb = CountingTlb::default();
        let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
        let mm = Mm::new(&k, None).unwrap();
        let mut r = replay::Replayer::new(&k, mm, &after, replay::Options { touch: true });
        let out = r.run(&before, &t);
        r.finish();
        let out = out.unwrap_or_else(|e| panic!("{name}: {e}"));
        maps::compare(&out.maps, &after).unwrap_or_else(|m| panic!("{name}: {m}"));
        assert!(out.touched > 10, "{name}: touched only {}", out.touched);
        assert_eq!(ram.frames_in_use(), 0, "{name}: frames leaked");
    }
}

#[test]
fn every_fixture_survives_the_trip_to_the_guest_and_back_unchanged() {
    use mm_replay::wire;
    for name in FIXTURES {
        let (before, mut t, after) = load(name);
        let input = wire::decode_input(&wire::encode_input(&before, &t, &after)).unwrap();
        t.skipped.clear();
        assert_eq!(
            (input.before, input.trace, input.hints),
            (before.clone(), t.clone(), after.clone())
        );
        let out = replay::replay(&before, &t, &after);
        assert_eq!(
            wire::decode_result(&wire::encode_result(&out)).unwrap(),
            out
        );
    }
}
