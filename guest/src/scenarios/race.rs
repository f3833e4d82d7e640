//! The race scenarios (issue 5): while vCPU 0 runs a process that munmaps (`race-munmap`) or just
//! exits (`race-exit`), every other vCPU runs walkers over the same pages — `page_referenced` and
//! `try_to_unmap` through rmap, and (vCPU 1) truncate of the mapped file — taking only the locks
//! Linux takes there: the anon_vma lock or `i_mmap_lock`, then `page_table_lock`, never mmap_sem.
//!
//! The layout, the unmaps and each walker's choices are drawn from the seed; the interleaving is
//! the host's (see `race`). Under the correct order no walker may ever read a freed page table;
//! under a wrong one a walker parked between descending to a PTE table and reading it meets the
//! poison the host wrote over the freed table, and reports it.
//!
//! Sequence: vCPU 0 maps and touches the window in ring 3, then makes the `race_start` system call,
//! which takes a reference on every mapped page (as reclaim holds one while it walks), publishes
//! them and joins the race; the walkers join as soon as they see them. vCPU 0's process then
//! unmaps and exits; once it is gone vCPU 0 tells the walkers to stop, leaves the race, waits for
//! them, drops the references, and checks that no frame leaked and lockdep saw nothing.

use super::mm::{new_file, run_then, Steps};
use super::random::Rng;
use super::PASS;
use crate::cpu::apic;
use crate::host::race;
use crate::kernel::process::{self, Walkers};
use crate::kernel::programs::Script;
use crate::kernel::syscall::nr;
use crate::kernel::{mm, tlb};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm_core::abi::{BootInfo, SchedPointKind};
use mm_core::addr::PAGE_SIZE as PAGE;
use mm_core::mm::{rmap, truncate, MappingPtr};
use mm_core::PhysAddr;

/// The window: 2 MiB on each side of a 1 GiB boundary, so PTE and PMD tables are freed.
const WINDOW: u64 = (1 << 40) + (1 << 30) - (2 << 20);
/// Pages in the window.
const WINDOW_PAGES: u64 = 1024;
/// Pages in the file the process maps (its VMAs overlap in it, so a page has several mappings).
const FILE_PAGES: u64 = 32;
/// Most VMAs the layout draws.
const MAX_VMAS: u64 = 10;
/// Longest VMA, in pages.
const MAX_VMA_PAGES: u64 = 24;

/// What the walkers work on; vCPU 0 writes it before publishing and only after they all left.
struct Shared {
    /// Where the pages were mapped when the race started (walkers read them).
    vas: Vec<u64>,
    /// The pages, each once (walkers hold a reference on each).
    frames: Vec<u64>,
    mapping: Option<MappingPtr>,
    /// The process's page-table root, which walkers keep loaded (lazy TLB).
    pgd: u64,
}

struct SharedCell(UnsafeCell<Shared>);

// SAFETY: vCPU 0 writes the cell only while no walker reads it: before `STATE` becomes `GO`
// (Release/Acquire) and after every walker counted itself out in `LEFT`.
unsafe impl Sync for SharedCell {}

static SHARED: SharedCell = SharedCell(UnsafeCell::new(Shared {
    vas: Vec::new(),
    frames: Vec::new(),
    mapping: None,
    pgd: 0,
}));

/// Whether the race is on: walkers wait while `IDLE`, race on `GO`, give up on `ABANDONED`.
static STATE: AtomicU64 = AtomicU64::new(IDLE);
const IDLE: u64 = 0;
const GO: u64 = 1;
const ABANDONED: u64 = 2;
/// Set by vCPU 0 once its process is gone: walkers finish their step and leave.
static DONE: AtomicBool = AtomicBool::new(false);
/// Walkers that left the race.
static LEFT: AtomicU64 = AtomicU64::new(0);
/// Walkers that loaded the process's root.
static ADOPTED: AtomicU64 = AtomicU64::new(0);

