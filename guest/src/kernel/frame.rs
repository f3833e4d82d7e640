//! The physical frame allocator over the RAM the boot info names.
//!
//! Frames come from a bump pointer over `[free_start, free_end)` and go back to an intrusive free
//! list (the next pointer lives in the free frame itself, reached through the identity map).
//! Starting costs O(1): there is no bitmap to clear, which on software KVM would take milliseconds.

use core::sync::atomic::{AtomicBool, Ordering};
use mm_core::abi::BootInfo;

/// Size of one frame.
pub const FRAME_SIZE: u64 = 4096;

struct State {
    next: u64,
    end: u64,
    free_list: u64,
    allocated: u64,
    /// Freed page-table frames not yet on the free list, oldest first (a ring of
    /// [`QUARANTINE_FRAMES`]; 0 = empty slot).
    quarantine: [u64; QUARANTINE_FRAMES],
    /// Next slot of `quarantine` to fill.
    quarantine_next: usize,
}

/// Freed page-table frames the allocator leaves untouched before reusing them: the host may
/// revoke the guest's access to the most recently freed ones (`QUARANTINE_TABLES` of them,
/// fewer than this) to catch any late touch, so the allocator must not even write its free-list
/// link into them meanwhile.
pub const QUARANTINE_FRAMES: usize = 64;
const _: () = assert!(QUARANTINE_FRAMES > mm_core::abi::QUARANTINE_TABLES);

struct Allocator {
    lock: AtomicBool,
    state: core::cell::UnsafeCell<State>,
}

// SAFETY: `state` is only reached through `with`, which holds `lock`.
unsafe impl Sync for Allocator {}

static FRAMES: Allocator = Allocator {
    lock: AtomicBool::new(false),
    state: core::cell::UnsafeCell::new(State {
        next: 0,
        end: 0,
        free_list: 0,
        allocated: 0,
        quarantine: [0; QUARANTINE_FRAMES],
        quarantine_next: 0,
    }),
};

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    while FRAMES.lock.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held, so this is the only reference to the state.
    let result = f(unsafe { &mut *FRAMES.state.get() });
    FRAMES.lock.store(false, Ordering::Release);
    result
}

/// Hands the free RAM to the allocator. Called once by vCPU 0.
pub fn init(info: &BootInfo) {
    let start = info.free_start.next_multiple_of(FRAME_SIZE);
    let end = info.free_end.min(info.ram_size) & !(FRAME_SIZE - 1);
    with(|s| {
        s.next = start;
        s.end = end.max(start);
    });
}

/// Allocates one frame; `None` when RAM is exhausted. The frame's contents are undefined.
pub fn alloc() -> Option<u64> {
    with(|s| {
        let frame = if s.free_list != 0 {
            let frame = s.free_list;
            // SAFETY: `frame` is a free frame in identity-mapped RAM whose first word holds the next
            // free frame (written by `free`).
            s.free_list = unsafe { core::ptr::read(frame as *const u64) };
            frame
        } else if s.next < s.end {
            let frame = s.next;
            s.next += FRAME_SIZE;
            frame
        } else {
            return None;
        };
        s.allocated += 1;
        Some(frame)
    })
}

/// Allocates `count` physically contiguous frames from the untouched part of RAM.
pub fn alloc_contiguous(count: u64) -> Option<u64> {
    with(|s| {
        let bytes = count.checked_mul(FRAME_SIZE)?;
        if s.end - s.next < bytes {
            return None;
        }
        let start = s.next;
        s.next += bytes;
        s.allocated += count;
        Some(start)
    })
}

/// Returns a frame from [`alloc`].
///
/// # Safety
/// `frame` came from [`alloc`] and is not used any more.
pub unsafe fn free(frame: u64) {
    with(|s| {
        // SAFETY: the caller gave the frame back, so its first word is ours to use as the link.
        unsafe { core::ptr::write(frame as *mut u64, s.free_list) };
        s.free_list = frame;
        s.allocated -= 1;
    })
}

/// Returns a page-table frame from [`alloc`], through the quarantine: it reaches the free list only
/// after [`QUARANTINE_FRAMES`] more page-table frees (it counts as free at once).
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_table(frame: u64) {
    with(|s| {
        let slot = s.quarantine_next;
        s.quarantine_next = (slot + 1) % QUARANTINE_FRAMES;
        let oldest = core::mem::replace(&mut s.quarantine[slot], frame);
        s.allocated -= 1;
        if oldest != 0 {
            // SAFETY: the caller of free_table gave it back long ago and nobody may touch it.
            unsafe { core::ptr::write(oldest as *mut u64, s.free_list) };
            s.free_list = oldest;
        }
    })
}

/// Frames handed out and not given back.
pub fn allocated() -> u64 {
    with(|s| s.allocated)
}

/// Frames still available (free list not counted).
pub fn untouched() -> u64 {
    with(|s| (s.end - s.next) / FRAME_SIZE)
}
