//! The coverage matrix: which shapes of page-table free the run's checks actually saw.
//!
//! Every checked free lands in one cell, path × level × kept: the mm operation under way (the
//! guest's tag), the freed table's level (its descriptor), and the lowest table on the way to it
//! that still holds entries after it went — the table a neighbour keeps alive, or none (exit).
//! Every VMA that leaves rmap lands in path × kind (anonymous, private file or shared file, read
//! from the `Vma` itself; shared anonymous memory is a shmem file, as in Linux, so it counts as a
//! shared file mapping). A table a neighbour shares at its own level is never freed, so "kept" is
//! always above the freed level.
//!
//! [`REQUIRED_FREES`] and [`REQUIRED_UNLINKS`] name the cells a run of `tour` must fill.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mm_core::abi::FreePath;
use mm_core::mm::VmFlags;
use mm_core::paging::{Level, PageTableEntry};

use super::guest_mem::{GuestView, WalkError};
use super::pgtable::{is_poison, user_entries};

/// The kind of a VMA, as rmap and the ordering rule tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmaKind {
    /// Private anonymous memory.
    AnonPrivate,
    /// A private file mapping (its written pages are anonymous copies).
    FilePrivate,
    /// A shared file mapping (shared anonymous memory included: a shmem file).
    FileShared,
}

impl VmaKind {
    /// Every kind, in table order.
    pub const ALL: [VmaKind; 3] = [
        VmaKind::AnonPrivate,
        VmaKind::FilePrivate,
        VmaKind::FileShared,
    ];

    /// The kind of a VMA with `vm_flags` and `vm_file`.
    pub fn of(vm_flags: u64, vm_file: u64) -> VmaKind {
        let shared = VmFlags(vm_flags).contains(VmFlags::SHARED);
        match (vm_file != 0, shared) {
            (false, _) => VmaKind::AnonPrivate,
            (true, false) => VmaKind::FilePrivate,
            (true, true) => VmaKind::FileShared,
        }
    }

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            VmaKind::AnonPrivate => "anon-private",
            VmaKind::FilePrivate => "file-private",
            VmaKind::FileShared => "file-shared",
        }
    }
}

/// One cell of the free matrix: path, freed level (1..=4), and the lowest level still holding
/// entries above it (0: none).
pub type FreeCell = (FreePath, u8, u8);

/// The paths that free tables while other mappings live on.
const LIVE_PATHS: [FreePath; 4] = [
    FreePath::Munmap,
    FreePath::MmapFixed,
    FreePath::Mremap,
    FreePath::Brk,
];

/// The (freed, kept) levels a path that leaves other mappings can produce.
const LIVE_SHAPES: [(u8, u8); 6] = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)];

/// The free cells `tour` must fill: every live path in every shape, and exit at every level.
pub fn required_frees() -> Vec<FreeCell> {
    let mut cells: Vec<FreeCell> = LIVE_PATHS
        .iter()
        .flat_map(|&p| LIVE_SHAPES.iter().map(move |&(l, k)| (p, l, k)))
        .collect();
    cells.extend((1..=4).map(|l| (FreePath::Exit, l, 0)));
    cells
}

/// [`required_frees`] as a constant-size list, for documentation and tests.
pub const REQUIRED_FREES: usize = LIVE_PATHS.len() * LIVE_SHAPES.len() + 4;

/// The unlink cells `tour` must fill: every kind on munmap, mmap-fixed, mremap and exit, and
/// private anonymous memory on brk.
pub fn required_unlinks() -> Vec<(FreePath, VmaKind)> {
    let mut cells: Vec<(FreePath, VmaKind)> = [
        FreePath::Munmap,
        FreePath::MmapFixed,
        FreePath::Mremap,
        FreePath::Exit,
    ]
    .iter()
    .flat_map(|&p| VmaKind::ALL.iter().map(move |&k| (p, k)))
    .collect();
    cells.push((FreePath::Brk, VmaKind::AnonPrivate));
    cells
}

/// [`required_unlinks`]'s length.
pub const REQUIRED_UNLINKS: usize = 4 * 3 + 1;

/// What a run's checks covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Checked frees per cell.
    pub frees: BTreeMap<FreeCell, u64>,
    /// VMAs unlinked from rmap per path and kind.
    pub unlinks: BTreeMap<(FreePath, VmaKind), u64>,
}

impl Coverage {
    /// The required cells no event reached.
    pub fn missing(&self) -> (Vec<FreeCell>, Vec<(FreePath, VmaKind)>) {
        let frees = required_frees()
            .into_iter()
            .filter(|c| !self.frees.contains_key(c))
            .collect();
        let unlinks = required_unlinks()
            .into_iter()
            .filter(|c| !self.unlinks.contains_key(c))
            .collect();
        (frees, unlinks)
    }

