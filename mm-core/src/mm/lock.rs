//! `MmSpinLock`: the spinlock embedded in mm objects (anon_vma lock, `i_mmap_lock`,
//! `page_table_lock`), reporting to the [`Kernel`]'s lockdep so tests can use a private checker.
//!
//! `mmap_sem` is `&mut Mm`: every operation that changes an address space borrows it exclusively,
//! which is what holding `mmap_sem` for writing guarantees.

use core::fmt;

use crate::kernel::Kernel;
use crate::lockdep::{LockClass, Lockdep};
use crate::sync::{ArchSpinLock, ArchSpinLockGuard};

/// A spinlock of lock class `class`, checked by the kernel's lockdep on every acquire.
pub struct MmSpinLock {
    inner: ArchSpinLock<()>,
    class: &'static LockClass,
}

/// Holding an [`MmSpinLock`].
pub struct MmLockGuard<'a> {
    _inner: ArchSpinLockGuard<'a, ()>,
    lockdep: &'a Lockdep,
    class: &'static LockClass,
    instance: usize,
}

impl MmSpinLock {
    /// An unlocked lock of `class`.
    pub const fn new(class: &'static LockClass) -> Self {
        Self {
            inner: ArchSpinLock::new(()),
            class,
        }
    }

    /// Takes the lock, telling `k`'s lockdep first so an inverted order is reported even when it
    /// does not deadlock this time.
    pub fn lock<'a>(&'a self, k: &'a Kernel<'_>) -> MmLockGuard<'a> {
        self.acquire(k, false)
    }

    /// [`MmSpinLock::lock`] while holding another lock of the same class (`spin_lock_nested`: the
    /// child's and the parent's `page_table_lock` in fork's copy).
    pub fn lock_nested<'a>(&'a self, k: &'a Kernel<'_>) -> MmLockGuard<'a> {
        self.acquire(k, true)
    }

    fn acquire<'a>(&'a self, k: &'a Kernel<'_>, nested: bool) -> MmLockGuard<'a> {
        let instance = self as *const Self as usize;
        let lockdep = k.lockdep();
        if nested {
            lockdep.acquire_nested(self.class, instance);
        } else {
            lockdep.acquire(self.class, instance);
        }
        // Each failed attempt is reported, so a host that runs one vCPU at a time (the race
        // scheduler) can run the holder instead of letting this CPU spin forever.
        let inner = loop {
            if let Some(guard) = self.inner.try_lock() {
                break guard;
            }
            k.hooks().lock_contended(k, self.class);
            core::hint::spin_loop();
        };
        MmLockGuard {
            _inner: inner,
            lockdep,
            class: self.class,
            instance,
        }
    }
}

impl Drop for MmLockGuard<'_> {
    fn drop(&mut self) {
        self.lockdep.release(self.class, self.instance);
    }
}

impl fmt::Debug for MmSpinLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MmSpinLock({})", self.class.name)
    }
}
