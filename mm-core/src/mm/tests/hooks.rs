//! The VMA range events are exact: an observer that keeps an index from `vma_range` and
//! `vma_freed` alone always agrees with the mm's own VMA list (the host probes rely on it).

use super::{map_anon, rig, touch};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::hooks::{MmHooks, VmaRangeEvent};
use crate::kernel::Kernel;
use crate::mm::{Mm, Prot};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

/// VMA address → (start, end), kept from the events only.
#[derive(Default)]
struct RangeIndex(RefCell<BTreeMap<u64, (u64, u64)>>);

impl MmHooks for RangeIndex {
    fn vma_range(&self, _k: &Kernel<'_>, ev: &VmaRangeEvent) {
        self.0.borrow_mut().insert(ev.vma, (ev.start.0, ev.end.0));
    }

    fn vma_freed(&self, _k: &Kernel<'_>, _mm: u64, vma: u64) {
        let known = self.0.borrow_mut().remove(&vma);
        assert!(
            known.is_some(),
            "a VMA freed that no vma_range event announced"
        );
    }
}

fn list(mm: &Mm) -> BTreeMap<u64, (u64, u64)> {
    mm.vmas()
        .map(|v| (v.addr(), (v.get().start().0, v.get().end().0)))
        .collect()
}

#[test]
fn an_index_kept_from_range_events_matches_the_vma_list_through_splits_and_merges() {
    rig!(ram, tlb, k);
    let index = RangeIndex::default();
    let k = k.with_hooks(&index);
    let mut mm = Mm::new(&k, None).unwrap();
    let base = 1u64 << 40;
    let mut steps: Vec<&str> = Vec::new();
    let mut check = |mm: &Mm, step: &'static str| {
        steps.push(step);
        assert_eq!(*index.0.borrow(), list(mm), "after {steps:?}");
    };
    map_anon(&k, &mut mm, base, 64);
    check(&mm, "mmap");
    touch(&k, &mut mm, base, 64);
    mm.mprotect(
        &k,
        VirtAddr(base + 8 * PAGE_SIZE),
        8 * PAGE_SIZE,
        Prot::READ,
    )
    .unwrap();
    check(&mm, "mprotect splits in three");
    mm.mprotect(&k, VirtAddr(base + 8 * PAGE_SIZE), 8 * PAGE_SIZE, Prot::RW)
        .unwrap();
    check(&mm, "mprotect back merges");
    mm.munmap(&k, VirtAddr(base + 16 * PAGE_SIZE), 4 * PAGE_SIZE)
        .unwrap();
    check(&mm, "munmap of a hole");
    map_anon(&k, &mut mm, base + 16 * PAGE_SIZE, 4);
    check(&mm, "mmap into the hole merges");
    mm.brk(&k, VirtAddr(0)).ok();
    mm.exit_mmap(&k);
    assert!(
        index.0.borrow().is_empty(),
        "exit_mmap freed VMAs without vma_freed"
    );
    mm.destroy(&k);
    assert_eq!(ram.frames_in_use(), 0);
}
