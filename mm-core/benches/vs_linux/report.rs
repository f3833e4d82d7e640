//! Medians and the two tables: the goal table (mm-core ≤ 0.5× Linux) and the scaling table
//! (growth of munmap / exit_mmap against n log n).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Skip, Workload};

/// mm-core's time must be at most this fraction of Linux's (issue 3).
const GOAL_RATIO: f64 = 0.5;
/// Growth may exceed n log n by this factor before the verdict says "worse" (timing noise).
pub const GROWTH_SLACK: f64 = 1.25;

/// Which implementation a number belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// Linux's native system calls.
    Linux,
    /// mm-core on simulated RAM.
    MmCore,
}

impl Side {
    /// Both sides, in the order of the first repeat.
    pub const ALL: [Side; 2] = [Side::Linux, Side::MmCore];

    fn name(self) -> &'static str {
        match self {
            Side::Linux => "Linux",
            Side::MmCore => "mm-core",
        }
    }
}

/// Measurements skipped so far (each printed by [`skip`]).
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Prints the one line that says a workload was skipped on one side.
pub fn skip(side: Side, what: &str, why: &Skip) {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    println!("{}: {what}: not measured: {why}", side.name());
}

/// How many measurements were skipped.
pub fn skipped() -> usize {
    SKIPPED.load(Ordering::Relaxed)
}

/// Median, min and max of some samples.
#[derive(Clone, Copy, Debug)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[f64]) -> Option<Stats> {
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

    /// "median [min–max]" in `unit` (nanoseconds divided by `scale`).
    fn show(&self, scale: f64) -> String {
        let f = |x: f64| fmt_num(x / scale);
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} [{}–{}]", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// Three significant digits, more when the number is large.
fn fmt_num(x: f64) -> String {
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

/// The goal workloads' samples (nanoseconds per unit), by workload and side.
#[derive(Default)]
pub struct Samples(BTreeMap<(Workload, Side), Vec<f64>>);

impl Samples {
    /// Adds one repeat's value.
    pub fn add(&mut self, w: Workload, side: Side, ns: f64) {
        self.0.entry((w, side)).or_default().push(ns);
    }

    fn stats(&self, w: Workload, side: Side) -> Option<Stats> {
        Stats::of(self.0.get(&(w, side))?)
    }
}

/// A workload's row label and unit: (label, unit name, nanoseconds per unit).
pub struct RowSpec {
    /// The workload.
    pub workload: Workload,
    /// What was measured, with the sizes of this run.
    pub label: String,
    /// The unit name ("µs per page").
    pub unit: &'static str,
    /// Nanoseconds per unit.
    pub scale: f64,
}

/// Prints the goal table: for each workload, both medians, the ratio and the verdict.
pub fn print_goal_table(samples: &Samples, rows: &[RowSpec]) {
    println!("Goal: mm-core ≤ {GOAL_RATIO}× Linux (medians; [min–max] over the repeats)");
    let mut t = vec![row(&[
        "workload",
        "unit",
        "Linux",
        "mm-core",
        "mm-core/Linux",
        "verdict",
    ])];
    let mut met = 0;
    for r in rows {
        let linux = samples.stats(r.workload, Side::Linux);
        let mm = samples.stats(r.workload, Side::MmCore);
        let show = |s: Option<Stats>| s.map_or("not measured".into(), |s| s.show(r.scale));
        let (ratio, verdict) = match (linux, mm) {
            (Some(l), Some(m)) if l.median > 0.0 => {
                let q = m.median / l.median;
                met += usize::from(q <= GOAL_RATIO);
                let v = if q <= GOAL_RATIO {
                    "goal met"
                } else {
                    "MISSED"
                };
                // Rounded up, so a shown 0.500 never hides a miss.
                (format!("{:.3}", (q * 1000.0).ceil() / 1000.0), v)
            }
            _ => ("—".into(), "not measured"),
        };
        t.push(vec![
            r.label.clone(),
            r.unit.into(),
            show(linux),
            show(mm),
            ratio,
            verdict.into(),
        ]);
    }
    print_table(&t);
    println!("{met} of {} goals met", rows.len());
}

/// The two operations whose growth the scaling table shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScaleOp {
    /// One munmap over all n VMAs.
    Munmap,
    /// exit_mmap of an mm with n VMAs (mm-core only).
    ExitMmap,
}

