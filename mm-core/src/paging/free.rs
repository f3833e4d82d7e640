//! `free_pgd_range`: free the page tables of a range, but never one a neighbour may still use.
//!
//! Why the arithmetic looks the way it does: `floor` is the end of the previous VMA (or
//! `FIRST_USER_ADDRESS`) and `ceiling` the start of the next (0 meaning "top of the address space").
//! A table is freed only when the whole range it covers, rounded to its level, lies inside
//! `[floor, ceiling)`; otherwise a neighbour may still map through it. Both ends are compared as
//! `x - 1` because 0 means the bottom for `addr`/`floor` but the top for `end`/`ceiling`: `end - 1 >
//! ceiling - 1` is "end is above ceiling", and is false for every end when ceiling is 0.

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE, PGDIR_SIZE, PMD_SIZE, PUD_SIZE};
use crate::hooks::TableEvent;
use crate::kernel::Kernel;
use crate::mm::MmStruct;
use crate::paging::{table, Level, MmuGather, PageTableEntry};
use crate::phys::AllocKind;
use crate::variant::Variant;

/// Frees the page tables mapping `[addr, end)` of `mm` into `tlb`, keeping any table that also
/// covers addresses below `floor` or at/above `ceiling` (0 = top). Precondition: the range holds no
/// present PTEs (`unmap_vmas` ran) and the VMAs it belonged to are unlinked from rmap.
pub fn free_pgd_range(
    k: &Kernel<'_>,
    tlb: &mut MmuGather,
    mm: &MmStruct,
    addr: VirtAddr,
    end: VirtAddr,
    floor: VirtAddr,
    ceiling: VirtAddr,
) {
    let (floor, mut ceiling) = if k.variant() == Variant::IgnoreFloorCeiling {
        (0, 0)
    } else {
        (floor.0, ceiling.0)
    };
    let mut addr = addr.0 & !(PMD_SIZE - 1);
    let mut end = end.0;
    // The first PTE table may be shared with the previous VMA.
    if addr < floor {
        addr = addr.wrapping_add(PMD_SIZE);
        if addr == 0 {
            return;
        }
    }
    if ceiling != 0 {
        ceiling &= !(PMD_SIZE - 1);
        if ceiling == 0 {
            return;
        }
    }
    // The last PTE table may be shared with the next VMA.
    if end.wrapping_sub(1) > ceiling.wrapping_sub(1) {
        end = end.wrapping_sub(PMD_SIZE);
    }
    if addr > end.wrapping_sub(1) {
        return;
    }
    let pgd = mm.pgd();
    let mut a = addr;
    loop {
        let next = addr_end(a, end, PGDIR_SIZE);
        let idx = VirtAddr(a).table_index(Level::Pgd.entry_shift());
        if table::read(k, pgd, idx).is_present() {
            free_pud_range(k, tlb, mm, pgd, idx, a, next, floor, ceiling);
        }
        a = next;
        if a == end {
            break;
        }
    }
}

/// Linux's `p?d_addr_end`: the end of the entry of size `span` containing `addr`, clipped to `end`.
fn addr_end(addr: u64, end: u64, span: u64) -> u64 {
    let boundary = (addr.wrapping_add(span)) & !(span - 1);
    if boundary.wrapping_sub(1) < end.wrapping_sub(1) {
        boundary
    } else {
        end
    }
}

/// Whether a table covering `[start & !(span-1), +span)` lies wholly within `[floor, ceiling)`.
fn table_within(start: u64, end: u64, span: u64, floor: u64, ceiling: u64) -> bool {
    let start = start & !(span - 1);
    if start < floor {
        return false;
    }
    let mut ceiling = ceiling;
    if ceiling != 0 {
        ceiling &= !(span - 1);
        if ceiling == 0 {
            return false;
        }
    }
    end.wrapping_sub(1) <= ceiling.wrapping_sub(1)
}

