//! `vmm`: boot the guest kernel under KVM and run a scenario; see `vmm --help`.

use clap::Parser;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use vmm::campaign::{CampaignConfig, CampaignResult};
use vmm::cli::{BenchKind, CampaignArgs, CampaignCommand, Cli, Command, MergeArgs, RunArgs};
use vmm::difftest::run as difftest;
use vmm::exit_code::{FAILURE, SUCCESS, USAGE};
use vmm::loader::{GUEST_KERNEL, MAX_KERNEL_FILE};
use vmm::run::{run, RunConfig, RunError};
use vmm::trace_events::json::RunInfo;
use vmm::trace_events::TraceRecorder;
use vmm::vstate::vm::VmConfig;

fn main() -> ExitCode {
    let started = Instant::now();
    if std::env::args().nth(1).as_deref() == Some(vmm::difftest::native::SUBCOMMAND) {
        vmm::difftest::native::child_main();
    }
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
            Some(BenchKind::Boot) => bench_boot(if args.quick { 3 } else { args.iterations }),
            Some(BenchKind::Probes) => bench_probes(args.quick),
            Some(BenchKind::Mm) => bench_mm(args.quick),
            Some(BenchKind::Guest) => bench_guest(args.quick),
            None => bench_all(&args),
        },
        Command::Campaign(args) => match args.command {
            Some(CampaignCommand::Merge(merge)) => campaign_merge(&merge),
            None => campaign(&args),
        },
        Command::Replay(args) => replay(&args, started),
        Command::Difftest(args) => this_exe().map_or_else(|c| c, |e| difftest::command(&args, e)),
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

/// This executable, which benchmarks and campaigns run as their children; on failure the exit code
/// after a one-line message.
fn this_exe() -> Result<std::path::PathBuf, u8> {
    std::env::current_exe()
        .map_err(|e| fail(FAILURE, &format_args!("cannot find this executable: {e}")))
}

fn fail(code: u8, message: &dyn std::fmt::Display) -> u8 {
    eprintln!("vmm: {message}");
    code
}

/// Checks before the run that every output file it names can be written: a bad path is a usage
/// error now rather than a result lost after the run.
fn check_outputs(outputs: &[(&str, Option<&Path>)]) -> Result<(), u8> {
    for (flag, path) in outputs {
        if let Some(path) = path {
            if let Err(e) = vmm::out_file::check_writable(path) {
                return Err(fail(USAGE, &format_args!("{flag} {}: {e}", path.display())));
            }
        }
    }
    Ok(())
}

/// A recorder for `--trace-events`, when given.
fn trace_recorder(
    path: Option<&Path>,
    vcpus: usize,
    started: Instant,
) -> Option<Arc<TraceRecorder>> {
    path.map(|_| Arc::new(TraceRecorder::new(vcpus, started)))
}

/// Writes the trace events, if asked for; on failure, the exit code after saying why.
fn write_trace(
    path: Option<&Path>,
    trace: Option<&TraceRecorder>,
    run: &RunInfo,
) -> Result<(), u8> {
    let (Some(path), Some(trace)) = (path, trace) else {
        return Ok(());
    };
    if let Err(e) = vmm::trace_events::json::write(path, trace, run) {
        let message = format_args!("cannot write trace events {}: {e}", path.display());
        return Err(fail(FAILURE, &message));
    }
    if trace.dropped() > 0 {
        log::warn!(
            "{} trace event(s) dropped past the cap of {}",
            trace.dropped(),
            trace.cap()
        );
    }
    log::info!("trace events written to {}", path.display());
    Ok(())
}

