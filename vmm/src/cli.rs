//! The command line: `vmm [run] [OPTIONS]`, `vmm list`, `vmm bench boot`, `vmm campaign`.

use crate::arch::x86_64::layout::{LARGE_PAGE_SIZE, MAX_RAM, MIN_RAM};
use crate::campaign::{SeedRange, ShardArg};
use crate::inject::InjectSpec;
use crate::sched::{Mode, Schedule};
use crate::vstate::vm::GuestProbes;
use clap::{Args, Parser, Subcommand};
use mm_core::abi::{find_scenario, BootInfo, DEFAULT_SCENARIO, MAX_VCPUS};
use mm_core::Variant;
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str = "Boot a bare-metal Rust guest kernel under KVM and run one of its scenarios.";

const LONG_ABOUT: &str = "\
Boot a bare-metal Rust guest kernel under KVM and run one of its scenarios.

The guest manages x86_64 page tables the way Linux does (mm-core); the VMM hosts it on KVM, streams
its COM1 console to stdout and reports how the run ended. `vmm` alone is `vmm run` with defaults.

Exit status: 0 when the guest reports success; 1 when the guest fails (abort, panic, exception,
triple fault, KVM error, watchdog timeout) or KVM is unavailable; 2 for bad command-line values or
an unusable input file (for --kernel: not a regular file, over 64 MiB, or not an x86_64 ELF that
fits guest RAM), found before the run starts.

Set RUST_LOG=debug for details (boot time, every guest stage).";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(name = "vmm", version, about = ABOUT, long_about = LONG_ABOUT, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the implicit `run`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the guest and run a scenario (the default).
    Run(RunArgs),
    /// List the scenarios the guest offers.
    List,
    /// Run a benchmark.
    Bench(BenchArgs),
    /// Replay a program's memory system calls (strace -f -y -e trace=memory) on top of its maps
    /// snapshot and print the address space they lead to.
    Replay(ReplayArgs),
    /// Run a scenario over many seeds, in parallel children; or merge the JSON of shards.
    #[command(long_about = CAMPAIGN_ABOUT)]
    Campaign(CampaignArgs),
    /// Run seeded random sequences of memory system calls natively and through mm-core, and
    /// compare the two after every call.
    #[command(long_about = crate::difftest::run::ABOUT)]
    Difftest(crate::difftest::run::DifftestArgs),
    /// Create a VM and a vCPU and take the first exit, nothing more: the floor the boot benchmark
    /// compares against.
    #[command(hide = true)]
    Floor,
}

/// Options of `vmm run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Scenario to run (`vmm list` shows them).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SCENARIO, value_parser = parse_scenario)]
    pub scenario: String,
    /// Number of vCPUs, each on its own host thread.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = parse_vcpus)]
    pub vcpus: usize,
    /// Guest RAM, e.g. 256M or 1G (a multiple of 2 MiB, 16 MiB to 4 GiB).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_mem)]
    pub mem: u64,
    /// Seed for the scenario's random choices.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Stop the guest (exit 1) if it has not finished after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Boot this kernel ELF instead of the built-in guest: a regular file of at most 64 MiB,
    /// refused from its size before it is read.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The mm-core ordering variant the guest follows (`vmm list` shows them); every variant but
    /// `correct` is wrong on purpose, to show that the probes catch it.
    #[arg(long, value_name = "NAME", default_value = "correct", value_parser = parse_variant)]
    pub variant: Variant,
    /// Probes also search from every frame's metadata (as rmap does) and scan whole page tables;
    /// the VMM sweeps every mm's page tables at every quiescent point and the guest runs
    /// validate_mm after every mm system call.
    #[arg(long)]
    pub thorough: bool,
    /// Sweep every mm's page tables (check P6) at every Nth quiescent point of the guest (end of
    /// an mm system call, a fault or a process); 0 = only at process ends.
    #[arg(long, value_name = "N", default_value_t = GuestProbes::DEFAULT_SWEEP_EVERY)]
    pub sweep_every: u64,
    /// The guest runs validate_mm at every process exit and reports what it finds (check P7);
    /// campaigns turn this on.
    #[arg(long)]
    pub validate_at_exit: bool,
    /// Write the probes' findings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the run as Chrome trace-event JSON to FILE, for Perfetto (ui.perfetto.dev) or
    /// chrome://tracing: a track per vCPU with each probe check as a slice, unhooks, TLB flushes,
    /// unlinks, quarantine revokes and race points as instants, violations marked. Written when
    /// the run fails too.
    #[arg(long, value_name = "FILE")]
    pub trace_events: Option<PathBuf>,
    /// Fail the Nth allocation of each process the scenario runs: fail-alloc:N[:KIND], N a number
    /// or `seed` (the run's --seed), KIND one of page, table, vma, anon-vma, file (default: any).
    /// The run must still end with no violation, no leaked frame and no lockdep report.
    #[arg(long, value_name = "SPEC", value_parser = InjectSpec::parse)]
    pub inject: Option<InjectSpec>,
    /// Workload size for scenarios that take one (probe-bench: file VMAs); 0 = the scenario's
    /// default.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub scale: u64,
    /// Race scenarios: replay this interleaving of the racing vCPUs exactly (a race run prints
    /// the schedule it took, e.g. 0*3.1.0*12: vCPU 0 to its third point, vCPU 1 to its next, …).
    /// Without it the interleaving is drawn from --seed.
    #[arg(long, value_name = "STRING", conflicts_with = "free_run")]
    pub schedule: Option<Schedule>,
    /// Race scenarios: let the racing vCPUs run all at once (real concurrency, not replayable)
    /// instead of one at a time; the VMM delays a racer at one point in eight by up to 200 µs,
    /// drawn from --seed.
    #[arg(long)]
    pub free_run: bool,
}

