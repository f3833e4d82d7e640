//! `OrderCheck`: the host probes' ordering rules, checked in-process from the hooks.
//!
//! At every page-table free it walks every anon_vma and every address_space reachable from the
//! kernel's roots, as rmap and truncate would, and reports
//! - **P1**: a VMA of that mm whose range meets the freed table's span is still reachable;
//! - **P2**: an entry of that mm's page tables still points to the frame;
//! - **P3**: no TLB flush covering the span happened between the unhook and the free;
//! - **P4**: the frame is not a live page-table page any more (freed twice).
//!
//! Tests install it as the kernel's hooks to show that `correct` passes and each ordering variant
//! is caught.

use alloc::vec::Vec;
use core::cell::RefCell;

use crate::addr::VirtAddr;
use crate::hooks::{FlushEvent, MmHooks, TableEvent, UnlinkKind};
use crate::kernel::Kernel;
use crate::mm::{KPtr, MmStruct, VmaPtr};
use crate::paging::walk;
use crate::phys::PageFlags;

/// A broken ordering rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderViolation {
    /// A VMA meeting the freed table's span was still reachable through rmap.
    P1 {
        /// The table being freed.
        table: TableEvent,
        /// Address of the offending VMA.
        vma: u64,
        /// Its range.
        start: VirtAddr,
        /// End of its range.
        end: VirtAddr,
        /// Where it was still reachable from.
        via: UnlinkKind,
    },
    /// The table was still reachable from the mm's page tables.
    P2 {
        /// The table being freed.
        table: TableEvent,
    },
    /// The table was freed without a TLB flush of its span after it was unhooked.
    P3 {
        /// The table being freed.
        table: TableEvent,
    },
    /// The frame was not an allocated page-table page when it was freed.
    P4 {
        /// The table being freed.
        table: TableEvent,
    },
}

/// Hooks that check P1 and P3 at every page-table free.
#[derive(Debug, Default)]
pub struct OrderCheck {
    unflushed: RefCell<Vec<TableEvent>>,
    violations: RefCell<Vec<OrderViolation>>,
    frees_checked: RefCell<u64>,
}

impl OrderCheck {
    /// The violations seen so far.
    pub fn violations(&self) -> Vec<OrderViolation> {
        self.violations.borrow().clone()
    }

    /// Page-table frees checked so far.
    pub fn frees_checked(&self) -> u64 {
        *self.frees_checked.borrow()
    }

    fn check_p1(&self, k: &Kernel<'_>, t: &TableEvent) {
        let meets = |v: VmaPtr| {
            let v = v.get();
            v.vm_mm.get() == t.mm && v.start() < t.end && t.start < v.end()
        };
        let report = |vma: VmaPtr, via| {
            let v = vma.get();
            self.violations.borrow_mut().push(OrderViolation::P1 {
                table: *t,
                vma: vma.addr(),
                start: v.start(),
                end: v.end(),
                via,
            });
        };
        for anon in k.anon_vmas() {
            for vma in anon.get().vmas().filter(|v| meets(*v)) {
                report(vma, UnlinkKind::Anon);
            }
        }
        for m in k.mappings() {
            for vma in m
                .get()
                .lock_i_mmap(k)
                .vmas()
                .into_iter()
                .filter(|v| meets(*v))
            {
                report(vma, UnlinkKind::File);
            }
        }
    }
}

impl MmHooks for OrderCheck {
    fn table_unhooked(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        self.unflushed.borrow_mut().push(*ev);
    }

    fn tlb_flushed(&self, _k: &Kernel<'_>, ev: &FlushEvent) {
        self.unflushed
            .borrow_mut()
            .retain(|t| !(t.mm == ev.mm && ev.start <= t.start && t.end <= ev.end));
    }

    fn table_freeing(&self, k: &Kernel<'_>, ev: &TableEvent) {
        *self.frees_checked.borrow_mut() += 1;
        let mut unflushed = self.unflushed.borrow_mut();
        if let Some(i) = unflushed.iter().position(|t| t.frame == ev.frame) {
            unflushed.swap_remove(i);
            self.violations
                .borrow_mut()
                .push(OrderViolation::P3 { table: *ev });
        }
        drop(unflushed);
        self.check_p1(k, ev);
        if let Some(mm) = KPtr::<MmStruct>::from_addr(ev.mm) {
            let mut still_hooked = false;
            walk::for_each_user_table(k, mm.get().pgd(), &mut |_, frame, _| {
                still_hooked |= frame == ev.frame;
            });
            if still_hooked {
                self.violations
                    .borrow_mut()
                    .push(OrderViolation::P2 { table: *ev });
            }
        }
        if !k.page(ev.frame).page_flags().contains(PageFlags::PAGETABLE) {
            self.violations
                .borrow_mut()
                .push(OrderViolation::P4 { table: *ev });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{PAGE_SIZE, USER_BASE};
    use crate::mm::{Access, MapFlags, Mm, Prot};
    use crate::paging::walk::lookup;
    use crate::paging::{CountingTlb, Level};
    use crate::phys::SimRam;

    #[test]
    fn a_table_still_hooked_is_p2_and_a_frame_that_is_no_table_is_p4() {
        let ram = SimRam::new(64);
        let tlb = CountingTlb::default();
        let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
        let mut mm = Mm::new(&k, None).expect("mm");
        let flags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0 | MapFlags::FIXED.0);
        mm.mmap(&k, USER_BASE, PAGE_SIZE, Prot::RW, flags, None, 0)
            .expect("mmap");
        mm.handle_mm_fault(&k, USER_BASE, Access::Write)
            .expect("fault");
        let slot = lookup(&k, mm.raw().pgd(), USER_BASE).expect("slot");
        let check = OrderCheck::default();
        let hooked = TableEvent {
            mm: mm.raw().addr(),
            level: Level::Pte,
            frame: slot.table,
            start: USER_BASE,
            end: USER_BASE + Level::Pte.table_span(),
        };
        // Never unhooked: the PMD entry still points at it.
        check.table_freeing(&k, &hooked);
        assert!(check
            .violations()
            .contains(&OrderViolation::P2 { table: hooked }));
        let data = TableEvent {
            frame: slot.read(&k).frame(),
            ..hooked
        };
        check.table_freeing(&k, &data);
        assert!(check
            .violations()
            .contains(&OrderViolation::P4 { table: data }));
        mm.destroy(&k);
        assert_eq!(ram.frames_in_use(), 0);
    }
}
