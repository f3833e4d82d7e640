//! The augmented interval tree behind each file's `i_mmap` (Linux: `vma_interval_tree`).
//!
//! Protocol: the tree is intrusive. Each owner (a VMA) embeds an [`IntervalNode`] keyed by the
//! closed page-offset interval `[vm_pgoff, vm_pgoff + pages - 1]`; the tree links nodes by address
//! and never allocates. Linking is `unsafe` because the tree keeps raw addresses: from
//! [`IntervalTreeRoot::insert`] until [`IntervalTreeRoot::remove`], the node must stay where it is,
//! stay alive, and be reached by its owner only through shared references or raw pointers (the tree
//! rewrites the links inside it). Mutation takes `&mut IntervalTreeRoot`, so the caller's lock
//! (`i_mmap_lock`) decides who may write; queries take `&self` and may run side by side.
//!
//! The tree is red-black, as in Linux, ordered by `start` (equal starts go right). Each node also
//! stores `subtree_last`, the largest `last` in its subtree, which lets [`IntervalTreeRoot::query`]
//! skip every subtree that ends before the query begins: O(log n + k) for k overlaps.
//! [`IntervalTreeRoot::validate`] checks every invariant and returns what it finds.
//!
//! # Layout (read by the host)
//!
//! A VMM walks this tree by reading guest memory, so [`IntervalNode`] and [`IntervalTreeRoot`] are
//! `#[repr(C)]` and built only from 8-byte integers (`AtomicU64` has the layout of `u64`); every
//! bit pattern is a valid value, so the host may copy one out of guest memory and use the getters.
//! Links are guest-virtual addresses of other nodes, 0 for none.
//!
//! | offset | field          | meaning                                           |
//! |-------:|----------------|---------------------------------------------------|
//! |      0 | `left`         | left child (smaller `start`)                      |
//! |      8 | `right`        | right child (`start` greater or equal)            |
//! |     16 | `parent`       | parent, 0 at the root                             |
//! |     24 | `subtree_last` | largest `last` in this node's subtree             |
//! |     32 | `start`        | first page offset covered                         |
//! |     40 | `last`         | last page offset covered (closed interval)        |
//! |     48 | `color`        | [`IntervalNode::UNLINKED`], `RED` or `BLACK`      |
//!
//! `IntervalTreeRoot` is `root` (address of the root node, 0 when empty), then `count`.
//!
//! # Embedding
//!
//! ```
//! use core::mem::offset_of;
//! use core::ptr::NonNull;
//! use mm_core::interval_tree::{node_of, owner_of, IntervalNode, IntervalTreeRoot};
//!
//! struct Vma { vm_pgoff: u64, shared: IntervalNode }
//! const SHARED: usize = offset_of!(Vma, shared);
//!
//! let vma = Box::new(Vma { vm_pgoff: 4, shared: IntervalNode::new(4, 7) });
//! let vma = NonNull::from(Box::leak(vma));
//! let mut i_mmap = IntervalTreeRoot::new();
//! // SAFETY: the node is derived from a pointer to the whole Vma, which is leaked, so it stays put
//! // and alive while linked.
//! unsafe { i_mmap.insert(node_of(vma, SHARED)) }.expect("a new node is unlinked");
//! for node in i_mmap.query(6, 9) {
//!     // SAFETY: every node in `i_mmap` is the `shared` field of a Vma.
//!     let owner: NonNull<Vma> = unsafe { owner_of(node, SHARED) };
//!     // SAFETY: the Vma is alive and only shared.
//!     assert_eq!(unsafe { owner.as_ref() }.vm_pgoff, 4);
//! }
//! ```

mod rebalance;
mod validate;

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

pub use validate::TreeViolation;

