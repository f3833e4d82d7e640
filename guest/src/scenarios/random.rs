//! `random-mm`: a seeded random workload for campaigns. The kernel draws a sequence of mmap
//! (anonymous, shared and private file), munmap, mprotect, mremap moves of touched memory, touches
//! and reclaim walks over a window that straddles a PMD-table boundary, keeping a page-by-page
//! model so the ring-3 script only touches pages it may; every page-table free the sequence causes
//! is checked by the host probes.

use super::mm::{new_file, run, Steps};
use super::PASS;
use crate::kernel::programs::{Script, Touch};
use crate::kernel::syscall::nr;
use alloc::vec;
use alloc::vec::Vec;
use mm_core::addr::PAGE_SIZE as PAGE;
pub(super) use mm_core::rng::Rng;
use mm_core::uapi::{
    MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_NONE, PROT_READ, PROT_RW,
};

/// Pages in the window: 8 MiB, four PTE tables.
const WINDOW_PAGES: u64 = 2048;
/// The window: 4 MiB on each side of a 1 GiB boundary, so PMD tables are freed too.
const WINDOW: u64 = (1 << 40) + (1 << 30) - (4 << 20);
/// Pages in the file the workload maps.
const FILE_PAGES: u64 = 64;
/// Pages one PTE table maps.
const TABLE_PAGES: u64 = 512;
/// Longest range one operation covers.
const MAX_RUN: u64 = 96;

/// What the model knows about one page of the window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unmapped,
    Mapped {
        prot: u64,
    },
    /// An mremap may or may not have moved it (the script cannot tell the model): never touched,
    /// until an munmap makes it known again.
    Unknown,
}

/// Runs `ops` random operations drawn from `seed`.
pub fn random_mm(seed: u64, ops: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut model = vec![Slot::Unmapped; WINDOW_PAGES as usize];
    let mut script = Script::new();
    for _ in 0..ops {
        let first = rng.below(WINDOW_PAGES);
        let pages = 1 + rng.below(MAX_RUN.min(WINDOW_PAGES - first));
        let at = WINDOW + first * PAGE;
        let range = first as usize..(first + pages) as usize;
        script = match rng.below(13) {
            // A whole PTE table's span at once: the frees the probes are about.
            10 => {
                let table = rng.below(WINDOW_PAGES / TABLE_PAGES) * TABLE_PAGES;
                (table as usize..(table + TABLE_PAGES) as usize)
                    .for_each(|p| model[p] = Slot::Unmapped);
                script.unmap(WINDOW + table * PAGE, TABLE_PAGES)
            }
            0..=2 => {
                let prot = if rng.below(4) == 0 {
                    PROT_READ
                } else {
                    PROT_RW
                };
                range.clone().for_each(|p| model[p] = Slot::Mapped { prot });
                script.map_anon(at, pages, prot)
            }
            3 | 11 => {
                let pages = pages.min(FILE_PAGES);
                let pgoff = rng.below(FILE_PAGES - pages + 1);
                (first as usize..(first + pages) as usize)
                    .for_each(|p| model[p] = Slot::Mapped { prot: PROT_RW });
                let share = if rng.below(2) == 0 {
                    MAP_SHARED
                } else {
                    MAP_PRIVATE
                };
                let args = [
                    at,
                    pages * PAGE,
                    PROT_RW,
                    share | MAP_FIXED,
                    0,
                    pgoff * PAGE,
                ];
                script.syscall(nr::MMAP, args, Some(at))
            }
            // Move a run elsewhere in the window (it may span VMAs or holes and fail: either way
            // both ranges become unknown to the model).
            12 => {
                // From a run of pages mapped alike (likelier one VMA, which mremap needs).
                let like = model[first as usize];
                let pages = (first..first + pages)
                    .take_while(|&p| like != Slot::Unmapped && model[p as usize] == like)
                    .count()
                    .max(1) as u64;
                let range = first as usize..(first + pages) as usize;
                let to = rng.below(WINDOW_PAGES - pages + 1);
                let moved = to as usize..(to + pages) as usize;
                range
                    .clone()
                    .chain(moved)
                    .for_each(|p| model[p] = Slot::Unknown);
                let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
                let args = [at, pages * PAGE, pages * PAGE, flags, WINDOW + to * PAGE, 0];
                script.syscall(nr::MREMAP, args, None)
            }
            4 => {
                range.clone().for_each(|p| model[p] = Slot::Unmapped);
                script.unmap(at, pages)
            }
            5 => {
                let prot = [PROT_NONE, PROT_READ, PROT_RW][rng.below(3) as usize];
                // mprotect fails (ENOMEM) on a range with holes and changes nothing then.
                let whole = range.clone().all(|p| model[p] != Slot::Unmapped);
                let known = range.clone().all(|p| model[p] != Slot::Unknown);
                if !known {
                    // It may have succeeded: nothing in the range is known any more.
                    range.clone().for_each(|p| model[p] = Slot::Unknown);
                } else if whole {
                    range.clone().for_each(|p| model[p] = Slot::Mapped { prot });
                }
                script.syscall(nr::MPROTECT, [at, pages * PAGE, prot, 0, 0, 0], None)
            }
            6 => script.syscall(nr::RECLAIM, [at, pages * PAGE, 0, 0, 0, 0], None),
            _ => touch_runs(script, &model, range, rng.below(2) == 0),
        };
    }
    let (mapping, file) = new_file(FILE_PAGES);
    run("random-mm", script, vec![file], &[mapping]);
    PASS
}

/// Touches every page of `range` the model allows: writes where the page is read-write (or reads
/// when `write` is false), reads where it is read-only; skips the rest.
fn touch_runs(
    mut script: Script,
    model: &[Slot],
    range: core::ops::Range<usize>,
    write: bool,
) -> Script {
    let mut runs: Vec<(usize, usize, Touch)> = Vec::new();
    for p in range {
        let kind = match model[p] {
            Slot::Mapped { prot: PROT_RW } if write => Touch::Write,
            Slot::Mapped {
                prot: PROT_RW | PROT_READ,
            } => Touch::Read,
            _ => continue,
        };
        match runs.last_mut() {
            Some((_, end, k))
                if *end == p && core::mem::discriminant(k) == core::mem::discriminant(&kind) =>
            {
                *end = p + 1
            }
            _ => runs.push((p, p + 1, kind)),
        }
    }
    for (start, end, kind) in runs {
        script = script.touch(
            WINDOW + start as u64 * PAGE,
            (end - start) as u64 * PAGE,
            PAGE,
            kind,
        );
    }
    script
}
