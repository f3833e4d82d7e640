//! `Kernel`: the machine-wide context every mm operation runs in.
//!
//! It bundles what Linux reaches through globals: the frame allocator, phys→virt access, the
//! per-frame metadata, the TLB-flush primitive, the probe hooks, fault injection and the ordering
//! [`Variant`]. Address spaces ([`Mm`](crate::mm::Mm)) and files are created against one `Kernel`
//! and every operation takes it as its first argument.

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::cell::U64Cell;
use crate::hooks::{FlushEvent, MmHooks, NoHooks};
use crate::inject::FaultInjector;
use crate::lockdep::{Lockdep, LOCKDEP};
use crate::mm::kobj::list_iter;
use crate::mm::{AddressSpace, AnonVma, AnonVmaPtr, KPtr, MappingPtr};
use crate::paging::TlbFlush;
use crate::phys::{AllocKind, FrameAllocator, MemMap, Page, PageFlags, PhysMem, TableDesc};
use crate::sync::ArchSpinLock;
use crate::variant::Variant;
use alloc::vec::Vec;

static NO_HOOKS: NoHooks = NoHooks;

/// The machine-wide context of the memory manager.
pub struct Kernel<'a> {
    frames: &'a dyn FrameAllocator,
    phys: &'a dyn PhysMem,
    mem_map: MemMap<'a>,
    tlb: &'a dyn TlbFlush,
    hooks: &'a dyn MmHooks,
    /// Fault injection ("fail the Nth allocation"); disarmed by default.
    pub inject: FaultInjector,
    variant: Variant,
    lockdep: &'a Lockdep,
    roots: KPtr<KernelRoots>,
    /// Freed anon_vmas, kept for reuse and never given back to the heap while the kernel lives
    /// (see [`Kernel::free_anon_vma`]).
    anon_vma_cache: ArchSpinLock<Vec<u64>>,
}

/// The roots from which every anon_vma and every address_space can be reached (what the host
/// probes walk); `#[repr(C)]`, all `u64`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct KernelRoots {
    /// First `AnonVma` on the registry (linked through `AnonVma::all`).
    pub anon_vmas: U64Cell,
    /// AnonVmas registered.
    pub nr_anon_vmas: U64Cell,
    /// First `AddressSpace` on the registry (linked through `AddressSpace::all`).
    pub mappings: U64Cell,
    /// AddressSpaces registered.
    pub nr_mappings: U64Cell,
}

impl<'a> Kernel<'a> {
    /// A kernel over `frames` (reached through `phys`, described by `mem_map`) that flushes TLBs
    /// with `tlb`; no hooks, [`Variant::Correct`].
    pub fn new(
        frames: &'a dyn FrameAllocator,
        phys: &'a dyn PhysMem,
        mem_map: MemMap<'a>,
        tlb: &'a dyn TlbFlush,
    ) -> Self {
        Self {
            frames,
            phys,
            mem_map,
            tlb,
            hooks: &NO_HOOKS,
            inject: FaultInjector::default(),
            variant: Variant::Correct,
            lockdep: &LOCKDEP,
            roots: KPtr::alloc(KernelRoots::default()),
            anon_vma_cache: ArchSpinLock::new(Vec::new()),
        }
    }

    /// The same kernel reporting lock acquisitions to `lockdep` instead of the global checker.
    pub fn with_lockdep(mut self, lockdep: &'a Lockdep) -> Self {
        self.lockdep = lockdep;
        self
    }

