//! Campaigns through the `vmm` binary: a small campaign of `munmap-whole` passes under the correct
//! order, fails under a wrong one with P1 violations and a reproduction command that reproduces,
//! and its shards merge into the whole campaign, also when GNU parallel hands each its shard.

mod common;

use common::{expect_exit, kvm_available, text, tool_available, VMM};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "mm-campaign-test-{}-{name}.json",
        std::process::id()
    ))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn the_correct_order_passes_a_small_campaign() {
    if !kvm_available("the_correct_order_passes_a_small_campaign") {
        return;
    }
    let (stdout, _) = expect_exit(
        &[
            "campaign",
            "--scenario",
            "munmap-whole",
            "--seeds",
            "0..4",
            "--jobs",
            "2",
        ],
        0,
    );
    assert!(stdout.contains("4 runs: 4 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("no failing seed"), "{stdout}");
    assert!(stdout.contains("runs/minute"), "{stdout}");
}

#[test]
fn a_wrong_order_fails_with_p1_violations_and_a_reproduction_that_reproduces() {
    if !kvm_available("a_wrong_order_fails_with_p1_violations_and_a_reproduction_that_reproduces") {
        return;
    }
    let json = json_path("skip-anon");
    let (stdout, _) = expect_exit(
        &[
            "campaign",
            "--scenario",
            "munmap-whole",
            "--seeds",
            "0..4",
            "--variant",
            "skip-anon-unlink",
            "--json",
            json.to_str().unwrap(),
        ],
        1,
    );
    assert!(stdout.contains("4 runs: 0 passed, 4 failed"), "{stdout}");
    let report = read_json(&json);
    assert_eq!(report["by_outcome"]["violation"], 4, "{report}");
    assert!(
        report["violations"]["P1"].as_u64().is_some_and(|n| n >= 4),
        "{report}"
    );
    assert_eq!(
        report["outcomes"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    assert_eq!(report["first_failure"]["seed"], 0, "{report}");

    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reproduce: "))
        .unwrap_or_else(|| panic!("no reproduction command in:\n{stdout}"));
    assert_eq!(report["first_failure"]["repro"], line);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], VMM, "the command runs this vmm");
    assert_eq!(
        words[1..],
        [
            "run",
            "--scenario",
            "munmap-whole",
            "--variant",
            "skip-anon-unlink",
            "--seed",
            "0",
            "--validate-at-exit"
        ]
    );
    let rerun = Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("the reproduction runs");
    assert_eq!(rerun.status.code(), Some(1), "{}", text(&rerun.stderr));
    assert!(
        text(&rerun.stderr).contains("violation P1"),
        "{}",
        text(&rerun.stderr)
    );
}

#[test]
fn two_shards_merge_into_the_whole_campaign() {
    if !kvm_available("two_shards_merge_into_the_whole_campaign") {
        return;
    }
    let shards = [json_path("shard0"), json_path("shard1")];
    for (k, path) in shards.iter().enumerate() {
        let shard = format!("{k}/2");
        let (stdout, _) = expect_exit(
            &[
                "campaign",
                "--scenario",
                "munmap-whole",
                "--seeds",
                "0..4",
                "--shard",
                &shard,
                "--json",
                path.to_str().unwrap(),
            ],
            0,
        );
        assert!(stdout.contains("2 runs: 2 passed"), "{stdout}");
    }
    let merged = json_path("merged");
    let (stdout, _) = expect_exit(
        &[
            "campaign",
            "merge",
            shards[0].to_str().unwrap(),
            shards[1].to_str().unwrap(),
            "--json",
            merged.to_str().unwrap(),
        ],
        0,
    );
    for path in &shards {
        let _ = std::fs::remove_file(path);
    }
    assert!(stdout.contains("4 runs: 4 passed, 0 failed"), "{stdout}");
    let report = read_json(&merged);
    let seeds: Vec<u64> = report["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .filter_map(|o| o["seed"].as_u64())
        .collect();
    assert_eq!(seeds, [0, 1, 2, 3], "{report}");
}

/// What a campaign found, without what depends on the run (timings, jobs, the program's path).
fn findings(report: &Value) -> Value {
    let mut outcomes = report["outcomes"].clone();
    for o in outcomes.as_array_mut().expect("outcomes") {
        o.as_object_mut().expect("an outcome").remove("secs");
    }
    let keys = [
        "scenario",
        "variant",
        "inject",
        "seeds",
        "shards",
        "runs",
        "passed",
        "failed",
        "by_outcome",
        "violations",
        "seeds_with_violations",
    ];
    let mut found: serde_json::Map<String, Value> = keys
        .iter()
        .map(|&k| (k.to_string(), report[k].clone()))
        .collect();
    found.insert("outcomes".into(), outcomes);
    Value::Object(found)
}

#[test]
fn four_shards_under_gnu_parallel_take_their_index_and_merge_into_the_whole_campaign() {
    let test = "four_shards_under_gnu_parallel_take_their_index_and_merge_into_the_whole_campaign";
    if !kvm_available(test) || !tool_available("parallel", test) {
        return;
    }
    let campaign = ["campaign", "--scenario", "munmap-whole", "--seeds", "0..8"];
    let whole = json_path("whole");
    let mut args = campaign.to_vec();
    args.extend(["--json", whole.to_str().unwrap()]);
    expect_exit(&args, 0);
    let whole = read_json(&whole);

    // One command line for every job: K comes from PARALLEL_SEQ, only the output file differs.
    let dir = std::env::temp_dir().join(format!("mm-campaign-parallel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("shard-{#}.json");
    let mut parallel = Command::new("parallel");
    parallel
        .args(["--will-cite", "-j", "2", "-N0", VMM])
        .args(campaign)
        .args(["--shard", "auto/4", "--jobs", "1", "--json"])
        .arg(&out)
        .args([":::", "1", "2", "3", "4"]);
    // Only GNU parallel's own index may reach the children.
    for engine in [
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
    ] {
        parallel.env_remove(engine);
    }
    let run = parallel.output().expect("parallel runs");
    assert!(
        run.status.success(),
        "parallel: {}
stdout:
{}
stderr:
{}",
        run.status,
        text(&run.stdout),
        text(&run.stderr)
    );
    let files: Vec<PathBuf> = (1..=4)
        .map(|i| dir.join(format!("shard-{i}.json")))
        .collect();
    let mut shards: Vec<String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            let report: Value = serde_json::from_str(&text).expect("shard JSON");
            report["shards"][0].as_str().expect("a shard").to_string()
        })
        .collect();
    shards.sort();
    assert_eq!(shards, ["0/4", "1/4", "2/4", "3/4"]);

    let merged = json_path("parallel-merged");
    let mut args = vec!["campaign", "merge"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend(["--json", merged.to_str().unwrap()]);
    let (stdout, _) = expect_exit(&args, 0);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stdout.contains("8 runs: 8 passed, 0 failed"), "{stdout}");
    assert_eq!(findings(&read_json(&merged)), findings(&whole));
}

#[test]
fn a_backwards_seed_range_is_a_one_line_usage_error() {
    let (stdout, stderr) = expect_exit(
        &["campaign", "--scenario", "munmap-whole", "--seeds", "5..3"],
        2,
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--seeds") && stderr.contains("5..3"),
        "{stderr}"
    );
}

#[test]
fn an_auto_shard_whose_task_index_is_not_below_n_is_a_one_line_usage_error() {
    let out = Command::new(VMM)
        .args(["campaign", "--scenario", "munmap-whole", "--seeds", "0..8"])
        .args(["--shard", "auto/4"])
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env("PARALLEL_SEQ", "5")
        .output()
        .expect("the vmm binary runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PARALLEL_SEQ=5"), "{stderr}");
}

#[test]
fn failing_each_allocation_of_a_truncate_workload_leaks_nothing_and_breaks_no_rule() {
    if !kvm_available(
        "failing_each_allocation_of_a_truncate_workload_leaks_nothing_and_breaks_no_rule",
    ) {
        return;
    }
    // Seed N fails the Nth allocation of the process (faults, tables, VMAs, anon_vmas, files) that
    // maps a file twice, truncates it and unmaps: the run must still pass, with no leaked frame, no
    // lockdep report and no probe violation.
    let args = [
        "campaign",
        "--scenario",
        "truncate",
        "--seeds",
        "1..100",
        "--inject",
        "fail-alloc:seed",
    ];
    let (stdout, stderr) = expect_exit(&args, 0);
    assert!(
        stdout.contains("99 runs: 99 passed, 0 failed"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn an_injected_failure_is_part_of_the_reproduction_command() {
    if !kvm_available("an_injected_failure_is_part_of_the_reproduction_command") {
        return;
    }
    let args = [
        "campaign",
        "--scenario",
        "munmap-whole",
        "--seeds",
        "3..5",
        "--variant",
        "skip-anon-unlink",
        "--inject",
        "fail-alloc:seed:table",
    ];
    let (stdout, _) = expect_exit(&args, 1);
    let repro = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reproduce: "))
        .expect("a reproduction line");
    assert!(
        repro.contains("--inject fail-alloc:seed:table") && repro.contains("--seed 3"),
        "{repro}"
    );
}

#[test]
fn a_campaign_over_every_u64_seed_starts_running_instead_of_collecting_the_seeds() {
    // Collecting 2^64 - 1 seeds up front aborted the process at once ("memory allocation failed").
    // Without KVM the children fail fast, which is fine: the campaign must simply keep going.
    let dir = std::env::temp_dir().join(format!("mm-campaign-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let mut campaign = Command::new(VMM)
        .args([
            "campaign",
            "--scenario",
            "hello",
            "--seeds",
            "0..18446744073709551615",
        ])
        .args(["--jobs", "1", "--timeout", "1"])
        // The children's reports go in a directory the test removes.
        .env("TMPDIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("the vmm binary runs");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let exited = campaign.try_wait().expect("the campaign can be waited for");
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", campaign.id()))
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    let _ = campaign.kill();
    let _ = campaign.wait();
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(exited, None, "the campaign ended early:\n{stderr}");
    let rss_kib = rss_kib.expect("the running campaign has a VmRSS");
    assert!(rss_kib < 64 << 10, "{rss_kib} KiB resident:\n{stderr}");
}

/// A shard's result as `vmm campaign --shard INDEX/2 --seeds 0..4 --json` writes it, both of its
/// seeds passed: the base that the crafted files below change one field of.
fn shard_json(index: u64) -> Value {
    let outcome = |seed: u64| {
        serde_json::json!({
            "seed": seed, "outcome": "passed", "violations": {}, "detail": null, "secs": 0.1,
            "schedule": null,
        })
    };
    serde_json::json!({
        "format": "vmm-campaign/1",
        "scenario": "munmap-whole",
        "variant": "correct",
        "inject": null,
        "seeds": { "start": 0, "end": 4 },
        "shards": [format!("{index}/2")],
        "jobs": 1,
        "timeout_secs": 60.0,
        "wall_secs": 1.0,
        "outcomes": [outcome(index), outcome(index + 2)],
    })
}

/// Runs `vmm campaign merge FILES --json OUT` under a deadline, so a merge that walks a 2^64 range
/// fails the test instead of hanging it; returns the exit code, stdout and stderr.
fn merge_within(
    files: &[PathBuf],
    out: &std::path::Path,
    deadline: Duration,
) -> (i32, String, String) {
    let mut child = Command::new(VMM)
        .args(["campaign", "merge"])
        .args(files)
        .arg("--json")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vmm binary runs");
    let started = Instant::now();
    while child.try_wait().expect("waitable").is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("merge of {files:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = child.wait_with_output().expect("the output");
    let code = done.status.code().expect("an exit code");
    (code, text(&done.stdout), text(&done.stderr))
}

#[test]
fn crafted_merge_inputs_exit_2_with_one_line_naming_the_file_and_field_and_change_no_file() {
    let dir = std::env::temp_dir().join(format!("mm-campaign-crafted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, json: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let with = |index: u64, change: &dyn Fn(&mut Value)| {
        let mut json = shard_json(index);
        change(&mut json);
        json
    };
    let max = u64::MAX;
    let (good0, good1) = (
        write("good0.json", &shard_json(0)),
        write("good1.json", &shard_json(1)),
    );
    // The uncrafted shards merge, so every refusal below is the crafted field's doing.
    let sane = dir.join("sane.json");
    let (code, stdout, stderr) = merge_within(
        &[good0.clone(), good1.clone()],
        &sane,
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 runs: 4 passed, 0 failed\n"), "{stdout}");

    let backwards = write(
        "backwards.json",
        &with(0, &|j| {
            j["seeds"] = serde_json::json!({ "start": 5, "end": 3 })
        }),
    );
    let bad_shard = write(
        "bad-shard.json",
        &with(0, &|j| j["shards"] = serde_json::json!(["3/2"])),
    );
    let no_shards = write(
        "zero-shards.json",
        &with(0, &|j| j["shards"] = serde_json::json!(["0/0"])),
    );
    let outside = write(
        "outside.json",
        &with(0, &|j| j["outcomes"][1]["seed"] = 9.into()),
    );
    let not_taken = write(
        "not-taken.json",
        &with(0, &|j| j["outcomes"][1]["seed"] = 1.into()),
    );
    let overflow = write(
        "overflow.json",
        &with(0, &|j| {
            j["outcomes"][0]["violations"]["P1"] = max.into();
            j["outcomes"][1]["violations"]["P1"] = max.into();
        }),
    );
    let near0 = write(
        "near0.json",
        &with(0, &|j| j["outcomes"][0]["violations"]["P1"] = max.into()),
    );
    let near1 = write(
        "near1.json",
        &with(1, &|j| j["outcomes"][0]["violations"]["P1"] = max.into()),
    );
    let again = write("again.json", &shard_json(0));
    let quarter = write(
        "quarter.json",
        &with(1, &|j| {
            j["shards"] = serde_json::json!(["1/4"]);
            j["outcomes"][1]["seed"] = 5.into();
            j["seeds"]["end"] = 8.into();
        }),
    );
    let out = dir.join("merged.json");
    std::fs::write(&out, "the previous merge\n").unwrap();
    let refused = |files: &[&PathBuf], expected: String| {
        let files: Vec<PathBuf> = files.iter().map(|&f| f.clone()).collect();
        let (code, stdout, stderr) = merge_within(&files, &out, Duration::from_secs(20));
        assert_eq!(code, 2, "{files:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{files:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{files:?}: {stderr}");
        assert!(
            stderr.starts_with("vmm: ") && stderr.contains(&expected),
            "{expected}\nnot in: {stderr}"
        );
        let now = std::fs::read_to_string(&out).unwrap();
        assert_eq!(now, "the previous merge\n", "{files:?} changed the output");
    };
    let name = |p: &PathBuf| p.display().to_string();
    let cannot = |p: &PathBuf, why: &str| format!("cannot merge {}: {why}", name(p));
    refused(
        &[&backwards],
        cannot(&backwards, "seeds: start 5 is not below end 3"),
    );
    refused(
        &[&good0, &bad_shard],
        cannot(&bad_shard, "shards[0]: shard 3/2: K must be less than N"),
    );
    refused(
        &[&no_shards],
        cannot(&no_shards, "shards[0]: N must be at least 1"),
    );
    refused(
        &[&outside],
        cannot(&outside, "outcomes[1].seed: 9 is outside the seeds 0..4"),
    );
    refused(
        &[&not_taken],
        cannot(
            &not_taken,
            "outcomes[1].seed: 1 is in none of the shards (0/2)",
        ),
    );
    refused(
        &[&overflow],
        cannot(
            &overflow,
            "outcomes.violations.P1: the seeds' counts add up past 18446744073709551615",
        ),
    );
    refused(
        &[&near0, &near1],
        format!(
            "{}: its P1 violations added to the other parts' overflow",
            name(&near1)
        ),
    );
    refused(
        &[&good0, &again],
        format!("seed 0 is in both {} and {}", name(&good0), name(&again)),
    );
    refused(
        &[&good0, &quarter],
        format!(
            "{} ran shards of 4 (1/4), but {} ran shards of 2 (0/2)",
            name(&quarter),
            name(&good0)
        ),
    );
    refused(
        &[&good0, &dir],
        cannot(&dir, "a directory, not a regular file"),
    );
    refused(
        &[&PathBuf::from("/dev/zero")],
        "cannot merge /dev/zero: a character device, not a regular file".into(),
    );
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.retain(|n| n.to_string_lossy().ends_with(".tmp"));
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_of_every_u64_seed_merge_at_once_counting_the_missing_seeds() {
    // Counting the expected seeds by walking 2^64 - 1 of them never ended.
    let dir = std::env::temp_dir().join(format!("mm-campaign-u64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = (0..2)
        .map(|index| {
            let mut json = shard_json(index);
            json["seeds"]["end"] = u64::MAX.into();
            let path = dir.join(format!("shard{index}.json"));
            std::fs::write(&path, json.to_string()).unwrap();
            path
        })
        .collect();
    let out = dir.join("merged.json");
    let (code, stdout, stderr) = merge_within(&files, &out, Duration::from_secs(20));
    let merged = std::fs::read_to_string(&out);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("4 runs: 4 passed, 0 failed (18446744073709551611 seed(s) missing)"),
        "{stdout}"
    );
    let merged: Value = serde_json::from_str(&merged.expect("the merged JSON")).unwrap();
    assert_eq!(
        merged["shards"],
        serde_json::json!([]),
        "two halves are the whole"
    );
}

#[test]
fn a_campaign_json_path_that_cannot_be_written_is_refused_before_any_seed_runs() {
    for args in [
        &["campaign", "--scenario", "munmap-whole", "--seeds", "0..4"][..],
        &["campaign", "merge", "shard.json"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--json", "/nonexistent/dir/out.json"]);
        let (stdout, stderr) = expect_exit(&args, 2);
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(
            stderr,
            "vmm: --json /nonexistent/dir/out.json: directory /nonexistent/dir does not exist\n"
        );
    }
}
