//! `mm-workloads`: the six mm workloads of `vmm bench` (see `mm_core::abi::Workload`) run by ring-3
//! processes on real page tables, each timed phase between two marks the host timestamps.
//!
//! Every workload does `--scale` units (default 64: operations, pages or VMAs), [`REPEATS`] times,
//! each repeat a fresh process whose teardown is outside the marks. The process marks a phase with
//! the `BENCH_MARK` system call, which the kernel passes on as a `BenchMark` ucall; the phase's time
//! is therefore the ring-3 work and the system calls and faults mm-core serves, plus one exit.
//! Host probes and lockdep are off while the workloads run, so the figures are mm-core's own work,
//! as on the host build; the probes' cost is `vmm bench`'s probe rows.

use super::mm::{new_file, run, Steps};
use super::PASS;
use crate::kernel::programs::Script;
use crate::kernel::syscall::nr;
use alloc::vec;
use alloc::vec::Vec;
use mm_core::abi::{Workload, MARK_END, MARK_START};
use mm_core::addr::PAGE_SIZE as PAGE;
use mm_core::lockdep::LOCKDEP;
use mm_core::uapi::PROT_RW;

/// Where every workload maps: clear of the script at `USER_BASE` (PGD index 2).
const BASE: u64 = 1 << 40;
/// Processes per workload: the host reports the median, min and max over them.
pub const REPEATS: u64 = 3;

/// Script steps that open and close a timed phase.
trait Marks {
    fn start(self, w: Workload) -> Self;
    fn end(self, w: Workload, units: u64) -> Self;
}

impl Marks for Script {
    fn start(self, w: Workload) -> Self {
        let args = [w as u64, MARK_START, 0, 0, 0, 0];
        self.syscall(nr::BENCH_MARK, args, Some(0))
    }

    fn end(self, w: Workload, units: u64) -> Self {
        let args = [w as u64, MARK_END, units, 0, 0, 0];
        self.syscall(nr::BENCH_MARK, args, Some(0))
    }
}

/// Maps `n` one-page anonymous VMAs at every other page from [`BASE`] (the gaps keep them from
/// merging) and touches each, as the host sides do.
fn separate_vmas(mut s: Script, n: u64) -> Script {
    for i in 0..n {
        let at = BASE + 2 * i * PAGE;
        s = s.map_anon(at, 1, PROT_RW).fill(at, 1);
    }
    s
}

/// The script of one repeat of `w` at `n` units, and the file pages it needs (0 for none).
fn script(w: Workload, n: u64) -> (Script, u64) {
    let s = Script::new();
    match w {
        // MAP_FIXED at one free address: the script cannot carry the address mmap would choose.
        Workload::MapTouchUnmap4K => {
            let mut s = s.start(w);
            for _ in 0..n {
                s = s.map_anon(BASE, 1, PROT_RW).fill(BASE, 1).unmap(BASE, 1);
            }
            (s.end(w, n), 0)
        }
        Workload::TouchAnon | Workload::MunmapPopulated => {
            let s = s.map_anon(BASE, n, PROT_RW);
            let s = s.start(Workload::TouchAnon).fill(BASE, n);
            let s = s.end(Workload::TouchAnon, n);
            let s = s.start(Workload::MunmapPopulated).unmap(BASE, n);
            (s.end(Workload::MunmapPopulated, n), 0)
        }
        Workload::CreateVmas => (separate_vmas(s.start(w), n).end(w, n), 0),
        Workload::MunmapVmas => {
            let s = separate_vmas(s, n).start(w).unmap(BASE, 2 * n);
            (s.end(w, n), 0)
        }
        Workload::TruncateShared => {
            let s = s.map_file(BASE, n, 0, 0).fill(BASE, n).start(w);
            let s = s.syscall(nr::FTRUNCATE, [0, 0, 0, 0, 0, 0], Some(0));
            (s.end(w, n), n)
        }
    }
}

/// The scenario: every workload (touch and munmap of the big mapping share a process), [`REPEATS`]
/// times, at `--scale` units.
pub fn workloads() -> u64 {
    let n = super::scale_or(64);
    let (probes, lockdep) = (crate::host::probes::enabled(), LOCKDEP.is_enabled());
    crate::host::probes::set_enabled(false);
    LOCKDEP.set_enabled(false);
    let processes = [
        Workload::MapTouchUnmap4K,
        Workload::TouchAnon,
        Workload::CreateVmas,
        Workload::MunmapVmas,
        Workload::TruncateShared,
    ];
    for rep in 0..REPEATS {
        for w in processes {
            let (s, file_pages) = script(w, n);
            let (files, mappings): (Vec<_>, Vec<_>) = if file_pages == 0 {
                (Vec::new(), Vec::new())
            } else {
                let (mapping, file) = new_file(file_pages);
                (vec![file], vec![mapping])
            };
            run(w.name(), s, files, &mappings);
        }
        log::info!("mm-workloads: repeat {}/{REPEATS} done", rep + 1);
    }
    LOCKDEP.set_enabled(lockdep);
    crate::host::probes::set_enabled(probes);
    log::info!(
        "mm-workloads: 6 workloads x {REPEATS} at {n} units, each phase marked for the host"
    );
    PASS
}
