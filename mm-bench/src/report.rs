//! Median / min / max, the goal rows (mm-core ≤ 0.5× Linux), the scaling series (growth of munmap
//! and exit_mmap against n log n), and the tables that show them.

use std::fmt::{self, Write as _};

use mm_core::abi::Workload;

/// mm-core's time must be at most this fraction of Linux's (issue 3).
pub const GOAL_RATIO: f64 = 0.5;
/// Growth may exceed n log n by this factor before the verdict says "worse" (timing noise).
pub const GROWTH_SLACK: f64 = 1.25;

/// Which implementation a number belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// Linux's native system calls.
    Linux,
    /// mm-core's host build on simulated RAM.
    MmCore,
}

impl Side {
    /// The sides measured in this process, in the order of the first repeat.
    pub const HOST: [Side; 2] = [Side::Linux, Side::MmCore];

    /// The name tables and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Side::Linux => "Linux",
            Side::MmCore => "mm-core",
        }
    }
}

/// Median, min and max of some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Stats {
    /// The statistics of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// "median [min–max]", each divided by `scale`.
    pub fn show(&self, scale: f64) -> String {
        let f = |x: f64| fmt_num(x / scale);
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} [{}–{}]", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// Three significant digits, more when the number is large.
pub fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio rounded up to three decimals, so a shown 0.500 never hides a miss; large ratios to
/// three significant digits.
pub fn fmt_ratio(q: f64) -> String {
    if q >= 10.0 {
        fmt_num(q)
    } else {
        format!("{:.3}", (q * 1000.0).ceil() / 1000.0)
    }
}

/// One workload measured on a subject and on its anchor, in nanoseconds per unit (or in all, for
/// the workloads timed as a whole).
#[derive(Clone, Debug)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Its size: operations, pages or VMAs.
    pub units: u64,
    /// The side measured (mm-core here; the guest in `vmm bench`), `None` if it was not.
    pub subject: Option<Stats>,
    /// Linux at the same size, `None` if it was not measured.
    pub anchor: Option<Stats>,
}

impl Row {
    /// Subject median over anchor median.
    pub fn ratio(&self) -> Option<f64> {
        match (self.subject, self.anchor) {
            (Some(s), Some(a)) if a.median > 0.0 => Some(s.median / a.median),
            _ => None,
        }
    }

    /// What was measured, with its size.
    pub fn label(&self) -> String {
        let mib = |pages: u64| {
            let bytes = pages * 4096;
            if bytes >= 1 << 20 {
                format!("{} MiB", bytes >> 20)
            } else {
                format!("{} KiB", bytes >> 10)
            }
        };
        let n = self.units;
        match self.workload {
            Workload::MapTouchUnmap4K => format!("mmap 4 KiB anon + touch + munmap (x{n})"),
            Workload::TouchAnon => format!("touch {} anon (4 KiB pages, no THP)", mib(n)),
            Workload::MunmapPopulated => format!("munmap {} fully populated", mib(n)),
            Workload::CreateVmas => format!("create {n} separate VMAs (mmap FIXED + touch)"),
            Workload::MunmapVmas => format!("munmap {n} populated VMAs in one call"),
            Workload::TruncateShared => {
                format!("truncate a {} shared file mapping to 0 (populated)", mib(n))
            }
        }
    }

    /// The unit of the figures and how many nanoseconds it is.
    pub fn unit(&self) -> (&'static str, f64) {
        match self.workload {
            Workload::MapTouchUnmap4K => ("µs per op", 1e3),
            Workload::TouchAnon => ("µs per page", 1e3),
            Workload::CreateVmas => ("µs per VMA", 1e3),
            _ => ("ms", 1e6),
        }
    }
}

/// The two operations whose growth the scaling series show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScaleOp {
    /// One munmap over all n VMAs.
    Munmap,
    /// exit_mmap of an mm with n VMAs (mm-core only: Linux's cannot be timed from inside).
    ExitMmap,
}

impl ScaleOp {
    /// The name tables and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            ScaleOp::Munmap => "munmap",
            ScaleOp::ExitMmap => "exit_mmap",
        }
    }
}

/// One point of a scaling series.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// VMAs asked for.
    pub asked: u64,
    /// VMAs used (Linux may be capped by vm.max_map_count).
    pub used: u64,
    /// Total time of the operation, nanoseconds.
    pub total: Stats,
}

/// How one operation on one side grows with the VMAs.
#[derive(Clone, Debug)]
pub struct Series {
    /// The operation.
    pub op: ScaleOp,
    /// The side.
    pub side: Side,
    /// One point per VMA count, ascending.
    pub points: Vec<Point>,
}

