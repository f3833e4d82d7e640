//! Memory-manager scenarios: ring-3 processes whose system calls make mm-core free page tables in
//! every way the seed's rule is about, while the host probes check each free.
//!
//! Every scenario runs its processes to a clean exit and checks that no frame leaked; what the
//! probes found is the VMM's to report. Addresses are fixed (MAP_FIXED) so each scenario lays its
//! VMAs exactly where the page-table boundaries it exercises are.

use super::PASS;
use crate::cpu::user::Exit;
use crate::kernel::process::{self, Finished};
use crate::kernel::programs::{Script, Touch};
use crate::kernel::syscall::nr;
use crate::kernel::{frame, mm};
use alloc::vec;
use alloc::vec::Vec;
use mm_core::addr::{PAGE_SIZE as PAGE, PMD_SIZE, PUD_SIZE};
use mm_core::lockdep::{Violation as LockViolation, LOCKDEP};
use mm_core::mm::{iput, AddressSpace, File, FilePtr, MappingPtr};
use mm_core::phys::AllocKind;
use mm_core::uapi::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_READ,
    PROT_RW,
};

/// A user address with room around it for every layout below (PGD index 2).
const BASE: u64 = 1 << 40;

/// `fd` argument of an anonymous mapping.
const NO_FD: u64 = u64::MAX;

/// The memory-manager scenarios by name.
pub fn find(name: &str) -> Option<fn() -> u64> {
    Some(match name {
        "mm-smoke" => smoke,
        "munmap-whole" => munmap_whole,
        "munmap-part" => munmap_part,
        "munmap-several" => munmap_several,
        "shared-pte" => shared_pte,
        "shared-pmd" => shared_pmd,
        "exit-mmap" => exit_mmap,
        "truncate" => truncate,
        "rmap" => rmap,
        "tour" => tour,
        "probe-bench" => probe_bench,
        "mm-workloads" => super::workloads::workloads,
        "shapes" => || super::shapes::shapes(super::shapes::Breadth::Full),
        "random-mm" => || super::random::random_mm(super::seed(), super::scale_or(200)),
        "race-munmap" => super::race::race_munmap,
        "race-exit" => super::race::race_exit,
        _ => return None,
    })
}

/// Script steps the scenarios share.
pub(super) trait Steps {
    fn map_anon(self, addr: u64, pages: u64, prot: u64) -> Self;
    fn map_file(self, addr: u64, pages: u64, fd: u64, pgoff: u64) -> Self;
    fn unmap(self, addr: u64, pages: u64) -> Self;
    fn fill(self, addr: u64, pages: u64) -> Self;
    fn check(self, addr: u64, pages: u64) -> Self;
}

impl Steps for Script {
    fn map_anon(self, addr: u64, pages: u64, prot: u64) -> Self {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
        self.syscall(
            nr::MMAP,
            [addr, pages * PAGE, prot, flags, NO_FD, 0],
            Some(addr),
        )
    }

    fn map_file(self, addr: u64, pages: u64, fd: u64, pgoff: u64) -> Self {
        let args = [
            addr,
            pages * PAGE,
            PROT_RW,
            MAP_SHARED | MAP_FIXED,
            fd,
            pgoff * PAGE,
        ];
        self.syscall(nr::MMAP, args, Some(addr))
    }

    fn unmap(self, addr: u64, pages: u64) -> Self {
        self.syscall(nr::MUNMAP, [addr, pages * PAGE, 0, 0, 0, 0], Some(0))
    }

    fn fill(self, addr: u64, pages: u64) -> Self {
        self.touch(addr, pages * PAGE, PAGE, Touch::Write)
    }

    fn check(self, addr: u64, pages: u64) -> Self {
        self.touch(addr, pages * PAGE, PAGE, Touch::Verify)
    }
}

/// A file of `pages` pages and an open file on it; the caller drops the mapping with `iput` after
/// the process that got the file has exited.
pub(super) fn new_file(pages: u64) -> (MappingPtr, FilePtr) {
    let k = mm::kernel();
    let mapping =
        AddressSpace::create(k, pages).unwrap_or_else(|e| panic!("creating a file: {e:?}"));
    let file = File::open(k, mapping, None).unwrap_or_else(|e| panic!("opening a file: {e:?}"));
    (mapping, file)
}

/// Runs `script` with `files`, then checks that it exited cleanly and that no frame leaked.
///
/// With `--inject`, the chosen allocation of this process fails: the process may then end early
/// (a system call returned ENOMEM where the script expected success, or a fault could not be
/// served), which is the point; it must still leave no frame behind and no lockdep report, and
/// the host probes still check every page-table free.
pub(super) fn run(
    name: &str,
    script: Script,
    files: Vec<FilePtr>,
    mappings: &[MappingPtr],
) -> Option<Finished> {
    run_then(name, script, files, mappings, || {})
}

