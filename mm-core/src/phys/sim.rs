//! `SimRam`: simulated physical memory for host tests.
//!
//! A heap arena of frames that plays both [`FrameAllocator`] and [`PhysMem`], owns the [`MemMap`]
//! for its frames, counts allocations and frees so tests can assert "zero frames left", can be
//! capped to simulate exhaustion, panics on a double free, and poisons freed frames so a stale use
//! shows up as garbage instead of plausible data. Only page-table frames are poisoned (a stale walk
//! must find no plausible entry anywhere, which is what probe P4 looks for): poisoning data pages
//! would cost a cache miss per freed page and would dominate every unmap benchmark, while their
//! lifetime is already checked by refcounts, the double-free panic and the frame counts.
//!
//! The arena is made resident when it is created, as RAM is: the host's demand paging would
//! otherwise be timed as part of mm-core's first touch of each frame.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use super::{FrameAllocator, MemMap, Page, PageFlags, PhysMem};
use crate::addr::{PhysAddr, PAGE_SIZE};

/// Physical address of the first simulated frame (16 MiB, so no frame is at 0).
pub const SIM_RAM_BASE: PhysAddr = PhysAddr(16 << 20);
/// Byte written over freed page-table frames.
pub const POISON_BYTE: u8 = 0x6b;

/// Simulated RAM: `nr_frames` frames starting at [`SIM_RAM_BASE`].
pub struct SimRam {
    arena: NonNull<u8>,
    layout: Layout,
    pages: Vec<Page>,
    free: RefCell<Vec<u32>>,
    in_use: RefCell<Vec<bool>>,
    allocs: Cell<u64>,
    frees: Cell<u64>,
    limit: Cell<u64>,
}

impl SimRam {
    /// RAM of `nr_frames` frames, all free, and one more: the zero page, not counted in use.
    pub fn new(nr_frames: usize) -> Self {
        let total = nr_frames + 1;
        let layout = match Layout::from_size_align(total * PAGE_SIZE as usize, PAGE_SIZE as usize) {
            Ok(l) => l,
            Err(_) => panic!("SimRam of {nr_frames} frames does not fit the address space"),
        };
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let arena = match NonNull::new(raw) {
            Some(p) => p,
            None => alloc::alloc::handle_alloc_error(layout),
        };
        for i in 0..total {
            // SAFETY: i < total keeps the byte inside the arena, which nothing else uses yet.
            unsafe { arena.as_ptr().add(i * PAGE_SIZE as usize).write_volatile(0) };
        }
        Self {
            arena,
            layout,
            pages: (0..total)
                .map(|i| {
                    let p = Page::default();
                    if i == nr_frames {
                        p.reset(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::ZERO.0));
                    }
                    p
                })
                .collect(),
            // Hand out low frames first: reversed so `pop` yields frame 0 first.
            free: RefCell::new((0..nr_frames as u32).rev().collect()),
            in_use: RefCell::new(alloc::vec![false; total]),
            allocs: Cell::new(0),
            frees: Cell::new(0),
            limit: Cell::new(u64::MAX),
        }
    }

    /// The metadata array of these frames.
    pub fn mem_map(&self) -> MemMap<'_> {
        MemMap::from_slice(&self.pages, SIM_RAM_BASE.pfn())
    }

    /// Frames currently allocated.
    pub fn frames_in_use(&self) -> u64 {
        self.allocs.get() - self.frees.get()
    }

    /// Total successful allocations so far.
    pub fn total_allocs(&self) -> u64 {
        self.allocs.get()
    }

    /// Total frees so far.
    pub fn total_frees(&self) -> u64 {
        self.frees.get()
    }

    /// Makes allocation fail once `frames_in_use` reaches `limit`.
    pub fn set_limit(&self, limit: u64) {
        self.limit.set(limit);
    }

    /// Whether `frame` is currently allocated.
    pub fn is_allocated(&self, frame: PhysAddr) -> bool {
        self.index(frame).is_some_and(|i| self.in_use.borrow()[i])
    }

    fn index(&self, frame: PhysAddr) -> Option<usize> {
        let off = frame.as_u64().checked_sub(SIM_RAM_BASE.as_u64())?;
        let i = (off / PAGE_SIZE) as usize;
        (off % PAGE_SIZE == 0 && i < self.pages.len()).then_some(i)
    }
}

