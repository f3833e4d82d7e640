//! Physical memory: where frames come from and how the kernel reaches them.
//!
//! - [`FrameAllocator`] hands out and takes back 4 KiB frames.
//! - [`PhysMem`] turns a frame's physical address into a pointer (guest: [`DirectMap`]; host tests:
//!   [`SimRam`]).
//! - [`page`]: the `#[repr(C)]` per-frame metadata ("struct page") the host reads.

pub mod page;
pub mod sim;

pub use page::{MemMap, Page, PageFlags, TableDesc, PAGE_MAPPING_ANON};
pub use sim::{SimRam, POISON_BYTE, SIM_RAM_BASE};

use crate::addr::{PhysAddr, PAGE_SIZE};

/// A source of 4 KiB physical frames.
pub trait FrameAllocator {
    /// A free, 4 KiB-aligned frame (contents unspecified), or `None` when memory is exhausted.
    fn alloc_frame(&self) -> Option<PhysAddr>;
    /// Returns a frame obtained from [`FrameAllocator::alloc_frame`] that nothing references any
    /// more. `page` is its metadata as its last user left it: the allocator learns from it what
    /// the frame was, whatever path freed it (the guest reports every page-table free to the host
    /// from here, SimRam poisons page tables whole), and must reset it to a free frame
    /// (`page.reset(PageFlags(0))`) before the frame can be handed out again.
    fn free_frame(&self, frame: PhysAddr, page: &Page);
    /// The zero page: a zeroed frame, never handed out by [`FrameAllocator::alloc_frame`], whose
    /// `Page` says [`PageFlags::ZERO`]. `None` (the default) makes anonymous read faults allocate
    /// a page of their own, as writes do.
    fn zero_page(&self) -> Option<PhysAddr> {
        None
    }
}

/// Access to physical memory from the kernel's address space.
///
/// # Safety
/// For every frame the paired [`FrameAllocator`] may hand out (every frame of the mem_map),
/// `frame_ptr` must return a pointer that is valid for reads and writes of [`PAGE_SIZE`] bytes,
/// 4 KiB-aligned, for as long as the kernel runs, and that no Rust reference aliases (mm-core only
/// accesses it through raw pointers).
pub unsafe trait PhysMem {
    /// The kernel-virtual pointer to the first byte of `frame`.
    fn frame_ptr(&self, frame: PhysAddr) -> *mut u8;
}

/// A direct map: physical address `p` is visible at kernel-virtual `p + offset` (0 for an identity
/// map), as the guest kernel sets up for all of RAM.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap {
    offset: u64,
}

impl DirectMap {
    /// A direct map at `offset`.
    ///
    /// # Safety
    /// All RAM the frame allocator hands out must be mapped read/write at `phys + offset` for the
    /// lifetime of the returned value.
    pub const unsafe fn new(offset: u64) -> Self {
        Self { offset }
    }
}

// SAFETY: `DirectMap::new`'s caller promised that every allocator frame is mapped at phys + offset;
// frames are 4 KiB aligned and the offset is a multiple of PAGE_SIZE in any sane direct map.
unsafe impl PhysMem for DirectMap {
    fn frame_ptr(&self, frame: PhysAddr) -> *mut u8 {
        debug_assert!(frame.as_u64().is_multiple_of(PAGE_SIZE));
        (frame.as_u64() + self.offset) as *mut u8
    }
}

/// Why a frame was allocated; shown to hooks and used to aim fault injection.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocKind {
    /// A user data page (anonymous or page cache).
    DataPage = 1,
    /// A page-table page (PGD, PUD, PMD or PTE table).
    PageTable = 2,
    /// A `Vma` object.
    Vma = 3,
    /// An `AnonVma` object.
    AnonVma = 4,
    /// A `File` or `AddressSpace` object.
    File = 5,
}
