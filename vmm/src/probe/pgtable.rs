//! P2's and P4's page-table walks, and the poison a checked frame gets.
//!
//! Tables are the hardware's: 512 eight-byte entries, read from guest-physical frames. The walks
//! stop at non-present and huge entries, visit each table once, stay in the user half (PGD indices
//! of `[USER_BASE, TASK_SIZE)`), and notice the probes' own poison: an entry holding it means a
//! walk went through a table the guest had already freed.

use mm_core::addr::{PAGE_SIZE, TASK_SIZE, USER_BASE};
use mm_core::paging::{Level, PageTableEntry, PteFlags};

use super::guest_mem::{AddrSet, GuestView, WalkError};

/// The high bits of the poison written into a freed table's entries 1..512.
pub(crate) const POISON_TAG: u64 = 0xDEAD_7AB1_E000_0000;

/// The poison for a freed table of `level`: recognisable, and with the level it had.
pub(crate) fn poison(level: u8) -> u64 {
    POISON_TAG | u64::from(level)
}

/// Whether an entry is the probes' poison.
pub(crate) fn is_poison(entry: u64) -> bool {
    entry & !0xF == POISON_TAG
}

fn level_of(level: u8) -> Option<Level> {
    match level {
        1 => Some(Level::Pte),
        2 => Some(Level::Pmd),
        3 => Some(Level::Pud),
        4 => Some(Level::Pgd),
        _ => None,
    }
}

/// Index of `va` in a table of `level`.
fn index(level: Level, va: u64) -> usize {
    ((va >> level.entry_shift()) & 511) as usize
}

/// A walk met a poisoned entry: the table holding it was freed and is still reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StaleTable {
    /// The poisoned (freed) table.
    pub table: u64,
    /// Entry index.
    pub index: usize,
    /// The poison value (its low bits are the level it was freed at).
    pub value: u64,
}

/// What the entry one level above a table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParentEntry {
    /// The walk to it stopped at a non-present or huge entry: nothing above points to the table.
    Absent,
    /// The entry `table[index]`, holding `value`.
    Entry {
        /// The parent table's frame.
        table: u64,
        /// Index of the entry.
        index: usize,
        /// Its raw value.
        value: u64,
    },
    /// The walk went through a table the probes poisoned.
    Stale(StaleTable),
}

/// The entry that maps `va` one level above a table of `level` (2..=4 have parents; a PGD has
/// none), walking from `pgd`.
pub(crate) fn parent_entry(
    view: &mut GuestView<'_>,
    pgd: u64,
    level: u8,
    va: u64,
) -> Result<Option<ParentEntry>, WalkError> {
    let Some(target) = level_of(level) else {
        return Ok(None);
    };
    let mut table = pgd;
    let mut at = Level::Pgd;
    loop {
        view.step("page table", table)?;
        let i = index(at, va);
        let addr = table
            .checked_add(i as u64 * 8)
            .ok_or(WalkError::BadAddress {
                what: "page table",
                addr: table,
            })?;
        if !table.is_multiple_of(PAGE_SIZE) {
            return Err(WalkError::BadAddress {
                what: "page table",
                addr: table,
            });
        }
        let value = view.word("page table", addr)?;
        if is_poison(value) && i != 0 {
            return Ok(Some(ParentEntry::Stale(StaleTable {
                table,
                index: i,
                value,
            })));
        }
        let Some(lower) = at.lower() else {
            return Ok(None);
        };
        if lower == target {
            return Ok(Some(ParentEntry::Entry {
                table,
                index: i,
                value,
            }));
        }
        let e = PageTableEntry::from_bits(value);
        if !e.is_present() || e.flags().contains(PteFlags::HUGE) {
            return Ok(Some(ParentEntry::Absent));
        }
        (table, at) = (e.frame().0, lower);
    }
}

/// Whether an entry maps something: present, or a `PROT_NONE` leaf holding a frame.
pub(crate) fn holds_something(entry: u64) -> bool {
    PageTableEntry::from_bits(entry).holds_frame()
}

/// Whether index `i` of a PGD maps user space (the rest is the kernel's, copied into every PGD).
pub(crate) fn is_user_pgd_index(i: usize) -> bool {
    user_entries(Level::Pgd).contains(&i)
}

/// The entries of a table at `level` that map user space: a PGD's user half, all of any other.
pub(crate) fn user_entries(level: Level) -> std::ops::RangeInclusive<usize> {
    match level {
        Level::Pgd => index(Level::Pgd, USER_BASE.0)..=index(Level::Pgd, TASK_SIZE.0 - 1),
        _ => 0..=511,
    }
}

/// Whether a present (or `PROT_NONE` leaf) entry points to `frame`.
pub(crate) fn points_to(value: u64, frame: u64) -> bool {
    let e = PageTableEntry::from_bits(value);
    e.holds_frame() && e.frame().0 == frame && !is_poison(value)
}

/// An entry found pointing to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The table holding it.
    pub table: u64,
    /// That table's level.
    pub level: u8,
    /// The entry index.
    pub index: usize,
}

/// What a walk of a whole user half found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Entries pointing to the frame looked for.
    pub references: Vec<Reference>,
    /// Poisoned tables met.
    pub stale: Vec<StaleTable>,
    /// Tables read.
    pub tables: u64,
}

/// Every entry of the user half under `pgd` that points to `frame` (`--thorough` P2).
pub(crate) fn references(
    view: &mut GuestView<'_>,
    pgd: u64,
    frame: u64,
) -> Result<Scan, WalkError> {
    let mut scan = Scan::default();
    let mut visited = AddrSet::default();
    let mut stack = vec![(pgd, Level::Pgd)];
    while let Some((table, level)) = stack.pop() {
        view.step("page table", table)?;
        if !table.is_multiple_of(PAGE_SIZE) {
            return Err(WalkError::BadAddress {
                what: "page table",
                addr: table,
            });
        }
        if !visited.insert(table) {
            return Err(WalkError::Cycle {
                what: "page table",
                addr: table,
            });
        }
        let entries = view.table(table)?;
        scan.tables += 1;
        let range = user_entries(level);
        for i in range {
            let value = entries[i];
            if i != 0 && is_poison(value) {
                scan.stale.push(StaleTable {
                    table,
                    index: i,
                    value,
                });
                break;
            }
            if points_to(value, frame) {
                scan.references.push(Reference {
                    table,
                    level: level as u8,
                    index: i,
                });
            }
            let e = PageTableEntry::from_bits(value);
            if let Some(lower) = level.lower() {
                if e.is_present() && !e.flags().contains(PteFlags::HUGE) && e.frame().0 != frame {
                    stack.push((e.frame().0, lower));
                }
            }
        }
    }
    Ok(scan)
}

/// Whether entries 1..512 of `frame` still hold `poison(level)` (the guest zeroes a table when it
/// allocates one, so intact poison means the frame was not handed out since it was poisoned).
pub(crate) fn poison_intact(view: &GuestView<'_>, frame: u64, level: u8) -> bool {
    view.table(frame)
        .is_ok_and(|t| t[1..].iter().all(|&e| e == poison(level)))
}

/// Writes `poison(level)` into entries 1..512 of `frame`; entry 0 is left for the guest
/// allocator's free-list link.
pub(crate) fn poison_table(view: &GuestView<'_>, frame: u64, level: u8) -> Result<(), WalkError> {
    if !frame.is_multiple_of(PAGE_SIZE) {
        return Err(WalkError::BadAddress {
            what: "freed table",
            addr: frame,
        });
    }
    view.write_words("freed table", frame + 8, &[poison(level); 511])
}