/// The links of one interval in an [`IntervalTreeRoot`], embedded in its owner (a VMA).
///
/// Links are atomics only for interior mutability: the tree rewrites them while the owner is
/// shared. The caller's lock orders every access, so they are all `Relaxed`.
#[repr(C)]
#[derive(Debug)]
pub struct IntervalNode {
    left: AtomicU64,
    right: AtomicU64,
    parent: AtomicU64,
    subtree_last: AtomicU64,
    start: u64,
    last: u64,
    color: AtomicU64,
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IntervalNode>() == 7 * 8 && align_of::<IntervalNode>() == 8);
    assert!(offset_of!(IntervalNode, left) == 0 && offset_of!(IntervalNode, right) == 8);
    assert!(offset_of!(IntervalNode, parent) == 16 && offset_of!(IntervalNode, subtree_last) == 24);
    assert!(offset_of!(IntervalNode, start) == 32 && offset_of!(IntervalNode, last) == 40);
    assert!(offset_of!(IntervalNode, color) == 48);
    assert!(size_of::<IntervalTreeRoot>() == 2 * 8);
};

/// The address a link stores for `node`.
fn addr_of(node: &IntervalNode) -> u64 {
    ptr::from_ref(node).addr() as u64
}

/// The node a link points at.
///
/// Invariant (kept by `insert`'s contract and by this module): every non-zero link reachable from
/// an [`IntervalTreeRoot`] is the address of a live, unmoving [`IntervalNode`] linked in that tree.
fn link<'a>(addr: u64) -> Option<&'a IntervalNode> {
    #[cfg(test)]
    tests::LINKS_FOLLOWED.with(|n| n.set(n.get() + 1));
    let ptr = ptr::with_exposed_provenance::<IntervalNode>(addr as usize);
    // SAFETY: by the invariant above, a non-zero link is a live node whose address `insert`
    // exposed; nodes are only mutated through their atomics, so a shared reference is sound.
    unsafe { ptr.as_ref() }
}

impl IntervalNode {
    /// `color` of a node in no tree.
    pub const UNLINKED: u64 = 0;
    /// `color` of a red node.
    pub const RED: u64 = 1;
    /// `color` of a black node.
    pub const BLACK: u64 = 2;

    /// An unlinked node for the closed interval `[start, last]`; `start > last` is swapped.
    pub const fn new(start: u64, last: u64) -> Self {
        let (start, last) = if start <= last {
            (start, last)
        } else {
            (last, start)
        };
        IntervalNode {
            left: AtomicU64::new(0),
            right: AtomicU64::new(0),
            parent: AtomicU64::new(0),
            subtree_last: AtomicU64::new(last),
            start,
            last,
            color: AtomicU64::new(Self::UNLINKED),
        }
    }

    /// Re-keys an unlinked node to `[start, last]`; `None` (and no change) if it is linked or
    /// `start > last`.
    pub fn set_range(&mut self, start: u64, last: u64) -> Option<()> {
        if self.is_linked() || start > last {
            return None;
        }
        (self.start, self.last) = (start, last);
        *self.subtree_last.get_mut() = last;
        Some(())
    }

    /// First page offset of the interval.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Last page offset of the interval (inclusive).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Largest `last` in this node's subtree.
    pub fn subtree_last(&self) -> u64 {
        self.subtree_last.load(Ordering::Relaxed)
    }

