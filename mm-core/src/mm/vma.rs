//! `Vma`: one contiguous range of an address space with uniform permissions and backing.
//!
//! The struct is `#[repr(C)]` and all `u64`, because the host walks it from raw guest memory: the
//! mm's list through `vm_next`/`vm_prev`, anon_vma lists through `anon_vma_next`/`anon_vma_prev`,
//! and i_mmap through the interval-tree node `shared`.

use crate::addr::{VirtAddr, PAGE_SHIFT};
use crate::cell::U64Cell;
use crate::mm::anon::AnonVma;
use core::cell::UnsafeCell;

use crate::interval_tree::IntervalNode;
use crate::mm::file::File;
use crate::mm::kobj::KPtr;

/// Handle to a [`Vma`].
pub type VmaPtr = KPtr<Vma>;

/// `vm_flags` bits (Linux's `VM_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmFlags(pub u64);

impl VmFlags {
    /// Reads allowed.
    pub const READ: Self = Self(1 << 0);
    /// Writes allowed.
    pub const WRITE: Self = Self(1 << 1);
    /// Execution allowed.
    pub const EXEC: Self = Self(1 << 2);
    /// Writes go to the shared backing (file page cache), not to private copies.
    pub const SHARED: Self = Self(1 << 3);
    /// `VM_MAYREAD`: `mprotect` may add `PROT_READ`.
    pub const MAYREAD: Self = Self(1 << 4);
    /// `VM_MAYWRITE`: `mprotect` may add `PROT_WRITE` (clear for a shared mapping of a file
    /// opened read-only).
    pub const MAYWRITE: Self = Self(1 << 5);
    /// `VM_MAYEXEC`.
    pub const MAYEXEC: Self = Self(1 << 6);
    /// `VM_MAYSHARE`: mapped `MAP_SHARED` (maps shows `s` even where `VM_SHARED` was dropped).
    pub const MAYSHARE: Self = Self(1 << 7);
    /// `VM_GROWSDOWN`: a stack that a fault just below extends.
    pub const GROWSDOWN: Self = Self(1 << 8);
    /// `VM_LOCKONFAULT`: locked pages are faulted in on access, not at `mlock`.
    pub const LOCKONFAULT: Self = Self(1 << 19);
    /// `VM_ACCOUNT`: the mapping is charged against the commit limit.
    pub const ACCOUNT: Self = Self(1 << 20);
    /// `VM_NORESERVE`: `MAP_NORESERVE`, not accounted.
    pub const NORESERVE: Self = Self(1 << 21);
    /// What every mapping starts with (`VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC`).
    pub const MAY: Self = Self(Self::MAYREAD.0 | Self::MAYWRITE.0 | Self::MAYEXEC.0);
    /// Counted in `locked_vm` (`MAP_LOCKED`).
    pub const LOCKED: Self = Self(1 << 13);
    /// `MADV_SEQUENTIAL`: read ahead aggressively.
    pub const SEQ_READ: Self = Self(1 << 15);
    /// `MADV_RANDOM`: do not read ahead.
    pub const RAND_READ: Self = Self(1 << 16);
    /// `MADV_DONTFORK`: a child does not get this mapping.
    pub const DONTCOPY: Self = Self(1 << 17);
    /// `MADV_WIPEONFORK`: a child gets this mapping empty.
    pub const WIPEONFORK: Self = Self(1 << 25);
    /// `MADV_DONTDUMP`: left out of core dumps.
    pub const DONTDUMP: Self = Self(1 << 26);
    /// `MADV_HUGEPAGE`.
    pub const HUGEPAGE: Self = Self(1 << 29);
    /// `MADV_NOHUGEPAGE` (and, since Linux 6.7, `MAP_STACK`).
    pub const NOHUGEPAGE: Self = Self(1 << 30);
    /// `MADV_MERGEABLE` (KSM).
    pub const MERGEABLE: Self = Self(1 << 31);
    /// The access bits.
    pub const ACCESS: Self = Self(Self::READ.0 | Self::WRITE.0 | Self::EXEC.0);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    /// These flags with the access bits replaced by `prot`'s.
    pub const fn with_prot(self, prot: Prot) -> Self {
        Self((self.0 & !Self::ACCESS.0) | prot.0)
    }
}

/// `PROT_*` bits of mmap and mprotect (the same bit positions as [`VmFlags`] access bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Prot(pub u64);

