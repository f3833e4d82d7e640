//! `i_mmap`: the augmented interval tree of the VMAs mapping a file, keyed by page offset.
//!
//! Every access goes through an [`IMmapGuard`], which holds the file's `i_mmap_lock`: that is what
//! makes the tree's `&mut` (insert, remove) and `&` (queries) accesses exclusive of each other.
//! This file is the only one that touches the tree or the nodes embedded in VMAs (`Vma::shared`).

use alloc::vec::Vec;
use core::mem::offset_of;

use crate::interval_tree::{node_of, owner_of, IntervalTreeRoot};
use crate::kernel::Kernel;
use crate::mm::file::AddressSpace;
use crate::mm::kobj::KPtr;
use crate::mm::lock::MmLockGuard;
use crate::mm::vma::{Vma, VmaPtr};

/// Byte offset of the interval-tree node in a `Vma`.
const SHARED: usize = offset_of!(Vma, shared);

/// A file's `i_mmap`, locked.
pub struct IMmapGuard<'a> {
    mapping: &'a AddressSpace,
    _lock: MmLockGuard<'a>,
}

impl<'a> IMmapGuard<'a> {
    /// Takes `mapping`'s `i_mmap_lock`.
    pub fn lock(k: &'a Kernel<'_>, mapping: &'a AddressSpace) -> Self {
        Self {
            _lock: mapping.i_mmap_lock.lock(k),
            mapping,
        }
    }

    fn tree(&self) -> &IntervalTreeRoot {
        // SAFETY: the tree is only reached through a guard, and the guard holds i_mmap_lock, so no
        // `&mut` from `tree_mut` of another guard can coexist with this borrow of `self`.
        unsafe { &*self.mapping.i_mmap.get() }
    }

    fn tree_mut(&mut self) -> &mut IntervalTreeRoot {
        // SAFETY: as in `tree`; `&mut self` also excludes this guard's own shared borrows.
        unsafe { &mut *self.mapping.i_mmap.get() }
    }

    /// VMAs mapping any page offset in `[first, last]`, in O(log n + k).
    pub fn vmas_overlapping(&self, first: u64, last: u64) -> Vec<VmaPtr> {
        self.tree()
            .query(first, last)
            // SAFETY: every node in an i_mmap tree is the `shared` field of a live Vma, inserted
            // through `node_of` on a pointer to the whole Vma (see `insert`).
            .map(|n| KPtr::from_nonnull(unsafe { owner_of::<Vma>(n, SHARED) }))
            .collect()
    }

    /// Every VMA in the tree.
    pub fn vmas(&self) -> Vec<VmaPtr> {
        self.vmas_overlapping(0, u64::MAX)
    }

    /// Number of VMAs in the tree.
    pub fn len(&self) -> u64 {
        self.tree().len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.tree().is_empty()
    }

    /// Whether `vma` is linked (in this tree: a VMA is only ever in its own file's).
    pub fn contains(&self, vma: VmaPtr) -> bool {
        // SAFETY: only reads the node's atomics; its writers hold this lock.
        unsafe { &*vma.get().shared.get() }.is_linked()
    }

    /// Inserts `vma` under `[vm_pgoff, last page offset]`; it must not be linked.
    pub fn insert(&mut self, vma: VmaPtr) {
        let v = vma.get();
        // SAFETY: the node is unlinked (checked by set_range, which refuses linked nodes), so no
        // tree refers to it, and the VMA's other users never touch `shared`: this is the only
        // reference to the node.
        let keyed = unsafe { &mut *v.shared.get() }.set_range(v.pgoff(), v.last_pgoff());
        assert!(keyed.is_some(), "i_mmap insert of a linked VMA");
        // SAFETY: (1) VMAs live at a fixed heap address until remove_vma, which runs only after
        // unlink_file_vma removed the node (Invariant 7); (2) the node is written only by this tree
        // from now on; (3) it is derived from a pointer to the whole Vma.
        let r = unsafe { self.tree_mut().insert(node_of(vma.as_nonnull(), SHARED)) };
        assert!(r.is_ok(), "i_mmap insert of a linked VMA");
    }

    /// How many tree invariants (order, colours, `subtree_last` augmentation) are broken.
    pub fn violations(&self) -> usize {
        self.tree().validate().len()
    }

    /// Removes `vma`; `false` if it was not linked.
    pub fn remove(&mut self, vma: VmaPtr) -> bool {
        // SAFETY: (1) the VMA is live; (2) a VMA is only ever linked in its own file's tree.
        unsafe { self.tree_mut().remove(node_of(vma.as_nonnull(), SHARED)) }.is_ok()
    }
}
