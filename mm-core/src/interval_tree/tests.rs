//! Unit tests of the interval tree: the API, balance, validate() on corrupted trees, and random
//! operations checked against a brute-force model.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use proptest::prelude::*;

use super::*;

std::thread_local! {
    /// Links this thread has followed, to measure how much of the tree a query touches.
    pub(super) static LINKS_FOLLOWED: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// A stand-in for a VMA: an id plus the embedded node.
struct Owner {
    id: usize,
    node: IntervalNode,
}

const NODE: usize = offset_of!(Owner, node);

/// Owners that outlive the tree under test, freed when the arena drops.
struct Arena(Vec<NonNull<Owner>>);

impl Arena {
    fn new() -> Self {
        Arena(Vec::new())
    }

    fn add(&mut self, start: u64, last: u64) -> NonNull<IntervalNode> {
        let id = self.0.len();
        let owner = NonNull::from(Box::leak(Box::new(Owner {
            id,
            node: IntervalNode::new(start, last),
        })));
        self.0.push(owner);
        self.node(id)
    }

    fn node(&self, id: usize) -> NonNull<IntervalNode> {
        // SAFETY: every arena pointer is a live Owner, which has its node at NODE.
        unsafe { node_of(self.0[id], NODE) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for owner in self.0.drain(..) {
            // SAFETY: each pointer came from Box::leak and is freed once; tests drop the tree
            // (plain data) without touching nodes, so nothing reads them afterwards.
            drop(unsafe { Box::from_raw(owner.as_ptr()) });
        }
    }
}

fn id_of(node: NonNull<IntervalNode>) -> usize {
    // SAFETY: every node in these trees is the `node` field of an arena Owner, still alive.
    unsafe { owner_of::<Owner>(node, NODE).as_ref().id }
}

fn ids(iter: impl Iterator<Item = NonNull<IntervalNode>>) -> Vec<usize> {
    iter.map(id_of).collect()
}

fn insert(tree: &mut IntervalTreeRoot, arena: &Arena, id: usize) {
    // SAFETY: the arena keeps the owner alive and in place past the tree's last use.
    unsafe { tree.insert(arena.node(id)) }.expect("node was unlinked");
}

fn remove(tree: &mut IntervalTreeRoot, arena: &Arena, id: usize) {
    // SAFETY: the owner is alive and the node is linked only in `tree`, if at all.
    unsafe { tree.remove(arena.node(id)) }.expect("node was linked");
}

fn depth(node: Option<&IntervalNode>) -> u32 {
    node.map_or(0, |n| 1 + depth(n.left()).max(depth(n.right())))
}

#[test]
fn an_empty_tree_finds_nothing_and_validates() {
    let tree = IntervalTreeRoot::new();
    assert_eq!(tree.query(0, u64::MAX).count(), 0);
    assert!(tree.is_empty());
    assert_eq!(tree.validate(), []);
}

#[test]
fn a_query_finds_exactly_the_overlapping_intervals_in_start_order() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    for (start, last) in [(10, 19), (0, 4), (5, 9), (15, 15), (20, 29), (3, 30)] {
        arena.add(start, last);
    }
    for id in 0..6 {
        insert(&mut tree, &arena, id);
    }
    assert_eq!(ids(tree.query(9, 15)), [5, 2, 0, 3]);
    assert_eq!(ids(tree.query(31, 40)), [] as [usize; 0]);
    assert_eq!(ids(tree.query(4, 4)), [1, 5]);
    assert_eq!(ids(tree.iter()), [1, 5, 2, 0, 3, 4]);
    assert_eq!(tree.len(), 6);
    assert_eq!(tree.validate(), []);
}

#[test]
fn a_linked_node_cannot_be_inserted_twice_and_an_unlinked_one_cannot_be_removed() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    let node = arena.add(1, 2);
    insert(&mut tree, &arena, 0);
    // SAFETY: the arena keeps the node alive and in place.
    assert_eq!(unsafe { tree.insert(node) }, Err(LinkError::AlreadyLinked));
    remove(&mut tree, &arena, 0);
    // SAFETY: as above; the node is in no tree.
    assert_eq!(unsafe { tree.remove(node) }, Err(LinkError::NotLinked));
    assert_eq!((tree.len(), tree.validate()), (0, Vec::new()));
}

