//! mm-core (host build, simulated RAM) side by side with Linux's native system calls, in one run.
//!
//! Six workloads run on both sides, interleaved, several repeats each; the table shows the medians
//! and whether mm-core takes at most half of Linux's time (issue 3's goal). A second table shows
//! how munmap and exit_mmap grow from 1,000 to 65,530 VMAs against n log n.
//!
//! `cargo bench -p mm-core --bench vs_linux` runs the full sizes; `-- --quick` runs small sizes once,
//! as a smoke test, and so does `cargo test --all-targets`. Verdicts are printed, not enforced: the
//! exit status is non-zero only when a measurement could not be made or mm-core leaked frames.
//!
//! mm-core runs on `SimRam`, which is resident from creation and poisons only freed page-table
//! frames, so what is timed is mm-core's work rather than the simulator's.
//!
//! - [`linux`]: the workloads through libc (mmap, munmap, memfd + ftruncate).
//! - [`mmcore`]: the same workloads through mm-core's API on `SimRam`.
//! - [`report`]: medians and the two tables.

mod linux;
mod mmcore;
mod report;

use std::fmt;
use std::time::Duration;

use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::Kernel;

use linux::Linux;
use mmcore::MmCore;
use report::{RowSpec, Samples, ScaleOp, Scaling, Side};

/// Why one workload could not be measured on one side (printed as one line; the run goes on).
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The six workloads of the goal table, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// mmap 4 KiB anonymous, touch it, munmap it; time per operation.
    MapTouchUnmap4K,
    /// Touch every 4 KiB page of a 256 MiB anonymous mapping; time per page.
    Touch256M,
    /// munmap of that populated 256 MiB; total time.
    Munmap256M,
    /// mmap FIXED + touch of 10,000 VMAs that cannot merge; time per VMA.
    Create10kVmas,
    /// One munmap over 20,000 populated VMAs; total time.
    Munmap20kVmas,
    /// ftruncate to 0 of a 64 MiB populated shared file mapping; total time.
    Truncate64M,
}

/// What the workloads do on each side.
pub trait Workloads {
    /// mmap + touch + munmap of one 4 KiB anonymous page, `ops` times; the total time.
    fn map_touch_unmap_4k(&mut self, ops: u64) -> Result<Duration, Skip>;
    /// Touches every page of a fresh `pages`-page anonymous mapping, then unmaps it; the time of
    /// the touches and the time of the munmap.
    fn touch_then_munmap(&mut self, pages: u64) -> Result<(Duration, Duration), Skip>;
    /// Creates `n` separate one-page VMAs (mmap FIXED + touch each); the total time.
    fn create_vmas(&mut self, n: u64) -> Result<Duration, Skip>;
    /// Creates `n` separate populated one-page VMAs, then times one munmap over all of them.
    fn munmap_vmas(&mut self, n: u64) -> Result<Duration, Skip>;
    /// Maps a `pages`-page shared file, touches every page, then times truncating it to 0.
    fn truncate_shared(&mut self, pages: u64) -> Result<Duration, Skip>;
}

/// The sizes of one run.
struct Sizes {
    repeats: usize,
    small_ops: u64,
    big_pages: u64,
    create_vmas: u64,
    munmap_vmas: u64,
    file_pages: u64,
    scaling: &'static [u64],
}

const FULL: Sizes = Sizes {
    repeats: 7,
    small_ops: 20_000,
    big_pages: (256 << 20) / 4096,
    create_vmas: 10_000,
    munmap_vmas: 20_000,
    file_pages: (64 << 20) / 4096,
    scaling: &[1_000, 4_000, 16_000, 65_530],
};

const QUICK: Sizes = Sizes {
    repeats: 1,
    small_ops: 1_000,
    big_pages: (16 << 20) / 4096,
    create_vmas: 1_000,
    munmap_vmas: 2_000,
    file_pages: (4 << 20) / 4096,
    scaling: &[1_000, 2_000, 4_000],
};