    /// The lock-order checker in use.
    pub fn lockdep(&self) -> &'a Lockdep {
        self.lockdep
    }

    /// The registry roots (publish their address to the host).
    pub fn roots(&self) -> &KernelRoots {
        self.roots.get()
    }

    /// Every live anon_vma.
    pub fn anon_vmas(&self) -> impl Iterator<Item = AnonVmaPtr> + '_ {
        list_iter(&self.roots().anon_vmas, |a: &AnonVma| &a.all)
    }

    /// Every live address_space.
    pub fn mappings(&self) -> impl Iterator<Item = MappingPtr> + '_ {
        list_iter(&self.roots().mappings, |m: &AddressSpace| &m.all)
    }

    /// The same kernel reporting to `hooks`.
    pub fn with_hooks(mut self, hooks: &'a dyn MmHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The same kernel following ordering `variant` (only tests of the checkers want this).
    pub fn with_variant(mut self, variant: Variant) -> Self {
        self.variant = variant;
        self
    }

    /// The ordering variant in force.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The probe hooks.
    pub fn hooks(&self) -> &dyn MmHooks {
        self.hooks
    }

    /// The TLB-flush primitive.
    pub fn tlb(&self) -> &dyn TlbFlush {
        self.tlb
    }

    /// Phys→virt access.
    pub fn phys(&self) -> &dyn PhysMem {
        self.phys
    }

    /// The per-frame metadata array.
    pub fn mem_map(&self) -> MemMap<'a> {
        self.mem_map
    }

    /// The metadata of `frame`.
    pub fn page(&self, frame: PhysAddr) -> &'a Page {
        self.mem_map.page(frame)
    }

    /// A new, empty anon_vma: a freed one when there is one.
    pub(crate) fn alloc_anon_vma(&self) -> AnonVmaPtr {
        let cached = self.anon_vma_cache.lock().pop();
        match cached.and_then(KPtr::from_addr) {
            // Empty when it was freed (its last VMA left), and nobody links to a freed anon_vma.
            Some(anon) => anon,
            None => KPtr::alloc(AnonVma::default()),
        }
    }

    /// Takes back an anon_vma whose last VMA left and that no page points to any more.
    ///
    /// Like Linux's `SLAB_TYPESAFE_BY_RCU` anon_vma cache, the memory stays an `AnonVma` for the
    /// kernel's lifetime: an rmap walker on another CPU that read a page's `mapping` just before
    /// the page was unmapped may still take this anon_vma's lock, which must remain a lock; the
    /// walker then sees the page no longer points here and backs off (`rmap_walk`).
    pub(crate) fn free_anon_vma(&self, anon: AnonVmaPtr) {
        debug_assert_eq!(anon.get().nr_vmas.get(), 0, "freeing a non-empty anon_vma");
        self.anon_vma_cache.lock().push(anon.addr());
    }

    /// Whether an object allocation of `kind` may proceed (fault injection says no to the Nth).
    pub(crate) fn may_alloc(&self, kind: AllocKind) -> bool {
        !self.inject.should_fail(kind)
    }

    /// A zeroed frame for `kind`, its metadata reset; `None` when memory is exhausted or injected to be.
    pub(crate) fn alloc_frame(&self, kind: AllocKind) -> Option<PhysAddr> {
        if self.inject.should_fail(kind) {
            return None;
        }
        let frame = self.frames.alloc_frame()?;
        let flags = match kind {
            AllocKind::PageTable => PageFlags::PAGETABLE,
            _ => PageFlags(0),
        };
        self.page(frame)
            .reset(PageFlags(PageFlags::ALLOCATED.0 | flags.0));
        self.zero_frame(frame);
        self.hooks.frame_alloc(self, frame, kind);
        Some(frame)
    }

    /// A zeroed page-table frame described by `desc` (its mm, level and base, Invariant 8);
    /// `None` when memory is exhausted or injected to be.
    pub(crate) fn alloc_table(&self, desc: TableDesc) -> Option<PhysAddr> {
        let frame = self.alloc_frame(AllocKind::PageTable)?;
        self.page(frame).set_table(desc);
        Some(frame)
    }

    /// Returns `frame` to the allocator, which sees its metadata as it was (so it knows a page
    /// table whatever `kind` the caller says) and clears it.
    pub(crate) fn free_frame(&self, frame: PhysAddr, kind: AllocKind) {
        self.hooks.frame_free(self, frame, kind);
        self.frames.free_frame(frame, self.page(frame));
    }

    /// Takes one more reference to a data page, so it outlives every mapping and cache entry (what
    /// reclaim holds while it walks rmap); drop it with [`Kernel::put_page`].
    pub fn get_page(&self, frame: PhysAddr) {
        let page = self.page(frame);
        debug_assert!(page.refcount.get() > 0, "get_page on free page {frame}");
        page.refcount.add(1);
    }

    /// Drops one reference to a data page, freeing it with the last one.
    pub fn put_page(&self, frame: PhysAddr) {
        let page = self.page(frame);
        debug_assert!(page.refcount.get() > 0, "put_page on free page {frame}");
        if page.refcount.sub(1) == 0 {
            self.free_frame(frame, AllocKind::DataPage);
        }
    }

    /// Flushes `[start, end)` of the mm at `mm` (rooted at `pgd`) from every TLB, then reports it.
    pub(crate) fn flush_tlb_range(&self, mm: u64, pgd: PhysAddr, start: VirtAddr, end: VirtAddr) {
        self.tlb.flush_range(pgd, start, end);
        self.hooks.tlb_flushed(self, &FlushEvent { mm, start, end });
    }

    /// The zero page, if the allocator has one.
    pub fn zero_page(&self) -> Option<PhysAddr> {
        self.frames.zero_page()
    }

    /// Whether `frame` is the zero page.
    pub fn is_zero_page(&self, frame: PhysAddr) -> bool {
        self.page(frame).page_flags().contains(PageFlags::ZERO)
    }

    /// Fills `frame` with zeroes.
    pub(crate) fn zero_frame(&self, frame: PhysAddr) {
        let p = self.phys.frame_ptr(frame);
        // SAFETY: PhysMem's contract: p is valid for PAGE_SIZE bytes of writes while the frame is
        // allocated, which the caller's ownership of `frame` guarantees.
        unsafe { core::ptr::write_bytes(p, 0, PAGE_SIZE as usize) }
    }

    /// Copies the contents of frame `src` to frame `dst` (copy-on-write).
    pub(crate) fn copy_frame(&self, dst: PhysAddr, src: PhysAddr) {
        let d = self.phys.frame_ptr(dst);
        let s = self.phys.frame_ptr(src);
        // SAFETY: both frames are allocated (PhysMem contract: PAGE_SIZE valid bytes each) and
        // distinct, since dst was just allocated while src is still referenced.
        unsafe { core::ptr::copy_nonoverlapping(s, d, PAGE_SIZE as usize) }
    }

    /// Reads byte `offset` of `frame` (tests and the user-copy paths).
    pub fn read_byte(&self, frame: PhysAddr, offset: u64) -> u8 {
        assert!(offset < PAGE_SIZE);
        // SAFETY: offset < PAGE_SIZE and the PhysMem contract makes the frame's bytes readable.
        unsafe {
            self.phys
                .frame_ptr(frame)
                .add(offset as usize)
                .read_volatile()
        }
    }

    /// Writes byte `offset` of `frame`.
    pub fn write_byte(&self, frame: PhysAddr, offset: u64, value: u8) {
        assert!(offset < PAGE_SIZE);
        // SAFETY: offset < PAGE_SIZE and the PhysMem contract makes the frame's bytes writable.
        unsafe {
            self.phys
                .frame_ptr(frame)
                .add(offset as usize)
                .write_volatile(value)
        }
    }
}

impl Drop for Kernel<'_> {
    fn drop(&mut self) {
        // SAFETY: the roots are owned by this Kernel alone; objects still registered (a leak the
        // tests' counts catch) only point into the roots' lists, never at the roots themselves.
        unsafe { self.roots.free() }
        for addr in core::mem::take(self.anon_vma_cache.get_mut()) {
            if let Some(anon) = KPtr::<AnonVma>::from_addr(addr) {
                // SAFETY: cached anon_vmas are empty and unreachable (`free_anon_vma`), and with
                // the kernel gone no walker can be inside one.
                unsafe { anon.free() }
            }
        }
    }
}
