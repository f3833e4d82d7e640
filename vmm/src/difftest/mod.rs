//! `vmm difftest`: mm-core against the running Linux kernel, seed by seed (issue 12). Each seed
//! draws a sequence of memory system calls ([`mm_replay::difftest::gen`]); mm-core runs it on
//! the host build ([`mm_replay::difftest::model`]) and a child process runs it natively
//! ([`native`]); after every call both states must be equal. The first divergence is shrunk to a
//! short sequence that still diverges ([`minimize`]).

#[allow(unsafe_code)] // raw system calls on a filled address space
pub mod native;
pub mod run;

use std::io::Write;
use std::process::{Command, Stdio};

use mm_replay::difftest::gen::{Classes, Gen};
use mm_replay::difftest::{model, Obs, Op};

/// How one seed ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every call agreed.
    Clean,
    /// A call's state differed.
    Diverged(Box<Divergence>),
    /// A side could not run (mm-core's `validate_mm` failed, or the native runner did).
    Error(String),
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

/// Runs one seed of `calls` calls.
pub fn check_seed(exe: &std::path::Path, seed: u64, calls: usize, classes: Classes) -> Outcome {
    let mut gen = Gen::new(seed, classes);
    let mut left = calls;
    let run = model::run(|maps| {
        (left > 0).then(|| {
            left -= 1;
            gen.next(maps)
        })
    });
    let run = match run {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("mm-core: {e}")),
    };
    let (ops, ours): (Vec<Op>, Vec<Obs>) = run.into_iter().unzip();
    let linux = match native(exe, &ops) {
        Ok(l) => l,
        Err(e) => return Outcome::Error(e),
    };
    let Some((index, what)) = first_divergence(&ours, &linux) else {
        return Outcome::Clean;
    };
    let minimized = minimize(exe, &ops[..=index]);
    Outcome::Diverged(Box::new(Divergence {
        index,
        what,
        op: ops[index],
        ours: ours[index].clone(),
        linux: linux[index].clone(),
        minimized,
    }))
}

/// A divergence as the lines `vmm difftest` prints.
pub fn describe(seed: u64, d: &Divergence) -> String {
    let mut s = format!(
        "seed {seed}: call {} diverged ({}): {}\n  mm-core: = {}\n  linux:   = {}\n",
        d.index,
        d.what,
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
    s.push_str(&format!(
        "  minimized ({} calls; `vmm difftest --ops FILE` runs it):\n",
        d.minimized.len()
    ));
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
