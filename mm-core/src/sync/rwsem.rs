//! [`RwSem`], the spinning reader–writer semaphore behind `mmap_sem`.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{ptr_addr, NotSend};
use crate::lockdep::{LockClass, LOCKDEP};

/// Bit set in [`RwSem`]'s state while a writer holds it.
const WRITER: usize = 1 << (usize::BITS - 1);
/// Bit set while a writer waits; new readers hold back so writers are not starved.
const WRITER_WAITING: usize = 1 << (usize::BITS - 2);
/// The reader count: the state's remaining bits.
const READERS: usize = WRITER_WAITING - 1;

/// A reader–writer semaphore that spins (for `mmap_sem`), checked by lockdep.
///
/// Writers are preferred: once one waits, new readers wait too. So a context must not take it for
/// reading twice (lockdep reports that as recursion), exactly as with Linux's `down_read`.
pub struct RwSem<T: ?Sized> {
    class: &'static LockClass,
    /// `WRITER`, `WRITER_WAITING` and the number of readers.
    state: AtomicUsize,
    value: UnsafeCell<T>,
}

// SAFETY: writers get `&mut T` (so `T: Send`), readers on many threads share `&T` (so `T: Sync`).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwSem<T> {}
// SAFETY: owning the semaphore is owning the `T`.
unsafe impl<T: ?Sized + Send> Send for RwSem<T> {}

/// Shared access to the value inside an [`RwSem`]; `up_read` on drop.
pub struct RwSemReadGuard<'a, T: ?Sized> {
    sem: &'a RwSem<T>,
    _not_send: NotSend,
}

/// Exclusive access to the value inside an [`RwSem`]; `up_write` on drop.
pub struct RwSemWriteGuard<'a, T: ?Sized> {
    sem: &'a RwSem<T>,
    _not_send: NotSend,
}

impl<T> RwSem<T> {
    /// An unlocked semaphore of class `class` around `value`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        RwSem {
            class,
            state: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, for an owner that no longer shares the semaphore.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> RwSem<T> {
    /// `down_read`: spins until no writer holds or waits, then shares the value.
    pub fn read(&self) -> RwSemReadGuard<'_, T> {
        LOCKDEP.acquire(self.class, self.instance());
        self.spin_read()
    }

    /// `down_read_nested`: [`RwSem::read`] while holding another semaphore of the same class.
    pub fn read_nested(&self) -> RwSemReadGuard<'_, T> {
        LOCKDEP.acquire_nested(self.class, self.instance());
        self.spin_read()
    }

    /// `down_write`: spins until nobody holds the semaphore, then takes the value exclusively.
    pub fn write(&self) -> RwSemWriteGuard<'_, T> {
        LOCKDEP.acquire(self.class, self.instance());
        self.spin_write()
    }

    /// `down_write_nested`: [`RwSem::write`] while holding another semaphore of the same class
    /// (`dup_mmap` takes the child's `mmap_sem` under the parent's).
    pub fn write_nested(&self) -> RwSemWriteGuard<'_, T> {
        LOCKDEP.acquire_nested(self.class, self.instance());
        self.spin_write()
    }

    fn spin_read(&self) -> RwSemReadGuard<'_, T> {
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state & (WRITER | WRITER_WAITING) == 0 {
                assert!(state & READERS != READERS, "RwSem reader count overflow");
                // Acquire pairs with the writer's Release in `up_write`.
                if self
                    .state
                    .compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return RwSemReadGuard {
                        sem: self,
                        _not_send: PhantomData,
                    };
                }
            }
            core::hint::spin_loop();
        }
    }

    fn spin_write(&self) -> RwSemWriteGuard<'_, T> {
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state & (WRITER | READERS) == 0 {
                // Taking it clears WRITER_WAITING; other waiting writers set it again next round.
                // Acquire pairs with the Release of the last reader or writer.
                if self
                    .state
                    .compare_exchange_weak(state, WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return RwSemWriteGuard {
                        sem: self,
                        _not_send: PhantomData,
                    };
                }
            } else if state & WRITER_WAITING == 0 {
                self.state.fetch_or(WRITER_WAITING, Ordering::Relaxed);
            }
            core::hint::spin_loop();
        }
    }

    /// `down_read_trylock`: shares the value if no writer holds or waits; not order-checked.
    pub fn try_read(&self) -> Option<RwSemReadGuard<'_, T>> {
        // Retry only while other readers race us: giving up then would be a spurious failure.
        self.state
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |state| {
                let blocked = state & (WRITER | WRITER_WAITING) != 0 || state & READERS == READERS;
                (!blocked).then_some(state + 1)
            })
            .ok()?;
        LOCKDEP.acquired_by_try(self.class, self.instance());
        Some(RwSemReadGuard {
            sem: self,
            _not_send: PhantomData,
        })
    }

    /// `down_write_trylock`: takes the value if nobody holds the semaphore; not order-checked.
    pub fn try_write(&self) -> Option<RwSemWriteGuard<'_, T>> {
        let state = self.state.load(Ordering::Relaxed);
        if state & (WRITER | READERS) != 0 {
            return None;
        }
        self.state
            .compare_exchange(state, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        LOCKDEP.acquired_by_try(self.class, self.instance());
        Some(RwSemWriteGuard {
            sem: self,
            _not_send: PhantomData,
        })
    }

    /// The semaphore's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// The value, through an exclusive borrow that proves nobody holds the semaphore.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    fn instance(&self) -> usize {
        ptr_addr(self)
    }
}

impl<'a, T: ?Sized> RwSemWriteGuard<'a, T> {
    /// `downgrade_write`: turns the write hold into a read hold without letting another writer in.
    pub fn downgrade(self) -> RwSemReadGuard<'a, T> {
        let sem = self.sem;
        // The lockdep entry stays: it is the same lock of the same class, still held.
        core::mem::forget(self);
        // WRITER becomes one reader, keeping WRITER_WAITING; Release publishes the writes made
        // under the write hold to readers that get in next.
        sem.state.fetch_sub(WRITER - 1, Ordering::Release);
        RwSemReadGuard {
            sem,
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for RwSemReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a reader count, so no writer and hence no `&mut T` exists.
        unsafe { &*self.sem.value.get() }
    }
}

impl<T: ?Sized> Drop for RwSemReadGuard<'_, T> {
    fn drop(&mut self) {
        LOCKDEP.release(self.sem.class, self.sem.instance());
        // Release: our reads happen before a writer that gets in after us.
        self.sem.state.fetch_sub(1, Ordering::Release);
    }
}

impl<T: ?Sized> Deref for RwSemWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard set WRITER, so no reader or other writer holds the value.
        unsafe { &*self.sem.value.get() }
    }
}

impl<T: ?Sized> DerefMut for RwSemWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard set WRITER, so no reader or other writer holds the value; `&mut self`
        // makes this the only borrow through the guard.
        unsafe { &mut *self.sem.value.get() }
    }
}

impl<T: ?Sized> Drop for RwSemWriteGuard<'_, T> {
    fn drop(&mut self) {
        LOCKDEP.release(self.sem.class, self.sem.instance());
        // Clear WRITER but keep WRITER_WAITING, which another writer may have set; Release
        // publishes our writes to the next holder.
        self.sem.state.fetch_and(!WRITER, Ordering::Release);
    }
}

// SAFETY: shared guards only hand out `&T`, which may cross threads when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for RwSemReadGuard<'_, T> {}
// SAFETY: as above; `&RwSemWriteGuard` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwSemWriteGuard<'_, T> {}
