//! `NativeTlb`: TLB shootdown on the CPU mm-core runs on (the bare-metal guest).
//!
//! Flushes a short range page by page with `invlpg` when the address space is the one loaded in
//! CR3, and otherwise (or for long ranges) reloads CR3, which drops every non-global translation
//! and the paging-structure caches. It flushes only the executing CPU: a guest running one mm on
//! several CPUs must add its own IPIs.

use core::arch::asm;

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::paging::TlbFlush;

/// Ranges longer than this many pages are flushed with a CR3 reload instead of `invlpg`s.
const INVLPG_MAX_PAGES: u64 = 32;

/// Flushes this CPU's TLB with `invlpg` or a CR3 reload.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeTlb;

fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects; mm-core runs at CPL0 on the bare-metal target.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    cr3
}

impl TlbFlush for NativeTlb {
    fn flush_range(&self, pgd: PhysAddr, start: VirtAddr, end: VirtAddr) {
        let cr3 = read_cr3();
        let current = cr3 & !(PAGE_SIZE - 1) == pgd.as_u64();
        let pages = (end - start) / PAGE_SIZE;
        if current && pages <= INVLPG_MAX_PAGES {
            let mut va = start;
            while va < end {
                // SAFETY: invlpg only drops cached translations (including the paging-structure
                // caches for that address); it cannot break memory safety.
                unsafe {
                    asm!("invlpg [{}]", in(reg) va.as_u64(), options(nostack, preserves_flags))
                };
                va = va + PAGE_SIZE;
            }
        } else {
            // SAFETY: writing back the current CR3 keeps the same address space and only flushes
            // non-global translations. An mm that is not loaded needs no flush on this CPU, but a
            // reload is cheap insurance against a lazily kept one.
            unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) };
        }
    }
}