/// n log n, the bound the scaling series are held to.
pub fn n_log_n(n: u64) -> f64 {
    let n = n as f64;
    n * n.ln()
}

impl Series {
    /// For each point: its growth t(n)/t(n0) and the n log n bound (n log n)/(n0 log n0).
    pub fn growth(&self) -> Vec<(f64, f64)> {
        let Some(first) = self.points.first() else {
            return Vec::new();
        };
        let (n0, t0) = (first.used, first.total.median);
        self.points
            .iter()
            .map(|p| {
                let growth = if t0 > 0.0 { p.total.median / t0 } else { 0.0 };
                (growth, n_log_n(p.used) / n_log_n(n0))
            })
            .collect()
    }

    /// True when every point grows no faster than n log n (with [`GROWTH_SLACK`]).
    pub fn within_n_log_n(&self) -> bool {
        self.growth()
            .iter()
            .all(|&(g, bound)| g <= bound * GROWTH_SLACK)
    }
}

/// What a fork row forks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForkCase {
    /// One anonymous mapping with every page written.
    Populated,
    /// Separate populated one-page VMAs.
    Vmas,
}

/// `fork()` of an address space on both sides (issue 16): the parent's time until fork returns,
/// nanoseconds.
#[derive(Clone, Debug)]
pub struct ForkRow {
    /// What is forked.
    pub case: ForkCase,
    /// Its size: pages, or VMAs.
    pub units: u64,
    /// mm-core's `Mm::fork`, `None` if not measured.
    pub subject: Option<Stats>,
    /// Linux's `fork()`, `None` if not measured.
    pub anchor: Option<Stats>,
}

impl ForkRow {
    /// What was forked, with its size.
    pub fn label(&self) -> String {
        match self.case {
            ForkCase::Populated => format!("fork with {} MiB populated", (self.units * 4096) >> 20),
            ForkCase::Vmas => format!("fork with {} populated VMAs", self.units),
        }
    }

    /// A short stable name (JSON keys).
    pub fn name(&self) -> &'static str {
        match self.case {
            ForkCase::Populated => "fork_populated",
            ForkCase::Vmas => "fork_vmas",
        }
    }

    /// mm-core's median over Linux's.
    pub fn ratio(&self) -> Option<f64> {
        match (self.subject, self.anchor) {
            (Some(s), Some(a)) if a.median > 0.0 => Some(s.median / a.median),
            _ => None,
        }
    }
}

/// Everything one run of [`crate::vs_linux`] measured.
#[derive(Clone, Debug)]
pub struct VsLinux {
    /// The smoke run's sizes.
    pub quick: bool,
    /// Repeats of everything.
    pub repeats: usize,
    /// Frames of simulated RAM mm-core ran on.
    pub sim_frames: u64,
    /// The six workloads: mm-core (subject) against Linux (anchor).
    pub rows: Vec<Row>,
    /// munmap and exit_mmap against the number of VMAs.
    pub scaling: Vec<Series>,
    /// fork of a populated mapping and of many VMAs.
    pub forks: Vec<ForkRow>,
    /// Measurements that could not be made, one line each.
    pub skipped: Vec<String>,
    /// mm-core frames still allocated after the run (a leak if not 0).
    pub leaked_frames: u64,
}

impl VsLinux {
    /// True when every measurement was made and nothing leaked.
    pub fn complete(&self) -> bool {
        self.skipped.is_empty() && self.leaked_frames == 0
    }
}

impl fmt::Display for VsLinux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "mm-core (host build, simulated RAM: {} MiB) against Linux's system calls, {} repeat(s)",
            (self.sim_frames * 4096) >> 20,
            self.repeats
        )?;
        writeln!(
            f,
            "Goal: mm-core ≤ {GOAL_RATIO}× Linux (medians; [min–max] over the repeats)"
        )?;
        f.write_str(&row_table(&self.rows, "mm-core", Some(GOAL_RATIO)))?;
        for s in &self.skipped {
            writeln!(f, "not measured: {s}")?;
        }
        if self.leaked_frames != 0 {
            writeln!(
                f,
                "mm-core: {} frames still allocated after the run (a leak)",
                self.leaked_frames
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "fork (the parent's time until it returns; the child exits untimed), goal mm-core ≤ \
             {GOAL_RATIO}× Linux:"
        )?;
        for r in &self.forks {
            let show = |s: Option<Stats>| s.map_or("-".to_string(), |s| s.show(1e6));
            let ratio = r.ratio();
            writeln!(
                f,
                "  {:<34} Linux {} ms   mm-core {} ms   {}   {}",
                r.label(),
                show(r.anchor),
                show(r.subject),
                ratio.map_or("-".to_string(), |q| format!("{}x", fmt_ratio(q))),
                match ratio {
                    Some(q) if q <= GOAL_RATIO => "met",
                    Some(_) => "MISSED",
                    None => "not measured",
                }
            )?;
        }
        let n0 = self.scaling.first().and_then(|s| s.points.first());
        writeln!(f)?;
        writeln!(
            f,
            "Scaling: n separate populated one-page VMAs, n0 = {}; goal: t(n)/t(n0) ≤ \
             (n log n)/(n0 log n0), with {GROWTH_SLACK}× slack for noise",
            n0.map_or(0, |p| p.used)
        )?;
        for s in &self.scaling {
            writeln!(f)?;
            f.write_str(&series_table(s))?;
        }
        Ok(())
    }
}

