//! P3 for leaves: a present PTE that loses its frame or a permission must be flushed from the TLB
//! before the guest goes on, whatever path changed it — `move_ptes` moving entries, `mprotect`
//! taking write away, a zap, reclaim. The guest reports flushes, not the leaves it changes, so
//! the check needs nothing from the changing path: each sweep remembers every present leaf it
//! walked, and the next one compares. A leaf that changed in a way a stale TLB entry would still
//! allow (not present any more, another frame, write or user access taken away, execute
//! forbidden) needs a flush of its mm covering its address logged between the two sweeps.
//!
//! The window is the sweep interval (`--sweep-every`, every quiescent point with `--thorough`):
//! a covering flush anywhere in it counts, so a missing flush is caught when no other flush of
//! the same addresses (an exit's full flush, say) falls between the change and the next sweep.
//! Accessed and dirty bits, which the CPU sets and Linux clears without a flush on x86, and
//! software bits are not compared.

use super::super::sweep::{Leaf, Outcome};
use super::*;
use mm_core::paging::{PageTableEntry, PteFlags};

/// Ranges of unflushed leaves reported per sweep; the rest are counted in the last one.
const MAX_LEAF_REPORTS: usize = 16;

/// Every present leaf the last complete sweep found, and when.
pub(super) struct LeafSnapshot {
    /// The sweep's event.
    seq: u64,
    /// Sorted by mm, then address.
    leaves: Vec<Leaf>,
    /// Mms torn down since (their PGD freed): a new mm may have the same address by the next
    /// sweep, and its leaves are not the old ones changed.
    gone: HashSet<u64>,
}

impl LeafSnapshot {
    /// The mm at `mm` is gone (its PGD is being freed).
    pub(super) fn mm_gone(&mut self, mm: u64) {
        self.gone.insert(mm);
    }
}

/// Whether a TLB may still hold `old` after the entry became `new` in a way that lets the CPU do
/// more than the entry now allows.
fn needs_flush(old: u64, new: Option<u64>) -> bool {
    let (old, Some(new)) = (
        PageTableEntry::from_bits(old),
        new.map(PageTableEntry::from_bits),
    ) else {
        return true;
    };
    let has = |e: PageTableEntry, f: PteFlags| e.flags().contains(f);
    !new.is_present()
        || new.frame() != old.frame()
        || (has(old, PteFlags::WRITABLE) && !has(new, PteFlags::WRITABLE))
        || (has(old, PteFlags::USER) && !has(new, PteFlags::USER))
        || (!has(old, PteFlags::NO_EXECUTE) && has(new, PteFlags::NO_EXECUTE))
}

