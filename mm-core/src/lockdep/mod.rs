//! A lockdep-style checker: it records, and never panics on, an inverted lock order.
//!
//! Protocol: every tracked lock names a [`LockClass`] and calls [`Lockdep::acquire`] before it
//! spins and [`Lockdep::release`] after it lets go ([`crate::sync`] does this for you). Each
//! execution context (a CPU in the guest, a thread in host tests) keeps a stack of the classes it
//! holds. Taking a class whose rank is not strictly greater than the rank of every class already
//! held is a [`Violation`]: an outer lock taken under an inner one, or the same class taken twice.
//! Violations go to a bounded list plus a total count, to be read with
//! [`Lockdep::take_violations`]; the caller decides whether one is fatal.
//!
//! The checker is on in debug builds and can be switched on at run time ([`Lockdep::set_enabled`]),
//! which is how the guest uses it in release builds. Switch it only while no tracked lock is held,
//! or the releases of locks taken while it was off are reported as [`Violation::ReleaseNotHeld`].
//! When it is off, acquire and release cost one relaxed atomic load.
//!
//! The current context comes from a function the kernel installs with [`Lockdep::set_context_fn`]
//! (the guest returns its CPU index). Without one, everything runs in context 0, except under this
//! crate's own unit tests, where each host thread gets its own context.

use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::sync::ArchSpinLock;

/// A kind of lock, such as "every `i_mmap_lock`": the order is checked between classes.
#[derive(Debug)]
pub struct LockClass {
    /// Name reported in violations, in Linux's words (`"i_mmap_lock"`).
    pub name: &'static str,
    /// Position in the lock order: a lock may only be taken while every held lock ranks lower.
    pub rank: u32,
}

impl LockClass {
    /// A class called `name` at position `rank` in the lock order (outermost lowest).
    pub const fn new(name: &'static str, rank: u32) -> Self {
        LockClass { name, rank }
    }
}

/// `mm->mmap_sem`: the outermost mm lock; guards the VMA list and tree.
pub static MMAP_SEM: LockClass = LockClass::new("mmap_sem", 10);
/// `mapping->i_mmap_lock`: guards a file's `i_mmap` interval tree.
pub static I_MMAP_LOCK: LockClass = LockClass::new("i_mmap_lock", 20);
/// `anon_vma->lock`: guards the list of VMAs sharing an anon_vma.
pub static ANON_VMA_LOCK: LockClass = LockClass::new("anon_vma_lock", 30);
/// `mm->page_table_lock` or a split PTE lock: the innermost mm lock.
pub static PAGE_TABLE_LOCK: LockClass = LockClass::new("page_table_lock", 40);

/// Two locks taken in the wrong order: `acquired` ranks at or above `held` in the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOrderViolation {
    /// The class already held (the inner lock).
    pub held: &'static str,
    /// The class being taken under it (the outer lock).
    pub acquired: &'static str,
}

/// Something the checker saw go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An outer lock taken while an inner one is held.
    Order(LockOrderViolation),
    /// A class taken again while already held by the same context.
    Recursive {
        /// The class taken twice.
        class: &'static str,
    },
    /// A lock released that the releasing context does not hold.
    ReleaseNotHeld {
        /// The class released.
        class: &'static str,
    },
    /// A context held more than [`MAX_HELD`] locks; the newest was not tracked.
    TooDeep {
        /// The class that did not fit.
        class: &'static str,
    },
}

/// How a lock is being taken, which decides what [`Lockdep::acquire_in`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A blocking acquire: every held lock must rank strictly above (outside) it.
    Blocking,
    /// A blocking acquire of a second lock of a class already held, declared safe by the caller's
    /// own ordering of the instances; taking the very same lock again is still recursion.
    Nested,
    /// A successful try-lock: it cannot deadlock, so the order is not checked, but it is held.
    Try,
}

/// What [`Lockdep::take_violations`] hands back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViolationReport {
    /// The first violations seen, at most [`MAX_VIOLATIONS`], oldest first.
    pub violations: Vec<Violation>,
    /// How many violations there were in all, including those that did not fit in the list.
    pub total: usize,
}

/// Number of contexts tracked; a context id at or above this is not checked.
pub const MAX_CONTEXTS: usize = 64;
/// Locks one context can hold at once and still be checked.
pub const MAX_HELD: usize = 16;
/// Violations kept for [`Lockdep::take_violations`]; later ones are only counted.
pub const MAX_VIOLATIONS: usize = 32;

