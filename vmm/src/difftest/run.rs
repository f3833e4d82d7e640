//! The `vmm difftest` command: seeds in parallel, a progress line, the divergences printed and
//! (with `--json`) written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mm_core::Variant;
use mm_replay::difftest::gen::Classes;
use mm_replay::difftest::{Obs, Op};
use serde_json::{json, Value};

use super::guest::{ProbeTotals, PER_VM};
use super::{
    check_batch_in_guest, check_seed, describe, first_divergence, guest, minimize, native, ours,
    Divergence, Outcome,
};
use crate::campaign::spec::SeedRange;
use crate::exit_code::{FAILURE, SUCCESS, USAGE};
use crate::progress::{Lines, Progress};

/// `vmm difftest --help`'s long text.
pub const ABOUT: &str = "Run seeded random sequences of memory system calls natively on this \
machine's Linux (in a child process) and through mm-core (host build), and compare them after \
every call: the result (address or errno), the maps of the region the calls are confined to, and \
which of its pages are resident (mincore). With --guest, mm-core runs the calls in the VM instead, \
on real page tables with the probes checking every page-table free, several seeds per VM; a \
probe violation fails the seed. The first divergence of a seed is printed with both \
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
    /// Draw fork and the child's exit too (every seed then draws another sequence).
    #[arg(long)]
    pub fork: bool,
    /// Run mm-core in the VM (real page tables, probes on) instead of the host build.
    #[arg(long)]
    pub guest: bool,
    /// With --guest: seeds each VM runs, one after another, each on a fresh address space.
    #[arg(long, value_name = "N", default_value_t = PER_VM, requires = "guest", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub per_vm: u64,
    /// With --guest: the mm-core ordering variant the guest follows (`vmm list`); every variant
    /// but `correct` is a bug the probes should catch.
    #[arg(long, value_name = "NAME", default_value = "correct", requires = "guest", value_parser = crate::cli::parse_variant)]
    pub variant: Variant,
}

/// Runs `vmm difftest`; returns the exit status.
pub fn command(args: &DifftestArgs, exe: PathBuf) -> u8 {
    if let Some(path) = &args.ops {
        return ops_file(&exe, path, args.guest.then_some(args.variant));
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
            fork: args.fork,
        },
        json: args.json.clone(),
        per_vm: args.guest.then_some(args.per_vm),
        variant: args.variant,
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
    /// Run mm-core in the guest, this many seeds per VM (`None`: the host build).
    pub per_vm: Option<u64>,
    /// The ordering variant the guest follows.
    pub variant: Variant,
}

/// What [`run_seeds`] found.
pub struct SeedsRun {
    /// Each seed's outcome, in seed order.
    pub results: Vec<(u64, Outcome)>,
    /// Seconds it took.
    pub secs: f64,
    /// What the probes did (`--guest` only).
    pub probes: Option<ProbeTotals>,
}

/// Runs the seeds of `config` on `config.jobs` threads (a seed, or with `--guest` a VM's batch
/// of seeds, at a time), with a progress line on stderr if `progress`.
pub fn run_seeds(config: &Config, progress: bool) -> SeedsRun {
    let started = Instant::now();
    let SeedRange { start, end } = config.seeds;
    let total = end - start;
    let step = config.per_vm.unwrap_or(1);
    let next = AtomicU64::new(start);
    let results: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    let probes = Mutex::new(ProbeTotals::default());
    let bar = progress.then(|| Mutex::new(Progress::stderr("difftest", total, Lines::EachTenth)));
    let diverged = AtomicU64::new(0);
    let workers = config.jobs.min(total.div_ceil(step) as usize).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let first = next.fetch_add(step, Ordering::Relaxed);
                if first >= end {
                    break;
                }
                let seeds = first..(first + step).min(end);
                let done = match config.per_vm {
                    None => vec![(
                        first,
                        check_seed(&config.exe, first, config.calls, config.classes),
                    )],
                    Some(_) => {
                        let (done, p) = check_batch_in_guest(seeds, config);
                        if let Ok(mut t) = probes.lock() {
                            t.merge(&p);
                        }
                        done
                    }
                };
                let bad = done
                    .iter()
                    .filter(|(_, o)| matches!(o, Outcome::Diverged(_) | Outcome::Error(_)))
                    .count() as u64;
                let bad = diverged.fetch_add(bad, Ordering::Relaxed) + bad;
                if let Some(Ok(mut p)) = bar.as_ref().map(Mutex::lock) {
                    for _ in &done {
                        p.step(&format!(" seeds, {bad} not clean"));
                    }
                }
                if let Ok(mut r) = results.lock() {
                    r.extend(done);
                }
            });
        }
    });
    if let Some(Ok(p)) = bar.map(Mutex::into_inner) {
        p.finish();
    }
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(seed, _)| *seed);
    SeedsRun {
        results,
        secs: started.elapsed().as_secs_f64(),
        probes: config
            .per_vm
            .map(|_| probes.into_inner().unwrap_or_default()),
    }
}

