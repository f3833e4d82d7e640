//! What `vmm bench` will run: its rows, each measured on its own (a row that fails is reported and
//! the rest go on), how long each should take on this machine, and the watchdog that follows
//! from it.
//!
//! The estimate comes from a calibration of a few seconds before the first row: one boot, one
//! probe-bench run at 100 VMAs (what a VMA costs the guest here), the guest workloads at their
//! smoke size, and one seed of each campaign's scenario. Each row's work is a multiple of one of
//! those, so its estimate is that multiple; a child row's watchdog is [`WATCHDOG_MARGIN`] times
//! its estimate (at least [`MIN_WATCHDOG`]), so a slow machine stretches every watchdog with it.

use super::BenchError;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A row's watchdog is this many times its estimate.
pub const WATCHDOG_MARGIN: u32 = 4;
/// No watchdog is shorter than this.
pub const MIN_WATCHDOG: Duration = Duration::from_secs(60);

/// One row of the bench.
#[derive(Clone, Debug, PartialEq)]
pub enum RowKind {
    /// Boot against the KVM floor, this many runs of each.
    Boot(u32),
    /// The probe cost at this many VMAs.
    Probes(u64),
    /// mm-core's host build against Linux, and the scaling series (in this process); at the
    /// smoke sizes if true.
    MmHost(bool),
    /// The guest workloads against Linux; at the smoke size if true.
    Guest(bool),
    /// A campaign of this scenario over this many seeds.
    Campaign(&'static str, u64),
    /// `vmm difftest` (host build against this machine's Linux) over this many seeds.
    Difftest(u64),
    /// `vmm difftest --guest` over this many seeds.
    DifftestGuest(u64),
}

/// The difftest row's seeds (of [`DIFFTEST_CALLS`] calls each).
pub fn difftest_seeds(quick: bool) -> u64 {
    if quick {
        40
    } else {
        2000
    }
}

/// The guest difftest row's seeds: a VM's batch (`vmm difftest --per-vm`'s default) per CPU in
/// the full run.
pub fn difftest_guest_seeds(quick: bool) -> u64 {
    if quick {
        2
    } else {
        16
    }
}

/// What one guest difftest seed costs one CPU here (measured: 15-19 s of emulated ring 0 per
/// seed of 200 calls on PVM, the observation of every call's state most of it).
const DIFFTEST_GUEST_SEED: Duration = Duration::from_secs(18);

/// Calls per difftest seed, as `vmm difftest`'s default.
pub const DIFFTEST_CALLS: usize = 200;

/// What one difftest seed costs one CPU here (measured: about 3,000 seeds a minute on 2 cores).
const DIFFTEST_SEED: Duration = Duration::from_millis(40);

/// A row with its name, estimate and watchdog.
#[derive(Clone, Debug)]
pub struct Row {
    /// What it measures.
    pub kind: RowKind,
    /// How the table, the JSON and `--row-timeout` name it.
    pub name: String,
    /// How long it should take here.
    pub estimate: Duration,
    /// When its child is stopped.
    pub watchdog: Duration,
}

/// What one run of each calibration took.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// `vmm run --scenario boot`.
    pub boot: Duration,
    /// `vmm run --scenario probe-bench --scale 100`.
    pub probes_100: Duration,
    /// The guest workloads at their smoke size.
    pub guest_quick: Duration,
    /// One seed of each campaign scenario, in [`campaign_plans`]'s order.
    pub campaign_seed: [Duration; 3],
}

/// What `--quick` takes one campaign seed to cost, instead of timing one.
const QUICK_CAMPAIGN_SEED: Duration = Duration::from_secs(10);

/// The campaign rows: scenario and seeds. `--quick` runs `mm-smoke` where the full run has
/// `tour`: a tour seed with `--validate-at-exit` takes ~20 s in emulated ring 0 here.
pub fn campaign_plans(quick: bool) -> [(&'static str, u64); 3] {
    if quick {
        [("munmap-whole", 8), ("mm-smoke", 2), ("race-exit", 2)]
    } else {
        [("munmap-whole", 500), ("tour", 60), ("race-exit", 200)]
    }
}

/// Times `vmm run --scenario ARGS` once (a calibration run).
fn time_run(vmm_exe: &Path, args: &[&str]) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let status = Command::new(vmm_exe)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let failed = |reason: String| BenchError::Child {
        command: format!("{} run {}", vmm_exe.display(), args.join(" ")),
        reason,
    };
    match status {
        Ok(s) if s.success() => Ok(started.elapsed()),
        Ok(s) => Err(failed(s.to_string())),
        Err(e) => Err(failed(e.to_string())),
    }
}