impl ScaleOp {
    fn name(self) -> &'static str {
        match self {
            ScaleOp::Munmap => "munmap",
            ScaleOp::ExitMmap => "exit_mmap",
        }
    }
}

/// Per n asked for: the n actually used (Linux may be capped by vm.max_map_count) and the total
/// times in nanoseconds.
type Series = BTreeMap<u64, (u64, Vec<f64>)>;

/// The scaling samples, by operation and side.
#[derive(Default)]
pub struct Scaling(BTreeMap<(ScaleOp, Side), Series>);

impl Scaling {
    /// Adds one measurement (`(n used, time)`) for `n` VMAs asked for, or prints why there is none.
    pub fn record(&mut self, op: ScaleOp, side: Side, n: u64, r: Result<(u64, Duration), Skip>) {
        match r {
            Ok((used, d)) => {
                let e = self.0.entry((op, side)).or_default().entry(n).or_default();
                e.0 = used;
                e.1.push(d.as_nanos() as f64);
            }
            Err(e) => skip(side, &format!("{} of {n} VMAs", op.name()), &e),
        }
    }

    /// Prints one table per operation and side; mm-core's get verdicts, Linux's is for comparison.
    pub fn print(&self, sizes: &[u64]) {
        let n0 = sizes.first().copied().unwrap_or(0);
        println!(
            "Scaling: n separate populated one-page VMAs, n0 = {n0}; goal: t(n)/t(n0) ≤ \
             (n log n)/(n0 log n0), with {GROWTH_SLACK}× slack for noise"
        );
        for ((op, side), series) in &self.0 {
            let what = match op {
                ScaleOp::Munmap => "munmap of all n VMAs in one call",
                ScaleOp::ExitMmap => "exit_mmap with n VMAs",
            };
            println!();
            print_series(
                &format!("{what} — {}", side.name()),
                series,
                *side != Side::Linux,
            );
        }
    }
}

fn n_log_n(n: u64) -> f64 {
    let n = n as f64;
    n * n.ln()
}

/// Prints one scaling series: per n, the total, the time per VMA, the growth against the first n
/// and against n log n, and (for mm-core) the verdict.
fn print_series(title: &str, series: &Series, verdicts: bool) {
    println!("{title}");
    let mut head = vec!["n", "total ms", "µs per VMA", "t(n)/t(n0)", "n log n ratio"];
    if verdicts {
        head.push("verdict");
    }
    let mut t = vec![row(&head)];
    let base = series
        .values()
        .next()
        .and_then(|(n, v)| Some((*n, Stats::of(v)?.median)));
    for (asked, (used, v)) in series {
        let Some(s) = Stats::of(v) else { continue };
        let n_label = if used == asked {
            format!("{used}")
        } else {
            format!("{used} (max_map_count)")
        };
        let mut r = vec![n_label, s.show(1e6), fmt_num(s.median / 1e3 / *used as f64)];
        match base {
            Some((n0, t0)) if t0 > 0.0 => {
                let growth = s.median / t0;
                let bound = n_log_n(*used) / n_log_n(n0);
                r.push(format!("{growth:.2}"));
                r.push(format!("{bound:.2}"));
                if verdicts {
                    let ok = growth <= bound * GROWTH_SLACK;
                    r.push(if ok { "≤ n log n" } else { "WORSE" }.into());
                }
            }
            _ => r.extend(["—".to_string(), "—".to_string()]),
        }
        t.push(r);
    }
    print_table(&t);
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Prints `rows` (the first is the header) as a Markdown table with aligned columns.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter_map(|r| r.get(c))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let line = |r: &Vec<String>| {
        let cells: Vec<String> = (0..cols)
            .map(|c| {
                let s = r.get(c).map_or("", String::as_str);
                format!("{s}{}", " ".repeat(widths[c] - s.chars().count()))
            })
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    for (i, r) in rows.iter().enumerate() {
        line(r);
        if i == 0 {
            let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", dashes.join("-|-"));
        }
    }
}
