//! Red-black insertion and erasure, keeping `subtree_last` right (Linux: `rb_insert_augmented`,
//! `rb_erase_augmented`).
//!
//! Everything here runs under the `&mut IntervalTreeRoot` its caller holds, on nodes linked in that
//! tree (or, for `insert`, the one node being linked). `subtree_last` is kept exact at every step:
//! insertion raises it along the search path, erasure recomputes the path above the splice, and
//! each rotation fixes the two nodes it moves.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{addr_of, link, IntervalNode, IntervalTreeRoot};

fn set(field: &AtomicU64, value: u64) {
    field.store(value, Ordering::Relaxed);
}

fn addr_or_zero(node: Option<&IntervalNode>) -> u64 {
    node.map_or(0, addr_of)
}

fn is_red(node: Option<&IntervalNode>) -> bool {
    node.is_some_and(IntervalNode::is_red)
}

fn set_color(node: &IntervalNode, color: u64) {
    set(&node.color, color);
}

/// Links `node` as the new leaf its start leads to, then restores the red-black rules.
pub(super) fn insert(tree: &mut IntervalTreeRoot, node: &IntervalNode) {
    let mut parent = None;
    let mut cursor = link(tree.root);
    while let Some(here) = cursor {
        // Every node on the path gains `node` in its subtree.
        if here.subtree_last() < node.last {
            set(&here.subtree_last, node.last);
        }
        parent = Some(here);
        cursor = if node.start < here.start {
            here.left()
        } else {
            here.right()
        };
    }
    set(&node.left, 0);
    set(&node.right, 0);
    set(&node.parent, addr_or_zero(parent));
    set(&node.subtree_last, node.last);
    set_color(node, IntervalNode::RED);
    match parent {
        None => tree.root = addr_of(node),
        Some(p) if node.start < p.start => set(&p.left, addr_of(node)),
        Some(p) => set(&p.right, addr_of(node)),
    }
    insert_fixup(tree, node);
}

/// CLRS's RB-INSERT-FIXUP: a red node may have a red parent; recolour or rotate up the tree.
fn insert_fixup(tree: &mut IntervalTreeRoot, mut node: &IntervalNode) {
    while let Some(mut parent) = node.parent().filter(|p| p.is_red()) {
        // A red parent is never the root, so the grandparent exists.
        let Some(grand) = parent.parent() else { break };
        let parent_is_left = grand.left_addr() == addr_of(parent);
        let uncle = if parent_is_left {
            grand.right()
        } else {
            grand.left()
        };
        if let Some(uncle) = uncle.filter(|u| u.is_red()) {
            set_color(parent, IntervalNode::BLACK);
            set_color(uncle, IntervalNode::BLACK);
            set_color(grand, IntervalNode::RED);
            node = grand;
            continue;
        }
        let inner = if parent_is_left {
            parent.right_addr() == addr_of(node)
        } else {
            parent.left_addr() == addr_of(node)
        };
        if inner {
            // Turn the zig-zag into a straight line first.
            if parent_is_left {
                rotate_left(tree, parent);
            } else {
                rotate_right(tree, parent);
            }
            parent = node;
        }
        set_color(parent, IntervalNode::BLACK);
        set_color(grand, IntervalNode::RED);
        if parent_is_left {
            rotate_right(tree, grand);
        } else {
            rotate_left(tree, grand);
        }
        break;
    }
    if let Some(root) = link(tree.root) {
        set_color(root, IntervalNode::BLACK);
    }
}

/// Puts `new` where `old` hangs from its parent (or the root).
fn replace_child(
    tree: &mut IntervalTreeRoot,
    parent: Option<&IntervalNode>,
    old: &IntervalNode,
    new: Option<&IntervalNode>,
) {
    let new_addr = addr_or_zero(new);
    match parent {
        None => tree.root = new_addr,
        Some(p) if p.left_addr() == addr_of(old) => set(&p.left, new_addr),
        Some(p) => set(&p.right, new_addr),
    }
    if let Some(new) = new {
        set(&new.parent, addr_or_zero(parent));
    }
}

/// Rotates `x` down to the left; its right child `y` takes its place and its `subtree_last`.
fn rotate_left(tree: &mut IntervalTreeRoot, x: &IntervalNode) {
    let Some(y) = x.right() else { return };
    let inner = y.left();
    set(&x.right, addr_or_zero(inner));
    if let Some(inner) = inner {
        set(&inner.parent, addr_of(x));
    }
    replace_child(tree, x.parent(), x, Some(y));
    set(&y.left, addr_of(x));
    set(&x.parent, addr_of(y));
    // `y` now covers exactly the nodes `x` covered; `x` lost `y` and `y`'s right subtree.
    set(&y.subtree_last, x.subtree_last());
    set(&x.subtree_last, x.compute_subtree_last());
}

