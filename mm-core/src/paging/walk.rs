//! Walking an mm's page tables: lookup, allocation on demand, and iteration over a range.

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE, PTRS_PER_TABLE, TASK_SIZE, USER_BASE};
use crate::hooks::PoisonHit;
use crate::kernel::Kernel;
use crate::mm::MmStruct;
use crate::paging::{table, Level, PageTableEntry, PteFlags};
use crate::phys::TableDesc;

/// A leaf slot: the PTE table and the index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteSlot {
    /// The PTE table's frame.
    pub table: PhysAddr,
    /// Index of the entry in it.
    pub index: usize,
}

impl PteSlot {
    /// The entry in the slot.
    pub(crate) fn read(self, k: &Kernel<'_>) -> PageTableEntry {
        table::read(k, self.table, self.index)
    }
    /// Replaces the entry in the slot.
    pub(crate) fn write(self, k: &Kernel<'_>, e: PageTableEntry) {
        table::write(k, self.table, self.index, e)
    }
}

/// Entry `index` of table `t`, read on the way to `va`; `None` (after telling the hooks) when it
/// holds a freed table's poison, so no walker ever follows poison as if it were an address.
#[track_caller]
pub(crate) fn read_entry(
    k: &Kernel<'_>,
    t: PhysAddr,
    index: usize,
    va: VirtAddr,
) -> Option<PageTableEntry> {
    let e = table::read(k, t, index);
    if e.is_poison() {
        let hit = PoisonHit {
            table: t,
            index,
            value: e.bits(),
            va,
            location: core::panic::Location::caller(),
        };
        k.hooks().poison_hit(k, &hit);
        return None;
    }
    Some(e)
}

/// The leaf slot for `va` if every upper level is populated.
#[track_caller]
pub fn lookup(k: &Kernel<'_>, pgd: PhysAddr, va: VirtAddr) -> Option<PteSlot> {
    let mut t = pgd;
    let mut level = Level::Pgd;
    while let Some(lower) = level.lower() {
        let e = read_entry(k, t, va.table_index(level.entry_shift()), va)?;
        if !e.is_present() {
            return None;
        }
        t = e.frame();
        level = lower;
    }
    Some(PteSlot {
        table: t,
        index: va.table_index(Level::Pte.entry_shift()),
    })
}

/// The leaf slot for `va`, allocating missing PUD, PMD and PTE tables; `None` when a table
/// allocation fails (tables allocated on the way stay hooked and accounted, as in Linux).
pub(crate) fn pte_alloc(k: &Kernel<'_>, mm: &MmStruct, va: VirtAddr) -> Option<PteSlot> {
    let mut t = mm.pgd();
    let mut level = Level::Pgd;
    while let Some(lower) = level.lower() {
        let idx = va.table_index(level.entry_shift());
        let e = table::read(k, t, idx);
        t = if e.is_present() {
            e.frame()
        } else {
            let desc = TableDesc {
                mm: mm.addr(),
                level: lower as u64,
                base: va.0 & !(lower.table_span() - 1),
            };
            let new = k.alloc_table(desc)?;
            table::write(k, t, idx, PageTableEntry::new(new, PteFlags::TABLE));
            mm.pgtables_bytes.add(PAGE_SIZE);
            if lower == Level::Pte {
                mm.nr_ptes.add(1);
            }
            new
        };
        level = lower;
    }
    Some(PteSlot {
        table: t,
        index: va.table_index(Level::Pte.entry_shift()),
    })
}

/// Calls `f(va, slot, entry)` for every non-empty leaf entry mapping an address in `[start, end)`,
/// skipping empty upper-level entries without descending.
pub fn for_each_leaf(
    k: &Kernel<'_>,
    pgd: PhysAddr,
    start: VirtAddr,
    end: VirtAddr,
    f: &mut dyn FnMut(VirtAddr, PteSlot, PageTableEntry),
) {
    if start >= end {
        return;
    }
    walk_level(k, pgd, Level::Pgd, start, end, f);
}

fn walk_level(
    k: &Kernel<'_>,
    t: PhysAddr,
    level: Level,
    start: VirtAddr,
    end: VirtAddr,
    f: &mut dyn FnMut(VirtAddr, PteSlot, PageTableEntry),
) {
    let span = level.entry_span();
    let mut addr = start;
    while addr < end {
        // `next` is where the entry covering `addr` ends, clipped to `end` (Linux's *_addr_end).
        let boundary = addr.align_down(span) + span;
        let next = if boundary.0 == 0 || boundary > end {
            end
        } else {
            boundary
        };
        let idx = addr.table_index(level.entry_shift());
        let Some(e) = read_entry(k, t, idx, addr) else {
            addr = next;
            continue;
        };
        match level.lower() {
            None => {
                if !e.is_none() {
                    f(
                        addr,
                        PteSlot {
                            table: t,
                            index: idx,
                        },
                        e,
                    );
                }
            }
            Some(lower) => {
                if e.is_present() {
                    walk_level(k, e.frame(), lower, addr, next, f);
                }
            }
        }
        addr = next;
    }
}

/// Calls `f(level, frame, start)` for every page-table page below the user PGD entries (not the
/// PGD itself), parents before children.
pub fn for_each_user_table(
    k: &Kernel<'_>,
    pgd: PhysAddr,
    f: &mut dyn FnMut(Level, PhysAddr, VirtAddr),
) {
    let first = USER_BASE.table_index(Level::Pgd.entry_shift());
    let last = (TASK_SIZE - 1).table_index(Level::Pgd.entry_shift());
    for i in first..=last {
        let e = table::read(k, pgd, i);
        if e.is_present() {
            let start = VirtAddr(i as u64 * Level::Pgd.entry_span());
            tables_below(k, e.frame(), Level::Pud, start, f);
        }
    }
}

fn tables_below(
    k: &Kernel<'_>,
    t: PhysAddr,
    level: Level,
    start: VirtAddr,
    f: &mut dyn FnMut(Level, PhysAddr, VirtAddr),
) {
    f(level, t, start);
    let Some(lower) = level.lower() else { return };
    for i in 0..PTRS_PER_TABLE {
        let e = table::read(k, t, i);
        if e.is_present() {
            tables_below(
                k,
                e.frame(),
                lower,
                start + i as u64 * level.entry_span(),
                f,
            );
        }
    }
}