/// [`run`], calling `after_exit` once the process is gone and before anything is checked (the
/// race scenarios end their race there and drop the page references their walkers held).
pub(super) fn run_then(
    name: &str,
    script: Script,
    files: Vec<FilePtr>,
    mappings: &[MappingPtr],
    after_exit: impl FnOnce(),
) -> Option<Finished> {
    let k = mm::kernel();
    let before = frame::allocated();
    let (nth, kind) = super::injection();
    k.inject.fail_nth(nth, alloc_kind(kind));
    let outcome = process::run(&script, files);
    let injected = k.inject.fired();
    k.inject.fail_nth(0, None);
    after_exit();
    for &m in mappings {
        iput(k, m);
    }
    let finished = match outcome {
        Ok(finished) => Some(finished),
        Err(e) if injected => {
            log::info!(
                "{name}: the injected allocation failure stopped the process from starting ({e})"
            );
            None
        }
        Err(e) => panic!("{name}: {e}"),
    };
    if let Some(f) = &finished {
        match f.exit {
            Exit::Code(0) => {}
            exit if injected => {
                log::info!("{name}: the injected allocation failure ended the process: {exit:?}")
            }
            Exit::Code(code) => panic!("{name}: the script failed with status {code:#x}"),
            Exit::Fault {
                vector, cr2, rip, ..
            } => {
                panic!("{name}: the process died of vector {vector} at {rip:#x} (address {cr2:#x})")
            }
        }
    }
    assert_clean(name, before);
    if let Some(f) = &finished {
        log::info!(
            "{name}: {} page faults, {} system calls, no frame leaked",
            f.faults,
            f.syscalls
        );
    }
    finished
}

/// Panics unless as many frames are allocated as `frames` (the count before `name` ran) and
/// lockdep saw no lock-order violation.
pub(super) fn assert_clean(name: &str, frames: u64) {
    assert_eq!(frame::allocated(), frames, "{name}: frames leaked");
    let lockdep = LOCKDEP.take_violations();
    if let Some(first) = lockdep.violations.first() {
        panic!(
            "{name}: lockdep saw {} lock-order violation(s), the first: {}",
            lockdep.total,
            describe(first)
        );
    }
}

/// The `AllocKind` a boot-info value names (0 = any kind).
fn alloc_kind(raw: u64) -> Option<AllocKind> {
    [
        AllocKind::DataPage,
        AllocKind::PageTable,
        AllocKind::Vma,
        AllocKind::AnonVma,
        AllocKind::File,
    ]
    .into_iter()
    .find(|&k| k as u64 == raw)
}

fn describe(v: &LockViolation) -> alloc::string::String {
    match v {
        LockViolation::Order(o) => alloc::format!("{} taken while holding {}", o.acquired, o.held),
        LockViolation::Recursive { class } => alloc::format!("{class} taken twice"),
        LockViolation::ReleaseNotHeld { class } => alloc::format!("{class} released but not held"),
        LockViolation::TooDeep { class } => alloc::format!("too many locks held to track {class}"),
    }
}

/// Maps, touches, splits, protects, truncates and unmaps anonymous and file memory.
pub fn smoke() -> u64 {
    let anon = BASE;
    let file_at = BASE + 32 * PMD_SIZE;
    let script = Script::new()
        .map_anon(anon, 16, PROT_RW)
        .fill(anon, 16)
        .check(anon, 16)
        .unmap(anon + 4 * PAGE, 4)
        .check(anon, 4)
        .check(anon + 8 * PAGE, 8)
        .syscall(
            nr::MPROTECT,
            [anon + 12 * PAGE, 4 * PAGE, PROT_READ, 0, 0, 0],
            Some(0),
        )
        .touch(anon + 12 * PAGE, 4 * PAGE, PAGE, Touch::Read);
    let script = refused_like_linux(script, anon)
        .map_file(file_at, 8, 0, 0)
        .fill(file_at, 8)
        .syscall(nr::FTRUNCATE, [0, 4 * PAGE, 0, 0, 0, 0], Some(0))
        .check(file_at, 4)
        .unmap(anon, 16);
    let (mapping, file) = new_file(8);
    // Under --inject the process may end early; the full count holds for a clean run only.
    if let Some(finished) =
        run("mm-smoke", script, vec![file], &[mapping]).filter(|f| f.exit == Exit::Code(0))
    {
        assert!(
            finished.faults >= 16 + 8,
            "only {} page faults",
            finished.faults
        );
    }
    log::info!("mm-smoke: served on the real MMU; no frame leaked");
    PASS
}

