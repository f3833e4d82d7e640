//! `vmm bench`: every benchmark in one run, each figure against its anchor — boot time against the
//! KVM floor, the probes' cost per checked free against the bare exit, the six mm workloads in
//! mm-core's host build and in the guest against Linux, munmap / exit_mmap scaling, and campaign
//! throughput — as a table on stdout, JSON (`--json`) and an SVG picture (`--svg`, drawn by
//! [`super::svg`]). `--quick` is the smoke run the test suite uses.

use super::guest::{guest_workloads, GuestBench};
use super::plan::{self, Calibration, RowKind};
use super::platform::Platform;
use super::{BenchError, BootBench, ProbeBench, BOOT_GOAL, BOOT_GOAL_RATIO};
use crate::campaign::{run_campaign, CampaignConfig, SeedRange};
use mm_bench::report::GOAL_RATIO;
use mm_bench::{Row, Series, Sizes, Stats, VsLinux};
use serde_json::{json, Value};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Goal for campaign throughput, in runs per minute.
pub const CAMPAIGN_GOAL: f64 = 100.0;

/// A campaign's measured rate.
#[derive(Clone, Debug)]
pub struct CampaignRate {
    /// The scenario every seed ran.
    pub scenario: &'static str,
    /// Seeds run.
    pub runs: u64,
    /// Seeds that failed (none should: the correct order runs).
    pub failed: u64,
    /// Throughput.
    pub runs_per_minute: f64,
}

/// `vmm difftest`'s rate on the host build or (`--guest`) in the VM.
#[derive(Clone, Debug)]
pub struct DifftestRate {
    /// What the probes did, if mm-core ran in the guest.
    pub guest: Option<crate::difftest::guest::ProbeTotals>,
    /// Seeds run.
    pub seeds: u64,
    /// Calls per seed.
    pub calls: usize,
    /// Seeds whose every call agreed with Linux.
    pub clean: u64,
    /// Seeds where a call did not.
    pub diverged: u64,
    /// Throughput, seeds per minute on every CPU.
    pub seeds_per_minute: f64,
}

/// A row that did not measure: what failed and the command that reproduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowFailure {
    /// The row's name (`plan::Row::name`).
    pub row: String,
    /// What went wrong.
    pub reason: String,
    /// The command that reproduces it.
    pub command: String,
}

impl RowFailure {
    fn of(row: &str, e: BenchError) -> RowFailure {
        let (reason, command) = match e {
            BenchError::Child { command, reason } => (reason, command),
            other => (other.to_string(), format!("vmm bench {row}")),
        };
        RowFailure {
            row: row.to_string(),
            reason,
            command,
        }
    }
}

/// Everything `vmm bench` measured so far: a row not measured (failed, or not run yet) is absent
/// from its section; failed rows are in `failures`, rows still to run in `pending`.
#[derive(Clone, Debug)]
pub struct Suite {
    /// What KVM this machine has.
    pub platform: Platform,
    /// Boot against the floor.
    pub boot: Option<BootBench>,
    /// Probe cost against the bare exit, one row per VMA count measured.
    pub probes: ProbeBench,
    /// mm-core's host build against Linux, and munmap / exit_mmap scaling.
    pub mm: Option<VsLinux>,
    /// The same workloads in the guest against Linux.
    pub guest: Option<GuestBench>,
    /// Campaign throughput.
    pub campaigns: Vec<CampaignRate>,
    /// Difftest throughput, host build.
    pub difftest: Option<DifftestRate>,
    /// Difftest throughput, mm-core in the guest.
    pub difftest_guest: Option<DifftestRate>,
    /// Rows that failed, in the order they ran.
    pub failures: Vec<RowFailure>,
    /// Rows not run yet.
    pub pending: Vec<String>,
}

/// How a bench run goes: its rows' sizes and watchdogs.
#[derive(Clone, Debug, Default)]
pub struct SuiteConfig {
    /// The smoke sizes.
    pub quick: bool,
    /// Boot runs of each side.
    pub iterations: u32,
    /// Watchdogs to use instead of the estimated ones, by row name.
    pub row_timeouts: Vec<(String, Duration)>,
}

