//! Builds the guest kernel for `x86_64-unknown-none` and hands its ELF to the VMM
//! (`OUT_DIR/guest.elf`), and the hostile test kernel beside it (`OUT_DIR/hostile.elf`, its path in
//! `HOSTILE_KERNEL` for tests/hostile.rs).
//!
//! The nested cargo gets its own target directory (sharing the outer one would deadlock on its lock)
//! and none of the outer build's target or flag variables. On a machine where rustup does not
//! install targets by itself, the missing target is added here, so `cargo run` works on a fresh
//! clone without a set-up step.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("vmm/ lives in the workspace root")
        .to_path_buf();
    let guest = root.join("guest");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("guest");

    for path in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/linker.ld",
        "guest/build.rs",
        "guest/.cargo",
        "mm-core/src",
        "mm-core/Cargo.toml",
        "replay/src",
        "replay/Cargo.toml",
        "tests/hostile-kernel",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    ensure_target_installed();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&guest)
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guest: {e}"));
    if !status.success() {
        panic!("building the guest kernel failed ({status}); see the errors above");
    }
    let release = target_dir.join(GUEST_TARGET).join("release");
    for (bin, copy) in [("guest", "guest.elf"), ("hostile", "hostile.elf")] {
        let elf = release.join(bin);
        std::fs::copy(&elf, out.join(copy))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", elf.display()));
    }
    // The hostile kernel is for the tests (tests/hostile.rs), never embedded in the VMM.
    println!(
        "cargo:rustc-env=HOSTILE_KERNEL={}",
        out.join("hostile.elf").display()
    );
}

/// Adds the guest target with rustup when the active toolchain lacks it.
fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let Some(sysroot) = sysroot else { return };
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(GUEST_TARGET)
        .join("lib")
        .is_dir()
    {
        return;
    }
    println!("cargo:warning=installing the {GUEST_TARGET} target with rustup (once per machine)");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", GUEST_TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(s) if s.success() => {}
        other => panic!("the {GUEST_TARGET} target is missing and `rustup target add {GUEST_TARGET}` failed ({other:?})"),
    }
}
