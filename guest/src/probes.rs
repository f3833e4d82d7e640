//! The probe hooks: mm-core's events become calls to the host, which stops this vCPU and checks
//! the ordering rule in guest memory before the kernel goes on.

use crate::{percpu, ucall};
use mm_core::abi::UcallCmd;
use mm_core::hooks::{FlushEvent, MmHooks, TableEvent, VmaRangeEvent, VmaUnlinkEvent};
use mm_core::Kernel;

/// Reports every ordering event to the host.
pub struct HostProbes;

fn table_args(ev: &TableEvent) -> [u64; 6] {
    [ev.mm, ev.level as u64, ev.frame.0, ev.start.0, ev.end.0, 0]
}

impl MmHooks for HostProbes {
    fn vma_range(&self, _k: &Kernel<'_>, ev: &VmaRangeEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, 0, 0];
        ucall::probe(percpu::this_cpu(), UcallCmd::ProbeVmaRange, args);
    }

    fn vma_freed(&self, _k: &Kernel<'_>, mm: u64, vma: u64) {
        ucall::probe(
            percpu::this_cpu(),
            UcallCmd::ProbeVmaFreed,
            [mm, vma, 0, 0, 0, 0],
        );
    }

    fn vma_unlinked(&self, _k: &Kernel<'_>, ev: &VmaUnlinkEvent) {
        let args = [ev.mm, ev.vma, ev.start.0, ev.end.0, ev.kind as u64, 0];
        ucall::probe(percpu::this_cpu(), UcallCmd::ProbeVmaUnlinked, args);
    }

    fn table_unhooked(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        ucall::probe(
            percpu::this_cpu(),
            UcallCmd::ProbeTableUnhooked,
            table_args(ev),
        );
    }

    fn table_freeing(&self, _k: &Kernel<'_>, ev: &TableEvent) {
        ucall::probe(
            percpu::this_cpu(),
            UcallCmd::ProbeTableFreeing,
            table_args(ev),
        );
    }

    fn tlb_flushed(&self, _k: &Kernel<'_>, ev: &FlushEvent) {
        let args = [ev.mm, ev.start.0, ev.end.0, 0, 0, 0];
        ucall::probe(percpu::this_cpu(), UcallCmd::ProbeTlbFlushed, args);
    }
}