impl Calibration {
    /// Runs the calibration (a few seconds here; `quick` times no campaign seed).
    pub fn measure(vmm_exe: &Path, quick: bool) -> Result<Calibration, BenchError> {
        let boot = time_run(vmm_exe, &["--scenario", "boot"])?;
        let probes_100 = time_run(vmm_exe, &["--scenario", "probe-bench", "--scale", "100"])?;
        let small = super::guest::GUEST_SCALE_QUICK.to_string();
        let guest_quick = time_run(vmm_exe, &["--scenario", "mm-workloads", "--scale", &small])?;
        // A smoke run's campaigns are a few seeds of short scenarios: a generous fixed estimate
        // keeps their watchdogs wide without timing a seed of each first.
        let mut campaign_seed = [QUICK_CAMPAIGN_SEED; 3];
        if !quick {
            for (i, (scenario, _)) in campaign_plans(quick).into_iter().enumerate() {
                campaign_seed[i] = time_run(vmm_exe, &["--scenario", scenario])?;
            }
        }
        Ok(Calibration {
            boot,
            probes_100,
            guest_quick,
            campaign_seed,
        })
    }

    /// The estimate of one row.
    fn estimate(&self, kind: &RowKind, jobs: u32) -> Duration {
        let per_vma = self.probes_100.saturating_sub(self.boot) / 100;
        match *kind {
            // Floor and boot alternate, after one warm-up of each.
            RowKind::Boot(runs) => self.boot * 2 * (runs + 1),
            RowKind::Probes(vmas) => self.boot + per_vma * u32::try_from(vmas).unwrap_or(u32::MAX),
            // In-process on the host, with no guest: its sizes are fixed (`mm_bench::Sizes`).
            RowKind::MmHost(quick) => Duration::from_secs(if quick { 2 } else { 15 }),
            RowKind::Guest(true) => self.guest_quick,
            RowKind::Guest(false) => {
                let times = super::guest::GUEST_SCALE / super::guest::GUEST_SCALE_QUICK;
                self.guest_quick * u32::try_from(times).unwrap_or(u32::MAX)
            }
            RowKind::Campaign(scenario, seeds) => {
                let i = campaign_plans(false)
                    .iter()
                    .position(|(s, _)| *s == scenario)
                    .unwrap_or(0);
                let seeds = u32::try_from(seeds).unwrap_or(u32::MAX);
                self.campaign_seed[i] * seeds / jobs.max(1)
            }
            RowKind::Difftest(seeds) => {
                DIFFTEST_SEED * u32::try_from(seeds).unwrap_or(u32::MAX) / jobs.max(1)
            }
            RowKind::DifftestGuest(seeds) => {
                DIFFTEST_GUEST_SEED * u32::try_from(seeds).unwrap_or(u32::MAX) / jobs.max(1)
            }
        }
    }
}

/// The rows of a bench run (`--quick`: the smoke sizes), with estimates from `cal` and `jobs`
/// campaign children at once; `overrides` replace the watchdog of the rows they name.
pub fn rows(
    quick: bool,
    iterations: u32,
    cal: &Calibration,
    jobs: u32,
    overrides: &[(String, Duration)],
) -> Vec<Row> {
    let scales: &[u64] = if quick {
        &super::probes::PROBE_SCALES_QUICK
    } else {
        &super::probes::PROBE_SCALES
    };
    let mut kinds = vec![(RowKind::Boot(iterations), "boot".to_string())];
    for &vmas in scales {
        kinds.push((RowKind::Probes(vmas), format!("probes-{vmas}")));
    }
    kinds.push((RowKind::MmHost(quick), "mm-host".to_string()));
    kinds.push((RowKind::Guest(quick), "guest".to_string()));
    for (scenario, seeds) in campaign_plans(quick) {
        kinds.push((
            RowKind::Campaign(scenario, seeds),
            format!("campaign-{scenario}"),
        ));
    }
    kinds.push((
        RowKind::Difftest(difftest_seeds(quick)),
        "difftest".to_string(),
    ));
    kinds.push((
        RowKind::DifftestGuest(difftest_guest_seeds(quick)),
        "difftest-guest".to_string(),
    ));
    kinds
        .into_iter()
        .map(|(kind, name)| {
            let estimate = cal.estimate(&kind, jobs);
            let watchdog = overrides
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, t)| t)
                .unwrap_or_else(|| (estimate * WATCHDOG_MARGIN).max(MIN_WATCHDOG));
            Row {
                kind,
                name,
                estimate,
                watchdog,
            }
        })
        .collect()
}

