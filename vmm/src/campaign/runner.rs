//! Runs a campaign: one `vmm run` child per seed, up to `jobs` at once, each under a timeout.
//!
//! Workers take the next seed from a shared cursor over the range (no list of seeds, so any range
//! starts at once), run the child with its console discarded and its stderr in a file, and send
//! the outcome to the calling thread, which reports progress.

use super::outcome::{classify, ChildExit, Kind, SeedOutcome, NCHECKS};
use super::result::CampaignResult;
use super::spec::{SeedCursor, SeedRange, Shard};
use crate::inject::InjectSpec;
use crate::progress::{Lines, Progress};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long past its own watchdog a child may take to exit before the campaign kills it.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often a worker checks whether its child has exited.
const POLL: Duration = Duration::from_millis(1);

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// The `vmm` executable the children run.
    pub vmm: PathBuf,
    /// Scenario name.
    pub scenario: String,
    /// Ordering variant name.
    pub variant: String,
    /// Fault injection every child runs with.
    pub inject: Option<InjectSpec>,
    /// The seeds.
    pub seeds: SeedRange,
    /// Only the seeds of this shard.
    pub shard: Option<Shard>,
    /// Children at once.
    pub jobs: usize,
    /// Each child's watchdog (`vmm run --timeout`).
    pub timeout: Duration,
    /// How much longer the campaign waits before it kills a child ([`KILL_GRACE`]).
    pub kill_grace: Duration,
}

/// Why a campaign could not run.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The directory for the children's reports could not be made.
    #[error("cannot create a temporary directory {path}: {source}")]
    TempDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the campaign, reporting progress on stderr.
pub fn run_campaign(config: &CampaignConfig) -> Result<CampaignResult, CampaignError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("vmm-campaign-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CampaignError::TempDir {
        path: dir.clone(),
        source,
    })?;
    // Streamed, never collected: `--seeds 0..18446744073709551615` starts at once.
    let seeds = SeedCursor::new(config.seeds.seeds(config.shard));
    let started = Instant::now();
    let mut progress = Progress::stderr("campaign:", seeds.total(), Lines::EachTenth);
    let mut failed = 0u64;
    let (tx, rx) = mpsc::channel();
    // Grows with the runs done, not with the range.
    let mut outcomes = Vec::new();
    let workers = usize::try_from(seeds.total()).unwrap_or(usize::MAX);
    std::thread::scope(|scope| {
        for _ in 0..config.jobs.max(1).min(workers.max(1)) {
            let tx = tx.clone();
            let (seeds, dir) = (&seeds, &dir);
            scope.spawn(move || {
                while let Some(seed) = seeds.take() {
                    if tx.send(run_seed(config, dir, seed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for outcome in rx {
            failed += u64::from(outcome.kind != Kind::Passed);
            let done = progress.done() + 1;
            let rate = done as f64 * 60.0 / started.elapsed().as_secs_f64().max(1e-9);
            progress.step(&format!(" seeds, {failed} failed, {rate:.0} runs/min"));
            outcomes.push(outcome);
        }
    });
    progress.finish();
    let _ = std::fs::remove_dir_all(&dir);
    outcomes.sort_by_key(|o| o.seed);
    Ok(CampaignResult {
        scenario: config.scenario.clone(),
        variant: config.variant.clone(),
        inject: config.inject.map(|spec| spec.to_string()),
        seeds: config.seeds,
        shards: config.shard.into_iter().collect(),
        jobs: config.jobs,
        timeout_secs: config.timeout.as_secs_f64(),
        wall_secs: started.elapsed().as_secs_f64(),
        outcomes,
    })
}

/// Runs `vmm run` for one seed and classifies how it ended.
fn run_seed(config: &CampaignConfig, dir: &Path, seed: u64) -> SeedOutcome {
    let report = dir.join(format!("report-{seed}.json"));
    let stderr_path = dir.join(format!("stderr-{seed}.txt"));
    let started = Instant::now();
    let exit = spawn_and_wait(config, seed, &report, &stderr_path);
    let secs = started.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let tail = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let mut schedule = None;
    let (kind, violations, detail) = match exit {
        Err(e) => (
            Kind::Error,
            [0; NCHECKS],
            Some(format!("cannot run {}: {e}", config.vmm.display())),
        ),
        Ok(exit) => {
            let json = std::fs::read_to_string(&report)
                .map_err(|e| format!("no report ({e})"))
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(&t)
                        .map_err(|e| format!("bad report ({e})"))
                });
            if let Ok(report) = &json {
                schedule = report["schedule"].as_str().map(str::to_string);
            }
            classify(exit, json, tail)
        }
    };
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&stderr_path);
    log::debug!("seed {seed}: {kind} in {:.1} ms", secs * 1e3);
    SeedOutcome {
        seed,
        kind,
        violations,
        detail,
        secs,
        schedule,
    }
}

fn spawn_and_wait(
    config: &CampaignConfig,
    seed: u64,
    report: &Path,
    stderr: &Path,
) -> std::io::Result<ChildExit> {
    let mut command = Command::new(&config.vmm);
    command
        .args([
            "run",
            "--scenario",
            &config.scenario,
            "--variant",
            &config.variant,
        ])
        .args(["--seed", &seed.to_string(), "--validate-at-exit"])
        .args(
            config
                .inject
                .iter()
                .flat_map(|spec| ["--inject".to_string(), spec.to_string()]),
        )
        .args(["--timeout", &config.timeout.as_secs_f64().to_string()])
        .arg("--report")
        .arg(report)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr)?);
    let mut child = spawn(&mut command)?;
    let deadline = Instant::now() + config.timeout + config.kill_grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(ChildExit::Exited(status.code()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(ChildExit::Killed);
        }
        std::thread::sleep(POLL);
    }
}