impl Suite {
    /// Whether every row measured.
    pub fn complete(&self) -> bool {
        self.failures.is_empty() && self.pending.is_empty()
    }
}

/// Runs every row with `vmm_exe` as the child, each on its own: a row that fails is recorded with
/// its reason and the rest go on. `on_row` sees the suite after each row (to write the results as
/// they come). Fails only if the calibration before the first row does.
pub fn run(
    vmm_exe: &Path,
    config: &SuiteConfig,
    on_row: &mut dyn FnMut(&Suite),
) -> Result<Suite, BenchError> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("bench: calibrating (a few runs of the guest) …");
    let cal = Calibration::measure(vmm_exe, config.quick)?;
    let mut rows = plan::rows(
        config.quick,
        config.iterations,
        &cal,
        u32::try_from(jobs).unwrap_or(1),
        &config.row_timeouts,
    );
    let total: Duration = rows.iter().map(|r| r.estimate).sum();
    eprintln!(
        "bench: {} rows, {} in all on this machine (each row's watchdog: {}x its estimate, at \
         least {} s)",
        rows.len(),
        plan::rough(total),
        plan::WATCHDOG_MARGIN,
        plan::MIN_WATCHDOG.as_secs()
    );
    let mut suite = Suite {
        platform: Platform::detect(),
        boot: None,
        probes: ProbeBench { rows: Vec::new() },
        mm: None,
        guest: None,
        campaigns: Vec::new(),
        difftest: None,
        difftest_guest: None,
        failures: Vec::new(),
        pending: rows.iter().map(|r| r.name.clone()).collect(),
    };
    let started = Instant::now();
    for i in 0..rows.len() {
        let row = rows[i].clone();
        eprintln!(
            "bench: [{}/{}] {} ({}, watchdog {} s) …",
            i + 1,
            rows.len(),
            row.name,
            plan::rough(row.estimate),
            row.watchdog.as_secs()
        );
        let row_started = Instant::now();
        let measured = measure(vmm_exe, &row, jobs, &mut suite);
        let took = row_started.elapsed();
        suite.pending.retain(|p| *p != row.name);
        match measured {
            Ok(()) => {
                eprintln!(
                    "bench: {} done in {:.1} s ({:.0} s so far)",
                    row.name,
                    took.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
                plan::refine(&mut rows, i, took, &config.row_timeouts);
            }
            Err(e) => {
                let failure = RowFailure::of(&row.name, e);
                eprintln!("bench: {} FAILED: {}", row.name, failure.reason);
                suite.failures.push(failure);
            }
        }
        on_row(&suite);
    }
    Ok(suite)
}

/// `vmm bench` with every row: checks `--row-timeout`, runs the suite writing `--json` and `--svg`
/// after every row, prints the table; returns the exit code (1 if a row failed), or the message
/// of an error that stops it (the calibration failed, a file could not be written).
pub fn run_command(vmm_exe: &Path, args: &crate::cli::BenchArgs) -> Result<u8, String> {
    use crate::exit_code::{FAILURE, SUCCESS, USAGE};
    let names = plan::row_names(args.quick);
    if let Some((name, _)) = args.row_timeout.iter().find(|(n, _)| !names.contains(n)) {
        eprintln!(
            "vmm: --row-timeout: no row {name:?} (rows: {})",
            names.join(", ")
        );
        return Ok(USAGE);
    }
    let config = SuiteConfig {
        quick: args.quick,
        iterations: if args.quick { 3 } else { args.iterations },
        row_timeouts: args.row_timeout.clone(),
    };
    // The files follow the run: rewritten after every row, so an interrupted bench keeps what it
    // measured.
    let mut write_error = None;
    let mut write_files = |suite: &Suite| {
        let json = serde_json::to_string_pretty(&suite.to_json()).unwrap_or_default() + "\n";
        for (path, text) in [
            (args.json.as_ref(), json),
            (args.svg.as_ref(), suite.to_svg()),
        ] {
            if let Some(path) = path {
                if let Err(e) = crate::out_file::write_text(path, &text) {
                    write_error = Some(format!("cannot write {}: {e}", path.display()));
                }
            }
        }
    };
    let suite = run(vmm_exe, &config, &mut write_files).map_err(|e| e.to_string())?;
    println!("{suite}");
    if let Some(e) = write_error {
        return Err(e);
    }
    if suite.complete() {
        Ok(SUCCESS)
    } else {
        eprintln!("vmm: bench: {} row(s) failed", suite.failures.len());
        Ok(FAILURE)
    }
}

