//! Tests of the mm operations, grouped by behaviour.

mod basic;
mod floor_ceiling;
mod fork;
mod hooks;
mod inject;
mod linux;
mod madvise;
mod model;
mod mremap;
mod rmap;
mod validate;
mod variants;

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::kernel::Kernel;
use crate::mm::{Access, MapFlags, Mm, Prot};

/// Builds `ram`, `tlb` and `k` (a Kernel over them) in the caller's scope.
macro_rules! rig {
    ($ram:ident, $tlb:ident, $k:ident) => {
        rig!($ram, $tlb, $k, 1 << 14);
    };
    ($ram:ident, $tlb:ident, $k:ident, $frames:expr) => {
        let $ram = crate::phys::SimRam::new($frames);
        let $tlb = crate::paging::CountingTlb::default();
        #[allow(unused_mut)]
        let mut $k = crate::kernel::Kernel::new(&$ram, &$ram, $ram.mem_map(), &$tlb);
    };
}
pub(crate) use rig;

/// Private anonymous read/write.
pub(crate) const ANON: MapFlags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0);
/// Private anonymous at a fixed address.
pub(crate) const ANON_FIXED: MapFlags = MapFlags(ANON.0 | MapFlags::FIXED.0);

/// Maps `pages` anonymous RW pages at exactly `at`.
pub(crate) fn map_anon(k: &Kernel<'_>, mm: &mut Mm, at: u64, pages: u64) -> VirtAddr {
    mm.mmap(
        k,
        VirtAddr(at),
        pages * PAGE_SIZE,
        Prot::RW,
        ANON_FIXED,
        None,
        0,
    )
    .expect("mmap")
}

/// Writes to every page of `[at, at + pages)`.
pub(crate) fn touch(k: &Kernel<'_>, mm: &mut Mm, at: u64, pages: u64) {
    for i in 0..pages {
        mm.handle_mm_fault(k, VirtAddr(at + i * PAGE_SIZE), Access::Write)
            .expect("fault");
    }
}

/// Panics with the list if `validate_mm` finds anything.
pub(crate) fn assert_valid(k: &Kernel<'_>, mm: &Mm) {
    let v = mm.validate_mm(k);
    assert!(v.is_empty(), "validate_mm: {v:#?}");
}