/// Spawns `command`, retrying while its executable is busy: a file just written (a rebuilt `vmm`,
/// a test's script) stays busy while any concurrently forked child still holds it open.
fn spawn(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for `vmm` that runs `body` in sh, with `$report` set to its `--report` path.
    fn fake_vmm(name: &str, body: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "vmm-campaign-fake-{}-{name}.sh",
            std::process::id()
        ));
        let script = format!("#!/bin/sh\nfor report; do :; done\n{body}\n");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config(vmm: PathBuf, seeds: &str) -> CampaignConfig {
        CampaignConfig {
            vmm,
            scenario: "munmap-whole".into(),
            variant: "correct".into(),
            inject: None,
            seeds: SeedRange::parse(seeds).unwrap(),
            shard: None,
            jobs: 2,
            timeout: Duration::from_millis(50),
            kill_grace: Duration::from_millis(50),
        }
    }

    #[test]
    fn every_seed_of_the_shard_runs_once_and_its_report_decides_the_outcome() {
        // Odd seeds report a P2 violation; the seed is the argument after --seed.
        let vmm = fake_vmm(
            "report",
            r#"seed=$(echo "$@" | sed 's/.*--seed \([0-9]*\).*/\1/')
if [ $((seed % 2)) = 1 ]; then
  echo '{"passed":false,"failure":"probes","violations":[{"check":"P2"}]}' > "$report"; exit 1
fi
echo '{"passed":true,"failure":null,"violations":[]}' > "$report""#,
        );
        let mut c = config(vmm.clone(), "0..9");
        c.shard = Some(Shard { index: 1, count: 2 });
        let result = run_campaign(&c).unwrap();
        let _ = std::fs::remove_file(vmm);
        let seeds: Vec<u64> = result.outcomes.iter().map(|o| o.seed).collect();
        assert_eq!(seeds, [1, 3, 5, 7]);
        assert!(result.outcomes.iter().all(|o| o.kind == Kind::Violation));
        assert_eq!(result.tally().violations, [0, 4, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_child_that_outlives_its_watchdog_is_killed_and_counted_as_a_timeout() {
        let vmm = fake_vmm("sleep", "exec sleep 30");
        let started = Instant::now();
        let result = run_campaign(&config(vmm.clone(), "0")).unwrap();
        let _ = std::fs::remove_file(vmm);
        assert!(started.elapsed() < Duration::from_secs(10), "not killed");
        assert_eq!(result.outcomes[0].kind, Kind::Timeout);
    }

    #[test]
    fn a_child_that_refuses_its_arguments_is_an_error_quoting_its_stderr() {
        let vmm = fake_vmm("usage", "echo 'vmm: no such flag' >&2; exit 2");
        let result = run_campaign(&config(vmm.clone(), "0")).unwrap();
        let _ = std::fs::remove_file(vmm);
        assert_eq!(result.outcomes[0].kind, Kind::Error);
        assert_eq!(
            result.outcomes[0].detail.as_deref(),
            Some("exit 2: vmm: no such flag")
        );
    }
}
