//! Files: `AddressSpace` (the inode's page cache and `i_mmap`) and `File` (an open reference).
//!
//! `i_mmap` holds every VMA mapping the file, so truncate and rmap can find them. It is kept here as
//! an intrusive doubly linked list through `Vma::shared` (an O(n) overlap query) until the
//! augmented interval tree of `crate::interval_tree` is wired in: only [`vma_link_file`],
//! [`unlink_file_vma`] and [`AddressSpace::vmas_overlapping`] touch it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::addr::PhysAddr;
use crate::cell::U64Cell;
use crate::hooks::{UnlinkKind, VmaUnlinkEvent};
use crate::kernel::Kernel;
use crate::lockdep::I_MMAP_LOCK;
use crate::mm::error::FileError;
use crate::mm::kobj::{addr_of, list_add, list_del, KPtr, ListLink};
use crate::mm::lock::MmSpinLock;
use crate::mm::vma::{Vma, VmaPtr};
use crate::phys::{AllocKind, PageFlags};

/// Handle to a [`File`].
pub type FilePtr = KPtr<File>;
/// Handle to an [`AddressSpace`].
pub type MappingPtr = KPtr<AddressSpace>;

/// A VMA's links in its file's `i_mmap`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ImmapNode {
    /// Next VMA in `i_mmap` (0 = last).
    pub next: U64Cell,
    /// Previous VMA in `i_mmap` (0 = first).
    pub prev: U64Cell,
}

/// Operations a mapping's owner provides (Linux's `vm_operations_struct`); only `close` here.
pub trait VmOps {
    /// Called by `remove_vma` for each VMA of the file being torn down.
    fn close(&self, vma: &Vma);
}

/// An inode's pages and mappings (Linux's `address_space`). The fields up to `i_count` are the ABI
/// the host reads; the page cache after them is private.
#[repr(C)]
#[derive(Debug)]
pub struct AddressSpace {
    /// First VMA in `i_mmap` (0 = none).
    pub i_mmap: U64Cell,
    /// VMAs in `i_mmap`.
    pub i_mmap_count: U64Cell,
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
    cache: RefCell<BTreeMap<u64, PhysAddr>>,
}

/// An open file (Linux's `struct file`); the ABI part is `f_count` and `f_mapping`.
#[repr(C)]
pub struct File {
    /// References: one per VMA mapping it plus the opener's.
    pub f_count: U64Cell,
    /// Address of the `AddressSpace`.
    pub f_mapping: U64Cell,
    vm_ops: Option<&'static dyn VmOps>,
}

impl AddressSpace {
    /// A file of `size_pages` pages with an empty page cache, one reference held by the caller
    /// (drop it with [`iput`]).
    pub fn create(k: &Kernel<'_>, size_pages: u64) -> Result<MappingPtr, FileError> {
        if !k.may_alloc(AllocKind::File) {
            return Err(FileError::NoMemory);
        }
        let m = KPtr::alloc(AddressSpace {
            i_mmap: U64Cell::new(0),
            i_mmap_count: U64Cell::new(0),
            nrpages: U64Cell::new(0),
            i_size_pages: U64Cell::new(size_pages),
            i_count: U64Cell::new(1),
            all: ListLink::default(),
            i_mmap_lock: MmSpinLock::new(&I_MMAP_LOCK),
            cache: RefCell::new(BTreeMap::new()),
        });
        let roots = k.roots();
        list_add(&roots.mappings, m, |x: &AddressSpace| &x.all);
        roots.nr_mappings.add(1);
        Ok(m)
    }

    /// VMAs in `i_mmap` mapping any page offset in `[first, last]`.
    pub fn vmas_overlapping(&self, first: u64, last: u64) -> Vec<VmaPtr> {
        self.i_mmap_vmas()
            .filter(|v| v.get().pgoff() <= last && v.get().last_pgoff() >= first)
            .collect()
    }

    /// Every VMA in `i_mmap`.
    pub fn i_mmap_vmas(&self) -> impl Iterator<Item = VmaPtr> {
        core::iter::successors(KPtr::from_addr(self.i_mmap.get()), |v: &VmaPtr| {
            KPtr::from_addr(v.get().shared.next.get())
        })
    }

