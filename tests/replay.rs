//! `vmm replay`: every recorded program's memory system calls, replayed through mm-core on the
//! host (`--host`) and in the guest on real page tables with the probes on, end with exactly
//! Linux's maps; a wrong comparison, a wrong ordering variant or bad input is reported (exit 1 /
//! exit 1 / exit 2).

mod common;

use common::{expect_exit, kvm_available};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../replay/tests/replay");

/// Every shipped recording (replay/tests/replay/NAME.{before.maps,trace,after.maps}).
const SHIPPED: [&str; 6] = ["ls", "python3", "threads", "shmem", "cc1", "racing"];

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// `vmm replay [--host] --maps NAME.before.maps --trace NAME.trace --compare COMPARE`.
fn replay_args(host: bool, name: &str, compare: &str) -> Vec<String> {
    let mut args = vec!["replay".to_string()];
    if host {
        args.push("--host".into());
    }
    for (flag, file) in [
        ("--maps", format!("{name}.before.maps")),
        ("--trace", format!("{name}.trace")),
        ("--compare", compare.to_string()),
    ] {
        args.extend([flag.to_string(), fixture(&file)]);
    }
    args
}

fn run(args: &[String], code: i32) -> (String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_exit(&args, code)
}

/// The non-empty lines of `text`.
fn lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn every_shipped_trace_replays_on_the_host_to_exactly_linuxs_maps() {
    for name in SHIPPED {
        let after = format!("{name}.after.maps");
        let (stdout, stderr) = run(&replay_args(true, name, &after), 0);
        let expected = std::fs::read_to_string(fixture(&after)).unwrap();
        assert_eq!(
            lines(&stdout),
            lines(&expected),
            "{name}: {stdout}\n{stderr}"
        );
        assert!(stderr.contains("calls/s"), "{name}: {stderr}");
    }
}

/// Replays `name` in the guest: exactly Linux's maps, the probes checked frees and found nothing,
/// and the guest printed exactly what the host prints.
fn replays_in_the_guest_as_on_the_host(name: &str) {
    if !kvm_available(&format!("{name} in the guest")) {
        return;
    }
    let after = format!("{name}.after.maps");
    let (guest, stderr) = run(&replay_args(false, name, &after), 0);
    assert!(
        stderr.contains("0 violation(s), 0 walk error(s)") && !stderr.contains("P1 0 /"),
        "{name}: the probes checked no page-table free:\n{stderr}"
    );
    assert!(stderr.contains("pages faulted in"), "{name}: {stderr}");
    let (host, _) = run(&replay_args(true, name, &after), 0);
    assert_eq!(guest, host, "{name}");
}

#[test]
fn ls_replays_in_the_guest_to_exactly_linuxs_maps_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("ls");
}

#[test]
fn python3_replays_in_the_guest_to_exactly_linuxs_maps_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("python3");
}

#[test]
fn threads_replay_in_the_guest_to_exactly_linuxs_maps_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("threads");
}

#[test]
fn shared_anonymous_memory_replays_in_the_guest_to_exactly_linuxs_maps_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("shmem");
}

#[test]
fn the_gcc_compiler_proper_replays_in_the_guest_to_exactly_linuxs_maps_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("cc1");
}

#[test]
fn two_threads_racing_munmap_against_mmap_replay_in_the_guest_with_the_probes_on() {
    replays_in_the_guest_as_on_the_host("racing");
}

#[test]
fn every_shipped_trace_has_a_guest_test() {
    let source = include_str!("replay.rs");
    for name in SHIPPED {
        let call = format!("replays_in_the_guest_as_on_the_host(\"{name}\")");
        assert!(source.contains(&call), "no guest test for {name}");
    }
}

#[test]
fn a_wrong_ordering_variant_fails_the_guest_replay_through_the_probes() {
    if !kvm_available("a_wrong_ordering_variant_fails_the_guest_replay") {
        return;
    }
    let mut args = replay_args(false, "ls", "ls.after.maps");
    args.extend(["--variant".into(), "skip-file-unlink".into()]);
    let (_, stderr) = run(&args, 1);
    assert!(
        stderr.contains("violation P1") && stderr.contains("replay in the guest failed"),
        "{stderr}"
    );
}

#[test]
fn a_failed_guest_replay_writes_its_trace_events_on_one_vcpu_track() {
    if !kvm_available("a_failed_guest_replay_writes_its_trace_events_on_one_vcpu_track") {
        return;
    }
    let path = std::env::temp_dir().join(format!("mm-replay-trace-{}.json", std::process::id()));
    let mut args = replay_args(false, "ls", "ls.after.maps");
    let path_arg = path.to_str().unwrap().to_string();
    args.extend(["--variant", "skip-file-unlink", "--trace-events", &path_arg].map(String::from));
    let (_, stderr) = run(&args, 1);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no trace ({e}): {stderr}"));
    let _ = std::fs::remove_file(&path);
    let trace: serde_json::Value = serde_json::from_str(&text).expect("the trace is JSON");
    let events = trace["traceEvents"].as_array().unwrap();
    let named = |ph: &str, name: &str| {
        let is = |e: &&serde_json::Value| e["ph"] == ph && e["name"] == name;
        events.iter().filter(is).count()
    };
    assert_eq!(named("M", "thread_name"), 1, "one vCPU, one track");
    // As many slices ran P1 as the summary on stderr says P1 ran.
    let p1: usize = stderr
        .split("checks P1 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no P1 count in {stderr}"));
    let slices_p1 = events
        .iter()
        .filter(|e| {
            e["ph"] == "X"
                && e["args"]["checks"]
                    .as_array()
                    .unwrap()
                    .contains(&"P1".into())
        })
        .count();
    assert_eq!(slices_p1, p1, "{stderr}");
    assert!(named("i", "violation P1") > 0, "{text}");
    assert_eq!(named("i", "run failed"), 1, "{text}");
}

