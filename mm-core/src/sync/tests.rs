//! Host tests of the locks: exclusion under load from many threads, and lockdep reports.

extern crate std;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::vec::Vec;

use super::*;
use crate::lockdep::{LockClass, LockOrderViolation, Violation, LOCKDEP};

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
            Violation::Order(o) => o.held.starts_with("test_") || o.acquired.starts_with("test_"),
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
