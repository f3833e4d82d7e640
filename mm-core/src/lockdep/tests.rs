//! Unit tests of the checker, on private `Lockdep` instances with explicit contexts.

use super::*;

const CTX: usize = 3;

fn enabled_checker() -> Lockdep {
    let checker = Lockdep::new();
    checker.set_enabled(true);
    checker
}

#[test]
fn the_documented_order_records_nothing() {
    let checker = enabled_checker();
    let order = [&MMAP_SEM, &I_MMAP_LOCK, &ANON_VMA_LOCK, &PAGE_TABLE_LOCK];
    for (i, class) in order.iter().enumerate() {
        checker.acquire_in(CTX, class, i, Acquire::Blocking);
    }
    assert_eq!(checker.held_count(CTX), 4);
    for (i, class) in order.iter().enumerate().rev() {
        checker.release_in(CTX, class, i);
    }
    assert_eq!(checker.held_count(CTX), 0);
    assert_eq!(checker.take_violations(), ViolationReport::default());
}

#[test]
fn taking_i_mmap_lock_under_page_table_lock_is_reported_with_both_names() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &PAGE_TABLE_LOCK, 1, Acquire::Blocking);
    checker.acquire_in(CTX, &I_MMAP_LOCK, 2, Acquire::Blocking);
    let report = checker.take_violations();
    assert_eq!(report.total, 1);
    assert_eq!(
        report.violations,
        [Violation::Order(LockOrderViolation {
            held: "page_table_lock",
            acquired: "i_mmap_lock"
        })]
    );
}

#[test]
fn taking_a_class_twice_is_reported_as_recursion() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &ANON_VMA_LOCK, 1, Acquire::Blocking);
    checker.acquire_in(CTX, &ANON_VMA_LOCK, 2, Acquire::Blocking);
    assert_eq!(
        checker.take_violations().violations,
        [Violation::Recursive {
            class: "anon_vma_lock"
        }]
    );
}

#[test]
fn releasing_a_lock_not_held_is_reported() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &MMAP_SEM, 1, Acquire::Blocking);
    checker.release_in(CTX, &MMAP_SEM, 2);
    checker.release_in(CTX, &I_MMAP_LOCK, 1);
    assert_eq!(
        checker.take_violations().violations,
        [
            Violation::ReleaseNotHeld { class: "mmap_sem" },
            Violation::ReleaseNotHeld {
                class: "i_mmap_lock"
            }
        ]
    );
    assert_eq!(checker.held_count(CTX), 1);
}

#[test]
fn locks_released_out_of_order_leave_the_rest_held() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &MMAP_SEM, 1, Acquire::Blocking);
    checker.acquire_in(CTX, &I_MMAP_LOCK, 2, Acquire::Blocking);
    checker.release_in(CTX, &MMAP_SEM, 1);
    // i_mmap_lock is still held, so taking mmap_sem again is an inversion.
    checker.acquire_in(CTX, &MMAP_SEM, 1, Acquire::Blocking);
    assert_eq!(
        checker.take_violations().violations,
        [Violation::Order(LockOrderViolation {
            held: "i_mmap_lock",
            acquired: "mmap_sem"
        })]
    );
}

#[test]
fn a_nested_acquire_allows_a_second_lock_of_the_class_but_not_the_same_lock() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &PAGE_TABLE_LOCK, 1, Acquire::Blocking);
    checker.acquire_in(CTX, &PAGE_TABLE_LOCK, 2, Acquire::Nested);
    assert_eq!(checker.violation_count(), 0);
    checker.acquire_in(CTX, &PAGE_TABLE_LOCK, 2, Acquire::Nested);
    checker.acquire_in(CTX, &ANON_VMA_LOCK, 3, Acquire::Nested);
    assert_eq!(
        checker.take_violations().violations,
        [
            Violation::Recursive {
                class: "page_table_lock"
            },
            Violation::Order(LockOrderViolation {
                held: "page_table_lock",
                acquired: "anon_vma_lock"
            }),
        ]
    );
}

#[test]
fn contexts_do_not_see_each_others_locks() {
    let checker = enabled_checker();
    checker.acquire_in(1, &PAGE_TABLE_LOCK, 1, Acquire::Blocking);
    checker.acquire_in(2, &MMAP_SEM, 2, Acquire::Blocking);
    assert_eq!(checker.violation_count(), 0);
    assert_eq!((checker.held_count(1), checker.held_count(2)), (1, 1));
}

#[test]
fn a_try_lock_is_exempt_from_the_order_check_but_still_held() {
    let checker = enabled_checker();
    checker.acquire_in(CTX, &PAGE_TABLE_LOCK, 1, Acquire::Blocking);
    checker.acquire_in(CTX, &MMAP_SEM, 2, Acquire::Try);
    assert_eq!(checker.violation_count(), 0);
    assert_eq!(checker.held_count(CTX), 2);
}

#[test]
fn a_disabled_checker_records_nothing() {
    let checker = Lockdep::new();
    checker.set_enabled(false);
    checker.acquire(&PAGE_TABLE_LOCK, 1);
    checker.acquire(&MMAP_SEM, 2);
    checker.release(&I_MMAP_LOCK, 3);
    assert_eq!(checker.violation_count(), 0);
    assert_eq!(checker.held_count(checker.current_context()), 0);
}

#[test]
fn violations_past_the_list_are_still_counted() {
    let checker = enabled_checker();
    for i in 0..MAX_VIOLATIONS + 5 {
        checker.release_in(CTX, &MMAP_SEM, i);
    }
    let report = checker.take_violations();
    assert_eq!(
        (report.violations.len(), report.total),
        (MAX_VIOLATIONS, MAX_VIOLATIONS + 5)
    );
    assert_eq!(checker.take_violations(), ViolationReport::default());
}

#[test]
fn holding_more_than_max_held_locks_is_reported() {
    static DEEP: [LockClass; MAX_HELD + 1] = {
        let mut classes = [const { LockClass::new("deep", 0) }; MAX_HELD + 1];
        let mut i = 0;
        while i <= MAX_HELD {
            classes[i].rank = 100 + i as u32;
            i += 1;
        }
        classes
    };
    let checker = enabled_checker();
    for (i, class) in DEEP.iter().enumerate() {
        checker.acquire_in(CTX, class, i, Acquire::Blocking);
    }
    assert_eq!(checker.held_count(CTX), MAX_HELD);
    assert_eq!(
        checker.take_violations().violations,
        [Violation::TooDeep { class: "deep" }]
    );
}

#[test]
fn an_installed_context_fn_names_the_context() {
    fn cpu_five() -> usize {
        5
    }
    let checker = enabled_checker();
    checker.set_context_fn(cpu_five);
    assert_eq!(checker.current_context(), 5);
    checker.acquire(&MMAP_SEM, 1);
    assert_eq!(checker.held_count(5), 1);
}

#[test]
fn each_host_thread_gets_its_own_default_context() {
    extern crate std;
    let here = default_context();
    let there = std::thread::spawn(default_context)
        .join()
        .expect("thread ran");
    assert!(here < MAX_CONTEXTS);
    assert_ne!(here, there);
}