/// Measures one row into `suite`.
fn measure(
    vmm_exe: &Path,
    row: &plan::Row,
    jobs: usize,
    suite: &mut Suite,
) -> Result<(), BenchError> {
    match row.kind {
        RowKind::Boot(iterations) => suite.boot = Some(super::boot(vmm_exe, iterations)?),
        RowKind::Probes(vmas) => {
            let r = super::probes::probe_row(vmm_exe, vmas, row.watchdog)?;
            suite.probes.rows.push(r);
        }
        RowKind::MmHost(quick) => suite.mm = Some(mm_bench::vs_linux(Sizes::of_run(quick))),
        RowKind::Guest(quick) => {
            suite.guest = Some(guest_workloads(vmm_exe, quick, row.watchdog)?);
        }
        RowKind::Campaign(scenario, seeds) => {
            let config = CampaignConfig {
                vmm: vmm_exe.to_path_buf(),
                scenario: scenario.to_string(),
                variant: "correct".to_string(),
                inject: None,
                seeds: SeedRange {
                    start: 0,
                    end: seeds,
                },
                shard: None,
                jobs,
                // Each child gets its share of the row's watchdog.
                timeout: (row.watchdog * u32::try_from(jobs).unwrap_or(1)
                    / u32::try_from(seeds.max(1)).unwrap_or(u32::MAX))
                .max(plan::MIN_WATCHDOG),
                kill_grace: crate::campaign::runner::KILL_GRACE,
            };
            let result = run_campaign(&config).map_err(|e| BenchError::Child {
                command: format!(
                    "{} campaign --scenario {scenario} --seeds 0..{seeds}",
                    vmm_exe.display()
                ),
                reason: e.to_string(),
            })?;
            suite.campaigns.push(CampaignRate {
                scenario,
                runs: result.outcomes.len() as u64,
                failed: result.tally().failed(),
                runs_per_minute: result.runs_per_minute(),
            });
        }
        RowKind::Difftest(seeds) => {
            suite.difftest = Some(difftest_row(vmm_exe, seeds, jobs, false)?)
        }
        RowKind::DifftestGuest(seeds) => {
            suite.difftest_guest = Some(difftest_row(vmm_exe, seeds, jobs, true)?)
        }
    }
    Ok(())
}

/// A difftest row: `seeds` seeds of the default size against this machine's Linux, mm-core's
/// host build or (`guest`) mm-core in the VM, a batch of seeds per VM.
fn difftest_row(
    vmm_exe: &Path,
    seeds: u64,
    jobs: usize,
    guest: bool,
) -> Result<DifftestRate, BenchError> {
    use crate::difftest::{run, Outcome};
    let config = run::Config {
        exe: vmm_exe.to_path_buf(),
        seeds: SeedRange {
            start: 0,
            end: seeds,
        },
        calls: plan::DIFFTEST_CALLS,
        jobs,
        classes: Default::default(),
        json: None,
        per_vm: guest.then_some(crate::difftest::guest::PER_VM),
        variant: mm_core::Variant::Correct,
    };
    let run::SeedsRun {
        results,
        secs,
        probes,
    } = run::run_seeds(&config, false);
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count() as u64;
    if let Some((seed, Outcome::Error(e))) =
        results.iter().find(|(_, o)| matches!(o, Outcome::Error(_)))
    {
        return Err(BenchError::Child {
            command: format!(
                "{} difftest{} --seeds {seed}",
                vmm_exe.display(),
                if guest { " --guest" } else { "" }
            ),
            reason: e.clone(),
        });
    }
    Ok(DifftestRate {
        guest: probes,
        seeds,
        calls: plan::DIFFTEST_CALLS,
        clean: count(|o| matches!(o, Outcome::Clean)),
        diverged: count(|o| matches!(o, Outcome::Diverged(_))),
        seeds_per_minute: results.len() as f64 / secs.max(1e-9) * 60.0,
    })
}

