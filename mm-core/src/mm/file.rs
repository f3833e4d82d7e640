//! Files: `AddressSpace` (the inode's page cache and `i_mmap`) and `File` (an open reference).
//!
//! `i_mmap` holds every VMA mapping the file, so truncate and rmap can find them: an augmented
//! interval tree (see [`crate::mm::i_mmap`]) of the nodes embedded in `Vma::shared`.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use crate::addr::PhysAddr;
use crate::cell::U64Cell;
use crate::hooks::{UnlinkKind, VmaUnlinkEvent};
use crate::interval_tree::IntervalTreeRoot;
use crate::kernel::Kernel;
use crate::lockdep::I_MMAP_LOCK;
use crate::mm::error::FileError;
use crate::mm::i_mmap::IMmapGuard;
use crate::mm::kobj::{list_add, list_del, KPtr, ListLink};
use crate::mm::lock::MmSpinLock;
use crate::mm::vma::{Vma, VmaPtr};
use crate::phys::{AllocKind, PageFlags};
use crate::sync::ArchSpinLock;

/// Handle to a [`File`].
pub type FilePtr = KPtr<File>;
/// Handle to an [`AddressSpace`].
pub type MappingPtr = KPtr<AddressSpace>;

/// Operations a mapping's owner provides (Linux's `vm_operations_struct`); only `close` here.
pub trait VmOps {
    /// Called by `remove_vma` for each VMA of the file being torn down.
    fn close(&self, vma: &Vma);
}

/// An inode's pages and mappings (Linux's `address_space`). The fields up to `i_count` are the ABI
/// the host reads; the page cache after them is private.
#[repr(C)]
pub struct AddressSpace {
    /// The interval tree of VMAs mapping the file (`IntervalTreeRoot`: root node address, count);
    /// reach it through [`IMmapGuard`].
    pub i_mmap: UnsafeCell<IntervalTreeRoot>,
    /// Pages in the page cache.
    pub nrpages: U64Cell,
    /// File size in pages.
    pub i_size_pages: U64Cell,
    /// References: the creator's plus one per open `File`.
    pub i_count: U64Cell,
    /// Links on the kernel's registry of all address_spaces (`KernelRoots::mappings`).
    pub all: ListLink,
    /// Protects `i_mmap` (kernel-private from here on; not part of the host ABI).
    pub i_mmap_lock: MmSpinLock,
    /// The page cache (Linux's radix tree under `tree_lock`): page offset → frame.
    cache: ArchSpinLock<BTreeMap<u64, PhysAddr>>,
}

impl core::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("nrpages", &self.nrpages)
            .field("i_size_pages", &self.i_size_pages)
            .field("i_count", &self.i_count)
            .finish_non_exhaustive()
    }
}

/// An open file (Linux's `struct file`); the ABI part is `f_count` and `f_mapping`.
#[repr(C)]
pub struct File {
    /// References: one per VMA mapping it plus the opener's.
    pub f_count: U64Cell,
    /// Address of the `AddressSpace`.
    pub f_mapping: U64Cell,
    vm_ops: Option<&'static dyn VmOps>,
    /// Opened for writing (`FMODE_WRITE`): a shared mapping may be writable.
    writable: bool,
}

impl AddressSpace {
    /// A file of `size_pages` pages with an empty page cache, one reference held by the caller
    /// (drop it with [`iput`]).
    pub fn create(k: &Kernel<'_>, size_pages: u64) -> Result<MappingPtr, FileError> {
        if !k.may_alloc(AllocKind::File) {
            return Err(FileError::NoMemory);
        }
        let m = KPtr::alloc(AddressSpace {
            i_mmap: UnsafeCell::new(IntervalTreeRoot::new()),
            nrpages: U64Cell::new(0),
            i_size_pages: U64Cell::new(size_pages),
            i_count: U64Cell::new(1),
            all: ListLink::default(),
            i_mmap_lock: MmSpinLock::new(&I_MMAP_LOCK),
            cache: ArchSpinLock::new(BTreeMap::new()),
        });
        let roots = k.roots();
        list_add(&roots.mappings, m, |x: &AddressSpace| &x.all);
        roots.nr_mappings.add(1);
        Ok(m)
    }

