//! Address spaces: VMAs, mmap/munmap/mprotect/mremap/madvise/brk/exit, faults, rmap and truncate.
//!
//! - [`mm_struct`]: [`MmStruct`] (the `#[repr(C)]` head) and [`Mm`] (owner + find_vma index).
//! - [`vma`]: [`Vma`] and its flags; [`kobj`]: stable-address handles for intrusive links.
//! - [`anon`]: [`AnonVma`], the reverse map of anonymous pages.
//! - [`file`]: [`File`], [`AddressSpace`] (page cache and `i_mmap`), `get_file`/`fput`.
//! - [`mmap`]: `mmap`, `brk`, splitting and merging VMAs.
//! - [`unmap`]: `munmap`, `exit_mmap`, and the seed's `free_pgtables` / `remove_vma`.
//! - [`mprotect`]: `mprotect` and `change_protection`.
//! - [`mremap`]: `mremap`: shrink, grow in place, or move with the page-table entries.
//! - [`madvise`]: `madvise`: dropping pages, or changing `vm_flags` with splits and merges.
//! - [`mlock`]: `mlock`/`mlock2`/`munlock`, `msync`, and populating ranges (`MAP_POPULATE`).
//! - [`mincore`]: `mincore`, which pages of a range are resident.
//! - [`fault`]: `handle_mm_fault` (anonymous, file, copy-on-write).
//! - [`rmap`]: `rmap_walk`, `page_referenced`, `try_to_unmap`.
//! - [`truncate`]: `vmtruncate`, `unmap_mapping_range`.
//! - [`validate`]: `validate_mm`, every invariant as a list of violations.
//! - [`error`]: one error enum per operation.
//! - [`layout`]: the `#[repr(C)]` layouts the host reads, pinned by compile-time assertions.
//! - [`i_mmap`]: the locked interval tree of a file's VMAs; [`lock`]: the embedded spinlocks.

pub mod anon;
pub mod error;
pub mod fault;
pub mod file;
pub mod fork;
#[allow(unsafe_code)]
pub mod i_mmap;
#[allow(unsafe_code)]
pub mod kobj;
pub mod layout;
pub mod lock;
pub mod madvise;
pub mod mincore;
pub mod mlock;
pub mod mm_struct;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod rmap;
pub mod truncate;
pub mod unmap;
pub mod validate;
pub mod vma;

pub use anon::{AnonVma, AnonVmaPtr};
pub use error::{
    BrkError, Errno, FaultError, FileError, ForkError, MadviseError, MincoreError, MlockError,
    MmNewError, MmapError, MprotectError, MremapError, MsyncError, MunmapError,
};
pub use fault::Access;
pub use file::{fput, get_file, iput, AddressSpace, File, FilePtr, MappingPtr, VmOps};
pub use kobj::KPtr;
pub use madvise::Advice;
pub use mm_struct::{Mm, MmStruct, DEFAULT_MAX_MAP_COUNT};
pub use mremap::MremapFlags;
pub use validate::Violation;
pub use vma::{MapFlags, Prot, VmFlags, Vma, VmaPtr};

#[cfg(test)]
mod tests;
