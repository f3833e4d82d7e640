//! A campaign's result: the outcome of every seed, its tally, and its JSON form (read back, every
//! field checked, in [`super::read`]).

use super::outcome::{checks_json, dynamic_catch, Kind, SeedOutcome, CHECKS, NCHECKS};
use super::spec::{SeedRange, Shard};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Names the JSON format, so a merge refuses files that are something else.
pub const FORMAT: &str = "vmm-campaign/1";

/// `vmm run`'s default `--timeout`, left out of reproduction commands ([`CampaignResult::repro`]).
pub const DEFAULT_TIMEOUT_SECS: f64 = 60.0;

/// Everything a campaign (or a merge of shards) found.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignResult {
    /// The scenario every seed ran.
    pub scenario: String,
    /// The ordering variant every seed ran under.
    pub variant: String,
    /// The `--inject` spec every seed ran with, if any.
    pub inject: Option<String>,
    /// The seed range asked for (after a merge: the smallest range holding every part's).
    pub seeds: SeedRange,
    /// The shards that ran; empty when the whole range ran in one campaign.
    pub shards: Vec<Shard>,
    /// Children run at once (after a merge: the most any part used).
    pub jobs: usize,
    /// Each run's watchdog, in seconds (after a merge: the longest any part used).
    pub timeout_secs: f64,
    /// Wall time of the campaign (after a merge: the sum of the parts').
    pub wall_secs: f64,
    /// One per seed run, by seed.
    pub outcomes: Vec<SeedOutcome>,
}

/// Counts over a campaign's outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Seeds run.
    pub runs: u64,
    /// Seeds per [`Kind`], in [`Kind::ALL`] order.
    pub by_kind: [u64; 5],
    /// Violations found per check P1..P7, over all seeds.
    pub violations: [u64; NCHECKS],
    /// Seeds with at least one violation of each check.
    pub seeds_by_check: [u64; NCHECKS],
    /// Seeds where a walker met a freed table (use-after-free).
    pub use_after_free: u64,
    /// Seeds where the racing vCPUs deadlocked.
    pub deadlocks: u64,
}

impl Tally {
    /// Seeds of `kind`.
    pub fn of(&self, kind: Kind) -> u64 {
        self.by_kind[Kind::ALL.iter().position(|&k| k == kind).unwrap_or(0)]
    }

    /// Seeds that did not pass.
    pub fn failed(&self) -> u64 {
        self.runs - self.of(Kind::Passed)
    }

    /// The two tallies' sum, field by field; `Err` names the check whose violations add up past
    /// `u64::MAX` (every other count is at most the number of seeds, so cannot overflow first).
    pub fn checked_add(&self, other: &Tally) -> Result<Tally, &'static str> {
        let mut sum = *self;
        for (i, n) in other.violations.iter().enumerate() {
            sum.violations[i] = sum.violations[i].checked_add(*n).ok_or(CHECKS[i])?;
        }
        let add = |a: u64, b: u64| a.saturating_add(b);
        sum.runs = add(sum.runs, other.runs);
        for (i, n) in other.by_kind.iter().enumerate() {
            sum.by_kind[i] = add(sum.by_kind[i], *n);
        }
        for (i, n) in other.seeds_by_check.iter().enumerate() {
            sum.seeds_by_check[i] = add(sum.seeds_by_check[i], *n);
        }
        sum.use_after_free = add(sum.use_after_free, other.use_after_free);
        sum.deadlocks = add(sum.deadlocks, other.deadlocks);
        Ok(sum)
    }
}

impl CampaignResult {
    /// Counts the outcomes. The counts of a result that [`CampaignResult::check`] passed are
    /// exact; past `u64::MAX` (which only a crafted result reaches) they saturate.
    pub fn tally(&self) -> Tally {
        self.sum(|a, b| Some(a.saturating_add(b)))
            .unwrap_or_default()
    }

