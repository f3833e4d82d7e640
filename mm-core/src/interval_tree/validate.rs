//! The tree's invariants, executable (in the spirit of Linux's `validate_mm` / `browse_rb`).
//!
//! Invariants of an [`IntervalTreeRoot`] with `count` nodes:
//! 1. In-order, `start` never decreases; every node has `start <= last`.
//! 2. Every node's `subtree_last` is the largest `last` in its subtree.
//! 3. The root's `parent` is 0 and every child's `parent` is the node it hangs from.
//! 4. Red-black: colors are `RED` or `BLACK`, the root is black, no red node has a red child, and
//!    every path from a node down to a missing child crosses the same number of black nodes.
//! 5. Exactly `count` nodes are reachable from the root.

use alloc::vec::Vec;

use super::{addr_of, link, IntervalNode, IntervalTreeRoot};

/// One broken invariant; nodes are named by address (as the host sees them) and interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeViolation {
    /// Invariant 1: in order, `node` starts before the node preceding it.
    Order {
        /// Address of the node out of place.
        node: u64,
        /// Its start.
        start: u64,
        /// The start of the node before it in order.
        previous_start: u64,
    },
    /// Invariant 1: `node`'s interval ends before it starts.
    InvertedInterval {
        /// Address of the node.
        node: u64,
        /// Its start.
        start: u64,
        /// Its last, smaller than `start`.
        last: u64,
    },
    /// Invariant 2: `node`'s `subtree_last` is not the largest `last` below it.
    SubtreeLast {
        /// Address of the node.
        node: u64,
        /// The value stored.
        stored: u64,
        /// The largest `last` in its subtree.
        expected: u64,
    },
    /// Invariant 3: `node`'s parent link does not point where it hangs.
    ParentLink {
        /// Address of the node.
        node: u64,
        /// The parent address stored.
        stored: u64,
        /// The address of the node it hangs from (0 for the root).
        expected: u64,
    },
    /// Invariant 4: `node`'s color is neither `RED` nor `BLACK`.
    Color {
        /// Address of the node.
        node: u64,
        /// The raw color.
        color: u64,
    },
    /// Invariant 4: the root is red.
    RedRoot {
        /// Address of the root.
        node: u64,
    },
    /// Invariant 4: red `node` has a red child.
    RedRed {
        /// Address of the red parent.
        node: u64,
    },
    /// Invariant 4: `node`'s two sides have different black heights.
    BlackHeight {
        /// Address of the node.
        node: u64,
        /// Black nodes on a path down its left side.
        left: u64,
        /// Black nodes on a path down its right side.
        right: u64,
    },
    /// Invariant 5: the root's `count` differs from the nodes reachable.
    Count {
        /// The count stored in the root.
        stored: u64,
        /// Nodes reached (a lower bound when the walk was cut short).
        found: u64,
    },
    /// The walk stopped: it went deeper or visited more nodes than any valid tree of `count` nodes
    /// could have (a cycle, or a lost balance).
    WalkCutShort {
        /// Nodes visited before stopping.
        visited: u64,
    },
}

impl IntervalTreeRoot {
    /// Checks every invariant (see the list in this module) and returns each violation found, or
    /// an empty list for a sound tree. Never panics; stops descending where links loop.
    ///
    /// Only links are followed: a tree corrupted into pointing at freed memory cannot be checked.
    pub fn validate(&self) -> Vec<TreeViolation> {
        let mut walk = Walk {
            out: Vec::new(),
            visited: 0,
            // A red-black tree of n nodes is at most 2 * log2(n + 1) deep.
            max_depth: 2 * u64::from(u64::BITS - (self.count.saturating_add(1)).leading_zeros())
                + 2,
            max_visits: self.count.saturating_mul(2).saturating_add(16),
            previous_start: None,
            cut_short: false,
        };
        if let Some(root) = link(self.root) {
            if root.is_red() {
                walk.out.push(TreeViolation::RedRoot {
                    node: addr_of(root),
                });
            }
            walk.node(root, 0, 1);
        }
        if walk.cut_short {
            walk.out.push(TreeViolation::WalkCutShort {
                visited: walk.visited,
            });
        }
        if walk.visited != self.count {
            walk.out.push(TreeViolation::Count {
                stored: self.count,
                found: walk.visited,
            });
        }
        walk.out
    }
}

struct Walk {
    out: Vec<TreeViolation>,
    visited: u64,
    max_depth: u64,
    max_visits: u64,
    previous_start: Option<u64>,
    cut_short: bool,
}

impl Walk {
    /// Checks the subtree at `node`, which hangs from `parent` at `depth`; returns its black height
    /// and the largest `last` in it.
    fn node(&mut self, node: &IntervalNode, parent: u64, depth: u64) -> (u64, u64) {
        if self.cut_short || depth > self.max_depth || self.visited >= self.max_visits {
            self.cut_short = true;
            return (0, 0);
        }
        self.visited += 1;
        let here = addr_of(node);
        if node.parent_addr() != parent {
            self.out.push(TreeViolation::ParentLink {
                node: here,
                stored: node.parent_addr(),
                expected: parent,
            });
        }
        let color = node.color();
        if color != IntervalNode::RED && color != IntervalNode::BLACK {
            self.out.push(TreeViolation::Color { node: here, color });
        }
        if node.start > node.last {
            self.out.push(TreeViolation::InvertedInterval {
                node: here,
                start: node.start,
                last: node.last,
            });
        }
        if node.is_red()
            && [node.left(), node.right()]
                .into_iter()
                .flatten()
                .any(IntervalNode::is_red)
        {
            self.out.push(TreeViolation::RedRed { node: here });
        }

        let (left_height, left_last) = self.child(node.left(), here, depth);
        if let Some(previous_start) = self.previous_start.filter(|&p| p > node.start) {
            self.out.push(TreeViolation::Order {
                node: here,
                start: node.start,
                previous_start,
            });
        }
        self.previous_start = Some(node.start);
        let (right_height, right_last) = self.child(node.right(), here, depth);

        if left_height != right_height && !self.cut_short {
            self.out.push(TreeViolation::BlackHeight {
                node: here,
                left: left_height,
                right: right_height,
            });
        }
        let expected = node.last.max(left_last).max(right_last);
        if node.subtree_last() != expected && !self.cut_short {
            self.out.push(TreeViolation::SubtreeLast {
                node: here,
                stored: node.subtree_last(),
                expected,
            });
        }
        (
            left_height + u64::from(color == IntervalNode::BLACK),
            expected,
        )
    }

    fn child(&mut self, child: Option<&IntervalNode>, parent: u64, depth: u64) -> (u64, u64) {
        child.map_or((0, 0), |child| self.node(child, parent, depth + 1))
    }
}
