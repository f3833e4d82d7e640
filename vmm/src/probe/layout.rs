//! Where the probes find each field: offsets taken from mm-core's own `#[repr(C)]` types with
//! `offset_of!`, so a layout change in mm-core moves the probes with it.
//!
//! The one exception is the interval tree: `IntervalNode` and `IntervalTreeRoot` keep their fields
//! private, so their offsets are the table pinned in `mm_core::interval_tree`'s module doc, and
//! `tests::interval_tree_offsets_match_mm_core` checks them against the real type.

use core::mem::{offset_of, size_of};

use mm_core::kernel::KernelRoots;
use mm_core::mm::{AddressSpace, AnonVma, File, MmStruct, Vma};
use mm_core::phys::Page;

/// Index of the word at byte offset `off` in a structure read as `u64` words.
pub(crate) const fn word(off: usize) -> usize {
    off / 8
}

/// `KernelRoots`: the registries of all anon_vmas and all address_spaces.
pub(crate) mod roots {
    use super::*;
    /// First `AnonVma` on the registry.
    pub(crate) const ANON_VMAS: usize = offset_of!(KernelRoots, anon_vmas);
    /// AnonVmas registered.
    pub(crate) const NR_ANON_VMAS: usize = offset_of!(KernelRoots, nr_anon_vmas);
    /// First `AddressSpace` on the registry.
    pub(crate) const MAPPINGS: usize = offset_of!(KernelRoots, mappings);
    /// AddressSpaces registered.
    pub(crate) const NR_MAPPINGS: usize = offset_of!(KernelRoots, nr_mappings);
    /// Words the probes read.
    pub(crate) const WORDS: usize = size_of::<KernelRoots>() / 8;
}

/// `MmStruct`.
pub(crate) mod mm {
    use super::*;
    /// Physical address of the PML4.
    pub(crate) const PGD: usize = offset_of!(MmStruct, pgd);
    /// The first `Vma` on the mm's list.
    pub(crate) const MMAP: usize = offset_of!(MmStruct, mmap);
    /// PTE tables allocated.
    pub(crate) const NR_PTES: usize = offset_of!(MmStruct, nr_ptes);
    /// Bytes of PUD, PMD and PTE tables.
    pub(crate) const PGTABLES_BYTES: usize = offset_of!(MmStruct, pgtables_bytes);
    /// Anonymous pages mapped.
    pub(crate) const ANON_RSS: usize = offset_of!(MmStruct, anon_rss);
    /// File pages mapped.
    pub(crate) const FILE_RSS: usize = offset_of!(MmStruct, file_rss);
    /// Words the sweep reads (through `file_rss`).
    pub(crate) const WORDS: usize = FILE_RSS / 8 + 1;
}

/// `Vma`, read whole (its `shared` interval node included).
pub(crate) mod vma {
    use super::*;
    /// Owning `MmStruct`.
    pub(crate) const VM_MM: usize = offset_of!(Vma, vm_mm);
    /// First address.
    pub(crate) const VM_START: usize = offset_of!(Vma, vm_start);
    /// End of the range.
    pub(crate) const VM_END: usize = offset_of!(Vma, vm_end);
    /// The next VMA on the mm's list.
    pub(crate) const VM_NEXT: usize = offset_of!(Vma, vm_next);
    /// Page offset of `vm_start` (in the file, or the linear index for anonymous memory).
    pub(crate) const VM_PGOFF: usize = offset_of!(Vma, vm_pgoff);
    /// `VmFlags` bits.
    pub(crate) const VM_FLAGS: usize = offset_of!(Vma, vm_flags);
    /// Its `File` (0 = anonymous).
    pub(crate) const VM_FILE: usize = offset_of!(Vma, vm_file);
    /// Its `AnonVma`.
    pub(crate) const ANON_VMA: usize = offset_of!(Vma, anon_vma);
    /// Next VMA on the anon_vma's list.
    pub(crate) const ANON_VMA_NEXT: usize = offset_of!(Vma, anon_vma_next);
    /// Previous VMA on the anon_vma's list.
    pub(crate) const ANON_VMA_PREV: usize = offset_of!(Vma, anon_vma_prev);
    /// The embedded i_mmap `IntervalNode`.
    pub(crate) const SHARED: usize = offset_of!(Vma, shared);
    /// Size of a `Vma` in words.
    pub(crate) const WORDS: usize = size_of::<Vma>() / 8;
    /// Words up to and including the anon_vma links (and the fields P1 reports).
    pub(crate) const ANON_WORDS: usize = ANON_VMA_PREV / 8 + 1;
}

/// `AnonVma` (its ABI part: the lock after `all` is kernel-private).
pub(crate) mod anon_vma {
    use super::*;
    /// First VMA on the list.
    pub(crate) const HEAD: usize = offset_of!(AnonVma, head);
    /// VMAs on the list.
    pub(crate) const NR_VMAS: usize = offset_of!(AnonVma, nr_vmas);
    /// Next AnonVma on the registry.
    pub(crate) const ALL_NEXT: usize = offset_of!(AnonVma, all.next);
    /// Previous AnonVma on the registry.
    pub(crate) const ALL_PREV: usize = offset_of!(AnonVma, all.prev);
    /// Words the probes read.
    pub(crate) const WORDS: usize = ALL_PREV / 8 + 1;
}

/// `AddressSpace` (its ABI part).
pub(crate) mod mapping {
    use super::*;
    /// The i_mmap `IntervalTreeRoot`.
    pub(crate) const I_MMAP: usize = offset_of!(AddressSpace, i_mmap);
    /// Next AddressSpace on the registry.
    pub(crate) const ALL_NEXT: usize = offset_of!(AddressSpace, all.next);
    /// Previous AddressSpace on the registry.
    pub(crate) const ALL_PREV: usize = offset_of!(AddressSpace, all.prev);
    /// Words the probes read.
    pub(crate) const WORDS: usize = ALL_PREV / 8 + 1;
}

/// `IntervalTreeRoot` (private fields: offsets from mm-core's documented table).
pub(crate) mod tree_root {
    /// Address of the root node.
    pub(crate) const ROOT: usize = 0;
    /// Nodes linked.
    pub(crate) const COUNT: usize = 8;
}

/// `IntervalNode` (private fields: offsets from mm-core's documented table).
pub(crate) mod node {
    /// Left child.
    pub(crate) const LEFT: usize = 0;
    /// Right child.
    pub(crate) const RIGHT: usize = 8;
    /// Parent, 0 at the root.
    pub(crate) const PARENT: usize = 16;
    /// `IntervalNode::UNLINKED`, `RED` or `BLACK`.
    pub(crate) const COLOR: usize = 48;
}

/// `File`.
pub(crate) mod file {
    use super::*;
    /// Its `AddressSpace`.
    pub(crate) const F_MAPPING: usize = offset_of!(File, f_mapping);
}

/// `Page`, one per frame in the mem_map.
pub(crate) mod page {
    use super::*;
    /// `PageFlags` bits.
    pub(crate) const FLAGS: usize = offset_of!(Page, flags);
    /// Page-table entries mapping the frame.
    pub(crate) const MAPCOUNT: usize = offset_of!(Page, mapcount);
    /// `AnonVma | PAGE_MAPPING_ANON`, or `AddressSpace`; a page table's mm (`ptdesc`).
    pub(crate) const MAPPING: usize = offset_of!(Page, mapping);
    /// Page offset in `mapping`; the first address a page table maps.
    pub(crate) const INDEX: usize = offset_of!(Page, index);
    /// Bytes per entry.
    pub(crate) const SIZE: usize = size_of::<Page>();
}
