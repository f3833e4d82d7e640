//! The probe hooks: mm-core's events become calls to the host, which stops this vCPU and checks
//! the ordering rule in guest memory before the kernel goes on.

use crate::{percpu, race, ucall};
use core::sync::atomic::{AtomicBool, Ordering};
use mm_core::abi::UcallCmd;
use mm_core::hooks::{
    FlushEvent, MmHooks, PoisonHit, TableEvent, VmaRangeEvent, VmaUnlinkEvent, WalkerPoint,
};
use mm_core::lockdep::LockClass;
use mm_core::Kernel;

/// Reports every ordering event to the host.
pub struct HostProbes;

/// Off while a benchmark times mm-core's own work (`mm-workloads`); on otherwise.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the reports to the host on or off; turn them off only while no process runs, so the host
/// never sees half of a VMA's life.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// True when events are reported to the host.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Reports `cmd` to the host, which checks it before this returns, unless the probes are off; a
/// racing vCPU then takes the interrupts that arrived while the host held it (see `race::point`).
fn event(cmd: UcallCmd, args: [u64; 6]) {
    if !enabled() {
        return;
    }
    let cpu = percpu::this_cpu();
    ucall::probe(cpu, cmd, args);
    race::interrupts(cpu);
}

fn table_args(ev: &TableEvent) -> [u64; 6] {
    [ev.mm, ev.level as u64, ev.frame.0, ev.start.0, ev.end.0, 0]
}

impl MmHooks for HostProbes {
    fn vma_range(&self, _k: &Kernel<'_>, ev: &VmaRangeEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, 0, 0];
        event(UcallCmd::ProbeVmaRange, args);
    }

    fn vma_freed(&self, _k: &Kernel<'_>, mm: u64, vma: u64) {
        event(UcallCmd::ProbeVmaFreed, [mm, vma, 0, 0, 0, 0]);
    }

    fn vma_unlinked(&self, _k: &Kernel<'_>, ev: &VmaUnlinkEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, ev.kind as u64, 0];
        event(UcallCmd::ProbeVmaUnlinked, args);
    }

    fn table_unhooked(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        event(UcallCmd::ProbeTableUnhooked, table_args(ev));
    }

    fn table_freeing(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        event(UcallCmd::ProbeTableFreeing, table_args(ev));
    }

    fn tlb_flushed(&self, _k: &Kernel<'_>, ev: &FlushEvent) {
        let args = [ev.mm, ev.start.0, ev.end.0, 0, 0, 0];
        event(UcallCmd::ProbeTlbFlushed, args);
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
        let args = [
            hit.table.0,
            hit.index as u64,
            hit.value,
            hit.va.0,
            rip,
            u64::from(hit.location.line()),
        ];
        ucall::with_text(
            percpu::this_cpu(),
            UcallCmd::PoisonHit,
            args,
            hit.location.file(),
        );
    }
}