#[test]
fn a_comparison_against_another_programs_maps_exits_1_naming_the_first_difference() {
    let other = "python3.after.maps";
    let (_, stderr) = run(&replay_args(true, "ls", other), 1);
    assert!(
        stderr.contains("maps differ at line 1") && stderr.contains("- linux:"),
        "{stderr}"
    );
    if kvm_available("a_comparison_against_another_programs_maps_in_the_guest") {
        let (_, stderr) = run(&replay_args(false, "ls", other), 1);
        assert!(stderr.contains("maps differ at line 1"), "{stderr}");
    }
}

#[test]
fn bad_replay_input_is_a_one_line_usage_error_in_either_mode() {
    let (before, trace) = (fixture("ls.before.maps"), fixture("ls.trace"));
    for mode in [&["--host"][..], &[]] {
        let mut args = vec!["replay"];
        args.extend_from_slice(mode);
        let (_, stderr) = expect_exit(
            &[
                &args[..],
                &["--maps", "/nonexistent.maps", "--trace", &trace],
            ]
            .concat(),
            2,
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("/nonexistent.maps"), "{stderr}");
        let (_, stderr) = expect_exit(
            &[&args[..], &["--maps", &trace, "--trace", &trace]].concat(),
            2,
        );
        assert!(stderr.contains("maps line 1"), "{stderr}");
        let (_, stderr) = expect_exit(
            &[&args[..], &["--maps", &before, "--trace", &before]].concat(),
            2,
        );
        assert!(stderr.contains("trace line 1"), "{stderr}");
    }
}

#[test]
fn a_trace_mm_core_cannot_follow_exits_1_naming_its_line_in_either_mode() {
    let maps = common::temp_file(
        "diverge.maps",
        b"7f0000000000-7f0000002000 rw-p 00000000 00:00 0\n",
    );
    // munmap of a mapped range cannot fail in mm-core, but Linux says it did.
    let trace = common::temp_file(
        "diverge.trace",
        b"7 munmap(0x7f0000000000, 4096) = -1 EINVAL (Invalid argument)\n",
    );
    let (maps, trace) = (maps.to_str().unwrap(), trace.to_str().unwrap());
    let mut modes = vec![true];
    if kvm_available("a_trace_mm_core_cannot_follow_in_the_guest") {
        modes.push(false);
    }
    for host in modes {
        let mut args = vec!["replay", "--maps", maps, "--trace", trace];
        if host {
            args.push("--host");
        }
        let (_, stderr) = expect_exit(&args, 1);
        assert!(
            stderr.contains("replay diverged from Linux: trace line 1: munmap failed in Linux"),
            "host {host}: {stderr}"
        );
    }
}

#[test]
fn a_trace_too_big_for_guest_ram_is_a_one_line_usage_error_before_the_guest_boots() {
    // 40,000 calls encode to 4.2 MB (104 bytes each), which with a result buffer twice that does
    // not fit a 16 MiB guest (the default 256 MiB takes ~800,000 calls, slow to parse in a debug
    // build). No KVM is needed: the sizes are checked before a VM exists.
    let trace = common::temp_file("too-big.trace", &b"brk(NULL) = 0x1000\n".repeat(40_000));
    let events = common::temp_file("too-big.events.json", b"the previous trace\n");
    let (trace, events) = (trace.to_str().unwrap(), events.to_str().unwrap());
    let before = fixture("ls.before.maps");
    let args = ["replay", "--maps", &before, "--trace", trace];
    let mut guest = args.to_vec();
    guest.extend(["--mem", "16M", "--trace-events", events]);
    let (stdout, stderr) = expect_exit(&guest, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "vmm: cannot replay {trace} in the guest: the scenario's input ("
        )) && stderr.contains("do not fit guest RAM")
            && stderr.contains("of its 16 MiB")
            && stderr
                .trim_end()
                .ends_with("raise --mem (up to 4G) or replay with --host"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(events).unwrap(),
        "the previous trace\n",
        "a refused replay writes no trace events"
    );
    // The trace itself is fine: on the host it replays.
    let mut host = args.to_vec();
    host.push("--host");
    expect_exit(&host, 0);
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(events);
}

#[test]
fn a_replay_file_too_large_or_not_a_file_is_refused_before_it_is_read_in_either_mode() {
    // Sparse, one byte over the 256 MiB limit: it costs no disk, and is never read.
    let huge = common::temp_file("huge.trace", b"");
    std::fs::File::options()
        .write(true)
        .open(&huge)
        .and_then(|f| f.set_len((256 << 20) + 1))
        .expect("a sparse file");
    let huge = huge.to_str().unwrap();
    let (before, trace) = (fixture("ls.before.maps"), fixture("ls.trace"));
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap();
    for mode in [&["--host"][..], &[]] {
        for (args, expected) in [
            (
                ["--maps", &before, "--trace", huge],
                format!("cannot read {huge}: 268435457 bytes, more than the 256 MiB allowed"),
            ),
            (
                ["--maps", "/dev/zero", "--trace", &trace],
                "cannot read /dev/zero: a character device, not a regular file".into(),
            ),
            (
                ["--maps", &before, "--trace", dir],
                format!("cannot read {dir}: a directory, not a regular file"),
            ),
        ] {
            let all = [&["replay"][..], mode, &args].concat();
            let (stdout, stderr) = expect_exit(&all, 2);
            assert!(stdout.is_empty(), "{stdout}");
            assert_eq!(stderr, format!("vmm: {expected}\n"), "{all:?}");
        }
    }
    let _ = std::fs::remove_file(huge);
}
