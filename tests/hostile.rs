//! A hostile guest against the real VMM: tests/hostile-kernel boots like the guest and then floods
//! the call channel (violations, VMA ranges, flushes, unhooks, benchmark marks, console bytes, a
//! registry longer than the probes' step budget) or sends forged text. Each run must end with exit
//! 1 and the watchdog's line within `--timeout` plus one second, hold every structure within its
//! bound (the report's `held`), and stay within [`RSS_CAP`] of an idle guest's peak RSS, measured
//! by the kernel (`wait4`). The bounds are documented in docs/threat-model.md.

mod common;

use common::kvm_available;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The hostile kernel vmm/build.rs builds beside the guest.
const HOSTILE: &str = env!("HOSTILE_KERNEL");

/// How long each flood runs (its `--timeout`).
const FLOOD_SECS: u64 = 3;

/// How long the registry attack runs: writing 600,000 nodes takes ~3-6 s before its floods.
const REGISTRY_SECS: u64 = 10;

/// Peak RSS a flood may add to an idle guest's (docs/threat-model.md).
const RSS_CAP: u64 = 64 << 20;

/// The attacks, by the hostile kernel's `--seed` (tests/hostile-kernel/main.rs, `Attack`).
const IDLE: u64 = 0;
const VIOLATIONS: u64 = 1;
const VMA_RANGES: u64 = 2;
const FLUSHES: u64 = 3;
const UNHOOKS: u64 = 4;
const BENCH_MARKS: u64 = 5;
const CONSOLE: u64 = 6;
const REGISTRY: u64 = 7;
const TEXT: u64 = 8;

/// One run of the hostile kernel.
struct Ran {
    code: Option<i32>,
    stderr: String,
    wall: Duration,
    /// Peak resident set, bytes.
    max_rss: u64,
    report: Value,
}

/// Runs the hostile kernel's attack `seed` under a `timeout`-second watchdog.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which gives the rusage std's wait does not"
)]
fn run(seed: u64, timeout: u64) -> Ran {
    let dir = std::env::temp_dir();
    let tag = format!("mm-hostile-{}-{seed}", std::process::id());
    let (report, stderr) = (
        dir.join(format!("{tag}.json")),
        dir.join(format!("{tag}.err")),
    );
    let started = Instant::now();
    let child = Command::new(common::VMM)
        .args(["run", "--kernel", HOSTILE, "--vcpus", "1"])
        .args([
            "--seed",
            &seed.to_string(),
            "--timeout",
            &timeout.to_string(),
        ])
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("temp dir is writable"))
        .spawn()
        .expect("the vmm binary runs");
    let (code, max_rss) = wait_with_rusage(child.id());
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    for path in [&report, &stderr] {
        let _ = std::fs::remove_file(path);
    }
    Ran {
        code,
        stderr: text,
        wall,
        max_rss,
        report: json,
    }
}