/// Calls Linux refuses with EINVAL (each checked on this machine's kernel): unknown mremap flags,
/// MREMAP_FIXED without MREMAP_MAYMOVE, a fixed target overlapping the source or past the top of
/// user space, unaligned addresses, zero lengths, unknown protection bits. mm-core must refuse them too, before it touches the mapping at `at`.
fn refused_like_linux(script: Script, at: u64) -> Script {
    let einval = Some(i64::from(mm_core::mm::error::EINVAL).wrapping_neg() as u64);
    [
        (nr::MREMAP, [at, PAGE, PAGE, 0x10, 0, 0]),
        (nr::MREMAP, [at, PAGE, PAGE, MREMAP_FIXED, at + 8 * PAGE, 0]),
        (nr::MREMAP, [at + 1, PAGE, PAGE, 0, 0, 0]),
        (nr::MREMAP, [at, PAGE, 0, 0, 0, 0]),
        (
            nr::MREMAP,
            [
                at,
                2 * PAGE,
                2 * PAGE,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                at + PAGE,
                0,
            ],
        ),
        (
            nr::MREMAP,
            [
                at,
                PAGE,
                1 << 47,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                at + 8 * PAGE,
                0,
            ],
        ),
        (nr::MUNMAP, [at + 1, PAGE, 0, 0, 0, 0]),
        (nr::MUNMAP, [at, 0, 0, 0, 0, 0]),
        (nr::MPROTECT, [at + 1, PAGE, PROT_READ, 0, 0, 0]),
        (nr::MPROTECT, [at, PAGE, 0x1000, 0, 0, 0]),
    ]
    .into_iter()
    .fold(script, |script, (nr, args)| {
        script.syscall(nr, args, einval)
    })
}

/// munmap of a whole VMA alone in its tables: its PTE, PMD and PUD tables all go.
fn munmap_whole() -> u64 {
    let script = Script::new()
        .map_anon(BASE, 8, PROT_RW)
        .fill(BASE, 8)
        .unmap(BASE, 8);
    run("munmap-whole", script, Vec::new(), &[]);
    PASS
}

/// munmap of part of a VMA: the half in its own PTE table frees that table, the rest survives.
fn munmap_part() -> u64 {
    let pages = 2 * PMD_SIZE / PAGE;
    let script = Script::new()
        .map_anon(BASE, pages, PROT_RW)
        .touch(BASE, 2 * PMD_SIZE, PAGE * 64, Touch::Write)
        .unmap(BASE + PMD_SIZE, pages / 2)
        .touch(BASE, PMD_SIZE, PAGE * 64, Touch::Verify)
        .unmap(BASE, pages / 2);
    run("munmap-part", script, Vec::new(), &[]);
    PASS
}

/// munmap over several VMAs (alternating protections keep them apart) in one call: free_pgtables
/// gathers neighbours into one free_pgd_range and must unlink every one of them first.
fn munmap_several() -> u64 {
    let mut script = Script::new();
    for i in 0..6 {
        let at = BASE + i * 16 * PAGE;
        let prot = if i % 2 == 0 { PROT_RW } else { PROT_READ };
        script = script
            .map_anon(at, 16, prot)
            .touch(at, 16 * PAGE, PAGE, Touch::Read);
    }
    // A file VMA among them, so the gather meets i_mmap too.
    let file_at = BASE + 6 * 16 * PAGE;
    script = script
        .map_file(file_at, 16, 0, 0)
        .fill(file_at, 16)
        .unmap(BASE, 7 * 16);
    let (mapping, file) = new_file(16);
    run("munmap-several", script, vec![file], &[mapping]);
    PASS
}

/// Neighbours sharing a PTE table: unmapping one must leave the table to the other. The
/// neighbour's pages are written, so they are its own, in its anon_vma (a read of never-written
/// memory would map the zero page, which no rmap walk reaches), and must survive the unmap.
fn shared_pte() -> u64 {
    let second = BASE + 64 * PAGE;
    let script = Script::new()
        .map_anon(BASE, 16, PROT_RW)
        .map_anon(second, 16, PROT_RW)
        .fill(BASE, 16)
        .fill(second, 16)
        .unmap(BASE, 16)
        .check(second, 16)
        .unmap(second, 16);
    run("shared-pte", script, Vec::new(), &[]);
    PASS
}

/// Neighbours sharing a PMD table (different PTE tables in one GiB): unmapping one frees its PTE
/// table only; the PMD table stays for the other. A file neighbour keeps i_mmap in play.
fn shared_pmd() -> u64 {
    let second = BASE + 8 * PMD_SIZE;
    let script = Script::new()
        .map_anon(BASE, 16, PROT_RW)
        .map_file(second, 16, 0, 0)
        .fill(BASE, 16)
        .fill(second, 16)
        .unmap(BASE, 16)
        .check(second, 16)
        .unmap(second, 16);
    let (mapping, file) = new_file(16);
    run("shared-pmd", script, vec![file], &[mapping]);
    PASS
}

