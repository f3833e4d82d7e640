//! The `vmm difftest` command: seeds in parallel, a progress line, the divergences printed and
//! (with `--json`) written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mm_replay::difftest::gen::Classes;
use mm_replay::difftest::{Obs, Op};
use serde_json::{json, Value};

use super::{check_seed, describe, first_divergence, minimize, native, ours, Divergence, Outcome};
use crate::campaign::spec::SeedRange;
use crate::exit_code::{FAILURE, SUCCESS, USAGE};
use crate::progress::{Lines, Progress};

/// `vmm difftest --help`'s long text.
pub const ABOUT: &str = "Run seeded random sequences of memory system calls natively on this \
machine's Linux (in a child process) and through mm-core (host build), and compare them after \
every call: the result (address or errno), the maps of the region the calls are confined to, and \
which of its pages are resident (mincore). The first divergence of a seed is printed with both \
states and shrunk to a short sequence that still diverges; save that sequence to a file and \
`vmm difftest --ops FILE` runs it again. docs/difftest.md says what is compared and what is not.

Exit status: 0 when every seed ran clean, 1 when any diverged or could not run, 2 for bad \
command-line values or files.";

/// Options of `vmm difftest`.
#[derive(Debug, clap::Args)]
pub struct DifftestArgs {
    /// Seeds A..B (A up to B-1) or a single seed A.
    #[arg(long, value_name = "A..B", default_value = "0..100", value_parser = SeedRange::parse)]
    pub seeds: SeedRange,
    /// Calls per seed.
    #[arg(long, value_name = "N", default_value = "200", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub calls: u64,
    /// Seeds run at once [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub jobs: Option<u64>,
    /// Write the result (every divergence with both states and its reproduction) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run the calls of FILE (one per line, as a divergence prints them) instead of seeds.
    #[arg(long, value_name = "FILE", conflicts_with = "seeds")]
    pub ops: Option<PathBuf>,
    /// Leave out mlock2/munlock.
    #[arg(long)]
    pub no_lock: bool,
    /// Leave out MAP_GROWSDOWN.
    #[arg(long)]
    pub no_growsdown: bool,
}

/// Runs `vmm difftest`; returns the exit status.
pub fn command(args: &DifftestArgs, exe: PathBuf) -> u8 {
    if let Some(path) = &args.ops {
        return ops_file(&exe, path);
    }
    if let Some(path) = &args.json {
        if let Err(e) = crate::out_file::check_writable(path) {
            eprintln!("vmm: --json {}: {e}", path.display());
            return USAGE;
        }
    }
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        |j| j as usize,
    );
    seeds(&Config {
        exe,
        seeds: args.seeds,
        calls: args.calls as usize,
        jobs,
        classes: Classes {
            lock: !args.no_lock,
            growsdown: !args.no_growsdown,
        },
        json: args.json.clone(),
    })
}

/// Divergences printed in full; the rest get one line each (the JSON has them all).
const SHOWN: usize = 3;

/// What `vmm difftest` was asked to do.
pub struct Config {
    /// The `vmm` binary (the native runner is its hidden subcommand).
    pub exe: PathBuf,
    /// Seeds to run.
    pub seeds: SeedRange,
    /// Calls per seed.
    pub calls: usize,
    /// Seeds at once.
    pub jobs: usize,
    /// Call classes drawn.
    pub classes: Classes,
    /// Where to write the JSON result.
    pub json: Option<PathBuf>,
}

/// Runs the seeds of `config` on `config.jobs` threads, with a progress line on stderr if
/// `progress`; returns each seed's outcome, in seed order, and the seconds it took.
pub fn run_seeds(config: &Config, progress: bool) -> (Vec<(u64, Outcome)>, f64) {
    let started = Instant::now();
    let SeedRange { start, end } = config.seeds;
    let total = end - start;
    let next = AtomicU64::new(start);
    let results: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    let bar = progress.then(|| Mutex::new(Progress::stderr("difftest", total, Lines::EachTenth)));
    let diverged = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..config
            .jobs
            .min(total.try_into().unwrap_or(usize::MAX))
            .max(1)
        {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let outcome = check_seed(&config.exe, seed, config.calls, config.classes);
                if !matches!(outcome, Outcome::Clean) {
                    diverged.fetch_add(1, Ordering::Relaxed);
                }
                let bad = diverged.load(Ordering::Relaxed);
                if let Some(Ok(mut p)) = bar.as_ref().map(Mutex::lock) {
                    p.step(&format!(" seeds, {bad} not clean"));
                }
                if let Ok(mut r) = results.lock() {
                    r.push((seed, outcome));
                }
            });
        }
    });
    if let Some(Ok(p)) = bar.map(Mutex::into_inner) {
        p.finish();
    }
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(seed, _)| *seed);
    (results, started.elapsed().as_secs_f64())
}