    /// Counts the outcomes; `Err` names the check whose violations add up past `u64::MAX`.
    pub fn try_tally(&self) -> Result<Tally, &'static str> {
        self.sum(u64::checked_add)
    }

    fn sum(&self, add: fn(u64, u64) -> Option<u64>) -> Result<Tally, &'static str> {
        let mut t = Tally::default();
        for o in &self.outcomes {
            t.runs += 1;
            t.by_kind[Kind::ALL.iter().position(|&k| k == o.kind).unwrap_or(0)] += 1;
            for (i, &n) in o.violations.iter().enumerate() {
                t.violations[i] = add(t.violations[i], n).ok_or(CHECKS[i])?;
                t.seeds_by_check[i] += u64::from(n > 0);
            }
            match o.detail.as_deref().and_then(dynamic_catch) {
                Some("use-after-free") => t.use_after_free += 1,
                Some(_) => t.deadlocks += 1,
                None => {}
            }
        }
        Ok(t)
    }

    /// Seeds the campaign should have run: those of the range its shards take, counted without
    /// visiting them. The shards are distinct shards of one count ([`CampaignResult::check`]),
    /// so no seed is in two and their counts add up.
    pub fn expected(&self) -> u64 {
        if self.shards.is_empty() {
            return self.seeds.len();
        }
        let taken = self
            .shards
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.count_in(self.seeds)));
        taken.min(self.seeds.len())
    }

    /// The shards, as the table names them.
    pub(super) fn shards_text(&self) -> String {
        self.shards
            .iter()
            .map(Shard::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Campaign throughput: runs per minute of wall time.
    pub fn runs_per_minute(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.outcomes.len() as f64 * 60.0 / self.wall_secs
        } else {
            0.0
        }
    }

    /// The lowest failing seed: the same one whatever order the children finished in.
    pub fn first_failure(&self) -> Option<&SeedOutcome> {
        self.outcomes
            .iter()
            .filter(|o| o.kind != Kind::Passed)
            .min_by_key(|o| o.seed)
    }

    /// Everything, per-seed outcomes included, as JSON.
    pub fn to_json(&self, program: &str) -> Value {
        let t = self.tally();
        let by_kind: BTreeMap<&str, u64> = Kind::ALL.iter().map(|&k| (k.name(), t.of(k))).collect();
        json!({
            "format": FORMAT,
            "scenario": self.scenario,
            "variant": self.variant,
            "inject": self.inject,
            "seeds": { "start": self.seeds.start, "end": self.seeds.end },
            "shards": self.shards.iter().map(Shard::to_string).collect::<Vec<_>>(),
            "jobs": self.jobs,
            "timeout_secs": self.timeout_secs,
            "wall_secs": self.wall_secs,
            "runs_per_minute": self.runs_per_minute(),
            "runs": t.runs,
            "passed": t.of(Kind::Passed),
            "failed": t.failed(),
            "by_outcome": by_kind,
            "violations": checks_json(&t.violations),
            "seeds_with_violations": checks_json(&t.seeds_by_check),
            "seeds_with_use_after_free": t.use_after_free,
            "seeds_with_deadlock": t.deadlocks,
            "first_failure": self.first_failure().map(|o| json!({
                "seed": o.seed,
                "outcome": o.kind.name(),
                "detail": o.detail,
                "repro": self.repro(program, o.seed),
            })),
            "outcomes": self.outcomes.iter().map(SeedOutcome::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn outcome(seed: u64, kind: Kind, violations: [u64; NCHECKS]) -> SeedOutcome {
        SeedOutcome {
            seed,
            kind,
            violations,
            detail: None,
            secs: 0.05,
            schedule: None,
        }
    }

    pub(crate) fn result(
        variant: &str,
        shard: Option<Shard>,
        outcomes: Vec<SeedOutcome>,
    ) -> CampaignResult {
        CampaignResult {
            scenario: "munmap-whole".into(),
            variant: variant.into(),
            inject: None,
            seeds: SeedRange { start: 0, end: 4 },
            shards: shard.into_iter().collect(),
            jobs: 2,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            wall_secs: 1.0,
            outcomes,
        }
    }

    #[test]
    fn the_tally_counts_kinds_and_violations_per_check() {
        let r = result(
            "correct",
            None,
            vec![
                outcome(0, Kind::Passed, [0; NCHECKS]),
                outcome(1, Kind::Violation, [2, 1, 0, 0, 0, 0, 0]),
                outcome(2, Kind::Violation, [3, 0, 0, 0, 0, 0, 0]),
                outcome(3, Kind::Timeout, [0; NCHECKS]),
            ],
        );
        let t = r.tally();
        assert_eq!((t.runs, t.of(Kind::Passed), t.failed()), (4, 1, 3));
        assert_eq!(t.of(Kind::Violation), 2);
        assert_eq!(t.violations, [5, 1, 0, 0, 0, 0, 0]);
        assert_eq!(t.seeds_by_check, [2, 1, 0, 0, 0, 0, 0]);
        assert_eq!(r.runs_per_minute(), 240.0);
    }

    #[test]
    fn the_first_failure_is_the_lowest_failing_seed() {
        let r = result(
            "correct",
            None,
            vec![
                outcome(3, Kind::Error, [0; NCHECKS]),
                outcome(0, Kind::Passed, [0; NCHECKS]),
                outcome(2, Kind::GuestFailure, [0; NCHECKS]),
            ],
        );
        assert_eq!(r.first_failure().map(|o| o.seed), Some(2));
    }

    #[test]
    fn a_result_survives_a_json_round_trip() {
        let r = result(
            "correct",
            Some(Shard { index: 1, count: 2 }),
            vec![
                outcome(1, Kind::Passed, [0; NCHECKS]),
                outcome(3, Kind::Violation, [1, 0, 0, 2, 0, 0, 0]),
            ],
        );
        let json = r.to_json("vmm");
        assert_eq!(json["first_failure"]["seed"], 3);
        assert_eq!(json["by_outcome"]["violation"], 1);
        assert_eq!(CampaignResult::from_json(&json), Ok(r));
        assert!(CampaignResult::from_json(&json!({ "passed": true })).is_err());
    }

    #[test]
    fn counts_that_overflow_only_when_added_are_caught_by_checked_addition() {
        let mut big = Tally::default();
        big.violations[1] = u64::MAX;
        let mut one = Tally::default();
        one.violations[1] = 1;
        assert_eq!(big.checked_add(&one), Err("P2"));
        assert_eq!(big.checked_add(&Tally::default()), Ok(big));
    }
}
