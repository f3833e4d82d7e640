//! `vmm bench`: every benchmark in one run, each figure against its anchor — boot time against the
//! KVM floor, the probes' cost per checked free against the bare exit, the six mm workloads in
//! mm-core's host build and in the guest against Linux, munmap / exit_mmap scaling, and campaign
//! throughput — as a table on stdout, JSON (`--json`) and an SVG picture (`--svg`, drawn by
//! [`super::svg`]). `--quick` is the smoke run the test suite uses.

use super::guest::{guest_workloads, GuestBench};
use super::platform::Platform;
use super::{BenchError, BootBench, ProbeBench, BOOT_GOAL, BOOT_GOAL_RATIO};
use crate::campaign::{run_campaign, CampaignConfig, SeedRange};
use mm_bench::report::GOAL_RATIO;
use mm_bench::{Row, Series, Sizes, Stats, VsLinux};
use serde_json::{json, Value};
use std::fmt;
use std::path::Path;
use std::time::Duration;

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

/// Everything `vmm bench` measured.
#[derive(Clone, Debug)]
pub struct Suite {
    /// What KVM this machine has.
    pub platform: Platform,
    /// Boot against the floor.
    pub boot: BootBench,
    /// Probe cost against the bare exit.
    pub probes: ProbeBench,
    /// mm-core's host build against Linux, and munmap / exit_mmap scaling.
    pub mm: VsLinux,
    /// The same workloads in the guest against Linux.
    pub guest: GuestBench,
    /// Campaign throughput.
    pub campaigns: Vec<CampaignRate>,
}

/// Runs every benchmark with `vmm_exe` as the child.
pub fn run(vmm_exe: &Path, quick: bool) -> Result<Suite, BenchError> {
    eprintln!("bench: boot time …");
    let boot = super::boot(vmm_exe, if quick { 3 } else { 30 })?;
    eprintln!("bench: probe cost …");
    let probes = super::probes(vmm_exe, quick)?;
    eprintln!("bench: mm workloads, mm-core (host build) against Linux …");
    let mm = mm_bench::vs_linux(Sizes::of_run(quick));
    eprintln!("bench: mm workloads in the guest …");
    let guest = guest_workloads(vmm_exe, quick)?;
    let plans: [(&'static str, u64); 3] = if quick {
        [("munmap-whole", 8), ("tour", 2), ("race-exit", 2)]
    } else {
        [("munmap-whole", 500), ("tour", 60), ("race-exit", 200)]
    };
    let mut campaigns = Vec::new();
    for (scenario, seeds) in plans {
        eprintln!("bench: campaign throughput, {scenario} × {seeds} …");
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
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: Duration::from_secs(60),
            kill_grace: crate::campaign::runner::KILL_GRACE,
        };
        let result = run_campaign(&config).map_err(|e| BenchError::Child {
            command: format!("campaign {scenario}"),
            reason: e.to_string(),
        })?;
        campaigns.push(CampaignRate {
            scenario,
            runs: result.outcomes.len() as u64,
            failed: result.tally().failed(),
            runs_per_minute: result.runs_per_minute(),
        });
    }
    Ok(Suite {
        platform: Platform::detect(),
        boot,
        probes,
        mm,
        guest,
        campaigns,
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
        writeln!(f, "{}", self.boot)?;
        writeln!(f)?;
        writeln!(f, "{}", self.probes)?;
        writeln!(f)?;
        writeln!(f, "{}", self.mm)?;
        writeln!(f, "{}", self.guest.table(&self.guest_label()))?;
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
            "boot": {
                "iterations": self.boot.iterations,
                "floor_ms": { "median": ms(self.boot.floor.median), "min": ms(self.boot.floor.min), "max": ms(self.boot.floor.max) },
                "boot_ms": { "median": ms(self.boot.boot.median), "min": ms(self.boot.boot.min), "max": ms(self.boot.boot.max) },
                "ratio": self.boot.ratio(),
                "goal": { "max_ms": ms(BOOT_GOAL), "max_ratio": BOOT_GOAL_RATIO, "met": self.boot.meets_goals() },
            },
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
            "mm_workloads": {
                "quick": self.mm.quick,
                "repeats": self.mm.repeats,
                "goal_max_ratio": GOAL_RATIO,
                "rows": self.mm.rows.iter().map(row_json).collect::<Vec<_>>(),
                "skipped": self.mm.skipped,
                "leaked_frames": self.mm.leaked_frames,
            },
            "scaling": self.mm.scaling.iter().map(series_json).collect::<Vec<_>>(),
            "guest_workloads": {
                "platform": self.guest_label(),
                "scale": self.guest.scale,
                "rows": self.guest.rows.iter().map(row_json).collect::<Vec<_>>(),
            },
            "campaigns": self.campaigns.iter().map(|c| json!({
                "scenario": c.scenario,
                "runs": c.runs,
                "failed": c.failed,
                "runs_per_minute": c.runs_per_minute,
                "goal_met": c.runs_per_minute >= CAMPAIGN_GOAL,
            })).collect::<Vec<_>>(),
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
