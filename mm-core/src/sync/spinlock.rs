//! Spinlocks: [`ArchSpinLock`] (untracked) and [`SpinLock`] (checked by lockdep).

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use super::{ptr_addr, NotSend};
use crate::lockdep::{LockClass, LOCKDEP};

/// A test-and-test-and-set spinlock that lockdep does not see.
pub struct ArchSpinLock<T: ?Sized> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one holder at a time, so sharing the lock across threads
// is sound exactly when `T` may be sent to the thread that holds it.
unsafe impl<T: ?Sized + Send> Sync for ArchSpinLock<T> {}
// SAFETY: owning the lock is owning the `T`.
unsafe impl<T: ?Sized + Send> Send for ArchSpinLock<T> {}

/// Exclusive access to the value inside an [`ArchSpinLock`]; unlocks on drop.
pub struct ArchSpinLockGuard<'a, T: ?Sized> {
    lock: &'a ArchSpinLock<T>,
    _not_send: NotSend,
}

impl<T> ArchSpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        ArchSpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, for an owner that no longer shares the lock.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> ArchSpinLock<T> {
    /// Spins until the lock is free, then takes it.
    pub fn lock(&self) -> ArchSpinLockGuard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            // Spin on a plain load so waiters do not bounce the cache line with writes.
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<ArchSpinLockGuard<'_, T>> {
        // Acquire pairs with the Release in the guard's drop: the last holder's writes are visible.
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| ArchSpinLockGuard {
                lock: self,
                _not_send: PhantomData,
            })
    }

    /// True when someone holds the lock (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    /// The value, through an exclusive borrow that proves nobody holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

// SAFETY (both impls): the guard exists only while `locked` is true and it was this guard's
// compare-exchange that set it, so no other reference to the value exists.
impl<T: ?Sized> Deref for ArchSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: see above; shared access through `&self` cannot overlap a `&mut` from
        // `deref_mut`.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for ArchSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: see above; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for ArchSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release publishes our writes to the value before the next holder's Acquire.
        self.lock.locked.store(false, Ordering::Release);
    }
}

// SAFETY: a shared guard only hands out `&T`, which may cross threads when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for ArchSpinLockGuard<'_, T> {}

/// A spinlock checked by lockdep: `i_mmap_lock`, the anon_vma lock, `page_table_lock`.
pub struct SpinLock<T: ?Sized> {
    class: &'static LockClass,
    raw: ArchSpinLock<T>,
}

/// Exclusive access to the value inside a [`SpinLock`]; unlocks on drop.
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    inner: ArchSpinLockGuard<'a, T>,
}

impl<T> SpinLock<T> {
    /// An unlocked lock of class `class` around `value`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        SpinLock {
            class,
            raw: ArchSpinLock::new(value),
        }
    }

    /// The value, for an owner that no longer shares the lock.
    pub fn into_inner(self) -> T {
        self.raw.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Spins until the lock is free, then takes it; lockdep checks the order first.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // Checked before spinning, so an inversion is reported even when it deadlocks.
        LOCKDEP.acquire(self.class, self.instance());
        SpinLockGuard {
            lock: self,
            inner: self.raw.lock(),
        }
    }

    /// Like [`SpinLock::lock`], while holding another lock of the same class (Linux:
    /// `spin_lock_nested`); the caller's own rule orders the two, as `move_ptes` does.
    pub fn lock_nested(&self) -> SpinLockGuard<'_, T> {
        LOCKDEP.acquire_nested(self.class, self.instance());
        SpinLockGuard {
            lock: self,
            inner: self.raw.lock(),
        }
    }

    /// Takes the lock if it is free; a try-lock cannot deadlock, so its order is not checked.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let inner = self.raw.try_lock()?;
        LOCKDEP.acquired_by_try(self.class, self.instance());
        Some(SpinLockGuard { lock: self, inner })
    }

    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// True when someone holds the lock (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// The value, through an exclusive borrow that proves nobody holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.raw.get_mut()
    }

    fn instance(&self) -> usize {
        ptr_addr(self)
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Runs before `inner` drops, i.e. while the lock is still ours, as lockdep expects.
        LOCKDEP.release(self.lock.class, self.lock.instance());
    }
}