/// `race-munmap`: the process unmaps random ranges of its window, then exits.
pub fn race_munmap() -> u64 {
    race_scenario("race-munmap", true)
}

/// `race-exit`: the process exits with its whole window mapped (`exit_mmap` against the walkers).
pub fn race_exit() -> u64 {
    race_scenario("race-exit", false)
}

fn race_scenario(name: &str, unmaps: bool) -> u64 {
    let racers = super::vcpus();
    assert!(
        racers >= 2,
        "{name} needs at least 2 vCPUs (one unmaps, the others walk); run it with --vcpus 2 or more"
    );
    let mut rng = Rng::new(super::seed());
    let (mapping, file) = new_file(FILE_PAGES);
    let mut script = layout(&mut rng);
    script = script.syscall(
        nr::RACE_START,
        [WINDOW, WINDOW_PAGES * PAGE, 0, 0, 0, 0],
        None,
    );
    if unmaps {
        for _ in 0..1 + rng.below(4) {
            let first = rng.below(WINDOW_PAGES);
            let pages = (1 + rng.below(256)).min(WINDOW_PAGES - first);
            script = script.unmap(WINDOW + first * PAGE, pages);
        }
    }
    // SAFETY: no walker reads the cell before `start` publishes it.
    unsafe { (*SHARED.0.get()).mapping = Some(mapping) };
    process::set_walkers(Some(&WALKERS));
    run_then(name, script, vec![file], &[mapping], || end_race(racers));
    process::set_walkers(None);
    PASS
}

/// Maps up to [`MAX_VMAS`] anonymous and shared-file VMAs across the window, with gaps, and writes
/// every page of each (file VMAs at overlapping offsets of one file).
fn layout(rng: &mut Rng) -> Script {
    let mut script = Script::new();
    let mut cursor = rng.below(64);
    for _ in 0..MAX_VMAS {
        let pages = 1 + rng.below(MAX_VMA_PAGES);
        if cursor + pages > WINDOW_PAGES {
            break;
        }
        let at = WINDOW + cursor * PAGE;
        script = if rng.below(2) == 0 {
            script.map_anon(at, pages, 3)
        } else {
            let pages = pages.min(FILE_PAGES);
            let pgoff = rng.below(FILE_PAGES - pages + 1);
            script.map_file(at, pages, 0, pgoff)
        };
        script = script.fill(at, pages);
        // Mostly small gaps (neighbours share PTE tables), sometimes a jump across the window.
        let reach = if rng.below(4) == 0 { 512 } else { 16 };
        cursor += pages + rng.below(4) * rng.below(reach);
    }
    script
}

/// The walkers of this module, as the kernel's `race_start` sees them.
static WALKERS: Walkers = Walkers {
    start,
    running: racing,
};

/// Whether walkers may be running on other vCPUs (a race started and has not ended): the kernel
/// then checks nothing that their unlocked reads of counters could make look wrong.
fn racing() -> bool {
    STATE.load(Ordering::Acquire) == GO
}

/// `race_start`: takes a reference on each page of `mapped` (addresses and frames of the process
/// whose root is `pgd`), hands them to the walkers and joins the race. Returns how many pages the
/// walkers got.
fn start(pgd: u64, mapped: &[(u64, u64)]) -> u64 {
    let k = mm::kernel();
    let mut frames: Vec<u64> = mapped.iter().map(|&(_, frame)| frame).collect();
    frames.sort_unstable();
    frames.dedup();
    for &f in &frames {
        k.get_page(PhysAddr(f));
    }
    let count = frames.len() as u64;
    // SAFETY: the walkers read the cell only after the Release store below.
    unsafe {
        let shared = &mut *SHARED.0.get();
        shared.vas = mapped.iter().map(|&(va, _)| va).collect();
        shared.frames = frames;
        shared.pgd = pgd;
    }
    assert_eq!(
        STATE.swap(GO, Ordering::AcqRel),
        IDLE,
        "race_start made twice"
    );
    // The walkers load the process's root before vCPU 0 may unmap anything (or free the root):
    // they borrow the mm the way a kernel thread holds a reference to the one it runs on.
    let walkers = super::vcpus() - 1;
    while ADOPTED.load(Ordering::Acquire) < walkers {
        core::hint::spin_loop();
    }
    race::enter(0, super::vcpus());
    count
}