/// One held lock: its class and the address of the lock instance.
///
/// Atomics rather than plain fields: a context is only ever touched by its owner, but a wrong
/// context function must give wrong answers, not a data race.
struct HeldLock {
    class: AtomicPtr<LockClass>,
    instance: AtomicUsize,
}

/// The locks one context holds, innermost last.
struct Context {
    depth: AtomicUsize,
    held: [HeldLock; MAX_HELD],
}

impl Context {
    const fn new() -> Self {
        Context {
            depth: AtomicUsize::new(0),
            held: [const {
                HeldLock {
                    class: AtomicPtr::new(ptr::null_mut()),
                    instance: AtomicUsize::new(0),
                }
            }; MAX_HELD],
        }
    }

    /// The class held at `slot`, if that slot has ever been filled.
    fn class_at(&self, slot: usize) -> Option<&'static LockClass> {
        let class = self.held[slot].class.load(Ordering::Relaxed);
        // SAFETY: slots only ever hold null or a pointer made from a `&'static LockClass` in
        // `Lockdep::acquire_in`, so a non-null pointer is valid for reads for 'static.
        unsafe { class.as_ref() }
    }
}

/// The bounded violation list, behind `Lockdep::log`.
struct ViolationLog {
    len: usize,
    entries: [Option<Violation>; MAX_VIOLATIONS],
}

/// The checker: per-context held-lock stacks plus the violations seen so far.
pub struct Lockdep {
    enabled: AtomicBool,
    /// The installed `fn() -> usize` as an address, 0 for the default.
    context_fn: AtomicUsize,
    contexts: [Context; MAX_CONTEXTS],
    total: AtomicUsize,
    log: ArchSpinLock<ViolationLog>,
}

/// The checker every [`crate::sync`] lock reports to.
pub static LOCKDEP: Lockdep = Lockdep::new();

impl Default for Lockdep {
    fn default() -> Self {
        Self::new()
    }
}

impl Lockdep {
    /// A checker with nothing held and nothing seen; on in debug builds, off in release builds.
    pub const fn new() -> Self {
        Lockdep {
            enabled: AtomicBool::new(cfg!(debug_assertions)),
            context_fn: AtomicUsize::new(0),
            contexts: [const { Context::new() }; MAX_CONTEXTS],
            total: AtomicUsize::new(0),
            log: ArchSpinLock::new(ViolationLog {
                len: 0,
                entries: [None; MAX_VIOLATIONS],
            }),
        }
    }

    /// Turns checking on or off; do it while no tracked lock is held.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// True when acquire and release are being checked.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Installs the function that names the current context (the guest: its CPU index).
    pub fn set_context_fn(&self, f: fn() -> usize) {
        self.context_fn.store(f as usize, Ordering::Release);
    }

    /// The id of the context running now.
    pub fn current_context(&self) -> usize {
        let raw = self.context_fn.load(Ordering::Acquire);
        if raw == 0 {
            return default_context();
        }
        // SAFETY: `context_fn` is only ever 0 or a value stored by `set_context_fn` from a
        // `fn() -> usize`, and function pointers live for the whole program.
        let f = unsafe { core::mem::transmute::<usize, fn() -> usize>(raw) };
        f()
    }

    /// Notes that the current context is about to take `instance`, a lock of class `class`.
    #[inline]
    pub fn acquire(&self, class: &'static LockClass, instance: usize) {
        if self.is_enabled() {
            self.acquire_in(self.current_context(), class, instance, Acquire::Blocking);
        }
    }

    /// Like [`Lockdep::acquire`], for a second lock of a class already held (Linux:
    /// `spin_lock_nested`, as `move_ptes` does with the old and new PTE locks).
    #[inline]
    pub fn acquire_nested(&self, class: &'static LockClass, instance: usize) {
        if self.is_enabled() {
            self.acquire_in(self.current_context(), class, instance, Acquire::Nested);
        }
    }

    /// Notes that the current context took `instance` with a try-lock, which cannot deadlock and so
    /// is exempt from the order check.
    #[inline]
    pub fn acquired_by_try(&self, class: &'static LockClass, instance: usize) {
        if self.is_enabled() {
            self.acquire_in(self.current_context(), class, instance, Acquire::Try);
        }
    }

