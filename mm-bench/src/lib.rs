//! mm-bench: mm-core (host build, simulated RAM) side by side with Linux's native system calls, in
//! one process.
//!
//! Six workloads run on both sides, interleaved, several repeats each; a row is the median with
//! min and max of the repeats and mm-core's ratio to Linux (issue 3's goal: at most 0.5×). A second
//! measurement shows how munmap and exit_mmap grow from 1,000 to 65,530 VMAs against n log n, and a
//! third times fork of a populated mapping and of many VMAs on both sides.
//! `vmm bench` makes these rows of its table, JSON and picture, and times the same workloads in the
//! guest against Linux at the guest's sizes ([`linux_at`]); `cargo bench -p mm-bench` prints the two
//! tables alone.
//!
//! mm-core runs on `SimRam`, which is resident from creation and poisons only freed page-table
//! frames, so what is timed is mm-core's work rather than the simulator's.
//!
//! - [`workloads`]: what each side implements, and the sizes of a run.
//! - [`linux`]: the workloads through libc (mmap, munmap, memfd + ftruncate).
//! - [`mmcore`]: the same workloads through mm-core's API on `SimRam`.
//! - [`report`]: median / min / max, the rows, the scaling series and their tables.
#![deny(unsafe_code)]

// `unsafe` only in `linux`, which makes the real system calls the workloads are measured with.
#[allow(unsafe_code)]
pub mod linux;
pub mod mmcore;
pub mod report;
pub mod workloads;

pub use mm_core::abi::Workload;
pub use report::{ForkCase, ForkRow, Point, Row, ScaleOp, Series, Side, Stats, VsLinux};
pub use workloads::{Sizes, Skip, Workloads};

use std::collections::BTreeMap;
use std::time::Duration;

use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::Kernel;

use linux::Linux;
use mmcore::MmCore;

/// One scaling series while it is measured: per n asked for, the n used and each total (ns).
type ScalePoints = BTreeMap<u64, (u64, Vec<f64>)>;

