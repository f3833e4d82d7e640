//! The memory manager's locks, spinning and lockdep-checked.
//!
//! # Lock order
//!
//! Outermost first; a lock may be taken only while every lock held sits above it (after the comment
//! at the top of Linux's `mm/rmap.c`, less the inode and page locks, which this crate lacks):
//!
//! ```text
//! mmap_sem                          RwSem in the mm: the VMA list and tree
//!   i_mmap_lock                     SpinLock in the address_space: the file's i_mmap interval tree
//!     anon_vma lock                 SpinLock in the anon_vma: the VMAs that share it
//!       page_table_lock / PTE lock  SpinLock in the mm, or one per page-table page
//! ```
//!
//! Each level is a class in [`crate::lockdep`] ([`MMAP_SEM`](crate::lockdep::MMAP_SEM),
//! [`I_MMAP_LOCK`](crate::lockdep::I_MMAP_LOCK), [`ANON_VMA_LOCK`](crate::lockdep::ANON_VMA_LOCK),
//! [`PAGE_TABLE_LOCK`](crate::lockdep::PAGE_TABLE_LOCK)), ranked in this order; taking one against
//! it is recorded by [`lockdep::LOCKDEP`](crate::lockdep::LOCKDEP). Two locks of one level (the old
//! and new PTE locks in `move_ptes`, two mms' `mmap_sem` in `dup_mmap`) need the `_nested` calls.
//!
//! [`SpinLock`] and [`RwSem`] report every acquire and release to lockdep; [`ArchSpinLock`] does
//! not (like Linux's `arch_spinlock_t`) and exists for lockdep's own bookkeeping. Guards are
//! `!Send`: a lock is released by the context that took it, which is what lockdep's per-context
//! stacks assume.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::lockdep::{LockClass, LOCKDEP};

/// Makes a guard `!Send` (and `!Sync`, given back where `T: Sync`).
type NotSend = PhantomData<*const ()>;

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

/// The address of a lock, which is how lockdep tells two locks of one class apart.
fn ptr_addr<T: ?Sized>(r: &T) -> usize {
    (r as *const T).cast::<u8>().addr()
}

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

#[cfg(test)]
mod tests {
    extern crate std;

    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::thread;
    use std::vec::Vec;

    use super::*;
    use crate::lockdep::{LockOrderViolation, Violation};

    const THREADS: usize = 8;
    const ROUNDS: u64 = 2_000;

    /// Classes only these tests use, so their reports are told apart from other tests'.
    static TEST_OUTER: LockClass = LockClass::new("test_outer", 1_000);
    static TEST_INNER: LockClass = LockClass::new("test_inner", 1_001);