impl Prot {
    /// No access.
    pub const NONE: Self = Self(0);
    /// `PROT_READ`.
    pub const READ: Self = Self(1 << 0);
    /// `PROT_WRITE`.
    pub const WRITE: Self = Self(1 << 1);
    /// `PROT_EXEC`.
    pub const EXEC: Self = Self(1 << 2);
    /// Read and write.
    pub const RW: Self = Self(Self::READ.0 | Self::WRITE.0);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether only known bits are set.
    pub const fn is_valid(self) -> bool {
        self.0 & !(Self::READ.0 | Self::WRITE.0 | Self::EXEC.0) == 0
    }
}

/// `MAP_*` flags of mmap (Linux's values, since they are the system-call ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MapFlags(pub u64);

impl MapFlags {
    /// `MAP_SHARED`.
    pub const SHARED: Self = Self(1 << 0);
    /// `MAP_PRIVATE`.
    pub const PRIVATE: Self = Self(1 << 1);
    /// `MAP_FIXED`: place exactly at the address, replacing what is there.
    pub const FIXED: Self = Self(1 << 4);
    /// `MAP_ANONYMOUS`.
    pub const ANONYMOUS: Self = Self(1 << 5);
    /// `MAP_SHARED_VALIDATE`: shared, with unknown flags refused.
    pub const SHARED_VALIDATE: Self = Self(3);
    /// `MAP_TYPE`: the bits that say shared or private.
    pub const TYPE: Self = Self(0x0f);
    /// `MAP_GROWSDOWN`.
    pub const GROWSDOWN: Self = Self(1 << 8);
    /// `MAP_LOCKED`.
    pub const LOCKED: Self = Self(1 << 13);
    /// `MAP_NORESERVE`.
    pub const NORESERVE: Self = Self(1 << 14);
    /// `MAP_POPULATE`: fault the pages in.
    pub const POPULATE: Self = Self(1 << 15);
    /// `MAP_NONBLOCK`: with `MAP_POPULATE`, do not.
    pub const NONBLOCK: Self = Self(1 << 16);
    /// `MAP_STACK` (since Linux 6.7 it sets `VM_NOHUGEPAGE`).
    pub const STACK: Self = Self(1 << 17);
    /// `MAP_HUGETLB`.
    pub const HUGETLB: Self = Self(1 << 18);
    /// `MAP_FIXED_NOREPLACE`: at the address exactly, failing with `EEXIST` rather than replace.
    pub const FIXED_NOREPLACE: Self = Self(1 << 20);
    /// What `MAP_SHARED_VALIDATE` accepts of a file without flags of its own (`LEGACY_MAP_MASK`:
    /// not `MAP_FIXED_NOREPLACE`, not `MAP_SYNC`).
    pub const LEGACY_MASK: Self = Self(
        0x1 | 0x2
            | 0x10
            | 0x20
            | 0x100
            | 0x800
            | 0x1000
            | 0x2000
            | 0x4000
            | 0x8000
            | 0x1_0000
            | 0x2_0000
            | 0x4_0000
            | 0x400_0000,
    );

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A virtual memory area (Linux's `vm_area_struct`).
#[repr(C)]
#[derive(Debug)]
pub struct Vma {
    /// Address of the owning `MmStruct`.
    pub vm_mm: U64Cell,
    /// First address.
    pub vm_start: U64Cell,
    /// One past the last address.
    pub vm_end: U64Cell,
    /// Next VMA in address order (0 = last).
    pub vm_next: U64Cell,
    /// Previous VMA in address order (0 = first).
    pub vm_prev: U64Cell,
    /// [`VmFlags`] bits.
    pub vm_flags: U64Cell,
    /// Offset of `vm_start` in the file, in pages (anon: `vm_start >> PAGE_SHIFT` at creation).
    pub vm_pgoff: U64Cell,
    /// Address of the mapped `File` (0 = anonymous).
    pub vm_file: U64Cell,
    /// Address of the `AnonVma` (0 = none yet).
    pub anon_vma: U64Cell,
    /// Next VMA on the anon_vma's list (0 = last).
    pub anon_vma_next: U64Cell,
    /// Previous VMA on the anon_vma's list (0 = first).
    pub anon_vma_prev: U64Cell,
    /// Node in the file's i_mmap interval tree, keyed `[vm_pgoff, last_pgoff]` (7 `u64`s; only
    /// `crate::mm::i_mmap` touches it).
    pub shared: UnsafeCell<IntervalNode>,
    /// 0 when the anon_vma is this VMA's own (Linux: a singular `anon_vma_chain`); else the fork
    /// it was copied in. Linux gives a child's copy of a VMA with an anon_vma a new anon_vma of
    /// its own, chained to the parent's; mm-core shares the parent's (the 2.6.15 anon_vma) and
    /// keeps the difference here, so merges follow Linux's: such a VMA merges only with one of
    /// the same copy (its splits and moves keep the value), never with one without an anon_vma,
    /// and lends its anon_vma to no neighbour.
    pub anon_lineage: U64Cell,
}

impl Default for Vma {
    fn default() -> Self {
        let z = || U64Cell::new(0);
        Self {
            vm_mm: z(),
            vm_start: z(),
            vm_end: z(),
            vm_next: z(),
            vm_prev: z(),
            vm_flags: z(),
            vm_pgoff: z(),
            vm_file: z(),
            anon_vma: z(),
            anon_vma_next: z(),
            anon_vma_prev: z(),
            shared: UnsafeCell::new(IntervalNode::new(0, 0)),
            anon_lineage: z(),
        }
    }
}

impl Vma {
    /// Takes `from`'s anon_vma and lineage (a split, a move, a merge); the caller links it.
    pub(crate) fn share_anon(&self, from: &Vma) {
        self.anon_vma.set(from.anon_vma.get());
        self.anon_lineage.set(from.anon_lineage.get());
    }

    /// Whether this VMA and `other`, adjacent and otherwise compatible, may become one as far as
    /// their anonymous memory goes (Linux's `is_mergeable_anon_vma`).
    pub(crate) fn anon_mergeable(&self, other: &Vma) -> bool {
        match (self.anon(), other.anon()) {
            (None, None) => true,
            (Some(_), None) => self.anon_lineage.get() == 0,
            (None, Some(_)) => other.anon_lineage.get() == 0,
            (Some(a), Some(b)) => a == b && self.anon_lineage.get() == other.anon_lineage.get(),
        }
    }

    /// First address.
    pub fn start(&self) -> VirtAddr {
        VirtAddr(self.vm_start.get())
    }
    /// One past the last address.
    pub fn end(&self) -> VirtAddr {
        VirtAddr(self.vm_end.get())
    }
    /// The flags.
    pub fn flags(&self) -> VmFlags {
        VmFlags(self.vm_flags.get())
    }
    /// Pages covered.
    pub fn pages(&self) -> u64 {
        (self.end() - self.start()) >> PAGE_SHIFT
    }
    /// Page offset of `vm_start` in the backing.
    pub fn pgoff(&self) -> u64 {
        self.vm_pgoff.get()
    }
    /// The next VMA of the mm.
    pub fn next(&self) -> Option<VmaPtr> {
        KPtr::from_addr(self.vm_next.get())
    }
    /// The previous VMA of the mm.
    pub fn prev(&self) -> Option<VmaPtr> {
        KPtr::from_addr(self.vm_prev.get())
    }
    /// The mapped file.
    pub fn file(&self) -> Option<KPtr<File>> {
        KPtr::from_addr(self.vm_file.get())
    }
    /// The anon_vma.
    pub fn anon(&self) -> Option<KPtr<AnonVma>> {
        KPtr::from_addr(self.anon_vma.get())
    }
    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.start() <= addr && addr < self.end()
    }
    /// Page offset in the backing of the page holding `addr` (Linux's `linear_page_index`).
    pub fn linear_page_index(&self, addr: VirtAddr) -> u64 {
        ((addr - self.start()) >> PAGE_SHIFT) + self.pgoff()
    }
    /// Last page offset covered (inclusive), the interval-tree key's end.
    pub fn last_pgoff(&self) -> u64 {
        self.pgoff() + self.pages() - 1
    }
    /// Where page offset `pgoff` is mapped, if inside (Linux's `vma_address`).
    pub fn address_of(&self, pgoff: u64) -> Option<VirtAddr> {
        let rel = pgoff.checked_sub(self.pgoff())?;
        (rel < self.pages()).then(|| self.start() + (rel << PAGE_SHIFT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vma_is_a_plain_array_of_u64_for_the_host() {
        assert_eq!(core::mem::size_of::<Vma>() % 8, 0);
        assert_eq!(core::mem::align_of::<Vma>(), 8);
        assert_eq!(core::mem::offset_of!(Vma, vm_start), 8);
        assert_eq!(core::mem::offset_of!(Vma, shared), 11 * 8);
        assert_eq!(core::mem::size_of::<Vma>(), 19 * 8);
    }

    #[test]
    fn page_offsets_map_to_addresses_and_back() {
        let v = Vma::default();
        v.vm_start.set(4 << PAGE_SHIFT);
        v.vm_end.set(8 << PAGE_SHIFT);
        v.vm_pgoff.set(10);
        assert_eq!(v.linear_page_index(VirtAddr(5 << PAGE_SHIFT)), 11);
        assert_eq!(v.address_of(11), Some(VirtAddr(5 << PAGE_SHIFT)));
        assert_eq!(v.address_of(14), None);
        assert_eq!(v.address_of(9), None);
        assert_eq!(v.last_pgoff(), 13);
    }
}
