//! The probe hooks: mm-core's events become calls to the host, which stops this vCPU and checks
//! the ordering rule in guest memory before the kernel goes on.

use crate::{percpu, ucall};
use core::sync::atomic::{AtomicBool, Ordering};
use mm_core::abi::UcallCmd;
use mm_core::hooks::{FlushEvent, MmHooks, TableEvent, VmaRangeEvent, VmaUnlinkEvent};
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

/// `ucall::probe`, unless the probes are off.
fn report(cmd: UcallCmd, args: [u64; 6]) {
    if enabled() {
        ucall::probe(percpu::this_cpu(), cmd, args);
    }
}

fn table_args(ev: &TableEvent) -> [u64; 6] {
    [ev.mm, ev.level as u64, ev.frame.0, ev.start.0, ev.end.0, 0]
}

impl MmHooks for HostProbes {
    fn vma_range(&self, _k: &Kernel<'_>, ev: &VmaRangeEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, 0, 0];
        report(UcallCmd::ProbeVmaRange, args);
    }

    fn vma_freed(&self, _k: &Kernel<'_>, mm: u64, vma: u64) {
        report(UcallCmd::ProbeVmaFreed, [mm, vma, 0, 0, 0, 0]);
    }

    fn vma_unlinked(&self, _k: &Kernel<'_>, ev: &VmaUnlinkEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, ev.kind as u64, 0];
        report(UcallCmd::ProbeVmaUnlinked, args);
    }

    fn table_unhooked(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        report(UcallCmd::ProbeTableUnhooked, table_args(ev));
    }

    fn table_freeing(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        report(UcallCmd::ProbeTableFreeing, table_args(ev));
    }

    fn tlb_flushed(&self, _k: &Kernel<'_>, ev: &FlushEvent) {
        let args = [ev.mm, ev.start.0, ev.end.0, 0, 0, 0];
        report(UcallCmd::ProbeTlbFlushed, args);
    }
}
