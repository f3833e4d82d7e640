//! Ordering variants: deliberately wrong orders of operations, for testing the checkers.
//!
//! A [`Kernel`](crate::Kernel) runs [`Variant::Correct`] unless a caller picks another one by name,
//! on purpose, at run time; nothing in mm-core switches variant by itself.

use core::fmt;

/// Which order of operations the unmap paths follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Variant {
    /// The patched order: unlink each VMA in `free_pgtables` before freeing its page tables.
    #[default]
    Correct,
    /// Unlinks done in `remove_vma`, after `free_pgtables` (as before the patch series).
    PrepatchOrder,
    /// `unlink_file_vma` never runs in `free_pgtables` (the file unlink is left to `remove_vma`).
    SkipFileUnlink,
    /// `anon_vma_unlink` never runs in `free_pgtables` (left to `remove_vma`).
    SkipAnonUnlink,
    /// A VMA gathered into a neighbour's `free_pgd_range` call is not unlinked first.
    GatherSkipsUnlink,
    /// `free_pgd_range` ignores floor and ceiling, freeing tables still shared with a neighbour.
    IgnoreFloorCeiling,
    /// Page-table pages go back to the allocator before the TLB flush.
    FreeBeforeFlush,
    /// The unlinks run while holding `page_table_lock`, inverting the lock order.
    UnlinkUnderPtl,
    /// `free_pgd_range` hands each PTE table straight back to the allocator as it unhooks it,
    /// behind the mmu_gather's back: no hook sees it, no flush covers it.
    FreeBehindGather,
    /// The mmu_gather reports each table's span one level too narrow (one entry's span), as a
    /// `p?d_addr_end` slip would: the free itself is right, what it says about it is not.
    WrongSpan,
    /// `free_pgd_range` clears a PTE table's parent entry and forgets the table: the counters go
    /// down as if it were freed, but it stays allocated and marked page table (a lost table).
    LoseTable,
}

impl Variant {
    /// Every variant, `Correct` first.
    pub const ALL: [Variant; 11] = [
        Variant::Correct,
        Variant::PrepatchOrder,
        Variant::SkipFileUnlink,
        Variant::SkipAnonUnlink,
        Variant::GatherSkipsUnlink,
        Variant::IgnoreFloorCeiling,
        Variant::FreeBeforeFlush,
        Variant::UnlinkUnderPtl,
        Variant::FreeBehindGather,
        Variant::WrongSpan,
        Variant::LoseTable,
    ];

    /// The kebab-case name used on command lines and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::PrepatchOrder => "prepatch-order",
            Variant::SkipFileUnlink => "skip-file-unlink",
            Variant::SkipAnonUnlink => "skip-anon-unlink",
            Variant::GatherSkipsUnlink => "gather-skips-unlink",
            Variant::IgnoreFloorCeiling => "ignore-floor-ceiling",
            Variant::FreeBeforeFlush => "free-before-flush",
            Variant::UnlinkUnderPtl => "unlink-under-ptl",
            Variant::FreeBehindGather => "free-behind-gather",
            Variant::WrongSpan => "wrong-span",
            Variant::LoseTable => "lose-table",
        }
    }

    /// The variant called `name`, if any.
    pub fn from_name(name: &str) -> Option<Variant> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// A stable number for the ABI (index in [`Variant::ALL`]).
    pub const fn as_u64(self) -> u64 {
        self as u64
    }

    /// Whether `free_pgtables` skips the anon_vma unlink of the VMA it frees tables for.
    pub(crate) fn defers_anon_unlink(self) -> bool {
        matches!(self, Variant::PrepatchOrder | Variant::SkipAnonUnlink)
    }

    /// Whether `free_pgtables` skips the i_mmap unlink of the VMA it frees tables for.
    pub(crate) fn defers_file_unlink(self) -> bool {
        matches!(self, Variant::PrepatchOrder | Variant::SkipFileUnlink)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_name() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_name(v.name()), Some(v));
        }
        assert_eq!(Variant::from_name("nonsense"), None);
        assert_eq!(Variant::default(), Variant::Correct);
    }
}