impl RunArgs {
    /// What the guest reports for the probes.
    pub fn guest_probes(&self) -> GuestProbes {
        let mut flags = 0;
        if self.thorough {
            flags |= BootInfo::THOROUGH;
        }
        if self.validate_at_exit {
            flags |= BootInfo::VALIDATE_AT_EXIT;
        }
        GuestProbes {
            sweep_every: if self.thorough { 1 } else { self.sweep_every },
            flags,
        }
    }

    /// How the race scheduler interleaves racing vCPUs.
    pub fn sched_mode(&self) -> Mode {
        match (&self.schedule, self.free_run) {
            (Some(s), _) => Mode::Replay(s.clone()),
            (None, true) => Mode::Free(self.seed),
            (None, false) => Mode::Seeded(self.seed),
        }
    }
}

/// Options of `vmm replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The program's /proc/PID/maps just before its first traced call.
    #[arg(long, value_name = "FILE")]
    pub maps: PathBuf,
    /// What `strace -f -y -e trace=memory -o FILE` wrote. Each of --maps, --trace and
    /// --compare is a regular file of at most 256 MiB, refused from its size before it is read.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// The maps Linux produced at exit: compare and exit 1 on a difference, printing the first
    /// differing lines.
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// In the guest: its RAM, e.g. 256M or 1G (a multiple of 2 MiB, 16 MiB to 4 GiB). The
    /// encoded trace (104 bytes a call) and a result buffer twice its size must fit, with 4 MiB
    /// to spare; a trace too big is refused before the guest boots (exit 2).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_mem, conflicts_with = "host")]
    pub mem: u64,
    /// Replay through mm-core on the host (fast). Without it the replay runs in the guest, on
    /// real page tables with the probes checking every page-table free (a violation exits 1).
    #[arg(long)]
    pub host: bool,
    /// In the guest: the mm-core ordering variant it follows (`vmm list`); every variant but
    /// `correct` is wrong on purpose, and the probes should fail the replay.
    #[arg(long, value_name = "NAME", default_value = "correct", value_parser = parse_variant)]
    pub variant: Variant,
    /// In the guest: stop it (exit 1) if the replay has not finished after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// In the guest: write the replay's run as Chrome trace-event JSON to FILE (as `vmm run
    /// --trace-events`), for Perfetto or chrome://tracing.
    #[arg(long, value_name = "FILE", conflicts_with = "host")]
    pub trace_events: Option<PathBuf>,
}

/// Options of `vmm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark; all of them (boot, probes, mm workloads on the host and in the guest
    /// against Linux, munmap / exit_mmap scaling, campaign throughput) when omitted.
    #[arg(value_enum)]
    pub which: Option<BenchKind>,
    /// Measured runs of each side (boot).
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// A short smoke run (small sizes, few runs).
    #[arg(long)]
    pub quick: bool,
    /// With all benchmarks: write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// With all benchmarks: draw the results (bars against their goals) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// With all benchmarks: stop row ROW's child after SECS seconds instead of the watchdog its
    /// estimate gives (rows: boot, probes-N, mm-host, guest, campaign-SCENARIO); repeatable.
    #[arg(long, value_name = "ROW=SECS", value_parser = parse_row_timeout)]
    pub row_timeout: Vec<(String, Duration)>,
}