/// Runs the six workloads and the scaling series on both sides at `sizes`; progress goes to
/// stderr. Measurements that could not be made are listed in [`VsLinux::skipped`].
pub fn vs_linux(sizes: &Sizes) -> VsLinux {
    let frames = [
        sizes.big_pages,
        sizes.munmap_vmas,
        sizes.file_pages,
        sizes.scaling.iter().copied().max().unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        // Page tables, with room to spare: a few hundred at most for these layouts.
        + 4096;
    let ram = SimRam::new(frames as usize);
    let tlb = CountingTlb::default();
    let mut mm_core = MmCore::new(Kernel::new(&ram, &ram, ram.mem_map(), &tlb));
    let mut linux = Linux::new();
    let mut skipped = Vec::new();

    let mut samples: BTreeMap<(Workload, Side), Vec<f64>> = BTreeMap::new();
    let mut scaling: BTreeMap<(ScaleOp, Side), ScalePoints> = BTreeMap::new();
    let mut record = |op: ScaleOp, side: Side, n: u64, r: Result<(u64, Duration), Skip>| match r {
        Ok((used, d)) => {
            let e = scaling.entry((op, side)).or_default().entry(n).or_default();
            e.0 = used;
            e.1.push(d.as_nanos() as f64);
        }
        Err(e) => skipped.push(format!("{}: {} of {n} VMAs: {e}", side.name(), op.name())),
    };
    let mut goal_skips = Vec::new();
    let fork_cases = [
        (ForkCase::Populated, sizes.big_pages),
        (ForkCase::Vmas, sizes.create_vmas),
    ];
    let mut fork_samples: BTreeMap<(ForkCase, Side), Vec<f64>> = BTreeMap::new();
    for rep in 0..sizes.repeats {
        eprintln!("mm-bench: repeat {}/{}", rep + 1, sizes.repeats);
        // Rotate which side goes first, so none always inherits another's cache state.
        let mut order = Side::HOST;
        order.rotate_left(rep % Side::HOST.len());
        for side in order {
            let w: &mut dyn Workloads = match side {
                Side::Linux => &mut linux,
                _ => &mut mm_core,
            };
            for work in Workload::ALL {
                let units = sizes.units(work);
                match run_once(w, work, units) {
                    Ok(d) => samples
                        .entry((work, side))
                        .or_default()
                        .push(per_unit(work, d, units)),
                    Err(e) => goal_skips.push(format!("{}: {}: {e}", side.name(), work.name())),
                }
            }
        }
        for (case, units) in fork_cases {
            for side in order {
                let r = match (side, case) {
                    (Side::Linux, ForkCase::Populated) => linux.fork_populated(units),
                    (Side::Linux, ForkCase::Vmas) => linux.fork_vmas(units),
                    (_, ForkCase::Populated) => mm_core.fork_populated(units),
                    (_, ForkCase::Vmas) => mm_core.fork_vmas(units),
                };
                match r {
                    Ok(d) => fork_samples
                        .entry((case, side))
                        .or_default()
                        .push(d.as_nanos() as f64),
                    Err(e) => goal_skips.push(format!("{}: fork: {e}", side.name())),
                }
            }
        }
        for &n in sizes.scaling {
            for side in order {
                if side == Side::Linux {
                    // The bench process has VMAs of its own: Linux gets the largest n that fits.
                    let r = linux
                        .fit_map_count(n)
                        .and_then(|m| linux.munmap_vmas(m).map(|d| (m, d)));
                    record(ScaleOp::Munmap, side, n, r);
                } else {
                    let r = mm_core.munmap_vmas(n).map(|d| (n, d));
                    record(ScaleOp::Munmap, side, n, r);
                    let r = mm_core.exit_vmas(n).map(|d| (n, d));
                    record(ScaleOp::ExitMmap, side, n, r);
                }
            }
        }
    }
    skipped.extend(goal_skips);

    let rows = Workload::ALL
        .into_iter()
        .map(|work| {
            let stats = |side| samples.get(&(work, side)).and_then(|v| Stats::of(v));
            Row {
                workload: work,
                units: sizes.units(work),
                subject: stats(Side::MmCore),
                anchor: stats(Side::Linux),
            }
        })
        .collect();
    let scaling = scaling
        .into_iter()
        .map(|((op, side), points)| Series {
            op,
            side,
            points: points
                .into_iter()
                .filter_map(|(asked, (used, v))| {
                    Some(Point {
                        asked,
                        used,
                        total: Stats::of(&v)?,
                    })
                })
                .collect(),
        })
        .collect();
    let forks = fork_cases
        .into_iter()
        .map(|(case, units)| {
            let stats = |side| fork_samples.get(&(case, side)).and_then(|v| Stats::of(v));
            ForkRow {
                case,
                units,
                subject: stats(Side::MmCore),
                anchor: stats(Side::Linux),
            }
        })
        .collect();
    VsLinux {
        quick: sizes.quick,
        forks,
        repeats: sizes.repeats,
        sim_frames: frames,
        rows,
        scaling,
        skipped,
        leaked_frames: ram.frames_in_use(),
    }
}

/// Runs `work` at `units` on Linux `repeats` times: the anchor for figures measured elsewhere (the
/// guest's), in the same units as a [`Row`] (nanoseconds per unit, or in all).
pub fn linux_at(work: Workload, units: u64, repeats: usize) -> Result<Stats, Skip> {
    let mut linux = Linux::new();
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let d = run_once(&mut linux, work, units)?;
        v.push(per_unit(work, d, units));
    }
    Stats::of(&v).ok_or_else(|| Skip("no samples".into()))
}

/// The figure of one run of `work`: nanoseconds per unit, or the whole time.
fn per_unit(work: Workload, d: Duration, units: u64) -> f64 {
    let ns = d.as_nanos() as f64;
    if work.per_unit() {
        ns / units.max(1) as f64
    } else {
        ns
    }
}

/// Runs `work` once at `units` on `w`; the time of the phase the workload names.
fn run_once(w: &mut dyn Workloads, work: Workload, units: u64) -> Result<Duration, Skip> {
    match work {
        Workload::MapTouchUnmap4K => w.map_touch_unmap_4k(units),
        Workload::TouchAnon => w.touch_then_munmap(units).map(|(touch, _)| touch),
        Workload::MunmapPopulated => w.touch_then_munmap(units).map(|(_, unmap)| unmap),
        Workload::CreateVmas => w.create_vmas(units),
        Workload::MunmapVmas => w.munmap_vmas(units),
        Workload::TruncateShared => w.truncate_shared(units),
    }
}
