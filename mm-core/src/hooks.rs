//! Probe hooks: events the host probes (and tests) observe. Every method defaults to a no-op.
//!
//! The events mark the points the ordering rule is about: a VMA leaving rmap's reach
//! ([`MmHooks::vma_unlinked`]), a page-table page leaving its parent ([`MmHooks::table_unhooked`]),
//! the TLB flush ([`MmHooks::tlb_flushed`]) and the page-table page going back to the allocator
//! ([`MmHooks::table_freeing`]).

use crate::addr::{PhysAddr, VirtAddr};
use crate::kernel::Kernel;
use crate::paging::Level;
use crate::phys::AllocKind;

/// Which rmap structure a VMA left.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlinkKind {
    /// The VMA left its anon_vma's list.
    Anon = 1,
    /// The VMA left its file's i_mmap tree.
    File = 2,
}

impl UnlinkKind {
    /// The kind a raw value names, if any.
    pub fn from_raw(raw: u64) -> Option<UnlinkKind> {
        match raw {
            1 => Some(UnlinkKind::Anon),
            2 => Some(UnlinkKind::File),
            _ => None,
        }
    }
}

/// A VMA left an rmap structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaUnlinkEvent {
    /// Address of the `MmStruct` the VMA belongs to.
    pub mm: u64,
    /// Address of the `Vma`.
    pub vma: u64,
    /// The VMA's range.
    pub start: VirtAddr,
    /// End of the VMA's range (exclusive).
    pub end: VirtAddr,
    /// Which structure it left.
    pub kind: UnlinkKind,
}

/// A VMA is linked into an mm with this range, or its range changed (its end moved by a split or
/// a merge; a VMA's start never moves). With [`MmHooks::vma_freed`] this lets an observer keep an
/// exact index of every VMA's range without walking the mm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaRangeEvent {
    /// Address of the `MmStruct`.
    pub mm: u64,
    /// Address of the `Vma`.
    pub vma: u64,
    /// Its range now.
    pub start: VirtAddr,
    /// End of its range now (exclusive).
    pub end: VirtAddr,
}

/// A page-table page was unhooked from its parent, or is about to be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEvent {
    /// Address of the `MmStruct` whose tables these are.
    pub mm: u64,
    /// The table's level.
    pub level: Level,
    /// The table's frame.
    pub frame: PhysAddr,
    /// First address the table maps.
    pub start: VirtAddr,
    /// End (exclusive) of what it maps.
    pub end: VirtAddr,
}

/// A TLB flush of `[start, end)` in an mm completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushEvent {
    /// Address of the `MmStruct`.
    pub mm: u64,
    /// Start of the flushed range.
    pub start: VirtAddr,
    /// End (exclusive) of the flushed range.
    pub end: VirtAddr,
}

/// Where an rmap or truncate walker stands when it reports a [`MmHooks::walker_point`]: the
/// places a concurrent unmap could slip in between (what the host's scheduler interleaves).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkerPoint {
    /// An rmap walk holds the anon_vma lock or `i_mmap_lock` and is about to walk a VMA.
    RmapVma = 1,
    /// An rmap walk descended to a PTE table without `page_table_lock` and is about to take it
    /// and read the entry (Linux's `page_vma_mapped_walk` takes the PTE lock only there).
    RmapPte = 2,
    /// Truncate holds `i_mmap_lock` and is about to zap a VMA's range.
    TruncateVma = 3,
}

/// A walker read a page-table entry holding poison: the table it was reading had been freed
/// (a use-after-free that the ordering rule exists to prevent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoisonHit {
    /// The freed table.
    pub table: PhysAddr,
    /// Index of the entry read.
    pub index: usize,
    /// The poisoned value.
    pub value: u64,
    /// The virtual address the walk was for.
    pub va: VirtAddr,
    /// Where in mm-core the entry was read.
    pub location: &'static core::panic::Location<'static>,
}

/// Observer of mm events. Each gets the kernel so it can inspect (never change) mm state, as the
/// host probes do from guest memory; hooks must not call mm operations.
pub trait MmHooks {
    /// A VMA was linked into its mm, or its range changed.
    fn vma_range(&self, _k: &Kernel<'_>, _ev: &VmaRangeEvent) {}
    /// A VMA is about to be freed (`mm` and `vma` are addresses); it is off every list already.
    fn vma_freed(&self, _k: &Kernel<'_>, _mm: u64, _vma: u64) {}
    /// A VMA left its anon_vma list or its i_mmap tree.
    fn vma_unlinked(&self, _k: &Kernel<'_>, _ev: &VmaUnlinkEvent) {}
    /// A page-table page's parent entry was cleared.
    fn table_unhooked(&self, _k: &Kernel<'_>, _ev: &TableEvent) {}
    /// A page-table page is about to go back to the allocator.
    fn table_freeing(&self, _k: &Kernel<'_>, _ev: &TableEvent) {}
    /// A TLB flush completed.
    fn tlb_flushed(&self, _k: &Kernel<'_>, _ev: &FlushEvent) {}
    /// A walker running without `mmap_sem` reached `point` (see [`WalkerPoint`]).
    fn walker_point(&self, _k: &Kernel<'_>, _point: WalkerPoint) {}
    /// A spinlock of class `class` was busy; the caller retries after this returns.
    fn lock_contended(&self, _k: &Kernel<'_>, _class: &'static crate::lockdep::LockClass) {}
    /// A walker met a freed (poisoned) page table; it stops walking that address.
    fn poison_hit(&self, _k: &Kernel<'_>, _hit: &PoisonHit) {}
    /// A frame was allocated.
    fn frame_alloc(&self, _k: &Kernel<'_>, _frame: PhysAddr, _kind: AllocKind) {}
    /// A frame is about to be freed.
    fn frame_free(&self, _k: &Kernel<'_>, _frame: PhysAddr, _kind: AllocKind) {}
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl MmHooks for NoHooks {}
