//! The product oracle for mutation runs (`cargo mutants`, configured in `.cargo/mutants.toml`).
//!
//! One test, skipped (a message, then a pass) unless `MM_MUTANTS_ORACLE=1`, so `cargo test
//! --workspace` stays fast. With it set, the test judges the tree it was built from by the product:
//! it builds the `vmm` binary (guest kernel included, through vmm/build.rs) from this tree and runs
//!
//! 1. `vmm run --scenario tour`
//! 2. `vmm run --scenario tour --thorough`
//! 3. `vmm campaign --scenario random-mm --seeds 0..8 --jobs 1`
//! 4. `vmm campaign --scenario race-exit --seeds 1..9 --jobs 1`
//!
//! and fails at the first one that exits non-zero or outlives its deadline, printing the check or
//! failure line that caught it (a mutant is "caught" when this test fails). See docs/mutants.md.
//!
//! It is compiled as a test of mm-core (the package cargo-mutants mutates, whose tests it runs)
//! through the shim `mm-core/tests/mutants_oracle.rs`. There `CARGO_BIN_EXE_vmm` is not set, so
//! the test builds the vmm itself from the tree under test: `nice -n 19 cargo build -j 1 -p vmm`
//! (dev profile) into `target/mutants-oracle` (its own target directory: the outer `cargo test`
//! holds the lock on `target/`). Registered as a `[[test]]` of vmm it would use cargo's binary.
//!
//! Environment: `MM_MUTANTS_ORACLE=1` runs it; `MM_MUTANTS_PROFILE` (`dev`, the default, or
//! `release`) picks the nested build's profile (the guest is always built with its release
//! profile; a dev vmm rebuilds in ~11 s after an mm-core change, a release one in ~67 s, and runs
//! these scenarios as fast); `MM_MUTANTS_TARGET_DIR` overrides its target directory.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The product runs, each with its wall-clock deadline. The vmm's own watchdogs (`--timeout`) fire
/// first; the deadline only catches a vmm that hangs itself.
const RUNS: &[(&[&str], u64)] = &[
    (&["run", "--scenario", "tour", "--timeout", "60"], 90),
    (
        &[
            "run",
            "--scenario",
            "tour",
            "--thorough",
            "--timeout",
            "120",
        ],
        150,
    ),
    (
        &[
            "campaign",
            "--scenario",
            "random-mm",
            "--seeds",
            "0..8",
            "--jobs",
            "1",
            "--timeout",
            "30",
        ],
        8 * 35 + 20,
    ),
    (
        &[
            "campaign",
            "--scenario",
            "race-exit",
            "--seeds",
            "1..9",
            "--jobs",
            "1",
            "--timeout",
            "30",
        ],
        8 * 35 + 20,
    ),
];

/// Deadline for the nested build of the vmm (a full build the first time in a fresh tree copy).
const BUILD_DEADLINE: Duration = Duration::from_secs(40 * 60);

#[test]
fn product_oracle() {
    if std::env::var("MM_MUTANTS_ORACLE").as_deref() != Ok("1") {
        eprintln!(
            "skipping product_oracle: set MM_MUTANTS_ORACLE=1 to build the vmm and judge this \
             tree by real VM runs (cargo mutants sets it, see .cargo/mutants.toml)"
        );
        return;
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("MM_MUTANTS_ORACLE=1 but /dev/kvm cannot be opened ({e}): the oracle needs KVM");
    }
    let root = workspace_root();
    let vmm = vmm_binary(&root);
    let scratch = scratch_dir(&root);
    for (i, (args, deadline)) in RUNS.iter().enumerate() {
        let started = Instant::now();
        let out = scratch.join(format!("run{i}.stdout"));
        let err = scratch.join(format!("run{i}.stderr"));
        let child = Command::new(&vmm)
            .args(*args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("scratch dir is writable"))
            .stderr(File::create(&err).expect("scratch dir is writable"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", vmm.display()));
        let status = wait_deadline(child, Duration::from_secs(*deadline));
        let secs = started.elapsed().as_secs_f64();
        let (stdout, stderr) = (read_lossy(&out), read_lossy(&err));
        let command = format!("vmm {}", args.join(" "));
        match status {
            Some(s) if s.success() => {
                eprintln!("oracle: ok      {command} ({secs:.1} s)");
            }
            other => {
                let how = match other {
                    Some(s) => format!("exited with {s}"),
                    None => format!("timed out after {deadline} s (killed)"),
                };
                eprintln!("oracle: FAILED  {command}: {how} ({secs:.1} s)");
                eprintln!("---- vmm lines (stderr, console echo left out) ----");
                for line in stderr.lines().filter(|l| !l.starts_with("  | ")).take(40) {
                    eprintln!("{line}");
                }
                eprintln!("---- stdout, last lines ----");
                let lines: Vec<&str> = stdout.lines().collect();
                for line in &lines[lines.len().saturating_sub(15)..] {
                    eprintln!("{line}");
                }
                panic!(
                    "product caught the mutant: {command} {how}; caught by: {}",
                    verdict(&stdout, &stderr)
                );
            }
        }
    }
}

/// The line that says what caught the mutant: a campaign's first failing seed, else the first
/// probe violation, else the guest's failure (an abort's message with its file:line, which follow on
/// lines of their own), else the vmm's last line.
fn verdict(stdout: &str, stderr: &str) -> String {
    if let Some(line) = stdout.lines().find(|l| l.starts_with("first failing seed")) {
        return line.trim().to_string();
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("  | ")).collect();
    if let Some(line) = lines.iter().find(|l| l.starts_with("vmm: violation")) {
        return line.trim().to_string();
    }
    let failure = |l: &&str| {
        (l.starts_with("vmm: guest") && !l.starts_with("vmm: guest passed"))
            || l.contains("walk error:")
            || l.contains("timed out")
            || l.contains("panicked")
    };
    if let Some(i) = lines.iter().position(failure) {
        let more = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("vmm:"))
            .take(3)
            .map(|l| l.trim());
        return std::iter::once(lines[i].trim())
            .chain(more)
            .collect::<Vec<_>>()
            .join(" / ");
    }
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("vmm:"))
        .map_or("(no vmm line; see the output above)", |l| l.trim())
        .to_string()
}