    /// Locks `i_mmap` for queries and updates.
    pub fn lock_i_mmap<'a>(&'a self, k: &'a Kernel<'_>) -> IMmapGuard<'a> {
        IMmapGuard::lock(k, self)
    }

    /// The cached page at `pgoff`.
    pub fn find_get_page(&self, pgoff: u64) -> Option<PhysAddr> {
        self.cache.lock().get(&pgoff).copied()
    }

    /// Calls `f` with each offset in `range` that has a page in the cache, in order, under one
    /// hold of the cache's lock.
    pub(crate) fn for_each_cached(&self, range: core::ops::Range<u64>, mut f: impl FnMut(u64)) {
        for (&pgoff, _) in self.cache.lock().range(range) {
            f(pgoff);
        }
    }

    /// The cached pages at or after `pgoff`.
    pub(crate) fn cached_from(&self, pgoff: u64) -> Vec<(u64, PhysAddr)> {
        self.cache
            .lock()
            .range(pgoff..)
            .map(|(o, p)| (*o, *p))
            .collect()
    }

    /// The page at `pgoff`, read into the cache (zero-filled) on a miss; `None` if no frame.
    pub(crate) fn find_or_create_page(&self, k: &Kernel<'_>, pgoff: u64) -> Option<PhysAddr> {
        // Held across the allocation, so two faults on the same offset cannot both add a page.
        let mut cache = self.cache.lock();
        if let Some(p) = cache.get(&pgoff) {
            return Some(*p);
        }
        let frame = k.alloc_frame(AllocKind::DataPage)?;
        let page = k.page(frame);
        page.flags.set(page.flags.get() | PageFlags::PAGECACHE.0);
        page.mapping.set(self as *const Self as u64);
        page.index.set(pgoff);
        page.refcount.set(1);
        cache.insert(pgoff, frame);
        self.nrpages.add(1);
        Some(frame)
    }

    /// Removes the cached page at `pgoff` and drops the cache's reference (a mapped page lives on
    /// until its last mapping goes).
    pub(crate) fn delete_from_page_cache(&self, k: &Kernel<'_>, pgoff: u64) {
        let removed = self.cache.lock().remove(&pgoff);
        let Some(frame) = removed else {
            return;
        };
        self.nrpages.sub(1);
        let page = k.page(frame);
        page.mapping.set(0);
        page.flags.set(page.flags.get() & !PageFlags::PAGECACHE.0);
        k.put_page(frame);
    }

    /// Writes `value` at byte `offset` of page `pgoff` (as a `write()` system call would).
    pub fn write_byte(
        &self,
        k: &Kernel<'_>,
        pgoff: u64,
        offset: u64,
        value: u8,
    ) -> Result<(), FileError> {
        let frame = self
            .find_or_create_page(k, pgoff)
            .ok_or(FileError::NoMemory)?;
        k.write_byte(frame, offset, value);
        Ok(())
    }
}

/// Drops a reference to `mapping`; the last one empties the page cache and frees it.
#[allow(unsafe_code)] // frees an object after its last unlink
pub fn iput(k: &Kernel<'_>, mapping: MappingPtr) {
    let m = mapping.get();
    if m.i_count.sub(1) != 0 {
        return;
    }
    assert!(m.lock_i_mmap(k).is_empty(), "iput of a file still mapped");
    for (pgoff, _) in m.cached_from(0) {
        m.delete_from_page_cache(k, pgoff);
    }
    let roots = k.roots();
    list_del(&roots.mappings, mapping, |x: &AddressSpace| &x.all);
    roots.nr_mappings.sub(1);
    // SAFETY: Invariant 7: no File (each holds a reference) and no VMA (i_mmap is empty) refers to
    // it, and its pages' mappings were cleared above.
    unsafe { mapping.free() };
}