/// vCPU 0, its process gone: stop the walkers, leave the race, wait for them, drop the page
/// references. When the process never reached `race_start` (an injected failure), the walkers
/// are told to give up instead.
fn end_race(racers: u64) {
    if STATE
        .compare_exchange(IDLE, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        log::info!("the process ended before the race started; walkers stand down");
        return;
    }
    DONE.store(true, Ordering::Release);
    race::leave(0);
    while LEFT.load(Ordering::Acquire) < racers - 1 {
        apic::interrupt_window();
        core::hint::spin_loop();
    }
    let k = mm::kernel();
    // SAFETY: every walker has left (LEFT), so vCPU 0 alone uses the cell.
    let shared = unsafe { &mut *SHARED.0.get() };
    for f in core::mem::take(&mut shared.frames) {
        k.put_page(PhysAddr(f));
    }
    shared.vas.clear();
    shared.mapping = None;
}

/// A walker on vCPU `cpu`: until vCPU 0 is done, picks a published page and walks rmap for it
/// (`page_referenced`, sometimes `try_to_unmap`); vCPU 1 also truncates the file now and then.
///
/// The walker keeps the process's root loaded, as a Linux kernel thread keeps the last mm (lazy
/// TLB), and reads a word of the window through it at every step the way `copy_from_user` would:
/// its TLB and paging-structure caches hold the process's translations, so vCPU 0's unmaps must
/// shoot them down before freeing tables — and a read that walks into a freed table is caught.
pub fn walker(cpu: usize, info: &BootInfo) {
    let state = loop {
        match STATE.load(Ordering::Acquire) {
            IDLE => core::hint::spin_loop(),
            s => break s,
        }
    };
    if state == ABANDONED {
        return;
    }
    let k = mm::kernel();
    // SAFETY: published before GO and not written again until this walker counted itself out.
    let shared = unsafe { &*SHARED.0.get() };
    tlb::switch_to(shared.pgd);
    ADOPTED.fetch_add(1, Ordering::AcqRel);
    race::enter(cpu, info.vcpus);
    let mut rng = Rng::new(info.seed ^ (cpu as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (mut steps, mut referenced, mut unmapped, mut truncates, mut reads) = (0, 0, 0, 0, 0u64);
    loop {
        race::point(cpu, SchedPointKind::WalkerStep as u64);
        if DONE.load(Ordering::Acquire) {
            break;
        }
        steps += 1;
        if let Some(&va) = shared.vas.get(rng.below(shared.vas.len() as u64) as usize) {
            reads += u64::from(tlb::read_user(va).is_some());
        }
        let Some(&frame) = shared
            .frames
            .get(rng.below(shared.frames.len() as u64) as usize)
        else {
            continue;
        };
        match (rng.below(8), shared.mapping) {
            (0, Some(mapping)) if cpu == 1 => {
                truncate::vmtruncate(k, mapping, rng.below(FILE_PAGES + 1));
                truncates += 1;
            }
            (1, _) => unmapped += u64::from(rmap::try_to_unmap(k, PhysAddr(frame))),
            _ => referenced += rmap::page_referenced(k, PhysAddr(frame)),
        }
    }
    log::debug!(
        "walker {cpu}: {steps} steps, {reads} user reads, {referenced} referenced, \
         {unmapped} unmapped, {truncates} truncates, {} shootdowns answered",
        tlb::answered(cpu)
    );
    tlb::switch_to(mm::kernel_pgd().0);
    race::leave(cpu);
    LEFT.fetch_add(1, Ordering::AcqRel);
}