impl FrameAllocator for SimRam {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        if self.frames_in_use() >= self.limit.get() {
            return None;
        }
        let i = self.free.borrow_mut().pop()? as usize;
        self.in_use.borrow_mut()[i] = true;
        self.allocs.set(self.allocs.get() + 1);
        Some(SIM_RAM_BASE + i as u64 * PAGE_SIZE)
    }

    fn zero_page(&self) -> Option<PhysAddr> {
        Some(SIM_RAM_BASE + (self.pages.len() as u64 - 1) * PAGE_SIZE)
    }

    fn free_frame(&self, frame: PhysAddr, page: &Page) {
        let Some(i) = self.index(frame) else {
            panic!("SimRam: free of foreign frame {frame}");
        };
        assert!(i + 1 < self.pages.len(), "SimRam: free of the zero page");
        let mut in_use = self.in_use.borrow_mut();
        assert!(in_use[i], "SimRam: double free of frame {frame}");
        in_use[i] = false;
        let was_table = page.is_table();
        page.reset(PageFlags(0));
        if was_table {
            // SAFETY: i < nr_frames, so the 4 KiB at offset i * PAGE_SIZE lie inside the arena, and
            // the frame was just returned, so no one else accesses it.
            unsafe {
                core::ptr::write_bytes(self.frame_ptr(frame), POISON_BYTE, PAGE_SIZE as usize);
            }
        }
        self.free.borrow_mut().push(i as u32);
        self.frees.set(self.frees.get() + 1);
    }
}

// SAFETY: every frame handed out is a distinct, 4 KiB-aligned 4 KiB slice of the arena, which lives as
// long as `self`; the arena is only accessed through raw pointers.
unsafe impl PhysMem for SimRam {
    fn frame_ptr(&self, frame: PhysAddr) -> *mut u8 {
        let Some(i) = self.index(frame) else {
            panic!("SimRam: access to foreign frame {frame}");
        };
        // SAFETY: i < nr_frames, so the offset stays inside the arena allocation.
        unsafe { self.arena.as_ptr().add(i * PAGE_SIZE as usize) }
    }
}

impl Drop for SimRam {
    fn drop(&mut self) {
        // SAFETY: `arena` came from `alloc_zeroed(self.layout)` and is freed only here.
        unsafe { dealloc(self.arena.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_table_frames_come_back_poisoned_and_are_counted() {
        let ram = SimRam::new(4);
        let f = ram.alloc_frame().expect("frame");
        assert_eq!(ram.frames_in_use(), 1);
        // SAFETY: f is allocated from ram.
        unsafe { *ram.frame_ptr(f) = 1 };
        let page = ram.mem_map().page(f);
        page.reset(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::PAGETABLE.0));
        ram.free_frame(f, page);
        assert_eq!(ram.frames_in_use(), 0);
        assert_eq!(
            page.page_flags(),
            PageFlags(0),
            "the allocator resets the metadata"
        );
        // SAFETY: the arena outlives this read; the frame is free but still inside it.
        assert_eq!(unsafe { *ram.frame_ptr(f) }, POISON_BYTE);
    }

    #[test]
    fn the_limit_makes_allocation_fail_like_exhausted_memory() {
        let ram = SimRam::new(4);
        ram.set_limit(1);
        let f = ram.alloc_frame();
        assert!(f.is_some());
        assert!(ram.alloc_frame().is_none());
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn a_double_free_panics() {
        let ram = SimRam::new(2);
        let f = ram.alloc_frame().expect("frame");
        let page = ram.mem_map().page(f);
        ram.free_frame(f, page);
        ram.free_frame(f, page);
    }
}
