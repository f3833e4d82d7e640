//! Page-table entries, their flags, and the four levels.

use core::fmt;
use core::ops::{BitAnd, BitOr, Not};

use crate::addr::{PhysAddr, PAGE_SHIFT, PGDIR_SHIFT, PMD_SHIFT, PTRS_PER_TABLE, PUD_SHIFT};

/// x86_64 page-table entry flag bits.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PteFlags(u64);

impl PteFlags {
    /// No flags.
    pub const EMPTY: Self = Self(0);
    /// The entry maps something.
    pub const PRESENT: Self = Self(1 << 0);
    /// Writes allowed.
    pub const WRITABLE: Self = Self(1 << 1);
    /// Ring 3 may access.
    pub const USER: Self = Self(1 << 2);
    /// Set by the CPU on access.
    pub const ACCESSED: Self = Self(1 << 5);
    /// Set by the CPU on write.
    pub const DIRTY: Self = Self(1 << 6);
    /// A large page (never used for user memory here).
    pub const HUGE: Self = Self(1 << 7);
    /// Software bit: a `PROT_NONE` entry that keeps its frame while not present (Linux's
    /// `_PAGE_PROTNONE`).
    pub const PROTNONE: Self = Self(1 << 9);
    /// Instruction fetches forbidden.
    pub const NO_EXECUTE: Self = Self(1 << 63);
    /// What an upper-level entry pointing to a lower table carries: leaf entries decide access.
    pub const TABLE: Self = Self(Self::PRESENT.0 | Self::WRITABLE.0 | Self::USER.0);

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Both sets of bits (`|` for constants).
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl BitOr for PteFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}
impl BitAnd for PteFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}
impl Not for PteFlags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0)
    }
}
impl fmt::Debug for PteFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(PteFlags, &str); 8] = [
            (PteFlags::PRESENT, "P"),
            (PteFlags::WRITABLE, "W"),
            (PteFlags::USER, "U"),
            (PteFlags::ACCESSED, "A"),
            (PteFlags::DIRTY, "D"),
            (PteFlags::HUGE, "H"),
            (PteFlags::PROTNONE, "PN"),
            (PteFlags::NO_EXECUTE, "NX"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// One 8-byte entry at any level.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PageTableEntry(u64);

/// The high bits of the poison the host probes write over entries 1..512 of a page table being
/// freed; the low four bits hold the table's level.
pub const FREED_TABLE_POISON_TAG: u64 = 0xDEAD_7AB1_E000_0000;
/// The bits of a poisoned entry that carry the level.
pub const FREED_TABLE_POISON_LEVEL_MASK: u64 = 0xF;

impl PageTableEntry {
    /// Bits 12..=51: the physical frame.
    const ADDR_MASK: u64 = ((1 << 52) - 1) & !((1 << PAGE_SHIFT) - 1);

    /// The empty entry.
    pub const NONE: Self = Self(0);

    /// An entry pointing to `frame` with `flags`.
    pub const fn new(frame: PhysAddr, flags: PteFlags) -> Self {
        Self((frame.0 & Self::ADDR_MASK) | flags.0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// An entry from raw bits.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
    /// Whether the entry holds the poison of a freed page table: the probes' tag (written over
    /// entries 1..512 of every freed table the host checked) or `SimRam`'s poison bytes.
    pub const fn is_poison(self) -> bool {
        self.0 & !FREED_TABLE_POISON_LEVEL_MASK == FREED_TABLE_POISON_TAG
            || self.0 == u64::from_ne_bytes([crate::phys::POISON_BYTE; 8])
    }
    /// Whether the entry is all zero.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    /// Whether the present bit is set.
    pub const fn is_present(self) -> bool {
        self.flags().contains(PteFlags::PRESENT)
    }
    /// Whether the entry holds a frame: present, or a `PROT_NONE` leaf.
    pub const fn holds_frame(self) -> bool {
        self.is_present() || self.flags().contains(PteFlags::PROTNONE)
    }
    /// The frame it points to.
    pub const fn frame(self) -> PhysAddr {
        PhysAddr(self.0 & Self::ADDR_MASK)
    }
    /// Its flags.
    pub const fn flags(self) -> PteFlags {
        PteFlags(self.0 & !Self::ADDR_MASK)
    }
    /// The same frame with `flags` instead.
    pub const fn with_flags(self, flags: PteFlags) -> Self {
        Self::new(self.frame(), flags)
    }
}

impl fmt::Debug for PageTableEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pte({:?} {:?})", self.frame(), self.flags())
    }
}

/// A page-table level, named after the table (Linux's pgd/pud/pmd/pte).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A table of leaf entries mapping 4 KiB pages (spans 2 MiB).
    Pte = 1,
    /// A table of PMD entries, each pointing to a PTE table (spans 1 GiB).
    Pmd = 2,
    /// A table of PUD entries, each pointing to a PMD table (spans 512 GiB).
    Pud = 3,
    /// The root (PML4), spanning the whole 48-bit address space.
    Pgd = 4,
}

impl Level {
    /// log2 of the span one entry of a table at this level maps.
    pub const fn entry_shift(self) -> u32 {
        match self {
            Level::Pte => PAGE_SHIFT,
            Level::Pmd => PMD_SHIFT,
            Level::Pud => PUD_SHIFT,
            Level::Pgd => PGDIR_SHIFT,
        }
    }
    /// Bytes one entry of a table at this level maps.
    pub const fn entry_span(self) -> u64 {
        1 << self.entry_shift()
    }
    /// Bytes a whole table at this level maps.
    pub const fn table_span(self) -> u64 {
        self.entry_span() * PTRS_PER_TABLE as u64
    }
    /// The level of the tables this level's entries point to.
    pub const fn lower(self) -> Option<Level> {
        match self {
            Level::Pgd => Some(Level::Pud),
            Level::Pud => Some(Level::Pmd),
            Level::Pmd => Some(Level::Pte),
            Level::Pte => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_keeps_frame_and_flags_apart() {
        let e = PageTableEntry::new(
            PhysAddr(0x1234_5000),
            PteFlags::PRESENT | PteFlags::NO_EXECUTE,
        );
        assert_eq!(e.frame(), PhysAddr(0x1234_5000));
        assert!(e.is_present() && e.flags().contains(PteFlags::NO_EXECUTE));
        assert!(!e.flags().contains(PteFlags::WRITABLE));
        let pn = e.with_flags(PteFlags::PROTNONE);
        assert!(!pn.is_present() && pn.holds_frame());
    }

    #[test]
    fn table_spans_follow_the_four_levels() {
        assert_eq!(Level::Pte.table_span(), crate::addr::PMD_SIZE);
        assert_eq!(Level::Pmd.table_span(), crate::addr::PUD_SIZE);
        assert_eq!(Level::Pud.table_span(), crate::addr::PGDIR_SIZE);
        assert_eq!(Level::Pgd.lower(), Some(Level::Pud));
    }
}
