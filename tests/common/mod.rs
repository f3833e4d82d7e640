//! Helpers the integration tests share: running the `vmm` binary and the KVM skip rule.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The `vmm` binary under test.
pub const VMM: &str = env!("CARGO_BIN_EXE_vmm");

/// True when /dev/kvm can be opened; otherwise skips (or fails under MM_REQUIRE_KVM=1).
pub fn kvm_available(test: &str) -> bool {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) if std::env::var("MM_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("MM_REQUIRE_KVM=1 but /dev/kvm cannot be opened: {e}")
        }
        Err(e) => {
            eprintln!("skipping {test}: /dev/kvm cannot be opened ({e})");
            false
        }
    }
}

/// True when `tool` runs (`tool --version`); otherwise skips, or fails under MM_REQUIRE_KVM=1, since
/// CI installs every tool the tests use (.ci/run).
pub fn tool_available(tool: &str, test: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    match runs {
        true => true,
        false if std::env::var("MM_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("MM_REQUIRE_KVM=1 (CI) but `{tool}` does not run: .ci/run installs it")
        }
        false => {
            eprintln!("skipping {test}: `{tool}` is not installed");
            false
        }
    }
}

/// Runs the vmm with `args`.
pub fn vmm(args: &[&str]) -> Output {
    Command::new(VMM)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("the vmm binary runs")
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the vmm and checks its exit code, returning (stdout, stderr).
pub fn expect_exit(args: &[&str], code: i32) -> (String, String) {
    let out = vmm(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "vmm {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A file in the temp dir holding `bytes`, unique to this test process.
pub fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("mm-boot-test-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("temp dir is writable");
    path
}

/// Runs the vmm with `--report` and returns its exit code and the parsed report.
pub fn run_with_report(name: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let path =
        std::env::temp_dir().join(format!("mm-probe-test-{}-{name}.json", std::process::id()));
    let mut all: Vec<&str> = args.to_vec();
    let path_str = path.to_str().expect("temp paths are UTF-8");
    all.extend(["--report", path_str]);
    let out = vmm(&all);
    let stderr = text(&out.stderr);
    let json = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("vmm {all:?} wrote no report ({e}):\n{stderr}"));
    let _ = std::fs::remove_file(&path);
    let value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad report JSON ({e}): {json}"));
    (out.status.code(), value, stderr)
}
