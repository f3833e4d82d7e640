//! One lockdep context per host thread, for this crate's unit tests (which run threads in
//! parallel): without it, every test thread would share context 0 and see the others' locks.

extern crate std;

use core::sync::atomic::{AtomicU64, Ordering};

use super::{LOCKDEP, MAX_CONTEXTS};

const _: () = assert!(MAX_CONTEXTS <= 64, "the free-slot mask is one u64");

/// Bit `i` set: context `i` belongs to a live thread.
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// A context id owned by one thread, handed back when the thread ends.
struct Slot(usize);

impl Slot {
    fn claim() -> Slot {
        let mut mask = IN_USE.load(Ordering::Relaxed);
        loop {
            let free = (!mask).trailing_zeros() as usize;
            if free >= MAX_CONTEXTS {
                return Slot(usize::MAX);
            }
            match IN_USE.compare_exchange_weak(
                mask,
                mask | 1 << free,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    LOCKDEP.reset_context(free);
                    return Slot(free);
                }
                Err(now) => mask = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0 < MAX_CONTEXTS {
            IN_USE.fetch_and(!(1 << self.0), Ordering::AcqRel);
        }
    }
}

std::thread_local! {
    static SLOT: Slot = Slot::claim();
}

/// This thread's context id; past [`MAX_CONTEXTS`] live threads, an untracked id.
pub(super) fn current() -> usize {
    SLOT.try_with(|slot| slot.0).unwrap_or(usize::MAX)
}