/// exit_mmap of a process with anonymous and file mappings spread over several tables.
fn exit_mmap() -> u64 {
    let script = Script::new()
        .map_anon(BASE, 32, PROT_RW)
        .map_anon(BASE + 3 * PMD_SIZE, 32, PROT_RW)
        .map_file(BASE + PUD_SIZE, 16, 0, 0)
        .map_anon(BASE + 2 * PUD_SIZE, 8, PROT_RW)
        .fill(BASE, 32)
        .fill(BASE + 3 * PMD_SIZE, 32)
        .fill(BASE + PUD_SIZE, 16)
        .fill(BASE + 2 * PUD_SIZE, 8);
    let (mapping, file) = new_file(16);
    run("exit-mmap", script, vec![file], &[mapping]);
    PASS
}

/// A shared file mapping, then truncate: the pages past the new size leave every mapping, then
/// the mapping goes.
fn truncate() -> u64 {
    let second = BASE + PMD_SIZE;
    let script = Script::new()
        .map_file(BASE, 32, 0, 0)
        .map_file(second, 32, 0, 0)
        .fill(BASE, 32)
        .touch_as(second, 32 * PAGE, PAGE, Touch::Verify, second - BASE)
        .syscall(nr::FTRUNCATE, [0, 8 * PAGE, 0, 0, 0, 0], Some(0))
        .check(BASE, 8)
        .touch_as(second, 8 * PAGE, PAGE, Touch::Verify, second - BASE)
        .unmap(BASE, 32)
        .unmap(second, 32);
    let (mapping, file) = new_file(32);
    run("truncate", script, vec![file], &[mapping]);
    PASS
}

/// Reclaim-style rmap walks: page_referenced and try_to_unmap on every page of an anonymous and
/// a file mapping, then the pages fault back in and the process unmaps and exits.
fn rmap() -> u64 {
    let file_at = BASE + PMD_SIZE;
    let script = Script::new()
        .map_anon(BASE, 16, PROT_RW)
        .map_file(file_at, 16, 0, 0)
        .fill(BASE, 16)
        .fill(file_at, 16)
        .syscall(nr::RECLAIM, [BASE, 16 * PAGE, 0, 0, 0, 0], None)
        .syscall(nr::RECLAIM, [file_at, 16 * PAGE, 0, 0, 0, 0], Some(16))
        .check(file_at, 16)
        .unmap(BASE, 16);
    let (mapping, file) = new_file(16);
    run("rmap", script, vec![file], &[mapping]);
    PASS
}

/// A little of everything: what `cargo run` shows.
fn tour() -> u64 {
    for scenario in [
        // mprotect taking write access from touched pages (P3 for leaves needs its flush).
        smoke,
        munmap_whole,
        munmap_part,
        munmap_several,
        shared_pte,
        shared_pmd,
        exit_mmap,
        truncate,
        rmap,
        || super::shapes::shapes(super::shapes::Breadth::Cells),
    ] {
        scenario();
    }
    log::info!("tour: every mm scenario ran; the host probes checked each page-table free");
    PASS
}

/// Bare exits the probe benchmark times as its anchor.
const PINGS: u64 = 256;
/// Most page-table frees the probe benchmark times.
const VICTIMS: u64 = 64;

/// The probe benchmark's guest side (`vmm bench probes`): first [`PINGS`] bare exits, then a
/// process holding `--scale` VMAs in all (default 1,000: the script's, up to [`VICTIMS`]
/// one-page anonymous victims each alone in its PTE table, and file VMAs for the rest) unmaps its
/// victims one by one, each munmap freeing a PTE table the host checks.
fn probe_bench() -> u64 {
    for _ in 0..PINGS {
        // SAFETY: an `out` to the ping port only exits to the VMM, which counts it.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") mm_core::abi::PING_PORT, in("al") 0u8, options(nomem, nostack))
        };
    }
    let vmas = super::scale_or(1000).max(3);
    let victims = VICTIMS.min(vmas / 2);
    let files = vmas - 1 - victims;
    let victim_base = BASE + 64 * PUD_SIZE;
    let flags = MAP_SHARED | MAP_FIXED;
    // A page gap between neighbours keeps them from merging.
    let mut script = Script::new().series(
        nr::MMAP,
        [BASE, PAGE, PROT_RW, flags, 0, 0],
        files,
        2 * PAGE,
        true,
    );
    for j in 0..victims {
        let at = victim_base + j * PMD_SIZE;
        script = script.map_anon(at, 1, PROT_RW).fill(at, 1);
    }
    for j in 0..victims {
        script = script.unmap(victim_base + j * PMD_SIZE, 1);
    }
    let (mapping, file) = new_file(1);
    run("probe-bench", script, vec![file], &[mapping]);
    log::info!("probe-bench: {vmas} VMAs, {victims} page-table frees checked");
    PASS
}
