//! `madvise`, which mm-core lacks: advice that only touches pages changes nothing a replay can see;
//! advice that changes `vm_flags` splits and merges VMAs (Linux's `madvise_update_vma`), which the
//! replayer does with the hidden bits, in Linux's positions (mm/madvise.c `madvise_vma_behavior`).

use alloc::format;
use alloc::string::String;
use mm_core::addr::TASK_SIZE;
use mm_core::VirtAddr;

use super::{page_end, Replayer};

const VM_SEQ_READ: u64 = 0x0000_8000;
const VM_RAND_READ: u64 = 0x0001_0000;
const VM_DONTCOPY: u64 = 0x0002_0000;
const VM_WIPEONFORK: u64 = 0x0200_0000;
const VM_DONTDUMP: u64 = 0x0400_0000;
const VM_HUGEPAGE: u64 = 0x2000_0000;
const VM_NOHUGEPAGE: u64 = 0x4000_0000;

/// The `vm_flags` bits `advice` sets and clears, or `None` if it only touches pages.
fn behaviour(advice: &str) -> Option<(u64, u64)> {
    Some(match advice {
        "MADV_NORMAL" => (0, VM_SEQ_READ | VM_RAND_READ),
        "MADV_SEQUENTIAL" => (VM_SEQ_READ, VM_RAND_READ),
        "MADV_RANDOM" => (VM_RAND_READ, VM_SEQ_READ),
        "MADV_DONTFORK" => (VM_DONTCOPY, 0),
        "MADV_DOFORK" => (0, VM_DONTCOPY),
        "MADV_WIPEONFORK" => (VM_WIPEONFORK, 0),
        "MADV_KEEPONFORK" => (0, VM_WIPEONFORK),
        "MADV_DONTDUMP" => (VM_DONTDUMP, 0),
        "MADV_DODUMP" => (0, VM_DONTDUMP),
        "MADV_HUGEPAGE" => (VM_HUGEPAGE, VM_NOHUGEPAGE),
        "MADV_NOHUGEPAGE" => (VM_NOHUGEPAGE, VM_HUGEPAGE),
        _ => return None,
    })
}

/// Advice that only drops, reads ahead, reclaims or populates pages.
const PAGES_ONLY: &[&str] = &[
    "MADV_DONTNEED",
    "MADV_DONTNEED_LOCKED",
    "MADV_FREE",
    "MADV_WILLNEED",
    "MADV_COLD",
    "MADV_PAGEOUT",
    "MADV_REMOVE",
    "MADV_POPULATE_READ",
    "MADV_POPULATE_WRITE",
    "MADV_COLLAPSE",
];

impl Replayer<'_, '_> {
    /// Applies `madvise(addr, len, advice)` as far as it changes VMAs.
    pub(super) fn madvise(
        &mut self,
        addr: u64,
        len: u64,
        advice: &str,
        failed: bool,
    ) -> Result<(), String> {
        if PAGES_ONLY.contains(&advice) {
            self.note("madvise without effect on VMAs");
            return Ok(());
        }
        let Some((set, clear)) = behaviour(advice) else {
            self.note("madvise with unknown advice not replayed");
            return Ok(());
        };
        if failed {
            // Linux may have changed the mapped parts before finding a hole (ENOMEM).
            self.note("failed madvise changing vm_flags not replayed");
            return Ok(());
        }
        let start = VirtAddr(addr.wrapping_add(self.offset));
        if start >= TASK_SIZE {
            return Err(format!(
                "madvise at {addr:#x} succeeded in Linux, outside mm-core"
            ));
        }
        self.change_hidden(start, page_end(start, len), set, clear);
        self.applied += 1;
        Ok(())
    }
}
