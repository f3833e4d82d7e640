//! The probe hooks: mm-core's events become calls to the host, which stops this vCPU and checks
//! the ordering rule in guest memory before the kernel goes on.
//!
//! The checks of a page-table free run where no free path can miss them: the frame allocator
//! reports every frame its metadata calls a page table ([`table_freed`]). What the mmu_gather
//! announced for that free (its `table_freeing` hook) rides along as a claim, which the host
//! compares with the table's own descriptor. [`quiescent`] tells the host when no mm operation is
//! under way, so it can sweep every mm's page tables.

use crate::cpu::percpu;
use crate::host::{race, ucall};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm_core::abi::{BootInfo, Call, FreePath, PoisonReport, ProbeEvent, TableSpan, MAX_VCPUS};
use mm_core::hooks::{
    FlushEvent, MmHooks, PoisonHit, TableEvent, VmaRangeEvent, VmaUnlinkEvent, WalkerPoint,
};
use mm_core::lockdep::LockClass;
use mm_core::Kernel;

/// Reports every ordering event to the host.
pub struct HostProbes;

/// Off while a benchmark times mm-core's own work (`mm-workloads`); on otherwise.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Send `ProbeQuiescent` at every this-many-th quiescent point (0: never).
static SWEEP_EVERY: AtomicU64 = AtomicU64::new(0);
/// Quiescent points passed since the last `ProbeQuiescent`.
static QUIESCENT_SEEN: AtomicU64 = AtomicU64::new(0);
/// `BootInfo::probe_flags`.
static FLAGS: AtomicU64 = AtomicU64::new(0);

/// Takes the probe settings of the boot info (vCPU 0, before any process runs).
pub fn init(info: &BootInfo) {
    SWEEP_EVERY.store(info.sweep_every, Ordering::Relaxed);
    FLAGS.store(info.probe_flags, Ordering::Relaxed);
}

/// Whether `BootInfo::probe_flags` has `flag`.
pub fn flag(flag: u64) -> bool {
    FLAGS.load(Ordering::Relaxed) & flag != 0
}

/// The operation under way on each vCPU, which tags its events for the host's coverage matrix.
static PATHS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// Tags this vCPU's events with `path` until the guard is dropped.
pub fn path(path: FreePath) -> PathGuard {
    let cpu = percpu::this_cpu();
    let before = PATHS[cpu].swap(path as u64, Ordering::Relaxed);
    PathGuard { cpu, before }
}

/// Restores the path that was under way before [`path`].
pub struct PathGuard {
    cpu: usize,
    before: u64,
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        PATHS[self.cpu].store(self.before, Ordering::Relaxed);
    }
}

fn current_path(cpu: usize) -> FreePath {
    FreePath::from_raw(PATHS[cpu].load(Ordering::Relaxed))
}

/// The mmu_gather's announcement of the table it is about to free, per vCPU.
struct Claims(UnsafeCell<[Option<TableSpan>; MAX_VCPUS]>);
// SAFETY: vCPU `i` touches only entry `i`, with interrupts off (the trap and hook paths).
unsafe impl Sync for Claims {}
static CLAIMS: Claims = Claims(UnsafeCell::new([None; MAX_VCPUS]));

/// Reports the free of page-table frame `frame` (its `Page` still intact) with this vCPU's
/// pending claim, which it consumes; the host runs the checks before this returns.
pub fn table_freed(frame: mm_core::PhysAddr) {
    let cpu = percpu::this_cpu();
    // SAFETY: this vCPU's own entry (`Claims`).
    let claim = unsafe { (*CLAIMS.0.get())[cpu].take() };
    event(ProbeEvent::TableFreed {
        frame: frame.0,
        claim,
        path: current_path(cpu),
    });
}

/// A point where no mm operation is under way on this vCPU (a system call, a fault or a process
/// teardown is done); every `sweep_every`-th one is reported, so the host can sweep.
pub fn quiescent(mm: u64) {
    let every = SWEEP_EVERY.load(Ordering::Relaxed);
    if every == 0 || QUIESCENT_SEEN.fetch_add(1, Ordering::Relaxed) + 1 < every {
        return;
    }
    QUIESCENT_SEEN.store(0, Ordering::Relaxed);
    event(ProbeEvent::Quiescent { mm });
}

/// Reports that `validate_mm` found `count` broken invariants in `mm`; `first` describes one.
pub fn mm_invalid(mm: u64, count: u64, first: &str) {
    if !enabled() {
        return;
    }
    let event = ProbeEvent::MmInvalid { mm, count };
    ucall::call_with_text(percpu::this_cpu(), Call::Probe(event), first);
}

/// Turns the reports to the host on or off; turn them off only while no process runs, so the host
/// never sees half of a VMA's life.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// True when events are reported to the host.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Reports `event` to the host, which checks it before this returns, unless the probes are off; a
/// racing vCPU then takes the interrupts that arrived while the host held it (see `race::point`).
fn event(event: ProbeEvent) {
    if !enabled() {
        return;
    }
    let cpu = percpu::this_cpu();
    ucall::call(cpu, Call::Probe(event));
    race::interrupts(cpu);
}

impl MmHooks for HostProbes {
    fn vma_range(&self, _k: &Kernel<'_>, ev: &VmaRangeEvent) {
        event(ProbeEvent::VmaRange {
            mm: ev.mm,
            vma: ev.vma,
            start: ev.start.0,
            end: ev.end.0,
        });
    }

    fn vma_freed(&self, _k: &Kernel<'_>, mm: u64, vma: u64) {
        event(ProbeEvent::VmaFreed { mm, vma });
    }

    fn vma_unlinked(&self, _k: &Kernel<'_>, ev: &VmaUnlinkEvent) {
        event(ProbeEvent::VmaUnlinked {
            mm: ev.mm,
            vma: ev.vma,
            start: ev.start.0,
            end: ev.end.0,
            kind: ev.kind,
            path: current_path(percpu::this_cpu()),
        });
    }

    fn table_unhooked(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        event(ProbeEvent::TableUnhooked(TableSpan::from(ev)));
    }

    fn table_freeing(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        let cpu = percpu::this_cpu();
        // SAFETY: this vCPU's own entry (`Claims`).
        unsafe { (*CLAIMS.0.get())[cpu] = Some(TableSpan::from(ev)) };
    }

    fn tlb_flushed(&self, _k: &Kernel<'_>, ev: &FlushEvent) {
        event(ProbeEvent::TlbFlushed {
            mm: ev.mm,
            start: ev.start.0,
            end: ev.end.0,
        });
    }

    fn walker_point(&self, _k: &Kernel<'_>, point: WalkerPoint) {
        race::point(percpu::this_cpu(), point as u64);
    }

    fn lock_contended(&self, _k: &Kernel<'_>, class: &'static LockClass) {
        race::contended(percpu::this_cpu(), class.name);
    }

    fn poison_hit(&self, _k: &Kernel<'_>, hit: &PoisonHit) {
        let rip: u64;
        // SAFETY: reads the address of the next instruction; no memory is touched.
        unsafe { core::arch::asm!("lea {}, [rip]", out(reg) rip, options(nomem, nostack)) };
        let report = PoisonReport {
            table: hit.table.0,
            index: hit.index as u64,
            value: hit.value,
            va: hit.va.0,
            rip,
            line: u64::from(hit.location.line()),
        };
        ucall::call_with_text(
            percpu::this_cpu(),
            Call::PoisonHit(report),
            hit.location.file(),
        );
    }
}
