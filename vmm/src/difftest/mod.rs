//! `vmm difftest`: mm-core against the running Linux kernel, seed by seed (issue 12). Each seed
//! draws a sequence of memory system calls ([`mm_replay::difftest::gen`]); mm-core runs it on
//! the host build ([`mm_replay::difftest::model`]) and a child process runs it natively
//! ([`native`]); after every call both states must be equal. The first divergence is shrunk to a
//! short sequence that still diverges ([`minimize`]).

pub mod guest;
#[allow(unsafe_code)] // raw system calls on a filled address space
pub mod native;
pub mod run;

use std::io::Write;
use std::process::{Command, Stdio};

use std::ops::Range;

use mm_replay::difftest::gen::{Classes, Gen};
use mm_replay::difftest::{model, Obs, Op};

use guest::ProbeTotals;

/// How one seed ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every call agreed.
    Clean,
    /// A call's state differed.
    Diverged(Box<Divergence>),
    /// A side could not run (mm-core's `validate_mm` failed, or the native runner did).
    Error(String),
    /// A call's state differed, but Linux, asked again, did not repeat its own state there: the
    /// difference is Linux's nondeterminism, not mm-core's, and is not counted as a divergence.
    Flaky {
        /// Index of the call.
        index: usize,
        /// What differed the first time.
        what: &'static str,
    },
}

/// The first call whose state differed, and a short sequence that still diverges.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// Index of the call in the seed's sequence.
    pub index: usize,
    /// What differed: `result`, `maps` or `residency`.
    pub what: &'static str,
    /// The call.
    pub op: Op,
    /// Whether mm-core ran in the guest (`--guest`) rather than the host build.
    pub in_guest: bool,
    /// mm-core's state after it.
    pub ours: Obs,
    /// Linux's.
    pub linux: Obs,
    /// The shortest sequence found that still diverges (at its last call).
    pub minimized: Vec<Op>,
}

