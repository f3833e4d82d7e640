//! The VMA index the default mode narrows P1 with, kept from the guest's `VmaRange` and
//! `VmaFreed` events alone: for each mm, every VMA not yet freed, by start address.
//!
//! A VMA unmapped but not yet freed (detached from its mm, maybe still on rmap) stays in the index
//! until `VmaFreed`: those are exactly the VMAs P1 is about. The index only proposes candidates;
//! P1 verifies each one in guest memory (`rmap::RmapWalk::candidate`).

use std::collections::{BTreeMap, HashMap};

/// VMAs the index holds at most (~80 bytes each, ~10 MiB): twice what one mm may hold (65,530),
/// and many times what the scenarios keep live. A guest that reports more turns the index off for the rest of the
/// run, and P1 walks the rmap registries instead, as for a guest that reports no ranges.
pub(crate) const MAX_INDEXED_VMAS: usize = 1 << 17;

/// Every live VMA of every mm, from the guest's events.
#[derive(Debug, Default)]
pub(crate) struct VmaIndex {
    /// Per mm: `(start, vma)` → end.
    by_mm: HashMap<u64, BTreeMap<(u64, u64), u64>>,
    /// Per VMA: its mm and start, to find its entry again.
    at: HashMap<u64, (u64, u64)>,
    /// Per mm: the longest VMA ever indexed, which bounds how far before a span a VMA meeting it
    /// can start (VMAs of one mm do not overlap, but this does not rely on it).
    longest: HashMap<u64, u64>,
    /// Whether the guest reports VMA ranges at all (an older guest does not: P1 then walks all).
    pub active: bool,
    /// The guest reported more than [`MAX_INDEXED_VMAS`] live VMAs: the index is off for good.
    pub overflowed: bool,
}

impl VmaIndex {
    /// `vma` of `mm` now covers `[start, end)` (linked, or its range changed).
    pub(crate) fn range(&mut self, mm: u64, vma: u64, start: u64, end: u64) {
        if self.overflowed {
            return;
        }
        if self.at.len() >= MAX_INDEXED_VMAS && !self.at.contains_key(&vma) {
            *self = VmaIndex {
                overflowed: true,
                ..VmaIndex::default()
            };
            return;
        }
        self.active = true;
        self.freed(vma);
        self.by_mm.entry(mm).or_default().insert((start, vma), end);
        self.at.insert(vma, (mm, start));
        let longest = self.longest.entry(mm).or_default();
        *longest = (*longest).max(end.saturating_sub(start));
    }

    /// Every mm with a VMA indexed.
    pub(crate) fn mms(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_mm.keys().copied()
    }

    /// `vma` is freed.
    pub(crate) fn freed(&mut self, vma: u64) {
        if let Some((mm, start)) = self.at.remove(&vma) {
            if let Some(t) = self.by_mm.get_mut(&mm) {
                t.remove(&(start, vma));
                if t.is_empty() {
                    self.by_mm.remove(&mm);
                    self.longest.remove(&mm);
                }
            }
        }
    }

    /// The VMAs of `mm` whose indexed range meets `[start, end)`: O(log n + k) for k of them, plus
    /// the VMAs starting less than the mm's longest VMA before `start`.
    pub(crate) fn meeting(&self, mm: u64, start: u64, end: u64) -> Vec<u64> {
        let Some(t) = self.by_mm.get(&mm) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if start < end {
            out.extend(t.range((start, 0)..(end, 0)).map(|(&(_, v), _)| v));
        }
        let reach = self.longest.get(&mm).copied().unwrap_or(0);
        for (&(s, v), &e) in t.range(..(start, 0)).rev() {
            if s.saturating_add(reach) <= start {
                break;
            }
            if e > start {
                out.push(v);
            }
        }
        out
    }

    /// VMAs indexed.
    pub(crate) fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_links_end_moves_and_frees() {
        let mut ix = VmaIndex::default();
        let (mm, other) = (0x1000, 0x2000);
        ix.range(mm, 0xa0, 0x10_000, 0x20_000);
        ix.range(mm, 0xb0, 0x30_000, 0x40_000);
        ix.range(other, 0xc0, 0x10_000, 0x50_000);
        assert!(ix.active);
        assert_eq!(ix.meeting(mm, 0x18_000, 0x19_000), [0xa0]);
        assert_eq!(ix.meeting(mm, 0x20_000, 0x30_000), Vec::<u64>::new());
        let mut both = ix.meeting(mm, 0, u64::MAX);
        both.sort();
        assert_eq!(both, [0xa0, 0xb0]);
        // A split moves 0xa0's end; the new piece is linked.
        ix.range(mm, 0xa0, 0x10_000, 0x14_000);
        ix.range(mm, 0xd0, 0x14_000, 0x20_000);
        assert_eq!(ix.meeting(mm, 0x18_000, 0x19_000), [0xd0]);
        ix.freed(0xd0);
        assert_eq!(ix.meeting(mm, 0x18_000, 0x19_000), Vec::<u64>::new());
        assert_eq!(ix.meeting(other, 0x18_000, 0x19_000), [0xc0]);
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn a_long_vma_far_before_the_span_is_still_found() {
        let mut ix = VmaIndex::default();
        ix.range(1, 0xa0, 0, 1 << 40);
        for i in 1..100u64 {
            ix.range(
                1,
                0x1000 + i,
                (1 << 40) + i * 0x1000,
                (1 << 40) + i * 0x1000 + 0x800,
            );
        }
        assert_eq!(ix.meeting(1, (1 << 39) + 5, (1 << 39) + 6), [0xa0]);
    }
}
