//! Boots the real guest through the `vmm` binary and checks how each kind of run ends: exit code,
//! the message on stderr and the console on stdout.
//!
//! Tests that need KVM skip with a message where /dev/kvm is unusable, and fail instead when
//! `MM_REQUIRE_KVM=1` (CI sets it).

mod common;

use common::{expect_exit, kvm_available, temp_file, text, VMM};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_default_run_prints_the_banner_runs_the_tour_and_exits_0() {
    if !kvm_available("the_default_run_prints_the_banner_runs_the_tour_and_exits_0") {
        return;
    }
    let (stdout, stderr) = expect_exit(&[], 0);
    assert!(
        stdout.contains("mm guest kernel"),
        "no banner in:\n{stdout}"
    );
    assert!(stdout.contains("tour: every mm scenario ran"), "{stdout}");
    assert!(stderr.contains("guest passed: scenario 'tour'"), "{stderr}");
    assert!(
        stderr.contains("vmm: probes: "),
        "no probe summary in {stderr}"
    );
}

#[test]
fn hello_exercises_the_frame_allocator_and_heap() {
    if !kvm_available("hello_exercises_the_frame_allocator_and_heap") {
        return;
    }
    let (stdout, _) = expect_exit(&["run", "--scenario", "hello"], 0);
    assert!(stdout.contains("heap and frame allocator OK"), "{stdout}");
}

#[test]
fn with_two_vcpus_both_check_in_with_the_host() {
    if !kvm_available("with_two_vcpus_both_check_in_with_the_host") {
        return;
    }
    let (stdout, stderr) = expect_exit(&["run", "--scenario", "hello", "--vcpus", "2"], 0);
    assert!(stderr.contains("2/2 vCPUs checked in"), "{stderr}");
    assert!(stdout.contains("hello from 2 vCPU(s)"), "{stdout}");
}