impl File {
    /// Opens `mapping`, with `vm_ops` called for its VMAs; one reference held by the caller (drop it
    /// with [`fput`]).
    pub fn open(
        k: &Kernel<'_>,
        mapping: MappingPtr,
        vm_ops: Option<&'static dyn VmOps>,
    ) -> Result<FilePtr, FileError> {
        Self::open_mode(k, mapping, vm_ops, true)
    }

    /// Opens `mapping` read-only (`O_RDONLY`): a shared mapping of it can never be writable.
    pub fn open_read_only(
        k: &Kernel<'_>,
        mapping: MappingPtr,
        vm_ops: Option<&'static dyn VmOps>,
    ) -> Result<FilePtr, FileError> {
        Self::open_mode(k, mapping, vm_ops, false)
    }

    fn open_mode(
        k: &Kernel<'_>,
        mapping: MappingPtr,
        vm_ops: Option<&'static dyn VmOps>,
        writable: bool,
    ) -> Result<FilePtr, FileError> {
        if !k.may_alloc(AllocKind::File) {
            return Err(FileError::NoMemory);
        }
        mapping.get().i_count.add(1);
        Ok(KPtr::alloc(File {
            f_count: U64Cell::new(1),
            f_mapping: U64Cell::new(mapping.addr()),
            vm_ops,
            writable,
        }))
    }

    /// Whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The file's address_space.
    pub fn mapping(&self) -> MappingPtr {
        match KPtr::from_addr(self.f_mapping.get()) {
            Some(m) => m,
            None => panic!("file without a mapping"),
        }
    }

    /// The mapping's operations.
    pub fn vm_ops(&self) -> Option<&'static dyn VmOps> {
        self.vm_ops
    }
}

/// Takes another reference to `file`.
pub fn get_file(file: FilePtr) {
    file.get().f_count.add(1);
}

/// Drops a reference to `file`; the last one releases its address_space and frees it.
#[allow(unsafe_code)] // frees an object after its last unlink
pub fn fput(k: &Kernel<'_>, file: FilePtr) {
    if file.get().f_count.sub(1) != 0 {
        return;
    }
    let mapping = file.get().mapping();
    // SAFETY: Invariant 7: the count is zero, so no VMA (each holds one) and no opener refers to it.
    unsafe { file.free() };
    iput(k, mapping);
}

/// Puts a file-backed `vma` into its file's `i_mmap` (Linux's `__vma_link_file`).
pub(crate) fn vma_link_file(k: &Kernel<'_>, vma: VmaPtr) {
    let Some(file) = vma.get().file() else { return };
    let m = file.get().mapping();
    m.get().lock_i_mmap(k).insert(vma);
}

/// Unlinks a file-based VMA from its file's `i_mmap`, to hide it from rmap and vmtruncate before
/// freeing its page tables. Idempotent.
pub fn unlink_file_vma(k: &Kernel<'_>, vma: VmaPtr) {
    let v = vma.get();
    let Some(file) = v.file() else { return };
    let m = file.get().mapping();
    let mut i_mmap = m.get().lock_i_mmap(k);
    if !i_mmap.remove(vma) {
        return;
    }
    k.hooks().vma_unlinked(
        k,
        &VmaUnlinkEvent {
            mm: v.vm_mm.get(),
            vma: vma.addr(),
            start: v.start(),
            end: v.end(),
            kind: UnlinkKind::File,
        },
    );
}

/// Re-keys a linked file VMA after its range changed (`set_end` does the change in between).
pub(crate) fn vma_rekey_file(k: &Kernel<'_>, vma: VmaPtr, set_end: impl FnOnce()) {
    let Some(file) = vma.get().file() else {
        set_end();
        return;
    };
    let m = file.get().mapping();
    let mut i_mmap = m.get().lock_i_mmap(k);
    let linked = i_mmap.remove(vma);
    set_end();
    if linked {
        i_mmap.insert(vma);
    }
}

/// Whether `vma` is reachable from its file's `i_mmap` (validate_mm and tests).
pub fn is_in_i_mmap(k: &Kernel<'_>, vma: VmaPtr) -> bool {
    match vma.get().file() {
        Some(f) => f.get().mapping().get().lock_i_mmap(k).vmas().contains(&vma),
        None => false,
    }
}