    /// Address of the left child, 0 for none.
    pub fn left_addr(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Address of the right child, 0 for none.
    pub fn right_addr(&self) -> u64 {
        self.right.load(Ordering::Relaxed)
    }

    /// Address of the parent, 0 at the root (and when unlinked).
    pub fn parent_addr(&self) -> u64 {
        self.parent.load(Ordering::Relaxed)
    }

    /// The raw color: [`Self::UNLINKED`], [`Self::RED`] or [`Self::BLACK`].
    pub fn color(&self) -> u64 {
        self.color.load(Ordering::Relaxed)
    }

    /// True while the node is in a tree.
    pub fn is_linked(&self) -> bool {
        self.color() != Self::UNLINKED
    }

    /// True when `[start, last]` and this interval share a page offset.
    pub fn overlaps(&self, start: u64, last: u64) -> bool {
        self.start <= last && start <= self.last
    }

    fn left(&self) -> Option<&IntervalNode> {
        link(self.left_addr())
    }

    fn right(&self) -> Option<&IntervalNode> {
        link(self.right_addr())
    }

    fn parent(&self) -> Option<&IntervalNode> {
        link(self.parent_addr())
    }

    fn is_red(&self) -> bool {
        self.color() == Self::RED
    }

    /// `max(last, children's subtree_last)`: what `subtree_last` should be.
    fn compute_subtree_last(&self) -> u64 {
        let left = self.left().map_or(0, IntervalNode::subtree_last);
        let right = self.right().map_or(0, IntervalNode::subtree_last);
        self.last.max(left).max(right)
    }
}

/// Why a node could not be linked or unlinked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// `insert` was given a node that is already in a tree.
    AlreadyLinked,
    /// `remove` was given a node that is in no tree.
    NotLinked,
}

/// The root of an interval tree (Linux: `mapping->i_mmap`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct IntervalTreeRoot {
    root: u64,
    count: u64,
}

impl IntervalTreeRoot {
    /// An empty tree.
    pub const fn new() -> Self {
        IntervalTreeRoot { root: 0, count: 0 }
    }

    /// Address of the root node, 0 when the tree is empty.
    pub fn root_addr(&self) -> u64 {
        self.root
    }

    /// Number of nodes linked.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when no node is linked.
    pub fn is_empty(&self) -> bool {
        self.root == 0
    }

    fn root(&self) -> Option<&IntervalNode> {
        link(self.root)
    }

    /// Links `node` into the tree under its `[start, last]`.
    ///
    /// Returns [`LinkError::AlreadyLinked`], changing nothing, if the node is in a tree.
    ///
    /// # Safety
    ///
    /// 1. `node` points to a live `IntervalNode` that stays at this address and alive until it is
    ///    removed from this tree.
    /// 2. Until then, nobody holds a `&mut` to the node (or to an owner containing it) and nobody
    ///    writes it except through this tree.
    /// 3. To recover the owner with [`owner_of`], derive `node` from a pointer to the whole owner
    ///    (for example with [`node_of`]), not from a reference to the field alone.
    pub unsafe fn insert(&mut self, node: NonNull<IntervalNode>) -> Result<(), LinkError> {
        // Expose the caller's provenance so links turned back into pointers may reach the owner.
        let node_addr = node.as_ptr().expose_provenance() as u64;
        // SAFETY: precondition 1 makes the node live; precondition 2 means no `&mut` aliases it,
        // and all writes below go through its atomics.
        let node = unsafe { node.as_ref() };
        if node.is_linked() {
            return Err(LinkError::AlreadyLinked);
        }
        debug_assert_eq!(addr_of(node), node_addr);
        rebalance::insert(self, node);
        self.count += 1;
        Ok(())
    }

    /// Unlinks `node` from the tree; afterwards it is unlinked and may move or be freed.
    ///
    /// Returns [`LinkError::NotLinked`], changing nothing, if the node is in no tree.
    ///
    /// # Safety
    ///
    /// 1. `node` points to a live `IntervalNode`.
    /// 2. If the node is linked, it is linked in this tree (not in another one).
    pub unsafe fn remove(&mut self, node: NonNull<IntervalNode>) -> Result<(), LinkError> {
        // SAFETY: precondition 1 makes the node live; while it is linked, `insert`'s contract
        // forbids a `&mut` to it, and unlinked nodes are only read here.
        let node = unsafe { node.as_ref() };
        if !node.is_linked() {
            return Err(LinkError::NotLinked);
        }
        rebalance::erase(self, node);
        self.count -= 1;
        for field in [&node.left, &node.right, &node.parent] {
            field.store(0, Ordering::Relaxed);
        }
        node.subtree_last.store(node.last, Ordering::Relaxed);
        node.color.store(IntervalNode::UNLINKED, Ordering::Relaxed);
        Ok(())
    }