#[test]
fn ring_3_programs_make_system_calls_and_cannot_touch_the_kernel() {
    if !kvm_available("ring_3_programs_make_system_calls_and_cannot_touch_the_kernel") {
        return;
    }
    let (stdout, stderr) = expect_exit(&["run", "--scenario", "user-mode"], 0);
    assert!(
        stdout.contains("ring 3: exit, getcpu, a script and a kernel-memory fault all came back"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn mm_core_serves_a_ring_3_process_on_the_real_mmu_without_leaking() {
    if !kvm_available("mm_core_serves_a_ring_3_process_on_the_real_mmu_without_leaking") {
        return;
    }
    let (stdout, stderr) = expect_exit(&["run", "--scenario", "mm-smoke"], 0);
    assert!(
        stdout.contains("served on the real MMU; no frame leaked"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn a_guest_panic_exits_1_with_the_message_and_location() {
    if !kvm_available("a_guest_panic_exits_1_with_the_message_and_location") {
        return;
    }
    let (_, stderr) = expect_exit(&["run", "--scenario", "panic"], 1);
    assert!(
        stderr.contains("the panic scenario panicked on purpose"),
        "{stderr}"
    );
    assert!(
        stderr.contains("src/scenarios/mod.rs:"),
        "no file:line in {stderr}"
    );
}

#[test]
fn a_page_fault_exits_1_naming_the_vector_the_address_and_rip() {
    if !kvm_available("a_page_fault_exits_1_naming_the_vector_the_address_and_rip") {
        return;
    }
    let (_, stderr) = expect_exit(&["run", "--scenario", "page-fault", "--mem", "256M"], 1);
    assert!(stderr.contains("#PF page fault (vector 14)"), "{stderr}");
    // The scenario reads 1 GiB past the end of RAM.
    assert!(stderr.contains("CR2 0x50000000"), "{stderr}");
    assert!(stderr.contains("RIP 0x1"), "{stderr}");
}

#[test]
fn an_invalid_opcode_exits_1_naming_the_vector_and_rip() {
    if !kvm_available("an_invalid_opcode_exits_1_naming_the_vector_and_rip") {
        return;
    }
    let (_, stderr) = expect_exit(&["run", "--scenario", "invalid-opcode"], 1);
    assert!(stderr.contains("#UD invalid opcode (vector 6)"), "{stderr}");
    assert!(stderr.contains("RIP 0x1"), "{stderr}");
}

#[test]
fn a_triple_fault_exits_1_with_a_register_dump_and_the_console_tail() {
    if !kvm_available("a_triple_fault_exits_1_with_a_register_dump_and_the_console_tail") {
        return;
    }
    let (_, stderr) = expect_exit(&["run", "--scenario", "triple-fault"], 1);
    assert!(stderr.contains("triple fault"), "{stderr}");
    for reg in [
        "RIP 0x",
        "CR0 0x",
        "CR2 0x",
        "CR3 0x8000",
        "CR4 0x",
        "EFER 0x",
    ] {
        assert!(stderr.contains(reg), "no {reg} in {stderr}");
    }
    assert!(
        stderr.contains("| mm guest kernel"),
        "no console tail in {stderr}"
    );
}

#[test]
fn a_hanging_guest_is_stopped_by_the_watchdog() {
    if !kvm_available("a_hanging_guest_is_stopped_by_the_watchdog") {
        return;
    }
    let start = Instant::now();
    let (_, stderr) = expect_exit(&["run", "--scenario", "hang", "--timeout", "1"], 1);
    assert!(stderr.contains("watchdog"), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_corrupt_kernel_file_is_refused_with_a_clear_error() {
    let garbage = temp_file("garbage", &[0x42; 4096]);
    let (_, stderr) = expect_exit(&["run", "--kernel", garbage.to_str().unwrap()], 2);
    assert!(stderr.contains("not an ELF file"), "{stderr}");

    let truncated = temp_file("truncated", b"\x7fELF\x02\x01\x01");
    let (_, stderr) = expect_exit(&["run", "--kernel", truncated.to_str().unwrap()], 2);
    assert!(stderr.contains("truncated"), "{stderr}");

    let (_, stderr) = expect_exit(&["run", "--kernel", "/nonexistent/kernel.elf"], 2);
    assert!(
        stderr.contains("cannot read kernel /nonexistent/kernel.elf"),
        "{stderr}"
    );
    for path in [garbage, truncated] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn a_kernel_file_too_large_or_not_a_file_is_refused_from_its_metadata_before_it_is_read() {
    // Sparse: 2 GiB that cost no disk. Read whole, as before, they cost 2 GiB of memory; /dev/zero
    // never ends. The message names the limit, so it came from the size check, not a read.
    let huge = temp_file("huge-kernel", b"");
    std::fs::File::options()
        .write(true)
        .open(&huge)
        .and_then(|f| f.set_len(2 << 30))
        .expect("a sparse file");
    let dir = std::env::temp_dir();
    for (path, expected) in [
        (
            huge.to_str().unwrap(),
            "2147483648 bytes, more than the 64 MiB allowed",
        ),
        ("/dev/zero", "a character device, not a regular file"),
        (dir.to_str().unwrap(), "a directory, not a regular file"),
    ] {
        let (stdout, stderr) = expect_exit(&["run", "--kernel", path], 2);
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{path}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("vmm: cannot read kernel {path}: {expected}")
        );
    }
    let _ = std::fs::remove_file(huge);
}

#[test]
fn a_kernel_for_another_machine_is_refused() {
    // Any 64-bit ELF will do as a base: the first page of the vmm binary itself (whole, a debug
    // build is over the kernel file limit), with its machine patched to aarch64. The header is
    // checked before any segment, so the missing rest is never looked at.
    let mut image = std::fs::read(VMM).unwrap();
    image.truncate(4096);
    image[18..20].copy_from_slice(&183u16.to_le_bytes());
    let foreign = temp_file("aarch64", &image);
    let (_, stderr) = expect_exit(&["run", "--kernel", foreign.to_str().unwrap()], 2);
    assert!(stderr.contains("machine 183, not x86_64"), "{stderr}");

    image[4] = 1; // ELFCLASS32
    let elf32 = temp_file("elf32", &image);
    let (_, stderr) = expect_exit(&["run", "--kernel", elf32.to_str().unwrap()], 2);
    assert!(stderr.contains("32-bit ELF"), "{stderr}");
    for path in [foreign, elf32] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn bad_command_line_values_exit_2_with_one_line() {
    for args in [
        &["run", "--scenario", "no-such-scenario"][..],
        &["run", "--mem", "3M"],
        &["run", "--mem", "100M1"],
        &["run", "--mem", "17M"],
        &["run", "--vcpus", "0"],
        &["run", "--vcpus", "999"],
        &["run", "--timeout", "soon"],
        &["run", "--frobnicate"],
        &["run", "--inject", "fail-alloc:x"],
    ] {
        let (_, stderr) = expect_exit(args, 2);
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?} printed:\n{stderr}"
        );
        assert!(stderr.starts_with("vmm: "), "{stderr}");
    }
}

#[test]
fn list_names_every_scenario() {
    let (stdout, _) = expect_exit(&["list"], 0);
    for name in [
        "hello",
        "boot",
        "panic",
        "page-fault",
        "invalid-opcode",
        "triple-fault",
        "hang",
    ] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}

#[test]
fn help_tells_a_newcomer_what_this_is() {
    let (stdout, _) = expect_exit(&["--help"], 0);
    assert!(stdout.contains("KVM"), "{stdout}");
    assert!(stdout.contains("Exit status"), "{stdout}");
}

#[test]
fn a_missing_dev_kvm_is_one_line_naming_the_device() {
    // Hide /dev behind an empty tmpfs in a private mount namespace: needs root and unshare(1).
    let hidden = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && exec \"$0\"",
            VMM,
        ])
        .env("RUST_LOG", "info")
        .output();
    let out = match hidden {
        Ok(out)
            if !text(&out.stderr).contains("unshare:") && !text(&out.stderr).contains("mount:") =>
        {
            out
        }
        _ => {
            eprintln!("skipping: cannot hide /dev/kvm here (needs root and unshare)");
            return;
        }
    };
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot open /dev/kvm") && stderr.contains("read-write access"),
        "{stderr}"
    );
}
