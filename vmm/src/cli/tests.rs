use super::*;
use crate::campaign::Shard;

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
fn a_campaign_takes_its_seeds_shard_and_jobs() {
    let cli = Cli::try_parse_from([
        "vmm",
        "campaign",
        "--scenario",
        "munmap-whole",
        "--seeds",
        "0..8",
        "--shard",
        "1/2",
        "--jobs",
        "3",
    ])
    .unwrap();
    let Some(Command::Campaign(args)) = cli.command else {
        panic!("not a campaign: {cli:?}");
    };
    assert!(args.command.is_none());
    assert_eq!(args.run.seeds, Some(SeedRange { start: 0, end: 8 }));
    assert_eq!(
        args.run.shard,
        Some(ShardArg::Fixed(Shard { index: 1, count: 2 }))
    );
    assert_eq!(args.run.jobs, Some(3));
    assert_eq!(args.run.variant, Variant::Correct);
    // Reproduction commands leave the watchdog out when it is `vmm run`'s default.
    let run = Cli::try_parse_from(["vmm"]).unwrap().run;
    assert_eq!(run.timeout, args.run.timeout);
    assert_eq!(
        run.timeout.as_secs_f64(),
        crate::campaign::result::DEFAULT_TIMEOUT_SECS
    );
}

#[test]
fn campaign_help_states_the_seed_range_and_the_shard_rule() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let campaign = cli.find_subcommand_mut("campaign").unwrap();
    let help = campaign.render_long_help().to_string();
    assert!(help.contains("A up to B-1"), "{help}");
    assert!(
        help.contains("seed % N == K (1 <= N, 0 <= K < N)"),
        "{help}"
    );
    assert!(help.contains("campaign merge FILE"), "{help}");
    for engine in [
        "auto/N",
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "PARALLEL_SEQ",
    ] {
        assert!(help.contains(engine), "{engine} missing from {help}");
    }
}

#[test]
fn run_help_states_the_kernel_file_limit() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let run = cli.find_subcommand_mut("run").unwrap();
    let help = run.render_long_help().to_string();
    let limit = format!("at most {} MiB", crate::loader::MAX_KERNEL_FILE >> 20);
    assert!(help.contains(&limit), "{limit} missing from {help}");
}

#[test]
fn replay_help_states_the_file_limit_and_what_must_fit_guest_ram() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let replay = cli.find_subcommand_mut("replay").unwrap();
    let help = replay.render_long_help().to_string();
    let limit = format!("at most {} MiB", crate::replay::MAX_REPLAY_FILE >> 20);
    assert!(help.contains(&limit), "{limit} missing from {help}");
    let record = std::mem::size_of::<mm_core::abi::replay::EventRecord>();
    assert!(help.contains(&format!("{record} bytes a call")), "{help}");
    let replay = Cli::try_parse_from(["vmm", "replay", "--maps", "m", "--trace", "t"]).unwrap();
    let Some(Command::Replay(args)) = replay.command else {
        panic!("not a replay");
    };
    assert_eq!(args.mem, crate::arch::x86_64::layout::DEFAULT_RAM);
}

#[test]
fn campaign_merge_needs_no_scenario_or_seeds() {
    let cli = Cli::try_parse_from(["vmm", "campaign", "merge", "a.json", "b.json"]).unwrap();
    let Some(Command::Campaign(args)) = cli.command else {
        panic!("not a campaign: {cli:?}");
    };
    let Some(CampaignCommand::Merge(merge)) = args.command else {
        panic!("not a merge: {args:?}");
    };
    assert_eq!(
        merge.files,
        [PathBuf::from("a.json"), PathBuf::from("b.json")]
    );
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
        &["vmm", "campaign", "--scenario", "tour", "--seeds", "5..3"],
        &[
            "vmm",
            "campaign",
            "--scenario",
            "tour",
            "--seeds",
            "0..4",
            "--shard",
            "3/2",
        ],
        &[
            "vmm",
            "campaign",
            "--scenario",
            "tour",
            "--seeds",
            "0..4",
            "--jobs",
            "0",
        ],
        &["vmm", "campaign", "--scenario", "nope", "--seeds", "0..4"],
        &[
            "vmm",
            "campaign",
            "--scenario",
            "tour",
            "--seeds",
            "0..4",
            "--variant",
            "x",
        ],
        &[
            "vmm",
            "campaign",
            "--scenario",
            "tour",
            "--seeds",
            "0..4",
            "--inject",
            "fail-alloc:three",
        ],
        &["vmm", "campaign", "--scenario", "tour"],
        &["vmm", "campaign", "merge"],
        // Trace events come from a VM: the host replay has none.
        &[
            "vmm",
            "replay",
            "--maps",
            "m",
            "--trace",
            "t",
            "--host",
            "--trace-events",
            "e.json",
        ],
    ] {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}
