//! `vmm bench`: every benchmark in one run — boot time against the KVM floor, the probes' cost per
//! checked free against the bare exit, and campaign throughput — as a table on stdout, JSON
//! (`--json`) and an SVG picture (`--svg`). `--quick` is the smoke run the test suite uses.
//!
//! The mm workloads against Linux stay in `cargo bench -p mm-core --bench vs_linux` for now.

use super::{BenchError, BootBench, ProbeBench, BOOT_GOAL, BOOT_GOAL_RATIO};
use crate::campaign::{run_campaign, CampaignConfig, SeedRange};
use serde_json::{json, Value};
use std::fmt::{self, Write as _};
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
    pub platform: String,
    /// Boot against the floor.
    pub boot: BootBench,
    /// Probe cost against the bare exit.
    pub probes: ProbeBench,
    /// Campaign throughput.
    pub campaigns: Vec<CampaignRate>,
}

/// Hardware KVM when the CPU advertises VMX or SVM; otherwise a software hypervisor (here: PVM),
/// which emulates guest ring 0 — every figure of guest kernel work is far slower than on hardware.
pub fn platform() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if hardware {
        format!("hardware KVM (VMX/SVM), {cpus} CPUs")
    } else {
        format!("software KVM (no VMX/SVM: guest ring 0 is emulated), {cpus} CPUs")
    }
}

/// Runs every benchmark with `vmm_exe` as the child.
pub fn run(vmm_exe: &Path, quick: bool) -> Result<Suite, BenchError> {
    eprintln!("bench: boot time …");
    let boot = super::boot(vmm_exe, if quick { 3 } else { 30 })?;
    eprintln!("bench: probe cost …");
    let probes = super::probes(vmm_exe, quick)?;
    let plans: [(&'static str, u64); 2] = if quick {
        [("munmap-whole", 8), ("tour", 2)]
    } else {
        [("munmap-whole", 500), ("tour", 60)]
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
        platform: platform(),
        boot,
        probes,
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
        writeln!(f, "platform: {}", self.platform)?;
        writeln!(f)?;
        writeln!(f, "{}", self.boot)?;
        writeln!(f)?;
        writeln!(f, "{}", self.probes)?;
        writeln!(f)?;
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
            "platform": self.platform,
            "boot": {
                "iterations": self.boot.iterations,
                "floor_ms": { "median": ms(self.boot.floor.median), "min": ms(self.boot.floor.min) },
                "boot_ms": { "median": ms(self.boot.boot.median), "min": ms(self.boot.boot.min) },
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
            })).collect::<Vec<_>>(),
            "campaigns": self.campaigns.iter().map(|c| json!({
                "scenario": c.scenario,
                "runs": c.runs,
                "failed": c.failed,
                "runs_per_minute": c.runs_per_minute,
                "goal_met": c.runs_per_minute >= CAMPAIGN_GOAL,
            })).collect::<Vec<_>>(),
        })
    }

    /// The results as a picture: one bar per measurement against its goal (the red tick).
    pub fn to_svg(&self) -> String {
        let mut rows: Vec<(String, f64, f64, bool, String)> = vec![(
            "boot / KVM floor".into(),
            self.boot.ratio(),
            BOOT_GOAL_RATIO,
            false,
            format!("{:.1}x (goal <= {BOOT_GOAL_RATIO}x)", self.boot.ratio()),
        )];
        for r in &self.probes.rows {
            rows.push((
                format!("checked free / bare exit, {} VMAs", r.vmas),
                r.ratio(),
                super::probes::PROBE_GOAL_RATIO,
                false,
                format!(
                    "{:.2}x (goal <= {}x at 1,000 VMAs)",
                    r.ratio(),
                    super::probes::PROBE_GOAL_RATIO
                ),
            ));
        }
        for c in &self.campaigns {
            rows.push((
                format!("campaign {}, runs/minute", c.scenario),
                c.runs_per_minute,
                CAMPAIGN_GOAL,
                true,
                format!("{:.0} (goal >= {CAMPAIGN_GOAL})", c.runs_per_minute),
            ));
        }
        let (label_w, bar_w, row_h) = (300.0, 300.0, 30.0);
        let height = 70.0 + row_h * rows.len() as f64;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="22" font-size="16">vmm bench — {}</text>"#,
            escape(&self.platform)
        );
        let _ = writeln!(
            svg,
            r##"<text x="10" y="42" fill="#555">bars: measured; red tick: goal</text>"##
        );
        for (i, (label, value, goal, higher_is_better, text)) in rows.iter().enumerate() {
            let y = 60.0 + row_h * i as f64;
            let scale = bar_w / (value.max(*goal) * 1.15);
            let ok = if *higher_is_better {
                value >= goal
            } else {
                value <= goal
            };
            let color = if ok { "#4a90d9" } else { "#d9534f" };
            let _ = writeln!(
                svg,
                r#"<text x="10" y="{}">{}</text>"#,
                y + 15.0,
                escape(label)
            );
            let _ = writeln!(
                svg,
                r##"<rect x="{label_w}" y="{}" width="{:.1}" height="18" fill="{color}"/>"##,
                y + 2.0,
                value * scale
            );
            let gx = label_w + goal * scale;
            let _ = writeln!(
                svg,
                r#"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{}" stroke="red" stroke-width="2"/>"#,
                y,
                y + 22.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}">{}</text>"#,
                label_w + bar_w + 10.0,
                y + 15.0,
                escape(text)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
