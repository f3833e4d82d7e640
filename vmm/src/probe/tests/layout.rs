//! The interval-tree offsets the probes cannot take with `offset_of!` (private fields) match the
//! real `IntervalNode` and `IntervalTreeRoot`.

use core::ptr::NonNull;

use mm_core::interval_tree::{IntervalNode, IntervalTreeRoot};

use crate::probe::layout::{node, tree_root};

#[test]
fn interval_tree_offsets_match_mm_core() {
    // Three nodes, so the root has a parentless node and two children with parents.
    let nodes: Vec<NonNull<IntervalNode>> = [(5, 9), (1, 2), (7, 30)]
        .into_iter()
        .map(|(s, l)| NonNull::from(Box::leak(Box::new(IntervalNode::new(s, l)))))
        .collect();
    let mut tree = IntervalTreeRoot::new();
    for n in &nodes {
        // SAFETY: each node is leaked, so it stays put and alive while linked, and nothing else
        // refers to it.
        unsafe { tree.insert(*n) }.expect("fresh node");
    }
    for n in &nodes {
        // SAFETY: the node is alive (leaked) and only shared; its words are plain integers
        // (`#[repr(C)]`, all 8-byte fields), read here on the one thread that uses the tree.
        let (node_ref, words) = unsafe { (n.as_ref(), n.cast::<[u64; 7]>().read()) };
        assert_eq!(words[node::LEFT / 8], node_ref.left_addr());
        assert_eq!(words[node::RIGHT / 8], node_ref.right_addr());
        assert_eq!(words[node::PARENT / 8], node_ref.parent_addr());
        assert_eq!(words[node::COLOR / 8], node_ref.color());
        assert!(node_ref.is_linked());
    }
    let root_words: [u64; 2] = {
        let p = NonNull::from(&tree).cast::<[u64; 2]>();
        // SAFETY: `IntervalTreeRoot` is `#[repr(C)]` of two u64s and `tree` is alive.
        unsafe { p.read() }
    };
    assert_eq!(root_words[tree_root::ROOT / 8], tree.root_addr());
    assert_eq!(root_words[tree_root::COUNT / 8], tree.len());
    assert_eq!(tree.len(), 3);
}