    /// The cached page at `pgoff`.
    pub fn find_get_page(&self, pgoff: u64) -> Option<PhysAddr> {
        self.cache.borrow().get(&pgoff).copied()
    }

    /// The cached pages at or after `pgoff`.
    pub(crate) fn cached_from(&self, pgoff: u64) -> Vec<(u64, PhysAddr)> {
        self.cache
            .borrow()
            .range(pgoff..)
            .map(|(o, p)| (*o, *p))
            .collect()
    }

    /// The page at `pgoff`, read into the cache (zero-filled) on a miss; `None` if no frame.
    pub(crate) fn find_or_create_page(&self, k: &Kernel<'_>, pgoff: u64) -> Option<PhysAddr> {
        if let Some(p) = self.find_get_page(pgoff) {
            return Some(p);
        }
        let frame = k.alloc_frame(AllocKind::DataPage)?;
        let page = k.page(frame);
        page.flags.set(page.flags.get() | PageFlags::PAGECACHE.0);
        page.mapping.set(self as *const Self as u64);
        page.index.set(pgoff);
        page.refcount.set(1);
        self.cache.borrow_mut().insert(pgoff, frame);
        self.nrpages.add(1);
        Some(frame)
    }

    /// Removes the cached page at `pgoff` and drops the cache's reference (a mapped page lives on
    /// until its last mapping goes).
    pub(crate) fn delete_from_page_cache(&self, k: &Kernel<'_>, pgoff: u64) {
        let Some(frame) = self.cache.borrow_mut().remove(&pgoff) else {
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
pub fn iput(k: &Kernel<'_>, mapping: MappingPtr) {
    let m = mapping.get();
    if m.i_count.sub(1) != 0 {
        return;
    }
    assert_eq!(m.i_mmap.get(), 0, "iput of a file still mapped");
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
        if !k.may_alloc(AllocKind::File) {
            return Err(FileError::NoMemory);
        }
        mapping.get().i_count.add(1);
        Ok(KPtr::alloc(File {
            f_count: U64Cell::new(1),
            f_mapping: U64Cell::new(mapping.addr()),
            vm_ops,
        }))
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
    let v = vma.get();
    let Some(file) = v.file() else { return };
    let m = file.get().mapping();
    let m = m.get();
    let _guard = m.i_mmap_lock.lock(k);
    let head: Option<VmaPtr> = KPtr::from_addr(m.i_mmap.get());
    v.shared.prev.set(0);
    v.shared.next.set(addr_of(head));
    if let Some(h) = head {
        h.get().shared.prev.set(vma.addr());
    }
    m.i_mmap.set(vma.addr());
    m.i_mmap_count.add(1);
}

fn in_i_mmap(m: &AddressSpace, vma: VmaPtr) -> bool {
    m.i_mmap.get() == vma.addr() || vma.get().shared.prev.get() != 0
}

/// Unlinks a file-backed VMA from its file's `i_mmap`, to hide it from rmap and vmtruncate before
/// its page tables are freed. Idempotent.
pub fn unlink_file_vma(k: &Kernel<'_>, vma: VmaPtr) {
    let v = vma.get();
    let Some(file) = v.file() else { return };
    let m = file.get().mapping();
    let m = m.get();
    let _guard = m.i_mmap_lock.lock(k);
    if !in_i_mmap(m, vma) {
        return;
    }
    let prev: Option<VmaPtr> = KPtr::from_addr(v.shared.prev.get());
    let next: Option<VmaPtr> = KPtr::from_addr(v.shared.next.get());
    match prev {
        Some(p) => p.get().shared.next.set(addr_of(next)),
        None => m.i_mmap.set(addr_of(next)),
    }
    if let Some(n) = next {
        n.get().shared.prev.set(addr_of(prev));
    }
    v.shared.next.set(0);
    v.shared.prev.set(0);
    m.i_mmap_count.sub(1);
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

/// Whether `vma` is reachable from its file's `i_mmap` (validate_mm and tests).
pub fn is_in_i_mmap(vma: VmaPtr) -> bool {
    match vma.get().file() {
        Some(f) => f.get().mapping().get().i_mmap_vmas().any(|x| x == vma),
        None => false,
    }
}