/// Mirror of [`rotate_left`].
fn rotate_right(tree: &mut IntervalTreeRoot, x: &IntervalNode) {
    let Some(y) = x.left() else { return };
    let inner = y.right();
    set(&x.left, addr_or_zero(inner));
    if let Some(inner) = inner {
        set(&inner.parent, addr_of(x));
    }
    replace_child(tree, x.parent(), x, Some(y));
    set(&y.right, addr_of(x));
    set(&x.parent, addr_of(y));
    set(&y.subtree_last, x.subtree_last());
    set(&x.subtree_last, x.compute_subtree_last());
}

/// Unlinks `node` (CLRS's RB-DELETE with null leaves), then restores `subtree_last` and the colors.
pub(super) fn erase(tree: &mut IntervalTreeRoot, node: &IntervalNode) {
    let removed_black;
    let child;
    let child_parent;
    match (node.left(), node.right()) {
        (None, right) => {
            removed_black = !node.is_red();
            (child, child_parent) = (right, node.parent());
            replace_child(tree, node.parent(), node, right);
        }
        (left @ Some(_), None) => {
            removed_black = !node.is_red();
            (child, child_parent) = (left, node.parent());
            replace_child(tree, node.parent(), node, left);
        }
        (Some(left), Some(right)) => {
            // The successor (leftmost of the right subtree) takes `node`'s place and color.
            let mut successor = right;
            while let Some(l) = successor.left() {
                successor = l;
            }
            removed_black = !successor.is_red();
            child = successor.right();
            if successor.parent_addr() == addr_of(node) {
                child_parent = Some(successor);
            } else {
                child_parent = successor.parent();
                replace_child(tree, successor.parent(), successor, child);
                set(&successor.right, addr_of(right));
                set(&right.parent, addr_of(successor));
            }
            replace_child(tree, node.parent(), node, Some(successor));
            set(&successor.left, addr_of(left));
            set(&left.parent, addr_of(successor));
            set_color(successor, node.color());
        }
    }
    // Every node whose subtree lost `node` lies on the path from the splice point to the root (the
    // successor, if it moved, is on that path too).
    let mut up = child_parent;
    while let Some(n) = up {
        set(&n.subtree_last, n.compute_subtree_last());
        up = n.parent();
    }
    if removed_black {
        erase_fixup(tree, child, child_parent);
    }
}

/// CLRS's RB-DELETE-FIXUP: `child` (maybe a null leaf under `parent`) carries an extra black.
fn erase_fixup<'a>(
    tree: &mut IntervalTreeRoot,
    mut child: Option<&'a IntervalNode>,
    mut parent: Option<&'a IntervalNode>,
) {
    while !is_red(child) && addr_or_zero(child) != tree.root {
        let Some(p) = parent else { break };
        let child_is_left = p.left_addr() == addr_or_zero(child);
        let sibling_of = |p: &'a IntervalNode| if child_is_left { p.right() } else { p.left() };
        // The extra black means the sibling's side has black height >= 1, so it exists.
        let Some(mut sibling) = sibling_of(p) else {
            break;
        };
        if sibling.is_red() {
            set_color(sibling, IntervalNode::BLACK);
            set_color(p, IntervalNode::RED);
            rotate_toward_child(tree, p, child_is_left);
            let Some(s) = sibling_of(p) else { break };
            sibling = s;
        }
        let (near, far) = if child_is_left {
            (sibling.left(), sibling.right())
        } else {
            (sibling.right(), sibling.left())
        };
        if !is_red(near) && !is_red(far) {
            set_color(sibling, IntervalNode::RED);
            child = Some(p);
            parent = p.parent();
            continue;
        }
        if !is_red(far) {
            // Near nephew red, far black: rotate it up so the far one is red.
            if let Some(near) = near {
                set_color(near, IntervalNode::BLACK);
            }
            set_color(sibling, IntervalNode::RED);
            rotate_toward_child(tree, sibling, !child_is_left);
            let Some(s) = sibling_of(p) else { break };
            sibling = s;
        }
        set_color(sibling, p.color());
        set_color(p, IntervalNode::BLACK);
        let far = if child_is_left {
            sibling.right()
        } else {
            sibling.left()
        };
        if let Some(far) = far {
            set_color(far, IntervalNode::BLACK);
        }
        rotate_toward_child(tree, p, child_is_left);
        child = link(tree.root);
        break;
    }
    if let Some(child) = child {
        set_color(child, IntervalNode::BLACK);
    }
}

/// Rotates `node` down toward its left child's side when `left`, else toward the right.
fn rotate_toward_child(tree: &mut IntervalTreeRoot, node: &IntervalNode, left: bool) {
    if left {
        rotate_left(tree, node);
    } else {
        rotate_right(tree, node);
    }
}