fn difftest_json(d: &DifftestRate) -> Value {
    json!({
        "mode": if d.guest.is_some() { "guest" } else { "host" },
        "seeds": d.seeds,
        "calls": d.calls,
        "clean": d.clean,
        "diverged": d.diverged,
        "seeds_per_minute": d.seeds_per_minute,
        "probes": d.guest.map(|p| p.to_json()),
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "platform: {}", self.platform.describe())?;
        writeln!(f)?;
        match &self.boot {
            Some(boot) => writeln!(f, "{boot}")?,
            None => writeln!(f, "boot time: not measured")?,
        }
        writeln!(f)?;
        writeln!(f, "{}", self.probes)?;
        writeln!(f)?;
        match &self.mm {
            Some(mm) => writeln!(f, "{mm}")?,
            None => writeln!(f, "mm-core (host build) against Linux: not measured")?,
        }
        match &self.guest {
            Some(guest) => writeln!(f, "{}", guest.table(&self.guest_label()))?,
            None => writeln!(f, "mm workloads in the guest: not measured")?,
        }
        writeln!(f, "campaign throughput (correct order, every CPU):")?;
        for c in &self.campaigns {
            writeln!(
                f,
                "  {:<14} {:>5} runs  {:>8.0} runs/minute  {} failed  goal >= {CAMPAIGN_GOAL}: {}",
                c.scenario,
                c.runs,
                c.runs_per_minute,
                c.failed,
                verdict(c.runs_per_minute >= CAMPAIGN_GOAL)
            )?;
        }
        match &self.difftest {
            Some(d) => writeln!(
                f,
                "difftest (mm-core's host build against this machine's Linux, every CPU): {} seeds \
                 of {} calls, {:.0} seeds/minute, {} clean, {} diverged (docs/difftest.md)",
                d.seeds, d.calls, d.seeds_per_minute, d.clean, d.diverged
            )?,
            None => writeln!(f, "difftest: not measured")?,
        }
        match &self.difftest_guest {
            Some(d) => writeln!(
                f,
                "difftest --guest (mm-core in the VM, probes on, every CPU): {} seeds of {} calls, \
                 {:.1} seeds/minute, {} clean, {} diverged, {} probe checks, {} violations",
                d.seeds,
                d.calls,
                d.seeds_per_minute,
                d.clean,
                d.diverged,
                d.guest.map_or(0, |p| p.checks),
                d.guest.map_or(0, |p| p.violations)
            )?,
            None => writeln!(f, "difftest --guest: not measured")?,
        }
        if !self.failures.is_empty() {
            writeln!(f)?;
            writeln!(f, "FAILED rows ({}):", self.failures.len())?;
            for r in &self.failures {
                writeln!(f, "  {}: {}", r.row, r.reason)?;
                writeln!(f, "    reproduce: {}", r.command)?;
            }
        }
        if !self.pending.is_empty() {
            writeln!(f, "not run: {}", self.pending.join(", "))?;
        }
        Ok(())
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Suite {
    /// Everything as JSON.
    pub fn to_json(&self) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        json!({
            "platform": self.platform.describe(),
            "complete": self.complete(),
            "failed": self.failures.iter().map(|r| json!({
                "row": r.row,
                "reason": r.reason,
                "command": r.command,
            })).collect::<Vec<_>>(),
            "pending": self.pending,
            "boot": self.boot.as_ref().map(|boot| json!({
                "iterations": boot.iterations,
                "floor_ms": { "median": ms(boot.floor.median), "min": ms(boot.floor.min), "max": ms(boot.floor.max) },
                "boot_ms": { "median": ms(boot.boot.median), "min": ms(boot.boot.min), "max": ms(boot.boot.max) },
                "ratio": boot.ratio(),
                "goal": { "max_ms": ms(BOOT_GOAL), "max_ratio": BOOT_GOAL_RATIO, "met": boot.meets_goals() },
            })),
            "probes": self.probes.rows.iter().map(|r| json!({
                "vmas": r.vmas,
                "bare_exit_us": us(r.round_trip),
                "check_median_us": us(r.check),
                "check_mean_us": us(r.check_mean),
                "check_max_us": us(r.check_max),
                "checked_frees": r.frees,
                "ratio": r.ratio(),
                "sweeps": r.sweeps,
                "sweep_mean_us": us(r.sweep_mean),
                "check_with_sweeps_us": us(r.check_with_sweeps()),
                "ratio_with_sweeps": r.ratio_with_sweeps(),
            })).collect::<Vec<_>>(),
            "mm_workloads": self.mm.as_ref().map(|mm| json!({
                "quick": mm.quick,
                "repeats": mm.repeats,
                "goal_max_ratio": GOAL_RATIO,
                "rows": mm.rows.iter().map(row_json).collect::<Vec<_>>(),
                "forks": mm.forks.iter().map(|r| json!({
                    "workload": r.name(),
                    "label": r.label(),
                    "units": r.units,
                    "unit": "ms",
                    "value": stats_json(r.subject, 1e6),
                    "linux": stats_json(r.anchor, 1e6),
                    "ratio": r.ratio(),
                    "goal_met": r.ratio().is_some_and(|q| q <= GOAL_RATIO),
                })).collect::<Vec<_>>(),
                "skipped": mm.skipped,
                "leaked_frames": mm.leaked_frames,
            })),
            "scaling": self.mm.as_ref().map_or(Vec::new(), |mm| mm.scaling.iter().map(series_json).collect::<Vec<_>>()),
            "guest_workloads": self.guest.as_ref().map(|guest| json!({
                "platform": self.guest_label(),
                "scale": guest.scale,
                "rows": guest.rows.iter().map(row_json).collect::<Vec<_>>(),
            })),
            "campaigns": self.campaigns.iter().map(|c| json!({
                "scenario": c.scenario,
                "runs": c.runs,
                "failed": c.failed,
                "runs_per_minute": c.runs_per_minute,
                "goal_met": c.runs_per_minute >= CAMPAIGN_GOAL,
            })).collect::<Vec<_>>(),
            "difftest": self.difftest.as_ref().map(difftest_json),
            "difftest_guest": self.difftest_guest.as_ref().map(difftest_json),
        })
    }

    /// The results as a picture ([`super::svg`]).
    pub fn to_svg(&self) -> String {
        super::svg::draw(self)
    }

    /// The label next to the guest's figures: what this machine's KVM does to guest kernel code.
    pub fn guest_label(&self) -> String {
        let bare_exit = self.probes.rows.first().map(|r| r.round_trip);
        self.platform.guest_label(bare_exit)
    }
}

/// A figure as JSON, in the row's unit.
fn stats_json(s: Option<Stats>, scale: f64) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({ "median": s.median / scale, "min": s.min / scale, "max": s.max / scale }),
    )
}

/// A workload row as JSON: the subject and its Linux anchor in the row's unit, and their ratio.
fn row_json(r: &Row) -> Value {
    let (unit, scale) = r.unit();
    json!({
        "workload": r.workload.name(),
        "label": r.label(),
        "units": r.units,
        "unit": unit,
        "value": stats_json(r.subject, scale),
        "linux": stats_json(r.anchor, scale),
        "ratio": r.ratio(),
    })
}

/// A scaling series as JSON: per n, the total time in ms, its growth and the n log n bound.
fn series_json(s: &Series) -> Value {
    json!({
        "op": s.op.name(),
        "side": s.side.name(),
        "within_n_log_n": s.within_n_log_n(),
        "points": s.points.iter().zip(s.growth()).map(|(p, (growth, bound))| json!({
            "n": p.used,
            "asked": p.asked,
            "total_ms": stats_json(Some(p.total), 1e6),
            "us_per_vma": p.total.median / 1e3 / p.used.max(1) as f64,
            "growth": growth,
            "n_log_n_bound": bound,
        })).collect::<Vec<_>>(),
    })
}