    fn hammer(threads: usize, work: impl Fn(usize) + Send + Sync + 'static) {
        let work = Arc::new(work);
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let work = Arc::clone(&work);
                thread::spawn(move || work(i))
            })
            .collect();
        for handle in handles {
            handle.join().expect("a hammering thread panicked");
        }
    }

    #[test]
    fn a_spinlock_hammered_from_many_threads_loses_no_update() {
        // Two plain fields that a torn critical section would leave unequal.
        let lock = Arc::new(SpinLock::new(&TEST_INNER, (0u64, 0u64)));
        let shared = Arc::clone(&lock);
        hammer(THREADS, move |_| {
            for _ in 0..ROUNDS {
                let mut pair = shared.lock();
                assert_eq!(pair.0, pair.1, "two holders inside the critical section");
                pair.0 += 1;
                core::hint::spin_loop();
                pair.1 += 1;
            }
        });
        assert_eq!(
            *lock.lock(),
            (THREADS as u64 * ROUNDS, THREADS as u64 * ROUNDS)
        );
        assert!(!lock.is_locked());
    }

    #[test]
    fn an_rwsem_hammered_by_readers_and_writers_never_shows_a_half_write() {
        let sem = Arc::new(RwSem::new(&TEST_OUTER, (0u64, 0u64)));
        let reads = Arc::new(AtomicU64::new(0));
        let (shared, seen) = (Arc::clone(&sem), Arc::clone(&reads));
        hammer(THREADS, move |i| {
            for _ in 0..ROUNDS {
                if i % 2 == 0 {
                    let mut pair = shared.write();
                    pair.0 += 1;
                    core::hint::spin_loop();
                    pair.1 += 1;
                } else {
                    let pair = shared.read();
                    assert_eq!(pair.0, pair.1, "a reader saw a writer's half-done update");
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let writes = (THREADS as u64).div_ceil(2) * ROUNDS;
        assert_eq!(*sem.read(), (writes, writes));
        assert_eq!(reads.load(Ordering::Relaxed), (THREADS as u64 / 2) * ROUNDS);
    }

    #[test]
    fn a_write_hold_excludes_everyone_and_readers_share() {
        let sem = RwSem::new(&TEST_OUTER, 7);
        {
            let first = sem.read();
            let second = sem.try_read().expect("readers share");
            assert!(sem.try_write().is_none());
            assert_eq!(*first + *second, 14);
        }
        let mut writer = sem.write();
        *writer = 8;
        assert!(sem.try_read().is_none());
        assert!(sem.try_write().is_none());
        drop(writer);
        assert_eq!(*sem.try_write().expect("free again"), 8);
    }

    #[test]
    fn a_downgraded_writer_keeps_writers_out_but_lets_readers_in() {
        let sem = RwSem::new(&TEST_OUTER, 1);
        let mut writer = sem.write();
        *writer = 2;
        let reader = writer.downgrade();
        assert_eq!(*reader, 2);
        assert!(sem.try_write().is_none());
        assert_eq!(
            *sem.try_read().expect("readers get in after a downgrade"),
            2
        );
        drop(reader);
        assert!(sem.try_write().is_some());
    }

    #[test]
    #[cfg_attr(not(debug_assertions), ignore = "LOCKDEP is off in release builds")]
    fn guards_tell_lockdep_about_every_acquire_and_release() {
        let ctx = LOCKDEP.current_context();
        let sem = RwSem::new(&TEST_OUTER, ());
        let lock = SpinLock::new(&TEST_INNER, ());
        let before = LOCKDEP.held_count(ctx);
        {
            let _outer = sem.write().downgrade();
            let _inner = lock.try_lock().expect("free");
            assert_eq!(LOCKDEP.held_count(ctx), before + 2);
        }
        assert_eq!(LOCKDEP.held_count(ctx), before);
    }

    #[test]
    #[cfg_attr(not(debug_assertions), ignore = "LOCKDEP is off in release builds")]
    fn locks_taken_against_the_order_are_reported_and_in_order_are_not() {
        let sem = RwSem::new(&TEST_OUTER, ());
        let lock = SpinLock::new(&TEST_INNER, ());
        {
            let _outer = sem.read();
            let _inner = lock.lock();
        }
        {
            let _inner = lock.lock();
            let _outer = sem.read();
        }
        {
            let _first = sem.read();
            let _second = sem.read();
        }
        let other = SpinLock::new(&TEST_INNER, ());
        {
            let _old_pte = lock.lock();
            let _new_pte = other.lock_nested();
        }
        let ours: Vec<_> = LOCKDEP
            .take_violations()
            .violations
            .into_iter()
            .filter(|v| match v {
                Violation::Order(o) => {
                    o.held.starts_with("test_") || o.acquired.starts_with("test_")
                }
                Violation::Recursive { class }
                | Violation::ReleaseNotHeld { class }
                | Violation::TooDeep { class } => class.starts_with("test_"),
            })
            .collect();
        assert_eq!(
            ours,
            [
                Violation::Order(LockOrderViolation {
                    held: "test_inner",
                    acquired: "test_outer"
                }),
                Violation::Recursive {
                    class: "test_outer"
                },
            ]
        );
    }
}