/// `ROW=SECS` of `--row-timeout`.
fn parse_row_timeout(s: &str) -> Result<(String, Duration), String> {
    let (row, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ROW=SECS"))?;
    Ok((row.to_string(), parse_timeout(secs)?))
}

const CAMPAIGN_ABOUT: &str = "\
Run a scenario over many seeds, one `vmm run` child per seed, several at once.

Prints progress on stderr (a bar on a terminal, else a line per tenth of the seeds), then a
results table on stdout: runs, passed, failed by kind (violation, with counts per probe check
P1..P4; guest failure; timeout; error), throughput in runs per minute, and the first failing seed
with the `vmm run` command that reproduces it.

Shards: `--shard K/N` runs only the seeds with seed % N == K (1 <= N, 0 <= K < N), so N machines
can each run one shard of the same campaign under any job runner; `vmm campaign merge FILE...`
then merges their `--json` files into the whole campaign's result and table.

`--shard auto/N` takes K from the job engine's task index, so one identical command line serves
every task. The first of these that is set decides: JOB_COMPLETION_INDEX (Kubernetes Indexed Job,
0-based), SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN (Slurm job array of N consecutive ids,
e.g. --array=0-3), PARALLEL_SEQ minus 1 (GNU parallel counts from 1). None set, or a K that is not
a number below N, is an error (exit 2). docs/shards.md has a manifest, a script and a command line.

Exit status: 0 when every run passed, 1 when any failed, 2 for bad command-line values or files.";

/// Options of `vmm campaign`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CampaignArgs {
    /// `merge`, or nothing to run a campaign.
    #[command(subcommand)]
    pub command: Option<CampaignCommand>,
    /// The campaign to run.
    #[command(flatten)]
    pub run: CampaignRunArgs,
}

/// Subcommands of `vmm campaign`.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Merge the `--json` files of a campaign's shards into one result and print its table.
    Merge(MergeArgs),
}

/// Options of `vmm campaign merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' JSON files (`vmm campaign --shard K/N --json FILE`), each a regular file of
    /// at most 1 GiB; every field is checked first, and a bad one is exit 2 naming the file and
    /// the field.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Write the merged result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Options of a campaign run. Required ones are `Option`s only because `merge` needs none.
#[derive(Debug, Args)]
pub struct CampaignRunArgs {
    /// Scenario every seed runs (`vmm list` shows them).
    #[arg(long, value_name = "NAME", required = true, value_parser = parse_scenario)]
    pub scenario: Option<String>,
    /// Seeds A..B (A up to B-1, like Rust's ranges) or a single seed A.
    #[arg(long, value_name = "A..B", required = true, value_parser = SeedRange::parse)]
    pub seeds: Option<SeedRange>,
    /// Children run at once [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// The ordering variant every seed runs under (`vmm list` shows them).
    #[arg(long, value_name = "NAME", default_value = "correct", value_parser = parse_variant)]
    pub variant: Variant,
    /// Fault injection every seed runs with (as `vmm run --inject`; `fail-alloc:seed` fails
    /// allocation number SEED, so a campaign walks the failure across allocation sites).
    #[arg(long, value_name = "SPEC", value_parser = InjectSpec::parse)]
    pub inject: Option<InjectSpec>,
    /// Run only the seeds with seed % N == K (1 <= N, 0 <= K < N); `auto/N` takes K from the job
    /// engine's task index (see above).
    #[arg(long, value_name = "K/N", value_parser = ShardArg::parse)]
    pub shard: Option<ShardArg>,
    /// Write the result, every seed's outcome included, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Each run's watchdog (`vmm run --timeout`); a child still alive 5 s later is killed. Both
    /// count as a timeout.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BenchKind {
    /// Process start to guest ready, against creating a VM and a vCPU and taking the first exit.
    Boot,
    /// Host cost per checked page-table free, against the bare exit round trip, at 10, 1,000 and
    /// 65,530 VMAs.
    Probes,
    /// The six mm workloads in mm-core's host build against Linux, and munmap / exit_mmap
    /// scaling from 1,000 to 65,530 VMAs (as `cargo bench -p mm-bench`).
    Mm,
    /// The six mm workloads in the guest, on real page tables, against Linux.
    Guest,
}

fn parse_scenario(name: &str) -> Result<String, String> {
    match find_scenario(name) {
        Some(s) => Ok(s.name.to_string()),
        None => Err("unknown scenario (`vmm list` shows them)".into()),
    }
}

pub(crate) fn parse_variant(name: &str) -> Result<Variant, String> {
    Variant::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        format!("unknown variant (one of: {})", names.join(", "))
    })
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number".into()),
    }
}

fn parse_vcpus(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| "not a number".to_string())?;
    if n == 0 || n > MAX_VCPUS {
        return Err(format!("must be between 1 and {MAX_VCPUS}"));
    }
    Ok(n)
}

/// Parses a size such as `256M`, `1G`, `512MiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| "expected a number with an optional K, M or G suffix".to_string())?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown size unit '{unit}' (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| "size too large".to_string())
}

fn parse_mem(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    if !(MIN_RAM..=MAX_RAM).contains(&bytes) {
        return Err(format!(
            "must be between {} MiB and {} GiB",
            MIN_RAM >> 20,
            MAX_RAM >> 30
        ));
    }
    if !bytes.is_multiple_of(LARGE_PAGE_SIZE) {
        return Err("must be a multiple of 2 MiB".into());
    }
    Ok(bytes)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| "expected seconds, e.g. 30 or 0.5".to_string())?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err("must be more than 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
