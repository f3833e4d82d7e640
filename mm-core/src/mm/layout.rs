//! The layouts the host probes read from raw guest memory, pinned at compile time.
//!
//! The VMM uses these very types (`offset_of!` on them), so nothing is copied by hand; the
//! assertions below make any layout change a deliberate, visible edit. All links are guest-virtual
//! addresses of the linked object (0 = none); fields after the ones listed are kernel-private.
//!
//! | struct | field (offset) |
//! |---|---|
//! | `KernelRoots` | anon_vmas 0, nr_anon_vmas 8, mappings 16, nr_mappings 24 |
//! | `MmStruct` | pgd 0 (phys), mmap 8 (first Vma), map_count 16, total_vm 24, locked_vm 32, nr_ptes 40, pgtables_bytes 48, anon_rss 56, file_rss 64, start_brk 72, brk 80, max_map_count 88, mmap_base 96 |
//! | `Vma` | vm_mm 0, vm_start 8, vm_end 16, vm_next 24, vm_prev 32, vm_flags 40, vm_pgoff 48, vm_file 56, anon_vma 64, anon_vma_next 72, anon_vma_prev 80, shared 88 (`IntervalNode`, 56 bytes) |
//! | `AnonVma` | head 0 (first Vma), nr_vmas 8, all.next 16, all.prev 24 |
//! | `AddressSpace` | i_mmap 0 (`IntervalTreeRoot`: root 0, count 8), nrpages 16, i_size_pages 24, i_count 32, all.next 40, all.prev 48 |
//! | `File` | f_count 0, f_mapping 8 |
//! | `Page` (mem_map entry, 40 bytes) | flags 0, refcount 8, mapcount 16, mapping 24 (AnonVma \| 1, or AddressSpace), index 32 |
//!
//! Page tables are the hardware's: 512 eight-byte entries per 4 KiB table, see
//! [`crate::paging::PageTableEntry`].

use core::mem::{offset_of, size_of};

use crate::kernel::KernelRoots;
use crate::mm::{AddressSpace, AnonVma, File, MmStruct, Vma};
use crate::phys::Page;

/// "MMLAYOUT": the guest publishes it with its roots so the VMM knows it reads mm-core's layout.
pub const LAYOUT_MAGIC: u64 = u64::from_le_bytes(*b"MMLAYOUT");
/// Version of the layouts pinned below; bump it with any change to them.
pub const LAYOUT_VERSION: u64 = 2;

const _: () = {
    assert!(offset_of!(KernelRoots, anon_vmas) == 0 && offset_of!(KernelRoots, mappings) == 16);
    assert!(offset_of!(MmStruct, pgd) == 0 && offset_of!(MmStruct, mmap) == 8);
    assert!(offset_of!(MmStruct, map_count) == 16 && offset_of!(MmStruct, nr_ptes) == 40);
    assert!(offset_of!(MmStruct, mmap_base) == 96);
    assert!(offset_of!(Vma, vm_mm) == 0 && offset_of!(Vma, vm_start) == 8);
    assert!(offset_of!(Vma, vm_end) == 16 && offset_of!(Vma, vm_next) == 24);
    assert!(offset_of!(Vma, vm_prev) == 32 && offset_of!(Vma, vm_flags) == 40);
    assert!(offset_of!(Vma, vm_pgoff) == 48 && offset_of!(Vma, vm_file) == 56);
    assert!(offset_of!(Vma, anon_vma) == 64 && offset_of!(Vma, anon_vma_next) == 72);
    assert!(offset_of!(Vma, anon_vma_prev) == 80 && offset_of!(Vma, shared) == 88);
    assert!(offset_of!(Vma, anon_lineage) == 144 && size_of::<Vma>() == 152);
    assert!(offset_of!(AnonVma, head) == 0 && offset_of!(AnonVma, nr_vmas) == 8);
    assert!(offset_of!(AnonVma, all) == 16);
    assert!(offset_of!(AddressSpace, i_mmap) == 0 && offset_of!(AddressSpace, nrpages) == 16);
    assert!(offset_of!(AddressSpace, i_size_pages) == 24 && offset_of!(AddressSpace, all) == 40);
    assert!(offset_of!(File, f_count) == 0 && offset_of!(File, f_mapping) == 8);
    assert!(size_of::<Page>() == 40 && offset_of!(Page, mapping) == 24);
};