/// Waits for `pid`; returns its exit code and peak RSS in bytes, as the kernel accounted them.
fn wait_with_rusage(pid: u32) -> (Option<i32>, u64) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both pointers are to live locals.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // ru_maxrss is in KiB on Linux.
    (code, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

/// The idle guest's peak RSS, measured once per test process.
fn baseline() -> u64 {
    static BASELINE: OnceLock<u64> = OnceLock::new();
    *BASELINE.get_or_init(|| {
        let idle = run(IDLE, 1);
        assert_eq!(idle.code, Some(1), "{}", idle.stderr);
        idle.max_rss
    })
}

/// A flood of `secs` ends on time, by the watchdog, within the RSS cap; returns the run for the
/// attack-specific checks.
fn flood(seed: u64, secs: u64) -> Ran {
    let base = baseline();
    let ran = run(seed, secs);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let watchdog = format!("vmm: watchdog: guest did not finish within {secs}.0 s");
    assert!(
        ran.stderr.lines().any(|l| l == watchdog),
        "no line {watchdog:?} in:\n{}",
        ran.stderr
    );
    eprintln!(
        "attack {seed}: {:.2} s, peak RSS {} MiB (idle {} MiB)",
        ran.wall.as_secs_f64(),
        ran.max_rss >> 20,
        base >> 20
    );
    let limit = Duration::from_secs(secs + 1);
    assert!(
        ran.wall <= limit,
        "took {:?}, more than {limit:?}",
        ran.wall
    );
    assert!(
        ran.max_rss <= base + RSS_CAP,
        "peak RSS {} MiB, idle {} MiB: more than {} MiB above",
        ran.max_rss >> 20,
        base >> 20,
        RSS_CAP >> 20
    );
    assert!(ran.report.is_object(), "no report:\n{}", ran.stderr);
    ran
}

fn held(ran: &Ran, what: &str) -> u64 {
    ran.report["held"][what]
        .as_u64()
        .unwrap_or_else(|| panic!("the report has no held.{what}: {}", ran.report["held"]))
}

#[test]
fn a_flood_of_violations_is_counted_past_the_cap_not_kept() {
    if !kvm_available("a_flood_of_violations_is_counted_past_the_cap_not_kept") {
        return;
    }
    let ran = flood(VIOLATIONS, FLOOD_SECS);
    let kept = ran.report["violations"].as_array().map_or(0, Vec::len) as u64;
    let dropped = ran.report["violations_dropped"].as_u64().unwrap_or(0);
    assert_eq!(kept, 1000, "the report keeps the first 1,000 violations");
    assert!(dropped > 0, "the flood outran the cap: {dropped} dropped");
    let counted: u64 = ran.report["violation_counts"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    assert_eq!(counted, kept + dropped);
    assert!(held(&ran, "check_samples") <= 1 << 16);
    assert!(held(&ran, "freed") <= 1024, "one per victim frame");
}

#[test]
fn a_flood_of_vma_ranges_keeps_the_index_bounded() {
    if !kvm_available("a_flood_of_vma_ranges_keeps_the_index_bounded") {
        return;
    }
    let ran = flood(VMA_RANGES, FLOOD_SECS);
    assert!(held(&ran, "indexed_vmas") <= 1 << 17);
}

#[test]
fn a_flood_of_flushes_of_new_mms_keeps_64_logs() {
    if !kvm_available("a_flood_of_flushes_of_new_mms_keeps_64_logs") {
        return;
    }
    let ran = flood(FLUSHES, FLOOD_SECS);
    let events = ran.report["events"].as_u64().unwrap_or(0);
    assert!(events > 64, "only {events} events");
    assert_eq!(held(&ran, "flush_mms"), 64);
    assert!(held(&ran, "flushes") <= 64 * 4096);
}

#[test]
fn a_flood_of_unhooks_holds_at_most_a_frame_of_ram_each() {
    if !kvm_available("a_flood_of_unhooks_holds_at_most_a_frame_of_ram_each") {
        return;
    }
    let ran = flood(UNHOOKS, FLOOD_SECS);
    // The hostile kernel's 1,024 victim frames; the frames outside RAM are refused.
    assert!(held(&ran, "unhooked") <= 1024, "{}", ran.report["held"]);
    let errors = ran.report["errors"].to_string();
    assert!(
        errors.contains("not a page-aligned frame of guest RAM"),
        "{errors}"
    );
}

#[test]
fn a_flood_of_benchmark_marks_keeps_4096_phases() {
    if !kvm_available("a_flood_of_benchmark_marks_keeps_4096_phases") {
        return;
    }
    let ran = flood(BENCH_MARKS, FLOOD_SECS);
    assert!(held(&ran, "phases") <= 4096);
}

#[test]
fn a_console_without_newlines_stays_bounded() {
    if !kvm_available("a_console_without_newlines_stays_bounded") {
        return;
    }
    let ran = flood(CONSOLE, FLOOD_SECS);
    // The unfinished line shown in the tail is cut at 4 KiB.
    assert!(
        ran.stderr.lines().all(|l| l.len() < 8192),
        "a console line of {} bytes",
        ran.stderr.lines().map(str::len).max().unwrap_or(0)
    );
}

#[test]
fn a_registry_past_the_step_budget_is_walked_on_time() {
    if !kvm_available("a_registry_past_the_step_budget_is_walked_on_time") {
        return;
    }
    // Writing the registry takes a few seconds in emulated ring 0: this attack gets longer.
    let ran = flood(REGISTRY, REGISTRY_SECS);
    let errors: Vec<&str> = ran.report["errors"]
        .as_array()
        .map_or(Vec::new(), |e| e.iter().filter_map(Value::as_str).collect());
    assert!(errors.len() <= 257, "{} walk errors kept", errors.len());
    // Each free's walk stops at the budget, told once per event, not once per object.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("the budget of 1048576 steps is spent")),
        "{errors:?}"
    );
    assert_eq!(ran.report["max_steps"].as_u64(), Some(1 << 20));
}

#[test]
fn guest_text_cannot_forge_vmm_lines_or_reach_the_terminal() {
    if !kvm_available("guest_text_cannot_forge_vmm_lines_or_reach_the_terminal") {
        return;
    }
    let ran = run(TEXT, 10);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        !ran.stderr.contains('\x1b') && !ran.stderr.contains('\x07'),
        "{:?}",
        ran.stderr
    );
    assert!(
        !ran.stderr
            .lines()
            .any(|l| l.starts_with("vmm: guest passed")),
        "a forged line: {}",
        ran.stderr
    );
    let abort = ran
        .stderr
        .lines()
        .find(|l| l.contains("guest aborted"))
        .unwrap_or_default();
    assert!(
        abort.contains(r"oops\nvmm: guest passed every check\u{1b}[2J"),
        "{abort}"
    );
}