#[allow(clippy::too_many_arguments)]
fn free_pud_range(
    k: &Kernel<'_>,
    tlb: &mut MmuGather,
    mm: &MmStruct,
    pgd: PhysAddr,
    pgd_idx: usize,
    addr: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
) {
    let pud = table::read(k, pgd, pgd_idx).frame();
    let mut a = addr;
    loop {
        let next = addr_end(a, end, PUD_SIZE);
        let idx = VirtAddr(a).table_index(Level::Pud.entry_shift());
        if table::read(k, pud, idx).is_present() {
            free_pmd_range(k, tlb, mm, pud, idx, a, next, floor, ceiling);
        }
        a = next;
        if a == end {
            break;
        }
    }
    if table_within(addr, end, PGDIR_SIZE, floor, ceiling) {
        let start = addr & !(PGDIR_SIZE - 1);
        unhook(k, tlb, mm, pgd, pgd_idx, Level::Pud, pud, start);
    }
}

#[allow(clippy::too_many_arguments)]
fn free_pmd_range(
    k: &Kernel<'_>,
    tlb: &mut MmuGather,
    mm: &MmStruct,
    pud: PhysAddr,
    pud_idx: usize,
    addr: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
) {
    let pmd = table::read(k, pud, pud_idx).frame();
    let mut a = addr;
    loop {
        let next = addr_end(a, end, PMD_SIZE);
        let idx = VirtAddr(a).table_index(Level::Pmd.entry_shift());
        let e = table::read(k, pmd, idx);
        if e.is_present() {
            // free_pte_range: the caller already trimmed PTE tables shared with neighbours.
            unhook(
                k,
                tlb,
                mm,
                pmd,
                idx,
                Level::Pte,
                e.frame(),
                a & !(PMD_SIZE - 1),
            );
        }
        a = next;
        if a == end {
            break;
        }
    }
    if table_within(addr, end, PUD_SIZE, floor, ceiling) {
        let start = addr & !(PUD_SIZE - 1);
        unhook(k, tlb, mm, pud, pud_idx, Level::Pmd, pmd, start);
    }
}

/// Clears `parent[idx]` (which points to `frame`, a table at `level` mapping from `start`) and queues
/// the table on the gather.
#[allow(clippy::too_many_arguments)]
fn unhook(
    k: &Kernel<'_>,
    tlb: &mut MmuGather,
    mm: &MmStruct,
    parent: PhysAddr,
    idx: usize,
    level: Level,
    frame: PhysAddr,
    start: u64,
) {
    table::write(k, parent, idx, PageTableEntry::NONE);
    mm.pgtables_bytes.sub(PAGE_SIZE);
    if level == Level::Pte {
        mm.nr_ptes.sub(1);
        match k.variant() {
            Variant::FreeBehindGather => return k.free_frame(frame, AllocKind::DataPage),
            Variant::LoseTable => return,
            _ => {}
        }
    }
    let ev = TableEvent {
        mm: mm.addr(),
        level,
        frame,
        start: VirtAddr(start),
        end: VirtAddr(start.wrapping_add(level.table_span())),
    };
    tlb.free_table(k, ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_end_clips_to_the_entry_boundary_or_the_end() {
        assert_eq!(addr_end(0, 3 * PMD_SIZE, PMD_SIZE), PMD_SIZE);
        assert_eq!(addr_end(PMD_SIZE + 1, PMD_SIZE + 2, PMD_SIZE), PMD_SIZE + 2);
        // end == 0 means the top of the address space.
        assert_eq!(addr_end(u64::MAX - PMD_SIZE + 1, 0, PMD_SIZE), 0);
    }

    #[test]
    fn a_table_is_within_only_if_its_whole_span_is_inside_floor_and_ceiling() {
        let g = PGDIR_SIZE;
        assert!(table_within(g, g + 5, g, g, 0));
        assert!(!table_within(g, g + 5, g, g + 1, 0));
        assert!(!table_within(g, g + 5, g, 0, g + 5));
        assert!(table_within(g, 2 * g, g, 0, 2 * g));
    }
}
