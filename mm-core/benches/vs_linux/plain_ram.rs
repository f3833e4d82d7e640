//! `PlainRam`: simulated RAM without `SimRam`'s debugging aids, for a second mm-core column.
//!
//! `SimRam` poisons every freed frame (a 4 KiB memset) and checks double frees, which is right for
//! tests but is work no kernel's allocator does on the free path. Profiling showed that memset is
//! most of mm-core's munmap and truncate time on `SimRam`, so the bench also runs mm-core over this
//! plain free list, through the same `FrameAllocator` / `PhysMem` traits the guest's direct map
//! implements: the difference between the two columns is the simulator's, not mm-core's.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use mm_core::addr::PAGE_SIZE;
use mm_core::phys::{FrameAllocator, MemMap, Page, PhysMem, SIM_RAM_BASE};
use mm_core::PhysAddr;

/// `nr_frames` frames from [`SIM_RAM_BASE`] on, handed out from a LIFO free list.
pub struct PlainRam {
    arena: NonNull<u8>,
    layout: Layout,
    pages: Vec<Page>,
    free: RefCell<Vec<u32>>,
    in_use: Cell<u64>,
}

impl PlainRam {
    /// RAM of `nr_frames` frames, all free and already backed by the host (written once).
    pub fn new(nr_frames: usize) -> Self {
        let size = nr_frames.max(1) * PAGE_SIZE as usize;
        let layout = match Layout::from_size_align(size, PAGE_SIZE as usize) {
            Ok(l) => l,
            Err(_) => panic!("PlainRam of {nr_frames} frames does not fit the address space"),
        };
        // SAFETY: the layout has a non-zero size.
        let arena =
            NonNull::new(unsafe { alloc(layout) }).unwrap_or_else(|| handle_alloc_error(layout));
        // SAFETY: the arena was just allocated with `size` bytes. Writing it makes the host back it
        // now rather than during a timed workload.
        unsafe { arena.as_ptr().write_bytes(0, size) };
        PlainRam {
            arena,
            layout,
            pages: (0..nr_frames).map(|_| Page::default()).collect(),
            free: RefCell::new((0..nr_frames as u32).rev().collect()),
            in_use: Cell::new(0),
        }
    }

    /// The metadata array of these frames.
    pub fn mem_map(&self) -> MemMap<'_> {
        MemMap::from_slice(&self.pages, SIM_RAM_BASE.pfn())
    }

    /// Frames currently allocated.
    pub fn frames_in_use(&self) -> u64 {
        self.in_use.get()
    }

    fn index(&self, frame: PhysAddr) -> usize {
        let i = (frame.as_u64() - SIM_RAM_BASE.as_u64()) / PAGE_SIZE;
        assert!(
            (i as usize) < self.pages.len(),
            "PlainRam: foreign frame {frame}"
        );
        i as usize
    }
}

impl FrameAllocator for PlainRam {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        let i = self.free.borrow_mut().pop()?;
        self.in_use.set(self.in_use.get() + 1);
        Some(SIM_RAM_BASE + u64::from(i) * PAGE_SIZE)
    }

    fn free_frame(&self, frame: PhysAddr) {
        let i = self.index(frame) as u32;
        self.free.borrow_mut().push(i);
        self.in_use.set(self.in_use.get() - 1);
    }
}

// SAFETY: every frame handed out is a distinct, 4 KiB-aligned 4 KiB slice of the arena (index is
// checked against the frame count), which lives as long as `self` and is only reached through raw
// pointers.
unsafe impl PhysMem for PlainRam {
    fn frame_ptr(&self, frame: PhysAddr) -> *mut u8 {
        let i = self.index(frame);
        // SAFETY: i < nr_frames, so the offset stays inside the arena.
        unsafe { self.arena.as_ptr().add(i * PAGE_SIZE as usize) }
    }
}

impl Drop for PlainRam {
    fn drop(&mut self) {
        // SAFETY: `arena` came from `alloc(self.layout)` and is freed only here.
        unsafe { dealloc(self.arena.as_ptr(), self.layout) }
    }
}
