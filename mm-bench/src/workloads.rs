//! What each side implements ([`Workloads`]), why a measurement may be missing ([`Skip`]), and the
//! sizes of a run ([`Sizes`]).

use std::fmt;
use std::time::Duration;

use mm_core::abi::Workload;

/// Why one workload could not be measured on one side (listed with the results; the run goes on).
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
#[derive(Clone, Debug)]
pub struct Sizes {
    /// True for the smoke run's sizes.
    pub quick: bool,
    /// Repeats of everything.
    pub repeats: usize,
    /// mmap + touch + munmap operations.
    pub small_ops: u64,
    /// Pages of the big anonymous mapping.
    pub big_pages: u64,
    /// VMAs created.
    pub create_vmas: u64,
    /// VMAs unmapped in one call.
    pub munmap_vmas: u64,
    /// Pages of the shared file mapping.
    pub file_pages: u64,
    /// VMA counts of the munmap / exit_mmap scaling series.
    pub scaling: &'static [u64],
}

impl Sizes {
    /// The goal table's sizes (PLATFORM.md's Linux figures).
    pub const FULL: Sizes = Sizes {
        quick: false,
        repeats: 7,
        small_ops: 20_000,
        big_pages: (256 << 20) / 4096,
        create_vmas: 10_000,
        munmap_vmas: 20_000,
        file_pages: (64 << 20) / 4096,
        scaling: &[1_000, 4_000, 16_000, 65_530],
    };

    /// A smoke run: small sizes, one repeat, the scaling series' two ends still apart.
    pub const QUICK: Sizes = Sizes {
        quick: true,
        repeats: 1,
        small_ops: 1_000,
        big_pages: (16 << 20) / 4096,
        create_vmas: 1_000,
        munmap_vmas: 2_000,
        file_pages: (4 << 20) / 4096,
        scaling: &[1_000, 2_000, 4_000],
    };

    /// The smoke run's sizes when `quick`, else the full ones.
    pub fn of_run(quick: bool) -> &'static Sizes {
        if quick {
            &Sizes::QUICK
        } else {
            &Sizes::FULL
        }
    }

    /// How many units (operations, pages, VMAs) `work` does at these sizes.
    pub fn units(&self, work: Workload) -> u64 {
        match work {
            Workload::MapTouchUnmap4K => self.small_ops,
            Workload::TouchAnon | Workload::MunmapPopulated => self.big_pages,
            Workload::CreateVmas => self.create_vmas,
            Workload::MunmapVmas => self.munmap_vmas,
            Workload::TruncateShared => self.file_pages,
        }
    }
}