impl Probe {
    /// Compares the leaves of this sweep (`outcome`, event `seq`) with the last one's and reports
    /// each run of changed leaves no logged flush covered; keeps this sweep's leaves for the
    /// next. A sweep that could not walk everything (errors, too many leaves) starts over.
    pub(super) fn leaf_flushes(&mut self, seq: u64, outcome: &mut Outcome) -> Vec<Violation> {
        let complete = outcome.errors_empty() && !outcome.leaves_overflow;
        let mut leaves = std::mem::take(&mut outcome.leaves);
        leaves.sort_unstable();
        let now = LeafSnapshot {
            seq,
            leaves,
            gone: HashSet::new(),
        };
        let Some(was) = self.leaves.take().filter(|_| complete) else {
            self.leaves = complete.then_some(now);
            return Vec::new();
        };
        let done: HashSet<u64> = outcome.mms_done.iter().copied().collect();
        // Runs of unflushed changed leaves: (mm, start, end, first old entry, its new entry).
        let mut runs: Vec<(u64, u64, u64, u64, Option<u64>)> = Vec::new();
        let mut checked = 0u64;
        let mut next = now.leaves.iter().peekable();
        for old in &was.leaves {
            while next.next_if(|n| (n.mm, n.va) < (old.mm, old.va)).is_some() {}
            let new = next
                .peek()
                .filter(|n| (n.mm, n.va) == (old.mm, old.va))
                .map(|n| n.bits);
            // A mm gone since (its PGD freed, its flushes checked there) has nothing left to
            // flush, even if a new mm has its address now.
            if !done.contains(&old.mm) || was.gone.contains(&old.mm) || !needs_flush(old.bits, new)
            {
                continue;
            }
            checked += 1;
            if !self.flush_log_complete_since(old.mm, was.seq)
                || self.flushed_since(old.mm, was.seq, old.va, old.va + PAGE_BYTES)
            {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.0 == old.mm && run.2 == old.va => run.2 += PAGE_BYTES,
                _ => runs.push((old.mm, old.va, old.va + PAGE_BYTES, old.bits, new)),
            }
        }
        // One check per sweep that had changed leaves to judge, as every check counts events.
        self.summary.checks[Check::P3.index()] += u64::from(checked > 0);
        self.leaves = Some(now);
        let total = runs.len();
        runs.into_iter()
            .take(MAX_LEAF_REPORTS)
            .enumerate()
            .map(|(i, (mm, start, end, old, new))| {
                let now = new.map_or("no entry".to_string(), |b| format!("{b:#x}"));
                let more = if i + 1 == MAX_LEAF_REPORTS && total > MAX_LEAF_REPORTS {
                    format!(
                        " ({} more such ranges in this sweep)",
                        total - MAX_LEAF_REPORTS
                    )
                } else {
                    String::new()
                };
                Violation {
                    check: Check::P3,
                    mm,
                    level: 0,
                    frame: 0,
                    start,
                    end,
                    vma: None,
                    rip: 0,
                    detail: format!(
                        "leaf entries of [{start:#x}, {end:#x}) changed since the previous sweep \
                         (the first from {old:#x} to {now}) with no TLB flush of the mm covering \
                         them{more}"
                    ),
                }
            })
            .collect()
    }

    /// Whether `mm`'s flush log still holds every flush since event `since` (it keeps the newest
    /// [`FLUSH_LOG`]): if not, a covering flush may have been forgotten, and nothing is reported.
    fn flush_log_complete_since(&self, mm: u64, since: u64) -> bool {
        self.flushes
            .get(&mm)
            .is_none_or(|log| log.len() < FLUSH_LOG || log.front().is_some_and(|f| f.seq <= since))
    }
}

/// Bytes a PTE maps.
const PAGE_BYTES: u64 = mm_core::addr::PAGE_SIZE;

#[cfg(test)]
mod tests {
    use super::needs_flush;

    const FRAME: u64 = 0x1234_5000;
    const P: u64 = 1;
    const W: u64 = 2;
    const U: u64 = 4;
    const A: u64 = 1 << 5;
    const D: u64 = 1 << 6;
    const NX: u64 = 1 << 63;

    #[test]
    fn only_changes_a_stale_entry_would_outdo_need_a_flush() {
        let e = FRAME | P | W | U;
        assert!(needs_flush(e, None), "cleared");
        assert!(needs_flush(e, Some(FRAME & !P)), "not present");
        assert!(
            needs_flush(e, Some(0x9999_9000 | P | W | U)),
            "another frame"
        );
        assert!(needs_flush(e, Some(FRAME | P | U)), "write taken away");
        assert!(
            needs_flush(e, Some(FRAME | P | W)),
            "user access taken away"
        );
        assert!(needs_flush(e, Some(e | NX)), "execute forbidden");
        assert!(
            !needs_flush(e, Some(e | A | D)),
            "the CPU's accessed and dirty bits"
        );
        assert!(!needs_flush(FRAME | P | U, Some(e)), "write granted");
        assert!(!needs_flush(e | NX, Some(e)), "execute allowed");
        assert!(!needs_flush(e, Some(e | 1 << 9 | 1 << 52)), "software bits");
    }
}