    /// The matrix as text, one row per path that saw anything.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let cols: Vec<(u8, u8)> = LIVE_SHAPES
            .iter()
            .copied()
            .chain((1..=4).map(|l| (l, 0)))
            .collect();
        let _ = write!(out, "coverage: checked table frees, freed<kept level");
        let _ = write!(out, "\n  {:<11}", "path");
        for (l, k) in &cols {
            let _ = write!(out, "{:>8}", shape_name(*l, *k));
        }
        for path in FreePath::ALL {
            if !self.frees.keys().any(|c| c.0 == path) {
                continue;
            }
            let _ = write!(out, "\n  {:<11}", path.name());
            for &(l, k) in &cols {
                let n = self.frees.get(&(path, l, k)).copied().unwrap_or(0);
                let _ = write!(out, "{n:>8}");
            }
        }
        let _ = write!(out, "\ncoverage: VMAs unlinked from rmap, by kind");
        let _ = write!(out, "\n  {:<11}", "path");
        for kind in VmaKind::ALL {
            let _ = write!(out, "{:>14}", kind.name());
        }
        for path in FreePath::ALL {
            if !self.unlinks.keys().any(|c| c.0 == path) {
                continue;
            }
            let _ = write!(out, "\n  {:<11}", path.name());
            for kind in VmaKind::ALL {
                let n = self.unlinks.get(&(path, kind)).copied().unwrap_or(0);
                let _ = write!(out, "{n:>14}");
            }
        }
        out
    }
}

/// A cell's column name: "PTE<PMD" (a PTE table freed, the PMD table above still in use) or
/// "PTE/-" (nothing above it left).
pub fn shape_name(freed: u8, kept: u8) -> String {
    let name = |l: u8| ["-", "PTE", "PMD", "PUD", "PGD"][usize::from(l.min(4))];
    if kept == 0 {
        format!("{}/-", name(freed))
    } else {
        format!("{}<{}", name(freed), name(kept))
    }
}

/// The lowest table on the way from `pgd` to the freed table of `level` mapping from `start`
/// that still holds an entry (0: none; the PGD counts its user half only).
pub(crate) fn kept_level(
    view: &mut GuestView<'_>,
    pgd: u64,
    level: u8,
    start: u64,
) -> Result<u8, WalkError> {
    let (mut table, mut at, mut kept) = (pgd, Level::Pgd, 0u8);
    loop {
        view.step("page table", table)?;
        let range = user_entries(at);
        if holds_an_entry(view, table, range)? {
            kept = at as u8;
        }
        let Some(lower) = at.lower() else { break };
        if (lower as u8) <= level {
            break;
        }
        let slot = table + ((start >> at.entry_shift()) & 511) * 8;
        let e = PageTableEntry::from_bits(view.word("page table", slot)?);
        if !e.is_present() || is_poison(e.bits()) {
            break;
        }
        (table, at) = (e.frame().0, lower);
    }
    Ok(kept)
}

/// Whether any entry of `table` in `range` is present, read a cache line at a time and stopping
/// at the first (most tables in use have one near their start).
fn holds_an_entry(
    view: &GuestView<'_>,
    table: u64,
    range: std::ops::RangeInclusive<usize>,
) -> Result<bool, WalkError> {
    let present = |e: u64| !is_poison(e) && PageTableEntry::from_bits(e).is_present();
    for line in (range.start() / 8)..=(range.end() / 8) {
        let words = view.words::<8>("page table", table + line as u64 * 64)?;
        let hit = words
            .iter()
            .enumerate()
            .any(|(i, &e)| range.contains(&(line * 8 + i)) && present(e));
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_cells_are_as_many_as_documented_and_start_missing() {
        assert_eq!(required_frees().len(), REQUIRED_FREES);
        assert_eq!(required_unlinks().len(), REQUIRED_UNLINKS);
        let (frees, unlinks) = Coverage::default().missing();
        assert_eq!(
            (frees.len(), unlinks.len()),
            (REQUIRED_FREES, REQUIRED_UNLINKS)
        );
    }

    #[test]
    fn a_vma_kind_follows_its_file_and_its_shared_flag() {
        let shared = VmFlags::SHARED.0;
        assert_eq!(VmaKind::of(0x3, 0), VmaKind::AnonPrivate);
        assert_eq!(VmaKind::of(0x3, 0x1000), VmaKind::FilePrivate);
        assert_eq!(VmaKind::of(shared, 0x1000), VmaKind::FileShared);
    }

    #[test]
    fn shapes_are_named_by_the_freed_and_the_kept_level() {
        assert_eq!(shape_name(1, 2), "PTE<PMD");
        assert_eq!(shape_name(4, 0), "PGD/-");
    }
}