/// Runs `ops` natively in a child process (`exe __difftest-native`).
pub fn native(exe: &std::path::Path, ops: &[Op]) -> Result<Vec<Obs>, String> {
    let mut child = Command::new(exe)
        .arg(native::SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the native runner: {e}"))?;
    let input: String = ops.iter().map(|op| op.encode() + "\n").collect();
    let mut stdin = child.stdin.take().ok_or("no stdin for the runner")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for the native runner: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "the native runner failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let obs: Option<Vec<Obs>> = text
        .split("#\n")
        .filter(|s| !s.is_empty())
        .map(Obs::parse)
        .collect();
    let obs = obs.ok_or("the native runner's output did not parse")?;
    if obs.len() != ops.len() {
        return Err(format!(
            "the native runner reported {} states for {} calls",
            obs.len(),
            ops.len()
        ));
    }
    Ok(obs)
}

/// mm-core's states for a fixed sequence.
pub fn ours(ops: &[Op]) -> Result<Vec<Obs>, String> {
    let mut it = ops.iter();
    let run = model::run(|_| it.next().copied())?;
    Ok(run.into_iter().map(|(_, o)| o).collect())
}

/// The first index where the two sides differ, and what differed.
pub(crate) fn first_divergence(ours: &[Obs], linux: &[Obs]) -> Option<(usize, &'static str)> {
    ours.iter()
        .zip(linux)
        .enumerate()
        .find_map(|(i, (o, l))| o.differs(l).map(|what| (i, what)))
}

/// Whether `ops` diverges anywhere (a side that cannot run counts as no).
fn diverges(exe: &std::path::Path, ops: &[Op]) -> bool {
    match (ours(ops), native(exe, ops)) {
        (Ok(o), Ok(l)) => first_divergence(&o, &l).is_some(),
        _ => false,
    }
}

/// Shrinks a diverging sequence (delta debugging: drop chunks while it still diverges, halving
/// the chunk size), then cuts it after its first divergence.
pub fn minimize(exe: &std::path::Path, ops: &[Op]) -> Vec<Op> {
    let mut cur = shrink(ops, |trial| diverges(exe, trial));
    if let (Ok(o), Ok(l)) = (ours(&cur), native(exe, &cur)) {
        if let Some((i, _)) = first_divergence(&o, &l) {
            cur.truncate(i + 1);
        }
    }
    cur
}

/// The delta-debugging loop of [`minimize`]: a subsequence of `ops` for which `diverges` still
/// holds and from which no single op can be dropped.
fn shrink<T: Clone>(ops: &[T], diverges: impl Fn(&[T]) -> bool) -> Vec<T> {
    let mut cur = ops.to_vec();
    let mut chunk = cur.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed = false;
        while i < cur.len() {
            let mut trial = cur.clone();
            trial.drain(i..(i + chunk).min(cur.len()));
            if !trial.is_empty() && diverges(&trial) {
                cur = trial;
                removed = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed {
            break;
        }
        if !removed {
            chunk = chunk.div_ceil(2);
        }
    }
    cur
}

/// One seed drawn and run on the host build and natively: its calls and both sides' states.
struct Drawn {
    ops: Vec<Op>,
    ours: Vec<Obs>,
    linux: Vec<Obs>,
}

/// Draws seed `seed`'s `calls` calls through the host build and runs them natively.
fn draw(exe: &std::path::Path, seed: u64, calls: usize, classes: Classes) -> Result<Drawn, String> {
    let mut gen = Gen::new(seed, classes);
    let mut left = calls;
    let run = model::run(|maps| {
        (left > 0).then(|| {
            left -= 1;
            gen.next(maps)
        })
    })
    .map_err(|e| format!("mm-core: {e}"))?;
    let (ops, ours): (Vec<Op>, Vec<Obs>) = run.into_iter().unzip();
    let linux = native(exe, &ops)?;
    Ok(Drawn { ops, ours, linux })
}

/// Whether Linux, running `ops[..=index]` again, ends call `index` in the state `linux` (a
/// divergence counts only then: the native side is not always repeatable).
fn linux_repeats(exe: &std::path::Path, ops: &[Op], index: usize, linux: &Obs) -> bool {
    native(exe, &ops[..=index]).map_or(true, |again| again.get(index) == Some(linux))
}

/// How `d` ends on the host build: clean, or its first divergence from Linux, shrunk (or flaky
/// if Linux does not repeat it).
fn host_outcome(exe: &std::path::Path, d: &Drawn) -> Outcome {
    judge(exe, d, &d.ours, false)
}

/// How `d` ends with mm-core's states `ours` (the guest's if `in_guest`): clean, flaky if Linux
/// does not repeat its state at the first difference, or that divergence (shrunk on the host
/// build; a guest one is not, since shrinking runs the host build, which agreed there).
fn judge(exe: &std::path::Path, d: &Drawn, ours: &[Obs], in_guest: bool) -> Outcome {
    let Some((index, what)) = first_divergence(ours, &d.linux) else {
        return Outcome::Clean;
    };
    if !linux_repeats(exe, &d.ops, index, &d.linux[index]) {
        return Outcome::Flaky { index, what };
    }
    Outcome::Diverged(Box::new(Divergence {
        index,
        what,
        op: d.ops[index],
        in_guest,
        ours: ours[index].clone(),
        linux: d.linux[index].clone(),
        minimized: if in_guest {
            d.ops[..=index].to_vec()
        } else {
            minimize(exe, &d.ops[..=index])
        },
    }))
}

/// Runs one seed of `calls` calls on the host build.
pub fn check_seed(exe: &std::path::Path, seed: u64, calls: usize, classes: Classes) -> Outcome {
    match draw(exe, seed, calls, classes) {
        Err(e) => Outcome::Error(e),
        Ok(d) => host_outcome(exe, &d),
    }
}

/// Runs `seeds` with mm-core in one VM (`--guest`, following `config.variant`): each seed is drawn by the host build and run
/// natively, then all run in the guest; a seed's guest states are compared with Linux's (and the
/// host build's too). If the VM fails (a probe violation, a panic), each seed runs again in a VM
/// of its own, so the failure is put on the seed that causes it. Returns each seed's outcome and
/// what the probes checked.
pub fn check_batch_in_guest(
    seeds: Range<u64>,
    config: &run::Config,
) -> (Vec<(u64, Outcome)>, ProbeTotals) {
    let (exe, calls, classes) = (&config.exe, config.calls, config.classes);
    let mut results = Vec::new();
    let mut drawn = Vec::new();
    for seed in seeds {
        match draw(exe, seed, calls, classes) {
            Ok(d) => drawn.push((seed, d)),
            Err(e) => results.push((seed, Outcome::Error(e))),
        }
    }
    let seqs: Vec<Vec<Op>> = drawn.iter().map(|(_, d)| d.ops.clone()).collect();
    let mut probes = ProbeTotals::default();
    let batch = guest::run_batch(
        &seqs,
        guest::output_len(drawn.iter().flat_map(|(_, d)| &d.ours)),
        config.variant,
    );
    match batch.outcomes {
        Ok(outcomes) => {
            probes.merge(&batch.probes);
            for ((seed, d), states) in drawn.iter().zip(outcomes) {
                results.push((*seed, guest_outcome(exe, d, states)));
            }
        }
        Err(e) if drawn.len() == 1 => {
            probes.merge(&batch.probes);
            results.push((drawn[0].0, Outcome::Error(e)));
        }
        Err(_) => {
            // The VMs of the seeds alone count what they find; this one only as a VM booted.
            probes.vms += 1;
            for (seed, _) in &drawn {
                let (one, p) = check_batch_in_guest(*seed..*seed + 1, config);
                probes.merge(&p);
                results.extend(one);
            }
        }
    }
    results.sort_by_key(|(seed, _)| *seed);
    (results, probes)
}

/// How a seed ended whose guest states are `states`: the earlier of the guest's and the host
/// build's divergences from Linux (a guest divergence is not shrunk: shrinking runs the host
/// build, which agreed there).
fn guest_outcome(exe: &std::path::Path, d: &Drawn, states: Result<Vec<Obs>, String>) -> Outcome {
    let states = match states {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("mm-core in the guest: {e}")),
    };
    if states.len() != d.ops.len() {
        return Outcome::Error(format!(
            "the guest reported {} states for {} calls",
            states.len(),
            d.ops.len()
        ));
    }
    let host = first_divergence(&d.ours, &d.linux).map(|(i, _)| i);
    match first_divergence(&states, &d.linux) {
        Some((index, _)) if host.is_none_or(|h| index < h) => judge(exe, d, &states, true),
        _ => host_outcome(exe, d),
    }
}

/// A divergence as the lines `vmm difftest` prints.
pub fn describe(seed: u64, d: &Divergence) -> String {
    let mut s = format!(
        "seed {seed}: call {} diverged ({}{}): {}\n  mm-core: = {}\n  linux:   = {}\n",
        d.index,
        d.what,
        if d.in_guest {
            ", mm-core in the guest"
        } else {
            ""
        },
        d.op.encode(),
        d.ours.ret,
        d.linux.ret
    );
    let side = |s: &mut String, name: &str, o: &Obs| {
        s.push_str(&format!("  {name} maps:\n"));
        for l in &o.maps {
            s.push_str(&format!("    {l}\n"));
        }
        s.push_str(&format!("  {name} residency: {}\n", o.resident));
    };
    side(&mut s, "mm-core", &d.ours);
    side(&mut s, "linux", &d.linux);
    s.push_str(&if d.in_guest {
        format!(
            "  reproduction ({} calls, not shrunk; `vmm difftest --guest --ops FILE` runs it):\n",
            d.minimized.len()
        )
    } else {
        format!(
            "  minimized ({} calls; `vmm difftest --ops FILE` runs it):\n",
            d.minimized.len()
        )
    });
    for op in &d.minimized {
        s.push_str(&format!("    {}\n", op.encode()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_keeps_exactly_the_calls_the_divergence_needs() {
        let ops: Vec<u32> = (0..50).collect();
        let needs = |t: &[u32]| t.contains(&7) && t.contains(&31) && t.contains(&32);
        assert_eq!(shrink(&ops, needs), [7, 31, 32]);
        // Order is kept, and a sequence that needs everything stays whole.
        assert_eq!(shrink(&ops[..3], |t: &[u32]| t.len() == 3), [0, 1, 2]);
    }

    #[test]
    fn a_divergence_prints_the_call_both_states_and_its_reproduction() {
        let op = Op::Munmap {
            addr: 0x1000_0018_0000,
            len: 0x1000,
        };
        let state = |ret| Obs {
            ret,
            ..Obs::default()
        };
        let d = Divergence {
            index: 3,
            what: "result",
            op,
            in_guest: false,
            ours: state(0),
            linux: state(-22),
            minimized: vec![op],
        };
        let text = describe(9, &d);
        assert!(text.starts_with("seed 9: call 3 diverged (result): munmap 0x100000180000 0x1000"));
        assert!(
            text.contains("mm-core: = 0") && text.contains("linux:   = -22"),
            "{text}"
        );
        assert!(
            text.contains("minimized (1 calls")
                && text.ends_with("    munmap 0x100000180000 0x1000\n")
        );
    }
}
