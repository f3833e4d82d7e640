//! The kernel heap behind `alloc`: a linked-list allocator over contiguous frames.

use crate::kernel::frame;
use linked_list_allocator::LockedHeap;

/// Heap size: a quarter of the free RAM, at most 64 MiB.
const HEAP_MAX: u64 = 64 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Carves the heap out of free RAM. Called once by vCPU 0, before anything allocates.
pub fn init() {
    let frames = (frame::untouched() / 4).min(HEAP_MAX / frame::FRAME_SIZE);
    let Some(start) = frame::alloc_contiguous(frames) else {
        panic!("no RAM left for a {frames}-frame heap");
    };
    // SAFETY: the frames were just taken from the allocator, are identity-mapped and used by
    // nothing else; `init` runs once.
    unsafe {
        HEAP.lock()
            .init(start as *mut u8, (frames * frame::FRAME_SIZE) as usize)
    };
}
