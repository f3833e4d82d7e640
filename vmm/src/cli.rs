//! The command line: `vmm [run] [OPTIONS]`, `vmm list`, `vmm bench boot`.

use crate::arch::x86_64::layout::{LARGE_PAGE_SIZE, MAX_RAM, MIN_RAM};
use clap::{Args, Parser, Subcommand};
use mm_core::abi::{find_scenario, DEFAULT_SCENARIO, MAX_VCPUS};
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
an unusable kernel file.

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
    /// Boot this kernel ELF instead of the built-in guest.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The mm-core ordering variant the guest follows (`vmm list` shows them); every variant but
    /// `correct` is wrong on purpose, to show that the probes catch it.
    #[arg(long, value_name = "NAME", default_value = "correct", value_parser = parse_variant)]
    pub variant: Variant,
    /// Probes also search from every frame's metadata (as rmap does) and scan whole page tables.
    #[arg(long)]
    pub thorough: bool,
    /// Write the probes' findings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Workload size for scenarios that take one (probe-bench: file VMAs); 0 = the scenario's
    /// default.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub scale: u64,
}

/// Options of `vmm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum)]
    pub which: BenchKind,
    /// Measured runs of each side.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// A short smoke run (small sizes, few runs).
    #[arg(long)]
    pub quick: bool,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BenchKind {
    /// Process start to guest ready, against creating a VM and a vCPU and taking the first exit.
    Boot,
    /// Host cost per checked page-table free, against the bare exit round trip, at 10, 1,000 and
    /// 65,530 VMAs.
    Probes,
}

fn parse_scenario(name: &str) -> Result<String, String> {
    match find_scenario(name) {
        Some(s) => Ok(s.name.to_string()),
        None => Err("unknown scenario (`vmm list` shows them)".into()),
    }
}

fn parse_variant(name: &str) -> Result<Variant, String> {
    Variant::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        format!("unknown variant (one of: {})", names.join(", "))
    })
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
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn memory_must_fit_the_layout() {
        assert!(parse_mem("8M").is_err());
        assert!(parse_mem("17M").is_err());
        assert!(parse_mem("8G").is_err());
        assert_eq!(parse_mem("4G"), Ok(4 << 30));
    }

    #[test]
    fn no_subcommand_means_run_with_defaults() {
        let cli = Cli::try_parse_from(["vmm"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.scenario, DEFAULT_SCENARIO);
        assert_eq!(cli.run.vcpus, 2);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["vmm", "--scenario", "nope"][..],
            &["vmm", "run", "--vcpus", "0"],
            &["vmm", "run", "--vcpus", "99"],
            &["vmm", "run", "--timeout", "-1"],
            &["vmm", "run", "--mem", "lots"],
            &["vmm", "run", "--variant", "sloppy"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
