//! The results table on stdout and the command that reproduces one seed.

use super::outcome::{Kind, CHECKS};
use super::result::{CampaignResult, DEFAULT_TIMEOUT_SECS};
use super::spec::Shard;
use std::fmt::Write as _;

impl CampaignResult {
    /// The command that reruns `seed` alone, `program` being the `vmm` to run; it names the
    /// campaign's watchdog too unless that is `vmm run`'s default.
    pub fn repro(&self, program: &str, seed: u64) -> String {
        let mut command = repro_command(program, &self.scenario, &self.variant, seed);
        if let Some(spec) = &self.inject {
            command = format!("{command} --inject {}", shell_quote(spec));
        }
        let schedule = self.outcomes.iter().find(|o| o.seed == seed);
        if let Some(schedule) = schedule.and_then(|o| o.schedule.as_deref()) {
            command = format!("{command} --schedule {}", shell_quote(schedule));
        }
        if self.timeout_secs == DEFAULT_TIMEOUT_SECS {
            command
        } else {
            format!("{command} --timeout {}", self.timeout_secs)
        }
    }

    /// The results table, as printed on stdout.
    pub fn table(&self, program: &str) -> String {
        let t = self.tally();
        let mut s = String::new();
        let shards = match self.shards.as_slice() {
            [] => String::new(),
            [one] => format!(", shard {one}"),
            many => format!(
                ", shards {}",
                many.iter()
                    .map(Shard::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        let _ = writeln!(
            s,
            "campaign: scenario {}, variant {}, seeds {}{shards}",
            self.scenario, self.variant, self.seeds
        );
        let missing = self.expected().saturating_sub(t.runs);
        let missing = if missing > 0 {
            format!(" ({missing} seed(s) missing)")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{} runs: {} passed, {} failed{missing}",
            t.runs,
            t.of(Kind::Passed),
            t.failed()
        );
        // P1-P4 always; the checks added since only when they caught something.
        let per_check: Vec<String> = CHECKS
            .iter()
            .enumerate()
            .filter(|&(i, _)| i < 4 || t.violations[i] > 0)
            .map(|(i, c)| format!("{c} {} in {} seed(s)", t.violations[i], t.seeds_by_check[i]))
            .collect();
        let _ = writeln!(
            s,
            "  {:<14}{:>8}   {}",
            "violation",
            t.of(Kind::Violation),
            per_check.join(", ")
        );
        let _ = writeln!(
            s,
            "  {:<14}{:>8}",
            "guest failure",
            t.of(Kind::GuestFailure)
        );
        if t.use_after_free + t.deadlocks > 0 {
            let _ = writeln!(
                s,
                "  caught by walkers: use-after-free in {} seed(s), deadlock in {} seed(s)",
                t.use_after_free, t.deadlocks
            );
        }
        let _ = writeln!(s, "  {:<14}{:>8}", "timeout", t.of(Kind::Timeout));
        let _ = writeln!(s, "  {:<14}{:>8}", "error", t.of(Kind::Error));
        let _ = writeln!(
            s,
            "throughput: {:.0} runs/minute ({} runs in {:.1} s, {} job(s))",
            self.runs_per_minute(),
            t.runs,
            self.wall_secs,
            self.jobs
        );
        match self.first_failure() {
            None => s.push_str("no failing seed\n"),
            Some(o) => {
                let detail = o
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let _ = writeln!(s, "first failing seed: {} ({}{detail})", o.seed, o.kind);
                let _ = writeln!(s, "reproduce: {}", self.repro(program, o.seed));
            }
        }
        s
    }
}

/// `program run --scenario S --variant V --seed N --validate-at-exit`, quoted for a POSIX shell
/// (campaign children run validate_mm at every process exit).
pub fn repro_command(program: &str, scenario: &str, variant: &str, seed: u64) -> String {
    format!(
        "{} run --scenario {} --variant {} --seed {seed} --validate-at-exit",
        shell_quote(program),
        shell_quote(scenario),
        shell_quote(variant)
    )
}

/// `s` as one word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::outcome::NCHECKS;
    use crate::campaign::result::tests::{outcome, result};

    #[test]
    fn the_repro_command_names_scenario_variant_and_seed_and_quotes_the_program() {
        assert_eq!(
            repro_command("/usr/bin/vmm", "munmap-whole", "skip-anon-unlink", 17),
            "/usr/bin/vmm run --scenario munmap-whole --variant skip-anon-unlink --seed 17 \
             --validate-at-exit"
        );
        assert_eq!(
            repro_command("/my dir/it's/vmm", "tour", "correct", 0),
            r"'/my dir/it'\''s/vmm' run --scenario tour --variant correct --seed 0 --validate-at-exit"
        );
    }

    #[test]
    fn the_table_shows_counts_throughput_and_the_reproduction() {
        let mut r = result(
            "skip-anon-unlink",
            None,
            vec![
                outcome(0, Kind::Passed, [0; NCHECKS]),
                outcome(1, Kind::Violation, [2, 0, 0, 0, 0, 0, 0]),
            ],
        );
        r.outcomes[1].detail = Some("the probes found 2 violation(s)".into());
        let table = r.table("vmm");
        assert!(
            table.contains("2 runs: 1 passed, 1 failed (2 seed(s) missing)"),
            "{table}"
        );
        assert!(
            table.contains("P1 2 in 1 seed(s), P2 0 in 0 seed(s)"),
            "{table}"
        );
        assert!(table.contains("throughput: 120 runs/minute"), "{table}");
        assert!(
            table.contains("first failing seed: 1 (violation: the probes found 2 violation(s))"),
            "{table}"
        );
        assert!(
            table.contains(
                "reproduce: vmm run --scenario munmap-whole --variant skip-anon-unlink --seed 1 \
                 --validate-at-exit\n"
            ),
            "{table}"
        );
        r.timeout_secs = 0.5;
        assert!(
            r.table("vmm")
                .contains("--seed 1 --validate-at-exit --timeout 0.5\n"),
            "a shorter watchdog is part of the reproduction"
        );
        let clean = result(
            "correct",
            None,
            vec![outcome(0, Kind::Passed, [0; NCHECKS])],
        );
        assert!(clean.table("vmm").contains("no failing seed"));
    }
}