#[test]
fn a_removed_node_is_cleared_and_can_be_rekeyed_and_reinserted() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    for i in 0..3 {
        arena.add(i * 10, i * 10 + 5);
        insert(&mut tree, &arena, i as usize);
    }
    remove(&mut tree, &arena, 1);
    // SAFETY: the node is unlinked and the arena owns it exclusively now.
    let node = unsafe { arena.node(1).as_mut() };
    assert!(!node.is_linked());
    assert_eq!(
        (node.left_addr(), node.right_addr(), node.parent_addr()),
        (0, 0, 0)
    );
    assert_eq!(node.set_range(40, 41), Some(()));
    insert(&mut tree, &arena, 1);
    assert_eq!(ids(tree.query(40, 40)), [1]);
    assert_eq!(tree.validate(), []);
}

#[test]
fn a_linked_node_refuses_a_new_range() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    arena.add(1, 2);
    insert(&mut tree, &arena, 0);
    // SAFETY: the test breaks insert's "no &mut while linked" rule only to check that set_range
    // refuses; the tree is not used while this borrow lives.
    let node = unsafe { arena.node(0).as_mut() };
    assert_eq!(node.set_range(5, 6), None);
    assert_eq!((node.start(), node.last()), (1, 2));
}

#[test]
fn sorted_inserts_keep_the_tree_within_red_black_depth() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    let n = 1000u64;
    for i in 0..n {
        arena.add(i, i + 3);
        insert(&mut tree, &arena, i as usize);
    }
    // A red-black tree of n nodes is at most 2 * log2(n + 1) deep: 19 for 1000.
    assert!(
        depth(link(tree.root_addr())) <= 19,
        "depth {}",
        depth(link(tree.root_addr()))
    );
    assert_eq!(tree.validate(), []);
    for i in (0..n).step_by(2) {
        remove(&mut tree, &arena, i as usize);
    }
    assert!(depth(link(tree.root_addr())) <= 18);
    assert_eq!((tree.len(), tree.validate()), (n / 2, Vec::new()));
}

#[test]
fn a_query_touches_a_logarithmic_part_of_the_tree_plus_the_hits() {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    let n = 4096u64;
    for i in 0..n {
        arena.add(4 * i, 4 * i + 1);
        insert(&mut tree, &arena, i as usize);
    }
    // log2(4096) = 12, a red-black path is at most 2 * 13 deep, and each step follows a couple
    // of links; a walk of the whole tree would follow thousands.
    let measure = |start, last| {
        LINKS_FOLLOWED.with(|l| l.set(0));
        let hits = tree.query(start, last).count();
        (hits, LINKS_FOLLOWED.with(|l| l.get()))
    };
    let (hits, links) = measure(4000, 4000 + 4 * 9 + 1);
    assert_eq!(hits, 10);
    assert!(links <= 4 * 26 + 4 * 10, "{links} links for 10 hits");
    let (hits, links) = measure(2, 3);
    assert_eq!(hits, 0);
    assert!(links <= 4 * 26, "{links} links for a miss");
}

#[test]
fn the_host_view_of_a_node_matches_the_documented_layout() {
    let node = IntervalNode::new(7, 9);
    // SAFETY: IntervalNode is repr(C) of seven 8-byte integers, so it reads as [u64; 7].
    let words: [u64; 7] = unsafe { core::mem::transmute_copy(&node) };
    assert_eq!(words, [0, 0, 0, 9, 7, 9, IntervalNode::UNLINKED]);
}

/// A tree of 0..7 (start i, last i + 1) to corrupt.
fn corruptible() -> (Arena, IntervalTreeRoot) {
    let mut arena = Arena::new();
    let mut tree = IntervalTreeRoot::new();
    for i in 0..7 {
        arena.add(i * 10, i * 10 + 1);
        insert(&mut tree, &arena, i as usize);
    }
    assert_eq!(tree.validate(), []);
    (arena, tree)
}

#[test]
fn validate_reports_a_wrong_subtree_last() {
    let (_arena, tree) = corruptible();
    let root = link(tree.root_addr()).expect("tree has a root");
    root.subtree_last.store(5, Ordering::Relaxed);
    assert_eq!(
        tree.validate(),
        [TreeViolation::SubtreeLast {
            node: tree.root_addr(),
            stored: 5,
            expected: 61
        }]
    );
}

