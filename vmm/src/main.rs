//! `vmm`: boot the guest kernel under KVM and run a scenario; see `vmm --help`.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;
use vmm::cli::{BenchKind, Cli, Command, RunArgs};
use vmm::exit_code::{FAILURE, SUCCESS, USAGE};
use vmm::loader::GUEST_KERNEL;
use vmm::run::{run, RunConfig, RunError};
use vmm::vstate::vm::{VmConfig, VmError};

fn main() -> ExitCode {
    let started = Instant::now();
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the problem; clap's usage block would bury it.
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!(
                "vmm: {} (see vmm --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let code = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run_command(&args, started),
        Command::List => list(),
        Command::Bench(args) => match args.which {
            BenchKind::Boot => bench_boot(if args.quick { 3 } else { args.iterations }),
            BenchKind::Probes => bench_probes(args.quick),
        },
        Command::Floor => match vmm::bench::floor() {
            Ok(_) => SUCCESS,
            Err(e) => fail(FAILURE, &e),
        },
    };
    ExitCode::from(code)
}

/// Violations printed on stderr; the JSON report has them all.
const MAX_VIOLATIONS_SHOWN: usize = 10;

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|f, record| match record.level() {
            log::Level::Info => writeln!(f, "vmm: {}", record.args()),
            level => writeln!(
                f,
                "vmm: {}: {}",
                level.as_str().to_lowercase(),
                record.args()
            ),
        })
        .init();
}

fn fail(code: u8, message: &dyn std::fmt::Display) -> u8 {
    eprintln!("vmm: {message}");
    code
}

fn run_command(args: &RunArgs, started: Instant) -> u8 {
    let kernel_file;
    let kernel = match &args.kernel {
        None => GUEST_KERNEL,
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => {
                kernel_file = bytes;
                &kernel_file
            }
            Err(e) => {
                return fail(
                    USAGE,
                    &format_args!("cannot read kernel {}: {e}", path.display()),
                )
            }
        },
    };
    let config = RunConfig {
        vm: VmConfig {
            ram_size: args.mem,
            vcpus: args.vcpus,
            scenario: &args.scenario,
            seed: args.seed,
            log_level: log::max_level() as u64,
            variant: args.variant,
            scale: args.scale,
            kernel,
        },
        timeout: args.timeout,
        started,
        console: Box::new(std::io::stdout()),
        thorough: args.thorough,
    };
    let report = match run(config) {
        Ok(report) => report,
        Err(e) => {
            let code = match &e {
                RunError::Vm(
                    VmError::TooManyVcpus { .. } | VmError::ScenarioName(_) | VmError::Kernel(_),
                ) => USAGE,
                _ => FAILURE,
            };
            return fail(code, &e);
        }
    };
    eprintln!("vmm: {}", vmm::report::summary_line(&report.probes));
    for v in report.probes.violations.iter().take(MAX_VIOLATIONS_SHOWN) {
        eprintln!("vmm: violation {v}");
    }
    for e in report.probes.errors.iter().take(MAX_VIOLATIONS_SHOWN) {
        eprintln!("vmm: probe walk error: {e}");
    }
    if let Some(path) = &args.report {
        let json =
            vmm::report::to_json(&args.scenario, args.variant.name(), args.thorough, &report);
        if let Err(e) = vmm::report::write_json(path, &json) {
            return fail(
                FAILURE,
                &format_args!("cannot write report {}: {e}", path.display()),
            );
        }
    }
    match &report.failure {
        None => {
            let ready = report.ready_after.map_or(String::new(), |t| {
                format!(", ready after {:.1} ms", t.as_secs_f64() * 1e3)
            });
            let checked_in = report.in_scenario.iter().filter(|&&c| c).count();
            log::info!(
                "guest passed: scenario '{}', {checked_in}/{} vCPUs checked in{ready}",
                args.scenario,
                args.vcpus
            );
            SUCCESS
        }
        Some(failure) => {
            eprintln!("vmm: {failure}");
            if !report.console_tail.is_empty() {
                eprintln!("vmm: last console lines:");
                for line in &report.console_tail {
                    eprintln!("  | {line}");
                }
            }
            FAILURE
        }
    }
}

fn list() -> u8 {
    println!("Scenarios (vmm run --scenario NAME):");
    for s in mm_core::abi::SCENARIOS {
        let default = if s.name == mm_core::abi::DEFAULT_SCENARIO {
            " (default)"
        } else {
            ""
        };
        println!("  {:<16} {}{default}", s.name, s.about);
    }
    println!("Ordering variants (vmm run --variant NAME; all but `correct` are wrong on purpose):");
    for v in mm_core::Variant::ALL {
        println!("  {v}");
    }
    SUCCESS
}

fn bench_boot(iterations: u32) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(FAILURE, &format_args!("cannot find this executable: {e}")),
    };
    match vmm::bench::boot(&exe, iterations) {
        Ok(result) => {
            println!("{result}");
            if result.meets_goals() {
                SUCCESS
            } else {
                FAILURE
            }
        }
        Err(e) => fail(FAILURE, &e),
    }
}

fn bench_probes(quick: bool) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(FAILURE, &format_args!("cannot find this executable: {e}")),
    };
    match vmm::bench::probes(&exe, quick) {
        Ok(result) => {
            println!("{result}");
            SUCCESS
        }
        Err(e) => fail(FAILURE, &e),
    }
}
