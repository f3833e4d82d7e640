//! `shapes`: every path that frees page tables, over every kind of VMA, with the neighbour that
//! keeps the tables above alive at each level — what the host's coverage matrix asks for.
//!
//! Each process maps a target of one PTE table's span (plus a page before it for the paths that
//! keep a head) and a one-page neighbour, touches both, then takes the target away by one path:
//! - `munmap`, `mmap(MAP_FIXED)` over it, `mremap` to a far address (a move), `mremap` shrinking it
//!   to its head page, `brk` lowering the heap to its head page;
//! - the neighbour (or the head) shares the PTE table at one end of a two-table target, or lies
//!   in the next 2 MiB, the next 1 GiB or the next 512 GiB, so the lowest table still in use above
//!   the freed one is the PMD, the PUD or the PGD table: PTE tables are freed under each, PMD
//!   tables under the PUD and the PGD, PUD tables under the PGD;
//! - targets are private and shared anonymous memory and private and shared file mappings
//!   (`brk`: the heap), the neighbour on one side or the other.
//!
//! Every process ends with exit_mmap, which frees the rest at every level.

use super::mm::{new_file, run};
use super::PASS;
use crate::kernel::programs::{Script, Touch};
use crate::kernel::syscall::nr;
use alloc::vec;
use mm_core::addr::{PAGE_SIZE as PAGE, PGDIR_SIZE, PMD_SIZE, PUD_SIZE};
use mm_core::uapi::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_RW,
};

/// Pages the target spans: one PTE table's worth.
const TARGET_PAGES: u64 = PMD_SIZE / PAGE;
/// Where in its far PGD entry a layout's moved target goes.
const FAR_OFFSET: u64 = 7 * PUD_SIZE;

/// `fd` argument of an anonymous mapping.
const NO_FD: u64 = u64::MAX;

/// How the target is taken away.
#[derive(Clone, Copy, Debug)]
enum Path {
    Munmap,
    MmapFixed,
    MremapMove,
    MremapShrink,
    Brk,
}

/// The kind of the target mapping.
#[derive(Clone, Copy, Debug)]
enum Kind {
    AnonPrivate,
    AnonShared,
    FilePrivate,
    FileShared,
}

impl Kind {
    /// mmap flags and descriptor.
    fn map(self) -> (u64, u64) {
        match self {
            Kind::AnonPrivate => (MAP_PRIVATE | MAP_ANONYMOUS, NO_FD),
            Kind::AnonShared => (MAP_SHARED | MAP_ANONYMOUS, NO_FD),
            Kind::FilePrivate => (MAP_PRIVATE, 0),
            Kind::FileShared => (MAP_SHARED, 0),
        }
    }
}

/// Where layout `slot` of a process lays its target so that the neighbour shares the table of
/// `kept` level (1 = the PTE table at one end of the target, 2 = PMD, 3 = PUD, 4 = PGD) with it and
/// no table below that. Each layout has PGD entries of its own (two, for the neighbour one PGD
/// entry away), so the layouts of one process keep out of each other's tables.
fn target_base(slot: u64, kept: u8) -> u64 {
    let entry = (2 + 3 * slot) * PGDIR_SIZE;
    match kept {
        1 | 2 => entry + 3 * PMD_SIZE,
        3 => entry + 5 * PUD_SIZE,
        _ => entry + PGDIR_SIZE,
    }
}

/// The span one step away at `kept` level (2..=4): the neighbour's distance from the target.
fn step(kept: u8) -> u64 {
    match kept {
        2 => PMD_SIZE,
        3 => PUD_SIZE,
        _ => PGDIR_SIZE,
    }
}

/// `mmap(addr, len, RW, flags | MAP_FIXED, fd, 0)`, expected to land at `addr`.
fn map(s: Script, addr: u64, len: u64, flags: u64, fd: u64) -> Script {
    s.syscall(
        nr::MMAP,
        [addr, len, PROT_RW, flags | MAP_FIXED, fd, 0],
        Some(addr),
    )
}

fn unmap(s: Script, addr: u64, len: u64) -> Script {
    s.syscall(nr::MUNMAP, [addr, len, 0, 0, 0, 0], Some(0))
}