fn run_command(args: &RunArgs, started: Instant) -> u8 {
    if let Some(cpu) = args.schedule.as_ref().and_then(|s| s.highest_cpu()) {
        if usize::from(cpu) >= args.vcpus {
            return fail(
                USAGE,
                &format_args!(
                    "--schedule picks vCPU {cpu}, but the VM has {} (--vcpus)",
                    args.vcpus
                ),
            );
        }
    }
    let outputs = [
        ("--report", args.report.as_deref()),
        ("--trace-events", args.trace_events.as_deref()),
    ];
    if let Err(code) = check_outputs(&outputs) {
        return code;
    }
    let kernel_file;
    let kernel = match &args.kernel {
        None => GUEST_KERNEL,
        Some(path) => match vmm::in_file::read_bounded(path, MAX_KERNEL_FILE) {
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
    let trace = trace_recorder(args.trace_events.as_deref(), args.vcpus, started);
    let config = RunConfig {
        vm: VmConfig {
            ram_size: args.mem,
            vcpus: args.vcpus,
            scenario: &args.scenario,
            seed: args.seed,
            log_level: log::max_level() as u64,
            variant: args.variant,
            scale: args.scale,
            inject: args.inject,
            kernel,
            input: &[],
            output_len: 0,
            probes: args.guest_probes(),
        },
        timeout: args.timeout,
        started,
        console: Box::new(std::io::stdout()),
        thorough: args.thorough,
        schedule: args.sched_mode(),
        trace: trace.clone(),
    };
    let report = match run(config) {
        Ok(report) => report,
        Err(e) => {
            let code = match &e {
                RunError::Vm(e) if e.is_bad_input() => USAGE,
                _ => FAILURE,
            };
            return fail(code, &e);
        }
    };
    if !report.probes.coverage.frees.is_empty() {
        for line in report.probes.coverage.table().lines() {
            eprintln!("vmm: {line}");
        }
    }
    eprintln!("vmm: {}", vmm::report::summary_line(&report.probes));
    if let Some(schedule) = &report.schedule {
        eprintln!(
            "vmm: race schedule ({} picks): {}",
            schedule.0.len(),
            vmm::sched::abbreviate(&schedule.to_string())
        );
    }
    for v in report.probes.violations.iter().take(MAX_VIOLATIONS_SHOWN) {
        eprintln!("vmm: violation {v}");
    }
    for e in report.probes.errors.iter().take(MAX_VIOLATIONS_SHOWN) {
        eprintln!("vmm: probe walk error: {e}");
    }
    let info = RunInfo {
        command: format!(
            "vmm run --scenario {} --variant {} --seed {}",
            args.scenario,
            args.variant.name(),
            args.seed
        ),
        scenario: args.scenario.clone(),
        failure: report.failure.as_ref().map(ToString::to_string),
        ended: Some(report.ended_after),
    };
    // A trace that cannot be written fails the run, but not before the report is written too.
    let traced = write_trace(args.trace_events.as_deref(), trace.as_deref(), &info);
    if let Some(path) = &args.report {
        let json = vmm::report::to_json(
            &args.scenario,
            args.variant.name(),
            args.inject.map(|i| i.to_string()),
            args.thorough,
            &report,
        );
        if let Err(e) = vmm::report::write_json(path, &json) {
            return fail(
                FAILURE,
                &format_args!("cannot write report {}: {e}", path.display()),
            );
        }
    }
    if let Err(code) = traced {
        return code;
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
    let exe = match this_exe() {
        Ok(exe) => exe,
        Err(code) => return code,
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
    let exe = match this_exe() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    match vmm::bench::probes(&exe, quick) {
        Ok(result) => {
            println!("{result}");
            SUCCESS
        }
        Err(e) => fail(FAILURE, &e),
    }
}

fn bench_mm(quick: bool) -> u8 {
    let result = mm_bench::vs_linux(mm_bench::Sizes::of_run(quick));
    println!("{result}");
    if result.complete() {
        SUCCESS
    } else {
        FAILURE
    }
}

fn bench_guest(quick: bool) -> u8 {
    let exe = match this_exe() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    eprintln!("bench guest workloads …");
    match vmm::bench::guest::guest_workloads(&exe, quick, vmm::bench::DEFAULT_ROW_TIMEOUT) {
        Ok(result) => {
            let label = vmm::bench::platform::Platform::detect().guest_label(None);
            println!("{}", result.table(&label));
            SUCCESS
        }
        Err(e) => fail(FAILURE, &e),
    }
}

fn campaign(args: &CampaignArgs) -> u8 {
    let run = &args.run;
    // Clap requires both unless `merge` is given.
    let (Some(scenario), Some(seeds)) = (&run.scenario, run.seeds) else {
        return fail(
            USAGE,
            &"campaign needs --scenario and --seeds (see vmm campaign --help)",
        );
    };
    // The result of a long campaign must not be lost to a bad path found only at the end.
    if let Err(code) = check_outputs(&[("--json", run.json.as_deref())]) {
        return code;
    }
    let shard = match run
        .shard
        .map(|s| s.resolve(|name| std::env::var(name).ok()))
    {
        None => None,
        Some(Ok(shard)) => Some(shard),
        Some(Err(e)) => return fail(USAGE, &e),
    };
    let vmm = match this_exe() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    let jobs = run.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config = CampaignConfig {
        vmm,
        scenario: scenario.clone(),
        variant: run.variant.name().to_string(),
        inject: run.inject,
        seeds,
        shard,
        jobs,
        timeout: run.timeout,
        kill_grace: vmm::campaign::runner::KILL_GRACE,
    };
    match vmm::campaign::run_campaign(&config) {
        Ok(result) => campaign_report(&result, run.json.as_deref()),
        Err(e) => fail(FAILURE, &e),
    }
}

fn campaign_merge(args: &MergeArgs) -> u8 {
    if let Err(code) = check_outputs(&[("--json", args.json.as_deref())]) {
        return code;
    }
    let mut parts = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let parsed = vmm::in_file::read_text(path, vmm::campaign::merge::MAX_PART_FILE)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .and_then(|json| CampaignResult::from_json(&json).map_err(|e| e.to_string()));
        match parsed {
            Ok(result) => parts.push((name, result)),
            Err(e) => return fail(USAGE, &format_args!("cannot merge {name}: {e}")),
        }
    }
    match vmm::campaign::merge(parts) {
        Ok(result) => campaign_report(&result, args.json.as_deref()),
        Err(e) => fail(USAGE, &e),
    }
}

/// Prints the table, writes the JSON, and turns the result into the exit code.
fn campaign_report(result: &CampaignResult, json: Option<&std::path::Path>) -> u8 {
    let program = std::env::current_exe().map_or("vmm".into(), |p| p.display().to_string());
    print!("{}", result.table(&program));
    if let Some(path) = json {
        if let Err(e) = vmm::report::write_json(path, &result.to_json(&program)) {
            return fail(
                FAILURE,
                &format_args!("cannot write {}: {e}", path.display()),
            );
        }
    }
    if result.tally().failed() == 0 {
        SUCCESS
    } else {
        FAILURE
    }
}

fn replay(args: &vmm::cli::ReplayArgs, started: Instant) -> u8 {
    use mm_replay::{maps, trace};
    if let Err(code) = check_outputs(&[("--trace-events", args.trace_events.as_deref())]) {
        return code;
    }
    let read = |path: &std::path::Path| {
        vmm::in_file::read_text(path, vmm::replay::MAX_REPLAY_FILE)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let inputs = (|| -> Result<_, String> {
        let before = maps::parse_maps(&read(&args.maps)?)
            .map_err(|e| format!("{}: {e}", args.maps.display()))?;
        let calls = trace::parse_trace(&read(&args.trace)?)
            .map_err(|e| format!("{}: {e}", args.trace.display()))?;
        let after = match &args.compare {
            Some(path) => Some(
                maps::parse_maps(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok((before, calls, after))
    })();
    let (before, calls, after) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => return fail(USAGE, &e),
    };
    let hints = after.as_deref().unwrap_or(&[]);
    let (result, took, mode) = if args.host {
        let start = Instant::now();
        let result = mm_replay::replay::replay(&before, &calls, hints);
        (result, start.elapsed(), "on the host")
    } else {
        // Too big for guest RAM is bad input, refused before a VM (or a trace) exists.
        let input = match vmm::replay::GuestInput::new(&before, &calls, hints, args.mem) {
            Ok(input) => input,
            Err(e) => {
                let code = if e.is_bad_input() { USAGE } else { FAILURE };
                let trace = args.trace.display();
                let hint = "raise --mem (up to 4G) or replay with --host";
                let message = format_args!("cannot replay {trace} in the guest: {e}; {hint}");
                return fail(code, &message);
            }
        };
        let trace_events = args.trace_events.as_deref();
        let trace = trace_recorder(trace_events, vmm::replay::VCPUS, started);
        let options = vmm::replay::GuestOptions {
            variant: args.variant,
            timeout: args.timeout,
            trace: trace.clone(),
        };
        let replayed = replay_in_guest(&input, options);
        let info = RunInfo {
            command: format!("vmm replay --trace {}", args.trace.display()),
            scenario: vmm::replay::SCENARIO.to_string(),
            failure: match &replayed {
                Err((_, why)) => Some(why.clone()),
                Ok(g) => g
                    .result
                    .as_ref()
                    .err()
                    .map(|e| format!("replay diverged: {e}")),
            },
            ended: None,
        };
        if let Err(code) = write_trace(trace_events, trace.as_deref(), &info) {
            return code;
        }
        match replayed {
            Ok(g) => (g.result, g.replay_time, "in the guest"),
            Err((code, _)) => return code,
        }
    };
    let out = match result {
        Ok(out) => out,
        Err(e) => return fail(FAILURE, &format_args!("replay diverged from Linux: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    for line in &out.maps {
        // A closed stdout (`| head`) ends the listing, not the run.
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    drop(stdout);
    let skipped: usize = calls.skipped.values().sum();
    let notes: usize = out.notes.values().sum();
    let secs = took.as_secs_f64();
    log::info!(
        "replayed {} calls {mode} in {:.2} ms, {:.0} calls/s ({skipped} skipped by the parser, {notes} noted: {:?})",
        out.applied,
        secs * 1e3,
        calls.events.len() as f64 / secs.max(1e-9),
        out.notes
    );
    match after.map(|after| maps::compare(&out.maps, &after)) {
        None | Some(Ok(())) => SUCCESS,
        Some(Err(mismatch)) => fail(FAILURE, &mismatch),
    }
}

/// Runs the replay in the guest and reports the probes; on failure, the exit code after saying why,
/// and why.
fn replay_in_guest(
    input: &vmm::replay::GuestInput,
    options: vmm::replay::GuestOptions,
) -> Result<vmm::replay::GuestReplay, (u8, String)> {
    use vmm::replay::GuestReplayError;
    match vmm::replay::replay_input_in_guest(input, options) {
        Ok(g) => {
            log::info!(
                "{} (kernel ready after {:.1} ms)",
                vmm::report::summary_line(&g.probes),
                g.ready_after.as_secs_f64() * 1e3
            );
            Ok(g)
        }
        Err(GuestReplayError::Guest {
            failure,
            console_tail,
            probes,
        }) => {
            eprintln!("vmm: {}", vmm::report::summary_line(&probes));
            for v in probes.violations.iter().take(MAX_VIOLATIONS_SHOWN) {
                eprintln!("vmm: violation {v}");
            }
            eprintln!("vmm: replay in the guest failed: {failure}");
            for line in &console_tail {
                eprintln!("  | {line}");
            }
            Err((FAILURE, failure.to_string()))
        }
        Err(e) => Err((fail(FAILURE, &e), e.to_string())),
    }
}

fn bench_all(args: &vmm::cli::BenchArgs) -> u8 {
    let exe = match this_exe() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    if let Err(code) = check_outputs(&[
        ("--json", args.json.as_deref()),
        ("--svg", args.svg.as_deref()),
    ]) {
        return code;
    }
    match vmm::bench::suite::run_command(&exe, args) {
        Ok(code) => code,
        Err(message) => fail(FAILURE, &message),
    }
}
