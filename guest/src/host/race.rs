//! Racing vCPUs: the guest side of the host's race scheduler (issue 5).
//!
//! A vCPU joins a race with [`enter`] and leaves it with [`leave`]. In between, every call it makes
//! to the host — probe events, walker [`point`]s, [`contended`] locks — is a point where the host
//! may hold it and run another racer: one racer at a time, in an order the host draws from the
//! seed or replays from `--schedule`, or all of them at once when the host runs them free.
//!
//! Outside a race the points cost nothing: a walker point or a busy lock is not reported at all.

use crate::cpu::apic;
use crate::host::ucall;
use core::sync::atomic::{AtomicBool, Ordering};
use mm_core::abi::{Call, RaceCall, SchedPointKind, MAX_VCPUS};

static RACING: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];

fn racing(cpu: usize) -> bool {
    RACING.get(cpu).is_some_and(|r| r.load(Ordering::Relaxed))
}

/// vCPU `cpu` joins a race of `racers` vCPUs; the host starts scheduling once all have joined.
pub fn enter(cpu: usize, racers: u64) {
    RACING[cpu].store(true, Ordering::Relaxed);
    ucall::call(cpu, Call::Race(RaceCall::Enter { racers }));
}

/// vCPU `cpu` leaves the race; the host runs the others without it.
pub fn leave(cpu: usize) {
    ucall::call(cpu, Call::Race(RaceCall::Leave));
    RACING[cpu].store(false, Ordering::Relaxed);
}

/// A scheduling point of kind `kind` (a `WalkerPoint` or `SchedPointKind` value).
///
/// Interrupts are taken right after it, as if they had been on all along: a shootdown IPI sent
/// while this vCPU was held is answered here, before it runs any further (the handler ends in an
/// [`irq_point`], where the host may hold it again).
pub fn point(cpu: usize, kind: u64) {
    if racing(cpu) {
        ucall::call(cpu, Call::Race(RaceCall::Point { kind }));
        apic::interrupt_window();
    }
}

/// After another call to the host: a racing vCPU takes the interrupts that came while it was held.
pub fn interrupts(cpu: usize) {
    if racing(cpu) {
        apic::interrupt_window();
    }
}

/// The scheduling point at the end of an interrupt handler (no window: interrupts stay off).
pub fn irq_point(cpu: usize) {
    if racing(cpu) {
        let kind = SchedPointKind::AfterInterrupt as u64;
        ucall::call(cpu, Call::Race(RaceCall::Point { kind }));
    }
}

/// A lock of class `class` was busy: while racing, let the host run its holder. Interrupts are
/// taken after it: the holder may be waiting for this vCPU to answer its TLB shootdown.
pub fn contended(cpu: usize, class: &str) {
    if racing(cpu) {
        ucall::call_with_text(cpu, Call::Race(RaceCall::Contended), class);
    }
    apic::interrupt_window();
}