/// Adds to `s` one layout (`slot`): the target of `kind` laid for `kept`, its neighbour after it
/// (or before), both touched; then `path` takes the target away, and what is left goes too, so
/// the next layout starts from the script's tables alone (and the guest's validate_mm under
/// `--thorough` walks few tables). Files are descriptor 0.
///
/// At `kept` 1 the target spans two PTE tables and the neighbour (or the kept head) shares the
/// one at its start or its end: `free_pgd_range` must free the other and keep that one, the
/// floor and ceiling rounding the other levels never exercise.
fn layout(s: Script, path: Path, kind: Kind, slot: u64, kept: u8, after: bool) -> Script {
    const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS;
    const TWO: u64 = 2 * PMD_SIZE;
    let base = target_base(slot, kept);
    let (flags, fd) = kind.map();
    // The paths that keep the target's head page need no neighbour: the head is one.
    let keeps_head = matches!(path, Path::MremapShrink | Path::Brk);
    let (start, len, neighbour) = match (keeps_head, kept, after) {
        (true, 1, _) => (base, TWO, None),
        (true, _, _) => (base - PAGE, PMD_SIZE + PAGE, None),
        (false, 1, true) => (base, TWO - PAGE, Some(base + TWO - PAGE)),
        (false, 1, false) => (base + PAGE, TWO - PAGE, Some(base)),
        (false, _, true) => (base, PMD_SIZE, Some(base + step(kept))),
        (false, _, false) => (base, PMD_SIZE, Some(base - step(kept))),
    };
    let mut s = if matches!(path, Path::Brk) {
        s.syscall(nr::SET_BRK_BASE, [start, 0, 0, 0, 0, 0], Some(0))
            .syscall(nr::BRK, [start + len, 0, 0, 0, 0, 0], Some(start + len))
    } else {
        map(s, start, len, flags, fd)
    };
    if let Some(n) = neighbour {
        s = map(s, n, PAGE, ANON, NO_FD).touch(n, PAGE, PAGE, Touch::Write);
    }
    // A page in every PTE table the target spans.
    let mut page = start;
    while page < start + len {
        s = s.touch(page, PAGE, PAGE, Touch::Write);
        page = (page + PMD_SIZE) & !(PMD_SIZE - 1);
    }
    let (s, left) = match path {
        Path::Munmap => (unmap(s, start, len), None),
        Path::MmapFixed => (map(s, start, len, ANON, NO_FD), Some((start, len))),
        Path::MremapMove => {
            // To the layout's own far PGD entry; the page written at `start` shows there now.
            let far = (2 + 3 * slot + 2) * PGDIR_SIZE + FAR_OFFSET;
            let args = [start, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, far, 0];
            let s = s.syscall(nr::MREMAP, args, Some(far)).touch_as(
                far,
                PAGE,
                PAGE,
                Touch::Verify,
                far - start,
            );
            (s, Some((far, len)))
        }
        Path::MremapShrink => {
            let s = s.syscall(nr::MREMAP, [start, len, PAGE, 0, 0, 0], Some(start));
            (s, Some((start, PAGE)))
        }
        Path::Brk => {
            let s = s.syscall(nr::BRK, [start + PAGE, 0, 0, 0, 0, 0], Some(start + PAGE));
            (s, Some((start, PAGE)))
        }
    };
    let s = match left {
        Some((addr, len)) => unmap(s, addr, len),
        None => s,
    };
    match neighbour {
        Some(n) => unmap(s, n, PAGE),
        None => s,
    }
}

/// How many layouts a `shapes` run lays per path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Breadth {
    /// Every kind at every neighbour level (the `shapes` scenario).
    Full,
    /// Every neighbour level for one kind, the other kinds at one level each: every cell of the
    /// coverage matrix at a third of the cost (what `tour` runs).
    Cells,
}

/// One process per path, holding a layout for every kind × neighbour level (`brk`: the heap at
/// each level in turn; [`Breadth::Cells`]: fewer, see there), the neighbour after the target for
/// half the layouts and before it for the other half.
pub fn shapes(breadth: Breadth) -> u64 {
    let kinds = [
        Kind::AnonPrivate,
        Kind::FileShared,
        Kind::FilePrivate,
        Kind::AnonShared,
    ];
    for (path, name) in [
        (Path::Munmap, "shapes: munmap"),
        (Path::MmapFixed, "shapes: mmap-fixed"),
        (Path::MremapMove, "shapes: mremap-move"),
        (Path::MremapShrink, "shapes: mremap-shrink"),
        (Path::Brk, "shapes: brk"),
    ] {
        let kinds = if matches!(path, Path::Brk) {
            &kinds[..1]
        } else {
            &kinds[..]
        };
        let mut script = Script::new();
        let mut slot = 0;
        for (i, &kind) in kinds.iter().enumerate() {
            for kept in 1..=4 {
                if breadth == Breadth::Cells && i > 0 && kept != 1 + (i as u8 % 4) {
                    continue;
                }
                script = layout(script, path, kind, slot, kept, slot % 2 == 0);
                slot += 1;
            }
        }
        // And one page of each kind left for exit_mmap to take.
        for &kind in kinds {
            let at = (2 + 3 * slot) * PGDIR_SIZE;
            let (flags, fd) = kind.map();
            script = map(script, at, PAGE, flags, fd).touch(at, PAGE, PAGE, Touch::Write);
            slot += 1;
        }
        let (mapping, file) = new_file(2 * TARGET_PAGES);
        run(name, script, vec![file], &[mapping]);
    }
    log::info!(
        "shapes: every path, kind and neighbour level ran; the host probes checked each free"
    );
    PASS
}