    /// Notes that the current context released `instance`, a lock of class `class`.
    #[inline]
    pub fn release(&self, class: &'static LockClass, instance: usize) {
        if self.is_enabled() {
            self.release_in(self.current_context(), class, instance);
        }
    }

    /// [`Lockdep::acquire`] and friends for an explicit context `ctx`.
    #[cold]
    pub fn acquire_in(&self, ctx: usize, class: &'static LockClass, instance: usize, how: Acquire) {
        let Some(context) = self.contexts.get(ctx) else {
            return;
        };
        let depth = context.depth.load(Ordering::Relaxed).min(MAX_HELD);
        if how != Acquire::Try {
            // Report only the first conflict: one inversion is enough to name the bug.
            let conflict = (0..depth).find_map(|slot| {
                let held = context.class_at(slot)?;
                let same_lock = context.held[slot].instance.load(Ordering::Relaxed) == instance;
                let nested_ok = how == Acquire::Nested && ptr::eq(held, class) && !same_lock;
                (held.rank >= class.rank && !nested_ok).then_some(held)
            });
            if let Some(held) = conflict {
                self.record(if ptr::eq(held, class) {
                    Violation::Recursive { class: class.name }
                } else {
                    Violation::Order(LockOrderViolation {
                        held: held.name,
                        acquired: class.name,
                    })
                });
            }
        }
        if depth == MAX_HELD {
            self.record(Violation::TooDeep { class: class.name });
            return;
        }
        let slot = &context.held[depth];
        slot.class
            .store(ptr::from_ref(class).cast_mut(), Ordering::Relaxed);
        slot.instance.store(instance, Ordering::Relaxed);
        context.depth.store(depth + 1, Ordering::Relaxed);
    }

    /// [`Lockdep::release`] for an explicit context `ctx`.
    #[cold]
    pub fn release_in(&self, ctx: usize, class: &'static LockClass, instance: usize) {
        let Some(context) = self.contexts.get(ctx) else {
            return;
        };
        let depth = context.depth.load(Ordering::Relaxed).min(MAX_HELD);
        // Guards may be dropped out of order, so look for the newest matching entry.
        let found = (0..depth).rev().find(|&slot| {
            context
                .class_at(slot)
                .is_some_and(|held| ptr::eq(held, class))
                && context.held[slot].instance.load(Ordering::Relaxed) == instance
        });
        let Some(found) = found else {
            self.record(Violation::ReleaseNotHeld { class: class.name });
            return;
        };
        for slot in found..depth - 1 {
            let next = &context.held[slot + 1];
            context.held[slot]
                .class
                .store(next.class.load(Ordering::Relaxed), Ordering::Relaxed);
            context.held[slot]
                .instance
                .store(next.instance.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        context.depth.store(depth - 1, Ordering::Relaxed);
    }

    /// How many locks context `ctx` holds, as far as the checker knows.
    pub fn held_count(&self, ctx: usize) -> usize {
        self.contexts
            .get(ctx)
            .map_or(0, |c| c.depth.load(Ordering::Relaxed))
    }

    /// Forgets every lock context `ctx` holds (a context starting afresh, e.g. a new host thread).
    pub fn reset_context(&self, ctx: usize) {
        if let Some(context) = self.contexts.get(ctx) {
            context.depth.store(0, Ordering::Relaxed);
        }
    }

    /// Violations seen since the last take, without clearing them.
    pub fn violation_count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Hands back the violations seen so far and starts a new list.
    pub fn take_violations(&self) -> ViolationReport {
        let mut log = self.log.lock();
        let violations = log.entries[..log.len].iter().flatten().copied().collect();
        log.len = 0;
        log.entries = [None; MAX_VIOLATIONS];
        ViolationReport {
            violations,
            total: self.total.swap(0, Ordering::Relaxed),
        }
    }

    fn record(&self, violation: Violation) {
        let mut log = self.log.lock();
        self.total.fetch_add(1, Ordering::Relaxed);
        if log.len < MAX_VIOLATIONS {
            let len = log.len;
            log.entries[len] = Some(violation);
            log.len = len + 1;
        }
    }
}

/// Context id when no context function is installed: 0, or one per thread in unit tests.
#[cfg(not(test))]
fn default_context() -> usize {
    0
}

#[cfg(test)]
fn default_context() -> usize {
    host_context::current()
}

#[cfg(test)]
mod host_context;
#[cfg(test)]
mod tests;