/// Re-estimates the probe rows after `done` (a probe row) took `took`: their work grows with
/// their VMAs, and a measured row predicts the next better than the calibration. Watchdogs that
/// `overrides` set stay.
pub fn refine(rows: &mut [Row], done: usize, took: Duration, overrides: &[(String, Duration)]) {
    let RowKind::Probes(measured) = rows[done].kind else {
        return;
    };
    for row in &mut rows[done + 1..] {
        let RowKind::Probes(vmas) = row.kind else {
            continue;
        };
        let scale = vmas as f64 / measured.max(1) as f64;
        row.estimate = took.mul_f64(scale.max(1.0));
        if !overrides.iter().any(|(n, _)| *n == row.name) {
            row.watchdog = (row.estimate * WATCHDOG_MARGIN).max(MIN_WATCHDOG);
        }
    }
}

/// The row names a bench run has, for checking `--row-timeout` before anything runs.
pub fn row_names(quick: bool) -> Vec<String> {
    let cal = Calibration {
        boot: Duration::ZERO,
        probes_100: Duration::ZERO,
        guest_quick: Duration::ZERO,
        campaign_seed: [Duration::ZERO; 3],
    };
    rows(quick, 1, &cal, 1, &[])
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// "about 12 min" / "about 40 s".
pub fn rough(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 90.0 {
        format!("about {:.0} min", s / 60.0)
    } else {
        format!("about {:.0} s", s.max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration {
            boot: Duration::from_millis(20),
            probes_100: Duration::from_millis(720),
            guest_quick: Duration::from_secs(2),
            campaign_seed: [
                Duration::from_millis(150),
                Duration::from_secs(8),
                Duration::from_millis(900),
            ],
        }
    }

    #[test]
    fn a_probe_rows_estimate_and_watchdog_grow_with_its_vmas() {
        let rows = rows(false, 30, &cal(), 2, &[]);
        let probe = |n: &str| rows.iter().find(|r| r.name == n).expect("row").clone();
        // 7 ms a VMA: 65,530 VMAs are about 7.6 minutes, and its watchdog four times that.
        let big = probe("probes-65530");
        assert_eq!(
            big.estimate,
            Duration::from_millis(20) + Duration::from_millis(7) * 65_530
        );
        assert_eq!(big.watchdog, big.estimate * WATCHDOG_MARGIN);
        // A small row keeps the floor.
        assert_eq!(probe("probes-10").watchdog, MIN_WATCHDOG);
        // Campaigns divide by the children running at once.
        assert_eq!(
            probe("campaign-tour").estimate,
            Duration::from_secs(8) * 60 / 2
        );
    }

    #[test]
    fn an_override_replaces_only_the_row_it_names() {
        let short = Duration::from_millis(1);
        let rows = rows(true, 3, &cal(), 2, &[("probes-10".into(), short)]);
        for r in &rows {
            assert_eq!(r.watchdog == short, r.name == "probes-10", "{r:?}");
        }
        assert_eq!(
            row_names(true),
            [
                "boot",
                "probes-10",
                "probes-100",
                "mm-host",
                "guest",
                "campaign-munmap-whole",
                "campaign-mm-smoke",
                "campaign-race-exit",
                "difftest",
                "difftest-guest"
            ]
        );
    }

    #[test]
    fn a_measured_probe_row_re_estimates_the_larger_ones() {
        let overridden = [("probes-65530".to_string(), MIN_WATCHDOG)];
        let mut again = rows(false, 30, &cal(), 2, &overridden);
        let mut rows = rows(false, 30, &cal(), 2, &[]);
        let at = |rows: &[Row], n: &str| rows.iter().position(|r| r.name == n).expect("row");
        let (small, big) = (at(&rows, "probes-1000"), at(&rows, "probes-65530"));
        refine(&mut rows, small, Duration::from_secs(6), &[]);
        assert_eq!(rows[big].estimate, Duration::from_secs(6).mul_f64(65.53));
        assert_eq!(rows[big].watchdog, rows[big].estimate * WATCHDOG_MARGIN);
        // An override keeps its watchdog; rows before the measured one are left alone.
        refine(&mut again, small, Duration::from_secs(6), &overridden);
        assert_eq!(again[big].watchdog, MIN_WATCHDOG);
        assert_eq!(again[big].estimate, rows[big].estimate);
        let ten = at(&rows, "probes-10");
        refine(&mut rows, small, Duration::from_secs(600), &[]);
        assert_eq!(rows[ten].watchdog, MIN_WATCHDOG);
    }

    #[test]
    fn rough_durations_read_as_minutes_or_seconds() {
        assert_eq!(rough(Duration::from_secs(600)), "about 10 min");
        assert_eq!(rough(Duration::from_secs(42)), "about 42 s");
        assert_eq!(rough(Duration::ZERO), "about 1 s");
    }
}