/// The summary line of the probes' work, for `--guest`.
fn probes_line(p: &ProbeTotals) -> String {
    format!(
        "difftest: in the guest: {} VMs, {} probe events, {} checks, {} violations",
        p.vms, p.events, p.checks, p.violations
    )
}

/// Runs the seeds; returns the exit status (0 every seed clean, 1 otherwise).
pub fn seeds(config: &Config) -> u8 {
    let SeedRange { start, end } = config.seeds;
    let SeedsRun {
        results,
        secs,
        probes,
    } = run_seeds(config, true);
    let (mut clean, mut bad, mut errors, mut flaky) = (0, 0, 0, 0);
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
            Outcome::Flaky { index, what } => {
                flaky += 1;
                println!(
                    "seed {seed}: call {index} differed ({what}) once, but Linux did not repeat \
                     its own state when run again: not counted"
                );
            }
        }
    }
    let per_min = results.len() as f64 / secs.max(1e-9) * 60.0;
    println!(
        "difftest: {} seeds of {} calls: {clean} clean, {bad} diverged, {errors} errors, {flaky} flaky on Linux's side, in {secs:.1} s ({per_min:.0} seeds/min)",
        results.len(),
        config.calls
    );
    if let Some(p) = &probes {
        println!("{}", probes_line(p));
    }
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
            "flaky": results.iter().filter_map(|(seed, o)| match o {
                Outcome::Flaky { index, what } => Some(json!({"seed": seed, "index": index, "what": what})),
                _ => None,
            }).collect::<Vec<_>>(),
            "seconds": secs,
            "seeds_per_minute": per_min,
            "mm_core": if probes.is_some() { "guest" } else { "host" },
            "probes": probes.map(|p| p.to_json()),
        });
        let text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
        if let Err(e) = crate::out_file::write_text(path, &text) {
            eprintln!("vmm: writing {}: {e}", path.display());
            return FAILURE;
        }
    }
    if bad == 0 && errors == 0 {
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
        "in_guest": d.in_guest,
        "call": d.op.encode(),
        "mm_core": obs_json(&d.ours),
        "linux": obs_json(&d.linux),
        "minimized": d.minimized.iter().map(Op::encode).collect::<Vec<_>>(),
    })
}

/// `vmm difftest --ops FILE`: runs one sequence (a reproduction printed by an earlier run, one
/// call per line) on both sides; with `guest`, mm-core's side in the VM following that variant.
pub fn ops_file(exe: &Path, path: &Path, guest: Option<Variant>) -> u8 {
    let in_guest = guest.is_some();
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
    let o = if let Some(variant) = guest {
        let batch = guest::run_batch(&[ops.clone()], guest::output_len(&o), variant);
        println!("{}", probes_line(&batch.probes));
        match batch.outcomes.map(|mut v| v.pop()) {
            Ok(Some(Ok(states))) if states.len() == ops.len() => states,
            Ok(Some(Err(e))) | Err(e) => {
                eprintln!("vmm: difftest: mm-core in the guest: {e}");
                return FAILURE;
            }
            Ok(_) => {
                eprintln!("vmm: difftest: the guest reported no states for the calls");
                return FAILURE;
            }
        }
    } else {
        o
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
                in_guest,
                ours: o[index].clone(),
                linux: l[index].clone(),
                minimized: if in_guest {
                    ops[..=index].to_vec()
                } else {
                    minimize(exe, &ops[..=index])
                },
            };
            print!("{}", describe(0, &d).replacen("seed 0: ", "", 1));
            FAILURE
        }
    }
}

/// The largest `--ops` file read.
const MAX_OPS_FILE: u64 = 16 << 20;
