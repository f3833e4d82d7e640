//! Stopping every other vCPU for a moment: what changing guest memory slots under a running guest
//! needs (see `quarantine`), since KVM cannot replace a slot atomically.
//!
//! Each vCPU thread marks itself in the guest around `KVM_RUN` ([`PauseGate::enter`],
//! [`PauseGate::leave`]). [`PauseGate::with_others_paused`] raises the pause, kicks every vCPU
//! still in the guest out of `KVM_RUN` with the run's kick signal until none is left, runs the
//! change, and lets them go. A vCPU that is not in the guest — waiting for the race scheduler,
//! serving an exit — cannot touch guest memory, so it needs no kick; it waits at `enter` if it
//! comes back while the pause is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long a pauser waits between kicks of a vCPU that has not left the guest yet.
const KICK_INTERVAL: Duration = Duration::from_micros(200);

/// The gate every vCPU thread passes to enter the guest.
pub struct PauseGate {
    paused: AtomicBool,
    in_guest: Vec<AtomicBool>,
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    /// Serialises pausers; also the mutex `resume` waits with.
    pauser: Mutex<()>,
    resume: Condvar,
    signal: i32,
}

impl PauseGate {
    /// A gate for `vcpus` vCPU threads, kicked with `signal` (whose handler must do nothing).
    pub fn new(vcpus: usize, signal: i32) -> PauseGate {
        PauseGate {
            paused: AtomicBool::new(false),
            in_guest: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            threads: Mutex::new(vec![None; vcpus]),
            pauser: Mutex::new(()),
            resume: Condvar::new(),
            signal,
        }
    }

    /// Called once by vCPU `cpu`'s thread before its first `enter`: where to send its kicks.
    pub fn register_thread(&self, cpu: usize) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)[cpu] = Some(me);
    }

    /// vCPU `cpu` is about to enter the guest; waits while a pause is up.
    pub fn enter(&self, cpu: usize) {
        loop {
            self.in_guest[cpu].store(true, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                return;
            }
            self.in_guest[cpu].store(false, Ordering::SeqCst);
            let guard = self.pauser.lock().unwrap_or_else(PoisonError::into_inner);
            let _unused = self
                .resume
                .wait_while(guard, |_| self.paused.load(Ordering::SeqCst))
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// vCPU `cpu` left the guest.
    pub fn leave(&self, cpu: usize) {
        self.in_guest[cpu].store(false, Ordering::SeqCst);
    }

    /// Runs `change` while no vCPU but `me` is in the guest.
    pub fn with_others_paused<R>(&self, me: usize, change: impl FnOnce() -> R) -> R {
        let guard = self.pauser.lock().unwrap_or_else(PoisonError::into_inner);
        self.paused.store(true, Ordering::SeqCst);
        loop {
            let inside: Vec<usize> = (0..self.in_guest.len())
                .filter(|&i| i != me && self.in_guest[i].load(Ordering::SeqCst))
                .collect();
            if inside.is_empty() {
                break;
            }
            let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
            for tid in inside.iter().filter_map(|&i| threads[i]) {
                // SAFETY: the thread id came from pthread_self of a vCPU thread of this run; the
                // signal's handler does nothing, it only makes KVM_RUN return EINTR. A thread
                // that already finished is never in the guest, so it is not signalled.
                unsafe { libc::pthread_kill(tid, self.signal) };
            }
            drop(threads);
            std::thread::sleep(KICK_INTERVAL);
        }
        let result = change();
        self.paused.store(false, Ordering::SeqCst);
        drop(guard);
        self.resume.notify_all();
        result
    }
}