#[test]
fn verdict_names_the_catching_line() {
    let abort = "vmm: probes: 9 events, checks P1 0 / P2 0, 0 violation(s), 0 walk error(s)\n\
                 vmm: guest aborted on vCPU 0: assertion `left == right` failed: exit_mmap left 6\n  \
                 left: 6\n right: 0 at mm-core/src/mm/unmap.rs:234\nvmm: last console lines:\n  | x\n";
    assert_eq!(
        verdict("", abort),
        "vmm: guest aborted on vCPU 0: assertion `left == right` failed: exit_mmap left 6 / \
         left: 6 / right: 0 at mm-core/src/mm/unmap.rs:234"
    );
    let violation = "vmm: probes: 3 events, 2 violation(s)\nvmm: violation P3: no TLB flush\n";
    assert_eq!(verdict("", violation), "vmm: violation P3: no TLB flush");
    let campaign = "2 runs: 0 passed\nfirst failing seed: 1 (violation: …)\nreproduce: …\n";
    assert_eq!(
        verdict(campaign, ""),
        "first failing seed: 1 (violation: …)"
    );
}

/// The repository root: both vmm/ and mm-core/ sit directly under it.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("packages live in the workspace root");
    assert!(
        root.join("vmm/Cargo.toml").is_file() && root.join("guest/Cargo.toml").is_file(),
        "{} is not the mm-kvm workspace root",
        root.display()
    );
    root.to_path_buf()
}

fn scratch_dir(root: &Path) -> PathBuf {
    let dir = target_dir(root).join("oracle-runs");
    std::fs::create_dir_all(&dir).expect("target dir is writable");
    dir
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("MM_MUTANTS_TARGET_DIR")
        .map_or_else(|| root.join("target/mutants-oracle"), PathBuf::from)
}

/// The vmm to judge: cargo's own when this is a test of vmm, else one built from this tree now.
fn vmm_binary(root: &Path) -> PathBuf {
    if let Some(exe) = option_env!("CARGO_BIN_EXE_vmm") {
        return PathBuf::from(exe);
    }
    let profile = std::env::var("MM_MUTANTS_PROFILE").unwrap_or_else(|_| "dev".into());
    let target = target_dir(root);
    std::fs::create_dir_all(&target).expect("target dir is writable");
    let log = target.join("build.log");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let child = Command::new("nice")
        .args(["-n", "19"])
        .arg(&cargo)
        .args([
            "build",
            "-j",
            "1",
            "-p",
            "vmm",
            "--bin",
            "vmm",
            "--profile",
            &profile,
        ])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target)
        // The guest's nested cargo (vmm/build.rs) builds with one job too.
        .env("CARGO_BUILD_JOBS", "1")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("target dir is writable"))
        .stderr(File::create(target.join("build.stderr.log")).expect("target dir is writable"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    let status = wait_deadline(child, BUILD_DEADLINE);
    let secs = started.elapsed().as_secs_f64();
    let stderr = read_lossy(&target.join("build.stderr.log"));
    if status.is_none_or(|s| !s.success()) {
        let lines: Vec<&str> = stderr.lines().collect();
        for line in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{line}");
        }
        panic!(
            "the nested build of the vmm (profile {profile}) failed or timed out after {secs:.0} s: \
             the mutant does not build for the vmm or the guest"
        );
    }
    eprintln!("oracle: built the vmm (profile {profile}) in {secs:.1} s");
    let dir = if profile == "dev" {
        "debug"
    } else {
        profile.as_str()
    };
    target.join(dir).join("vmm")
}

/// Waits for `child` up to `deadline`; kills it (and returns None) past that.
fn wait_deadline(mut child: Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        sleep(Duration::from_millis(100));
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
