//! `OrderCheck`: the host probes' ordering rules, checked in-process from the hooks.
//!
//! At every page-table free it walks every anon_vma and every address_space reachable from the
//! kernel's roots, as rmap and truncate would, and reports
//! - **P1**: a VMA of that mm whose range meets the freed table's span is still reachable;
//! - **P3**: no TLB flush covering the span happened between the unhook and the free.
//!
//! Tests install it as the kernel's hooks to show that `correct` passes and each ordering variant
//! is caught. (P2 — the parent entry no longer points to the frame — holds by construction here:
//! `free_pgd_range` clears the entry before queueing the table.)

use alloc::vec::Vec;
use core::cell::RefCell;

use crate::addr::VirtAddr;
use crate::hooks::{FlushEvent, MmHooks, TableEvent, UnlinkKind};
use crate::kernel::Kernel;
use crate::mm::VmaPtr;

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
    /// The table was freed without a TLB flush of its span after it was unhooked.
    P3 {
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
    }
}
