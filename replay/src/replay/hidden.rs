//! The `vm_flags` bits `/proc/PID/maps` does not show but Linux's merges compare: `VM_ACCOUNT`,
//! `VM_NORESERVE` and `VM_NOHUGEPAGE`. mm-core has none of them, so the replayer keeps them itself, in Linux's bit
//! positions of `vm_flags` (mm-core copies unknown bits through splits and compares them in its
//! merges, and `mprotect` changes only the access bits).
//!
//! Linux's rules (mm/mmap.c `accountable_mapping`, mm/mprotect.c `mprotect_fixup`, `do_brk_flags`):
//! a private writable mapping is accounted unless `MAP_NORESERVE` (which sets `VM_NORESERVE`
//! under the default overcommit policy); `mprotect` making a private, unaccounted, non-writable,
//! non-`NORESERVE` range writable accounts it; the heap is always accounted. Nothing clears
//! `VM_ACCOUNT`: a RELRO range mapped `rw-p` and made read-only keeps it, which is why Linux
//! does not merge it with the read-only segment below. Since Linux 6.7, `MAP_STACK` sets
//! `VM_NOHUGEPAGE`, so a thread stack never merges with ordinary anonymous memory (the traces
//! here come from 6.x kernels).

use alloc::vec::Vec;
use mm_core::addr::TASK_SIZE;
use mm_core::mm::{Prot, VmFlags};
use mm_core::VirtAddr;

use super::{page_end, Replayer};

/// Linux's `VM_ACCOUNT`.
pub(super) const VM_ACCOUNT: u64 = 0x0010_0000;
/// Linux's `VM_NORESERVE`.
pub(super) const VM_NORESERVE: u64 = 0x0020_0000;
/// Linux's `VM_NOHUGEPAGE`, which mm-core knows (`MADV_NOHUGEPAGE`) but its mmap does not set.
pub(super) const VM_NOHUGEPAGE: u64 = VmFlags::NOHUGEPAGE.0;

impl Replayer<'_, '_> {
    /// The pieces of `[start, end)` that are mapped, each with its flags.
    pub(super) fn pieces(&self, start: VirtAddr, end: VirtAddr) -> Vec<(VirtAddr, VirtAddr, u64)> {
        let mut out = Vec::new();
        // mm-core's find_vma overflows on the last address: stay below TASK_SIZE.
        let end = end.min(TASK_SIZE);
        let mut at = start;
        while at < end {
            let Some(v) = self.mm.find_vma(at) else { break };
            let v = v.get();
            if v.start() >= end {
                break;
            }
            let s = v.start().max(at);
            let e = v.end().min(end);
            out.push((s, e, v.flags().0));
            at = e;
        }
        out
    }

    /// Sets `bits` on every mapped page of `[start, end)`, splitting and merging VMAs as Linux
    /// would had the bits been there from the start.
    ///
    /// A piece is first given a temporary permission no neighbour has (mprotect splits it out
    /// exactly), then the bits, then its own permission back: that last mprotect merges it with
    /// whatever neighbours now have equal flags.
    pub(super) fn add_hidden(&mut self, start: VirtAddr, end: VirtAddr, bits: u64) {
        self.change_hidden(start, end, bits, 0);
    }

    /// Sets `set` and clears `clear` on every mapped page of `[start, end)` (see
    /// [`Self::add_hidden`]).
    pub(super) fn change_hidden(&mut self, start: VirtAddr, end: VirtAddr, set: u64, clear: u64) {
        for (s, e, flags) in self.pieces(start, end) {
            if (flags | set) & !clear == flags {
                continue;
            }
            let prot = Prot(flags & VmFlags::ACCESS.0);
            let temp = if prot == Prot::WRITE {
                Prot(Prot::WRITE.0 | Prot::EXEC.0)
            } else {
                Prot::WRITE
            };
            let len = e - s;
            // Both calls are inside a mapped range with valid permissions; a failure would be an
            // allocation failure, and the compare at the end shows its effect.
            if self.mm.mprotect(self.k, s, len, temp).is_err() {
                self.note("could not split out a range to set hidden vm_flags");
                continue;
            }
            if let Some(v) = self.mm.vma_at(s) {
                let v = v.get();
                v.vm_flags.set((v.vm_flags.get() | set) & !clear);
            }
            if self.mm.mprotect(self.k, s, len, prot).is_err() {
                self.note("could not restore a range's permissions after setting hidden bits");
            }
        }
    }

    /// The hidden bits a new mapping gets (`accountable_mapping` and `MAP_NORESERVE`).
    pub(super) fn mmap_hidden(shared: bool, prot: Prot, noreserve: bool, stack: bool) -> u64 {
        let account = if noreserve {
            VM_NORESERVE
        } else if !shared && prot.contains(Prot::WRITE) {
            VM_ACCOUNT
        } else {
            0
        };
        account | if stack { VM_NOHUGEPAGE } else { 0 }
    }

    /// Accounts the heap's new pages after the break moved up from `old` to `new`.
    pub(super) fn brk_hidden(&mut self, old: VirtAddr, new: VirtAddr) {
        let (old, new) = (page_end(old, 0), page_end(new, 0));
        if new > old {
            self.add_hidden(old, new, VM_ACCOUNT);
        }
    }
}