#[test]
fn validate_reports_broken_ordering() {
    let (arena, tree) = corruptible();
    // SAFETY: the owner is alive, and no reference to it or to the tree lives across this write.
    unsafe { (*arena.node(0).as_ptr()).start = 35 };
    let violations = tree.validate();
    assert!(
        violations.iter().any(|v| matches!(
            v,
            TreeViolation::Order {
                start: 10,
                previous_start: 35,
                ..
            }
        )),
        "{violations:?}"
    );
}

#[test]
fn validate_reports_a_wrong_parent_link_and_count() {
    let (arena, mut tree) = corruptible();
    let leaf = arena.node(6);
    // SAFETY: the owner is alive; only atomics are written.
    unsafe { leaf.as_ref() }.parent.store(0, Ordering::Relaxed);
    tree.count = 8;
    let leaf_addr = leaf.as_ptr().addr() as u64;
    let violations = tree.validate();
    let count = TreeViolation::Count {
        stored: 8,
        found: 7,
    };
    assert!(violations.contains(&count), "{violations:?}");
    assert!(
        violations.iter().any(|v| matches!(v,
            TreeViolation::ParentLink { node, stored: 0, .. } if *node == leaf_addr)),
        "{violations:?}"
    );
}

#[test]
fn validate_reports_broken_colors() {
    let (_arena, tree) = corruptible();
    let root = link(tree.root_addr()).expect("tree has a root");
    root.color.store(IntervalNode::RED, Ordering::Relaxed);
    let violations = tree.validate();
    assert!(
        violations.contains(&TreeViolation::RedRoot {
            node: tree.root_addr()
        }),
        "{violations:?}"
    );
    let left = root.left().expect("7 nodes: the root has a left child");
    left.color.store(IntervalNode::BLACK + 1, Ordering::Relaxed);
    assert!(tree
        .validate()
        .iter()
        .any(|v| matches!(v, TreeViolation::Color { color: 3, .. })));
}

#[test]
fn validate_stops_on_a_cycle() {
    let (_arena, tree) = corruptible();
    let root = link(tree.root_addr()).expect("tree has a root");
    let mut leaf = root;
    while let Some(left) = leaf.left() {
        leaf = left;
    }
    leaf.left.store(tree.root_addr(), Ordering::Relaxed);
    let violations = tree.validate();
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, TreeViolation::WalkCutShort { .. })),
        "{violations:?}"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Insert { start: u64, len: u64 },
    Remove { pick: usize },
    Query { start: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..500u64, 0..40u64).prop_map(|(start, len)| Op::Insert { start, len }),
        2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        2 => (0..560u64, 0..60u64).prop_map(|(start, len)| Op::Query { start, len }),
    ]
}

proptest! {
    #[test]
    fn random_operations_match_a_brute_force_model_and_stay_valid(
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut arena = Arena::new();
        let mut tree = IntervalTreeRoot::new();
        // The model: (start, last) per arena id, and which ids are linked.
        let mut ranges = Vec::new();
        let mut linked: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Insert { start, len } => {
                    let id = ranges.len();
                    ranges.push((start, start + len));
                    arena.add(start, start + len);
                    insert(&mut tree, &arena, id);
                    linked.push(id);
                }
                Op::Remove { pick } => {
                    if !linked.is_empty() {
                        let id = linked.swap_remove(pick % linked.len());
                        remove(&mut tree, &arena, id);
                    }
                }
                Op::Query { start, len } => {
                    let last = start + len;
                    let found = ids(tree.query(start, last));
                    let starts: Vec<u64> = found.iter().map(|&id| ranges[id].0).collect();
                    prop_assert!(starts.is_sorted(), "query not in start order: {:?}", starts);
                    let mut found = found;
                    found.sort_unstable();
                    let overlaps = |&id: &usize| ranges[id].0 <= last && start <= ranges[id].1;
                    let mut expected: Vec<_> = linked.iter().copied().filter(overlaps).collect();
                    expected.sort_unstable();
                    prop_assert_eq!(found, expected);
                }
            }
            prop_assert_eq!(tree.validate(), Vec::new());
            prop_assert_eq!(tree.len(), linked.len() as u64);
        }
        let mut all = ids(tree.iter());
        all.sort_unstable();
        linked.sort_unstable();
        prop_assert_eq!(all, linked);
    }
}
