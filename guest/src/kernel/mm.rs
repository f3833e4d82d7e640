//! mm-core in the guest: the memory manager over real RAM and the real MMU.
//!
//! Frames come from [`crate::kernel::frame`], physical memory is reached through the identity map, the
//! per-frame `Page` array covers all of RAM, and TLB flushes are [`GuestTlb`]: `invlpg` or a CR3
//! reload here, and a shootdown IPI to every other vCPU that has the mm loaded.
//!
//! One [`Kernel`] serves every vCPU. Address spaces change only on vCPU 0, which runs the processes
//! (mmap_sem is `&mut Mm`, held by the process it belongs to); the other vCPUs reach the same
//! objects only the way Linux's rmap and truncate do — through the anon_vma lock or `i_mmap_lock`,
//! then `page_table_lock` — and everything the `Kernel` itself holds is behind a lock or an atomic
//! (frame allocator, heap, anon_vma cache, fault injector, lockdep).

use crate::host::probes::HostProbes;
use crate::host::ucall;
use crate::kernel::frame;
use crate::kernel::tlb::GuestTlb;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::abi::{Call, ProbeEvent};
use mm_core::lockdep::LOCKDEP;
use mm_core::paging::table::KernelPgd;
use mm_core::phys::{DirectMap, FrameAllocator, MemMap, Page, PageFlags};
use mm_core::Variant;
use mm_core::{Kernel, Pfn, PhysAddr};

/// The guest's frame allocator, as mm-core sees it.
pub struct GuestFrames;

/// The zero page (0 until [`init`] reserves it).
static ZERO_PAGE: AtomicU64 = AtomicU64::new(0);

impl FrameAllocator for GuestFrames {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        frame::alloc().map(PhysAddr)
    }

    fn zero_page(&self) -> Option<PhysAddr> {
        match ZERO_PAGE.load(Ordering::Relaxed) {
            0 => None,
            frame => Some(PhysAddr(frame)),
        }
    }

    /// Every frame whose metadata says page table is reported to the host here, with the metadata
    /// intact, whatever path freed it: the host checks the free (P1-P5), poisons and quarantines
    /// it. Page tables then go back through the allocator's quarantine ring.
    fn free_frame(&self, frame: PhysAddr, page: &Page) {
        let table = page.is_table();
        if table {
            crate::host::probes::table_freed(frame);
        }
        page.reset(PageFlags(0));
        // SAFETY: mm-core gives back only frames it took from `alloc_frame` and no longer uses.
        unsafe {
            if table {
                frame::free_table(frame.0)
            } else {
                frame::free(frame.0)
            }
        }
    }
}

/// The loaded page-table root.
pub fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    cr3
}

/// Loads `pgd` as the page-table root (and flushes every non-global translation).
pub fn write_cr3(pgd: u64) {
    // SAFETY: callers pass the boot PML4 or the PGD of a live mm, both of which keep the kernel's
    // identity map (mm-core copies the kernel's entries into every new PGD).
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) pgd, options(nostack, preserves_flags)) };
}

static FRAMES: GuestFrames = GuestFrames;
static TLB: GuestTlb = GuestTlb;
// SAFETY: RAM is identity-mapped (the VMM's boot page tables, shared by every mm).
static PHYS: DirectMap = unsafe { DirectMap::new(0) };

struct KernelCell(UnsafeCell<Option<Kernel<'static>>>);

// SAFETY: written once by vCPU 0 in `init` before the other vCPUs leave the scenario barrier;
// afterwards only read, and the Kernel synchronises what it shares (module doc).
unsafe impl Sync for KernelCell {}

static KERNEL: KernelCell = KernelCell(UnsafeCell::new(None));

/// The boot page-table root: the kernel half every address space copies.
static mut KERNEL_PGD: u64 = 0;

static PROBES: HostProbes = HostProbes;

/// Builds the memory manager over `ram_size` bytes of RAM, following ordering `variant`, and tells
/// the host where its structures are. Called once by vCPU 0 after the frame allocator and the heap
/// are up.
pub fn init(ram_size: u64, variant: Variant) {
    let pages = ram_size / frame::FRAME_SIZE;
    let bytes = pages * core::mem::size_of::<Page>() as u64;
    let Some(map) = frame::alloc_contiguous(bytes.div_ceil(frame::FRAME_SIZE)) else {
        panic!("no RAM left for the {bytes}-byte page array");
    };
    // SAFETY: the frames were just carved from RAM nobody has written since the VMM zeroed it, and
    // an all-zero `Page` is a free frame; they stay reserved for the array for good.
    let mem_map =
        unsafe { MemMap::from_raw(NonNull::new_unchecked(map as *mut Page), Pfn(0), pages) };
    // SAFETY: vCPU 0 alone, once, before anything reads the cell.
    unsafe {
        KERNEL_PGD = read_cr3();
        let k = Kernel::new(&FRAMES, &PHYS, mem_map, &TLB)
            .with_hooks(&PROBES)
            .with_variant(variant);
        *KERNEL.0.get() = Some(k);
    }
    // The zero page: one frame carved for good (RAM the VMM zeroed and nobody has written), its
    // `Page` marked so mm-core, the sweep and the probes know it.
    let Some(zero) = frame::alloc_contiguous(1) else {
        panic!("no RAM left for the zero page");
    };
    kernel()
        .page(PhysAddr(zero))
        .reset(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::ZERO.0));
    ZERO_PAGE.store(zero, Ordering::Relaxed);
    // Lock-order checking is on in the guest whatever the build: the ordering variants are there
    // to be caught, one of them by lockdep.
    LOCKDEP.set_context_fn(crate::cpu::percpu::this_cpu);
    LOCKDEP.set_enabled(true);
    let roots = kernel().roots() as *const _ as u64;
    let event = ProbeEvent::Roots {
        roots,
        mem_map: map,
        mem_map_len: pages,
        kernel_pgd: kernel_pgd().0,
        layout_magic: mm_core::mm::layout::LAYOUT_MAGIC,
        layout_version: mm_core::mm::layout::LAYOUT_VERSION,
    };
    ucall::call(0, Call::Probe(event));
}

/// The memory manager's context.
pub fn kernel() -> &'static Kernel<'static> {
    // SAFETY: set once by `init` before any caller; read-only afterwards (module doc).
    match unsafe { &*KERNEL.0.get() } {
        Some(k) => k,
        None => panic!("mm::kernel() before mm::init()"),
    }
}

/// The boot page-table root, as the template new address spaces copy their kernel half from.
pub fn kernel_template() -> KernelPgd {
    // SAFETY: the boot tables the VMM built stay mapped (the identity map covers them) and are
    // never freed.
    unsafe { KernelPgd::new(kernel_pgd()) }
}

/// The boot page-table root.
pub fn kernel_pgd() -> PhysAddr {
    // SAFETY: written once by `init` before any reader.
    PhysAddr(unsafe { KERNEL_PGD })
}
