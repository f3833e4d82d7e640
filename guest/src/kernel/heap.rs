//! The kernel heap behind `alloc`: size classes in front of a linked-list allocator over
//! contiguous frames.
//!
//! A linked-list allocator walks its free list on every allocation, and mm-core's many small
//! allocations (VMAs, tree nodes, strings) fragment that list: after a few hundred system calls an
//! allocation walked hundreds of blocks, which in emulated ring 0 (PVM, about 0.5 µs an
//! instruction) cost milliseconds. Requests of up to [`MAX_CLASS`] bytes are therefore served from
//! per-size free lists (powers of two from 16 bytes, each block aligned to its size), refilled a
//! [`CHUNK`] at a time from the linked-list allocator, which then only sees chunks and the rare
//! large request. Freed small blocks go back to their class, never to the linked list.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::kernel::frame;
use linked_list_allocator::LockedHeap;

/// Heap size: a quarter of the free RAM, at most 64 MiB.
const HEAP_MAX: u64 = 64 << 20;

/// The smallest class (a free block holds the next pointer) and the largest.
const MIN_CLASS: usize = 16;
const MAX_CLASS: usize = 2048;
/// Classes: 16, 32, .., 2048 bytes.
const CLASSES: usize = (MAX_CLASS / MIN_CLASS).trailing_zeros() as usize + 1;
/// What a class takes from the linked list when it runs dry.
const CHUNK: usize = 16 << 10;

#[global_allocator]
static HEAP: Heap = Heap {
    backing: LockedHeap::empty(),
    classes: [const { Class::new() }; CLASSES],
};

struct Heap {
    backing: LockedHeap,
    classes: [Class; CLASSES],
}

/// One size class: a spin lock over a list of free blocks threaded through the blocks.
struct Class {
    locked: AtomicBool,
    head: UnsafeCell<*mut u8>,
}

// SAFETY: `head` is only read or written with `locked` held (`Class::with`).
unsafe impl Sync for Class {}

impl Class {
    const fn new() -> Class {
        Class {
            locked: AtomicBool::new(false),
            head: UnsafeCell::new(null_mut()),
        }
    }

    /// Runs `f` on the list head with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut *mut u8) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so no other CPU touches `head` until it is released below.
        let r = f(unsafe { &mut *self.head.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

/// The class serving `layout`, if it is small enough: the smallest power of two at least its
/// size and its alignment.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_CLASS);
    (size <= MAX_CLASS).then(|| (size.next_power_of_two() / MIN_CLASS).trailing_zeros() as usize)
}

impl Heap {
    /// Takes a chunk from the linked list and threads it into class `c`'s free list, returning
    /// one block of it for the caller.
    fn refill(&self, c: usize) -> *mut u8 {
        let size = MIN_CLASS << c;
        let Ok(layout) = Layout::from_size_align(CHUNK, size) else {
            return null_mut();
        };
        // SAFETY: `layout` has a non-zero size.
        let chunk = unsafe { self.backing.alloc(layout) };
        if chunk.is_null() {
            return null_mut();
        }
        self.classes[c].with(|head| {
            for i in (1..CHUNK / size).rev() {
                // SAFETY: block `i` lies inside the chunk, aligned to `size` (at least 16), and is
                // the caller's alone until it is on the list.
                unsafe {
                    let block = chunk.add(i * size);
                    block.cast::<*mut u8>().write(*head);
                    *head = block;
                }
            }
        });
        chunk
    }
}

// SAFETY: small blocks come from chunks of the linked-list allocator, each handed out once until
// it is freed back to its class (sized and aligned for every layout of that class); the rest is
// the linked-list allocator's own contract.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.backing.alloc(layout) };
        };
        let block = self.classes[c].with(|head| {
            let block = *head;
            if !block.is_null() {
                // SAFETY: a block on the list holds the next pointer at its start.
                *head = unsafe { block.cast::<*mut u8>().read() };
            }
            block
        });
        if block.is_null() {
            self.refill(c)
        } else {
            block
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on: `ptr` came from `backing` with `layout`.
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        self.classes[c].with(|head| {
            // SAFETY: `ptr` is a block of class `c` the caller no longer uses, at least 16 bytes
            // and aligned for a pointer.
            unsafe { ptr.cast::<*mut u8>().write(*head) };
            *head = ptr;
        });
    }
}

/// Carves the heap out of free RAM. Called once by vCPU 0, before anything allocates.
pub fn init() {
    let frames = (frame::untouched() / 4).min(HEAP_MAX / frame::FRAME_SIZE);
    let Some(start) = frame::alloc_contiguous(frames) else {
        panic!("no RAM left for a {frames}-frame heap");
    };
    // SAFETY: the frames were just taken from the allocator, are identity-mapped and used by
    // nothing else; `init` runs once.
    unsafe {
        HEAP.backing
            .lock()
            .init(start as *mut u8, (frames * frame::FRAME_SIZE) as usize)
    };
}