/// Runs the seeds; returns the exit status (0 every seed clean, 1 otherwise).
pub fn seeds(config: &Config) -> u8 {
    let SeedRange { start, end } = config.seeds;
    let (results, secs) = run_seeds(config, true);
    let (mut clean, mut bad, mut errors) = (0, 0, 0);
    for (seed, outcome) in &results {
        match outcome {
            Outcome::Clean => clean += 1,
            Outcome::Diverged(d) => {
                bad += 1;
                if bad <= SHOWN {
                    print!("{}", describe(*seed, d));
                } else {
                    println!(
                        "seed {seed}: call {} diverged ({}): {}",
                        d.index,
                        d.what,
                        d.op.encode()
                    );
                }
            }
            Outcome::Error(e) => {
                errors += 1;
                println!("seed {seed}: error: {e}");
            }
        }
    }
    let per_min = results.len() as f64 / secs.max(1e-9) * 60.0;
    println!(
        "difftest: {} seeds of {} calls: {clean} clean, {bad} diverged, {errors} errors, in {secs:.1} s ({per_min:.0} seeds/min)",
        results.len(),
        config.calls
    );
    if let Some(path) = &config.json {
        let value = json!({
            "seeds": {"start": start, "end": end},
            "calls": config.calls,
            "clean": clean,
            "diverged": results.iter().filter_map(|(seed, o)| match o {
                Outcome::Diverged(d) => Some(divergence_json(*seed, d)),
                _ => None,
            }).collect::<Vec<_>>(),
            "errors": results.iter().filter_map(|(seed, o)| match o {
                Outcome::Error(e) => Some(json!({"seed": seed, "error": e})),
                _ => None,
            }).collect::<Vec<_>>(),
            "seconds": secs,
            "seeds_per_minute": per_min,
        });
        let text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
        if let Err(e) = crate::out_file::write_text(path, &text) {
            eprintln!("vmm: writing {}: {e}", path.display());
            return FAILURE;
        }
    }
    if clean == results.len() {
        SUCCESS
    } else {
        FAILURE
    }
}

fn obs_json(o: &Obs) -> Value {
    json!({
        "ret": o.ret,
        "maps": o.maps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "residency": o.resident,
    })
}

fn divergence_json(seed: u64, d: &Divergence) -> Value {
    json!({
        "seed": seed,
        "index": d.index,
        "what": d.what,
        "call": d.op.encode(),
        "mm_core": obs_json(&d.ours),
        "linux": obs_json(&d.linux),
        "minimized": d.minimized.iter().map(Op::encode).collect::<Vec<_>>(),
    })
}

/// `vmm difftest --ops FILE`: runs one sequence (a reproduction printed by an earlier run, one
/// call per line) on both sides.
pub fn ops_file(exe: &Path, path: &Path) -> u8 {
    let text = match crate::in_file::read_text(path, MAX_OPS_FILE) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmm: --ops {}: {e}", path.display());
            return USAGE;
        }
    };
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Op::decode(line) {
            Some(op) => ops.push(op),
            None => {
                eprintln!(
                    "vmm: --ops {} line {}: not a call: {line:?}",
                    path.display(),
                    i + 1
                );
                return USAGE;
            }
        }
    }
    let (o, l) = match (ours(&ops), native(exe, &ops)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vmm: difftest: {e}");
            return FAILURE;
        }
    };
    match first_divergence(&o, &l) {
        None => {
            println!("difftest: {} calls, no divergence", ops.len());
            SUCCESS
        }
        Some((index, what)) => {
            let d = Divergence {
                index,
                what,
                op: ops[index],
                ours: o[index].clone(),
                linux: l[index].clone(),
                minimized: minimize(exe, &ops[..=index]),
            };
            print!("{}", describe(0, &d).replacen("seed 0: ", "", 1));
            FAILURE
        }
    }
}

/// The largest `--ops` file read.
const MAX_OPS_FILE: u64 = 16 << 20;