    /// Every node whose interval overlaps `[start, last]`, in order of `start`
    /// (Linux: `vma_interval_tree_foreach`).
    pub fn query(&self, start: u64, last: u64) -> Overlaps<'_> {
        let first = self
            .root()
            .filter(|root| start <= root.subtree_last())
            .and_then(|root| subtree_search(root, start, last));
        Overlaps {
            next: first,
            start,
            last,
            _tree: self,
        }
    }

    /// Every node, in order of `start`.
    pub fn iter(&self) -> Overlaps<'_> {
        self.query(0, u64::MAX)
    }
}

/// The leftmost node under `node` overlapping `[start, last]`.
///
/// Why the pruning is right: nodes to the left have smaller starts, so if anything there overlaps
/// it comes first, and a subtree whose `subtree_last < start` ends before the query; once a node
/// starts after `last`, so does everything to its right.
fn subtree_search(mut node: &IntervalNode, start: u64, last: u64) -> Option<&IntervalNode> {
    loop {
        if let Some(left) = node.left().filter(|left| start <= left.subtree_last()) {
            node = left;
            continue;
        }
        if node.start > last {
            return None;
        }
        if start <= node.last {
            return Some(node);
        }
        node = node.right().filter(|right| start <= right.subtree_last())?;
    }
}

/// The in-order successor of `node` that overlaps `[start, last]`; `node.start <= last` on entry.
fn next_overlap(mut node: &IntervalNode, start: u64, last: u64) -> Option<&IntervalNode> {
    loop {
        if let Some(right) = node.right().filter(|right| start <= right.subtree_last()) {
            return subtree_search(right, start, last);
        }
        // Climb until we come up from a left child: that parent is the next node in order.
        loop {
            let parent = node.parent()?;
            let from_right = parent.right_addr() == addr_of(node);
            node = parent;
            if !from_right {
                break;
            }
        }
        if node.start > last {
            return None;
        }
        if start <= node.last {
            return Some(node);
        }
    }
}

/// Iterator over the nodes overlapping a range, from [`IntervalTreeRoot::query`].
pub struct Overlaps<'a> {
    next: Option<&'a IntervalNode>,
    start: u64,
    last: u64,
    _tree: &'a IntervalTreeRoot,
}

impl Iterator for Overlaps<'_> {
    type Item = NonNull<IntervalNode>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.next?;
        self.next = next_overlap(node, self.start, self.last);
        // Rebuild the pointer from the address `insert` exposed, so it carries the caller's
        // provenance (and may reach the owner), not that of a shared reference to the node alone.
        NonNull::new(ptr::with_exposed_provenance_mut(addr_of(node) as usize))
    }
}

/// The node embedded at byte `offset` in `owner` (use `core::mem::offset_of!`).
///
/// # Safety
///
/// `owner` points to a live `T` that has an `IntervalNode` field at byte `offset`.
pub unsafe fn node_of<T>(owner: NonNull<T>, offset: usize) -> NonNull<IntervalNode> {
    // SAFETY: by the contract the field lies inside the `T`, so the offset stays in bounds, and the
    // result keeps `owner`'s provenance over the whole `T`.
    unsafe { owner.byte_add(offset).cast() }
}

/// The owner whose `IntervalNode` field at byte `offset` is `node` (Linux: `container_of`).
///
/// # Safety
///
/// `node` is the field at byte `offset` of a live `T`, and was derived from a pointer to that whole
/// `T` (as [`node_of`] does, and as nodes yielded by a tree are when inserted that way).
pub unsafe fn owner_of<T>(node: NonNull<IntervalNode>, offset: usize) -> NonNull<T> {
    // SAFETY: by the contract, stepping back `offset` bytes lands on the start of the `T`, within
    // the allocation `node`'s provenance covers.
    unsafe { node.byte_sub(offset).cast() }
}

#[cfg(test)]
mod tests;