fn main() {
    // `cargo bench` passes `--bench`; without it the binary runs as a test (`cargo test
    // --all-targets`), which only needs to show the bench works, so it takes the quick sizes too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let sizes = if quick { &QUICK } else { &FULL };

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

    println!(
        "mm-core vs Linux ({} run, {} repeat{}; simulated RAM: {} frames = {} MiB)",
        if quick { "quick" } else { "full" },
        sizes.repeats,
        if sizes.repeats == 1 { "" } else { "s" },
        frames,
        (frames * 4096) >> 20,
    );

    let mut goal = Samples::default();
    let mut scaling = Scaling::default();
    for rep in 0..sizes.repeats {
        eprintln!("repeat {}/{}", rep + 1, sizes.repeats);
        // Rotate which side goes first, so none always inherits another's cache state.
        let mut order = Side::ALL;
        order.rotate_left(rep % Side::ALL.len());
        for side in order {
            let w: &mut dyn Workloads = match side {
                Side::Linux => &mut linux,
                Side::MmCore => &mut mm_core,
            };
            run_goal_workloads(w, side, sizes, &mut goal);
        }
        for &n in sizes.scaling {
            for side in order {
                match side {
                    Side::Linux => {
                        // The bench process has VMAs of its own: Linux gets the largest n that fits.
                        let r = linux
                            .fit_map_count(n)
                            .and_then(|m| linux.munmap_vmas(m).map(|d| (m, d)));
                        scaling.record(ScaleOp::Munmap, side, n, r);
                    }
                    Side::MmCore => {
                        let r = mm_core.munmap_vmas(n).map(|d| (n, d));
                        scaling.record(ScaleOp::Munmap, side, n, r);
                        let r = mm_core.exit_vmas(n).map(|d| (n, d));
                        scaling.record(ScaleOp::ExitMmap, side, n, r);
                    }
                }
            }
        }
    }

    println!();
    report::print_goal_table(&goal, &row_specs(sizes));
    println!();
    scaling.print(sizes.scaling);
    let mut failed = report::skipped();
    if ram.frames_in_use() != 0 {
        println!(
            "mm-core: {} frames still allocated after the run (a leak)",
            ram.frames_in_use()
        );
        failed += 1;
    }
    if failed != 0 {
        eprintln!("{failed} measurement(s) skipped or leaks found: see above");
        std::process::exit(1);
    }
}

/// The goal table's rows, labelled with this run's sizes and in the units of PLATFORM.md.
fn row_specs(s: &Sizes) -> Vec<RowSpec> {
    let mib = |pages: u64| (pages * 4096) >> 20;
    let spec = |workload, label: String, unit, scale| RowSpec {
        workload,
        label,
        unit,
        scale,
    };
    vec![
        spec(
            Workload::MapTouchUnmap4K,
            format!("mmap 4 KiB anon + touch + munmap (x{})", s.small_ops),
            "µs per op",
            1e3,
        ),
        spec(
            Workload::Touch256M,
            format!("touch {} MiB anon (4 KiB pages, no THP)", mib(s.big_pages)),
            "µs per page",
            1e3,
        ),
        spec(
            Workload::Munmap256M,
            format!("munmap {} MiB fully populated", mib(s.big_pages)),
            "ms",
            1e6,
        ),
        spec(
            Workload::Create10kVmas,
            format!(
                "create {} separate VMAs (mmap FIXED + touch)",
                s.create_vmas
            ),
            "µs per VMA",
            1e3,
        ),
        spec(
            Workload::Munmap20kVmas,
            format!("munmap {} populated VMAs in one call", s.munmap_vmas),
            "ms",
            1e6,
        ),
        spec(
            Workload::Truncate64M,
            format!(
                "truncate a {} MiB shared file mapping to 0 (populated)",
                mib(s.file_pages)
            ),
            "ms",
            1e6,
        ),
    ]
}

/// Runs the six goal workloads once on `w`, adding each time (per unit) to `out`.
fn run_goal_workloads(w: &mut dyn Workloads, side: Side, sizes: &Sizes, out: &mut Samples) {
    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    match w.map_touch_unmap_4k(sizes.small_ops) {
        Ok(d) => out.add(Workload::MapTouchUnmap4K, side, per(d, sizes.small_ops)),
        Err(e) => report::skip(side, "mmap+touch+munmap 4 KiB", &e),
    }
    match w.touch_then_munmap(sizes.big_pages) {
        Ok((touch, unmap)) => {
            out.add(Workload::Touch256M, side, per(touch, sizes.big_pages));
            out.add(Workload::Munmap256M, side, per(unmap, 1));
        }
        Err(e) => report::skip(side, "touch + munmap of the big mapping", &e),
    }
    match w.create_vmas(sizes.create_vmas) {
        Ok(d) => out.add(Workload::Create10kVmas, side, per(d, sizes.create_vmas)),
        Err(e) => report::skip(side, "create VMAs", &e),
    }
    match w.munmap_vmas(sizes.munmap_vmas) {
        Ok(d) => out.add(Workload::Munmap20kVmas, side, per(d, 1)),
        Err(e) => report::skip(side, "munmap of many VMAs", &e),
    }
    match w.truncate_shared(sizes.file_pages) {
        Ok(d) => out.add(Workload::Truncate64M, side, per(d, 1)),
        Err(e) => report::skip(side, "truncate of a shared file mapping", &e),
    }
}