/// The rows as a table: the workload, its unit, anchor and subject with [min–max], the ratio and,
/// with a `goal`, the verdict.
pub fn row_table(rows: &[Row], subject: &str, goal: Option<f64>) -> String {
    let ratio_head = format!("{subject}/Linux");
    let mut head = vec!["workload", "unit", "Linux", subject, &ratio_head];
    if goal.is_some() {
        head.push("verdict");
    }
    let mut t = vec![head.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    let mut met = 0;
    for r in rows {
        let (unit, scale) = r.unit();
        let show = |s: Option<Stats>| s.map_or("not measured".into(), |s| s.show(scale));
        let mut line = vec![
            r.label(),
            unit.into(),
            show(r.anchor),
            show(r.subject),
            r.ratio().map_or("—".into(), fmt_ratio),
        ];
        if let Some(goal) = goal {
            line.push(match r.ratio() {
                Some(q) if q <= goal => {
                    met += 1;
                    "goal met".into()
                }
                Some(_) => "MISSED".into(),
                None => "not measured".into(),
            });
        }
        t.push(line);
    }
    let mut out = table(&t);
    if goal.is_some() {
        let _ = writeln!(out, "{met} of {} goals met", rows.len());
    }
    out
}

/// One scaling series as a table: per n, the total, the time per VMA, the growth against the first
/// n and against n log n, and (for mm-core) the verdict.
pub fn series_table(s: &Series) -> String {
    let what = match s.op {
        ScaleOp::Munmap => "munmap of all n VMAs in one call",
        ScaleOp::ExitMmap => "exit_mmap with n VMAs",
    };
    let verdicts = s.side != Side::Linux;
    let mut head = vec!["n", "total ms", "µs per VMA", "t(n)/t(n0)", "n log n ratio"];
    if verdicts {
        head.push("verdict");
    }
    let mut t = vec![head.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for (p, (growth, bound)) in s.points.iter().zip(s.growth()) {
        let n = if p.used == p.asked {
            format!("{}", p.used)
        } else {
            format!("{} (max_map_count)", p.used)
        };
        let mut line = vec![
            n,
            p.total.show(1e6),
            fmt_num(p.total.median / 1e3 / p.used.max(1) as f64),
            format!("{growth:.2}"),
            format!("{bound:.2}"),
        ];
        if verdicts {
            let ok = growth <= bound * GROWTH_SLACK;
            line.push(if ok { "≤ n log n" } else { "WORSE" }.into());
        }
        t.push(line);
    }
    format!("{what} — {}\n{}", s.side.name(), table(&t))
}

/// `rows` (the first is the header) as a Markdown table with aligned columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter_map(|r| r.get(c))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = (0..cols)
            .map(|c| {
                let s = r.get(c).map_or("", String::as_str);
                format!("{s}{}", " ".repeat(widths[c] - s.chars().count()))
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", dashes.join("-|-"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn linear_growth_is_within_n_log_n_and_quadratic_is_not() {
        let series = |f: fn(f64) -> f64| Series {
            op: ScaleOp::Munmap,
            side: Side::MmCore,
            points: [1_000u64, 4_000, 16_000]
                .into_iter()
                .map(|n| Point {
                    asked: n,
                    used: n,
                    total: Stats::of(&[f(n as f64)]).unwrap(),
                })
                .collect(),
        };
        assert!(series(|n| n).within_n_log_n());
        assert!(!series(|n| n * n).within_n_log_n());
    }

    #[test]
    fn a_ratio_is_rounded_up_so_a_miss_never_shows_as_the_goal() {
        assert_eq!(fmt_ratio(0.5001), "0.501");
        assert_eq!(fmt_ratio(0.25), "0.250");
    }
}
