//! Typed addresses and the user address-space layout.
//!
//! [`PhysAddr`], [`VirtAddr`] and [`Pfn`] never mix by accident; the constants below are the only
//! place the page-table geometry and the user range are spelled out.

use core::fmt;
use core::ops::{Add, Sub};

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// The base page (and page-table) size: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// log2 of the span one PTE table maps (2 MiB).
pub const PMD_SHIFT: u32 = 21;
/// Span mapped by one PTE table, i.e. by one PMD entry.
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// log2 of the span one PMD table maps (1 GiB).
pub const PUD_SHIFT: u32 = 30;
/// Span mapped by one PMD table, i.e. by one PUD entry.
pub const PUD_SIZE: u64 = 1 << PUD_SHIFT;
/// log2 of the span one PUD table maps (512 GiB).
pub const PGDIR_SHIFT: u32 = 39;
/// Span mapped by one PUD table, i.e. by one PGD (PML4) entry.
pub const PGDIR_SIZE: u64 = 1 << PGDIR_SHIFT;
/// Entries in a table at every level.
pub const PTRS_PER_TABLE: usize = 512;

/// Lowest user address: PGD index 1. PGD entries below it map the kernel's identity map; they belong
/// to the kernel and `free_pgtables` never frees or touches them (Invariant 5).
pub const USER_BASE: VirtAddr = VirtAddr(PGDIR_SIZE);
/// One past the highest user address (128 TiB, the canonical lower half).
pub const TASK_SIZE: VirtAddr = VirtAddr(1 << 47);
/// Linux's name for the floor `exit_mmap` passes to `free_pgtables`.
pub const FIRST_USER_ADDRESS: VirtAddr = USER_BASE;
/// Where bottom-up searches for free user space start when no hint fits (Linux: `TASK_SIZE / 3`).
pub const TASK_UNMAPPED_BASE: VirtAddr = VirtAddr(((1 << 47) / 3) & !(PAGE_SIZE - 1));

/// A guest-physical address.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

/// A virtual address (user addresses lie in `[USER_BASE, TASK_SIZE)`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(pub u64);

/// A page frame number: a physical address divided by [`PAGE_SIZE`].
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl PhysAddr {
    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The frame holding this address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
    /// Whether the address starts a frame.
    pub const fn is_page_aligned(self) -> bool {
        self.0.is_multiple_of(PAGE_SIZE)
    }
}

impl Pfn {
    /// The first byte of the frame.
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

impl VirtAddr {
    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }
    /// Rounds up to a multiple of `align` (a power of two); `None` on overflow.
    pub const fn checked_align_up(self, align: u64) -> Option<Self> {
        match self.0.checked_add(align - 1) {
            Some(v) => Some(Self(v & !(align - 1))),
            None => None,
        }
    }
    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// The virtual page number.
    pub const fn page_index(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }
    /// The index of this address in the table at the level whose entries span `1 << shift`.
    pub const fn table_index(self, shift: u32) -> usize {
        ((self.0 >> shift) as usize) % PTRS_PER_TABLE
    }
    /// Whether the address is a user address.
    pub const fn is_user(self) -> bool {
        self.0 >= USER_BASE.0 && self.0 < TASK_SIZE.0
    }
}

impl Add<u64> for VirtAddr {
    type Output = VirtAddr;
    fn add(self, rhs: u64) -> VirtAddr {
        VirtAddr(self.0.wrapping_add(rhs))
    }
}

impl Sub<u64> for VirtAddr {
    type Output = VirtAddr;
    fn sub(self, rhs: u64) -> VirtAddr {
        VirtAddr(self.0.wrapping_sub(rhs))
    }
}

impl Sub<VirtAddr> for VirtAddr {
    type Output = u64;
    fn sub(self, rhs: VirtAddr) -> u64 {
        self.0.wrapping_sub(rhs.0)
    }
}

impl Add<u64> for PhysAddr {
    type Output = PhysAddr;
    fn add(self, rhs: u64) -> PhysAddr {
        PhysAddr(self.0 + rhs)
    }
}

macro_rules! hex_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:#x})"), self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    )*};
}
hex_debug!(PhysAddr, VirtAddr, Pfn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_space_starts_at_pgd_index_one_and_ends_at_the_lower_half() {
        assert_eq!(USER_BASE.table_index(PGDIR_SHIFT), 1);
        assert_eq!((TASK_SIZE - 1).table_index(PGDIR_SHIFT), 255);
        assert!(USER_BASE.is_user() && !TASK_SIZE.is_user() && !(USER_BASE - 1).is_user());
    }

    #[test]
    fn alignment_helpers_round_the_right_way() {
        let a = VirtAddr(PMD_SIZE + 5);
        assert_eq!(a.align_down(PMD_SIZE), VirtAddr(PMD_SIZE));
        assert_eq!(a.checked_align_up(PMD_SIZE), Some(VirtAddr(2 * PMD_SIZE)));
        assert_eq!(VirtAddr(u64::MAX).checked_align_up(PAGE_SIZE), None);
        assert_eq!(PhysAddr(3 * PAGE_SIZE).pfn(), Pfn(3));
        assert_eq!(Pfn(3).addr(), PhysAddr(3 * PAGE_SIZE));
    }
}
