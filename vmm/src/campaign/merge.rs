//! Merging the JSON results of a campaign's shards into the result of the whole campaign.
//!
//! The parts must be one campaign (scenario, variant, injection) split one way: all shards of one
//! N, or all run whole (over ranges of their own). Each part is checked
//! ([`CampaignResult::check`]) before anything is added up, totals are added with overflow checked,
//! and no seed range is ever walked, so a crafted file is a one-line refusal naming it.

use super::read::JsonError;
use super::result::CampaignResult;
use super::spec::SeedRange;
use std::collections::BTreeMap;

/// The largest part `vmm campaign merge` reads: 1 GiB of JSON, some five million seeds' outcomes
/// (a day of one machine's runs is about a million), checked from the file's size before it is
/// read.
pub const MAX_PART_FILE: u64 = 1 << 30;

/// Why shard results cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("nothing to merge")]
    Empty,
    /// A part breaks what a campaign result must hold.
    #[error("cannot merge {file}: {error}")]
    Invalid {
        /// The part.
        file: String,
        /// The field and what is wrong with it.
        error: JsonError,
    },
    /// The parts ran different scenarios or variants.
    #[error("{file} is a campaign of {what} '{theirs}', not '{ours}' like {first}: refusing to merge different campaigns")]
    Mismatch {
        /// The file that differs.
        file: String,
        /// The first file.
        first: String,
        /// "scenario", "variant" or "inject".
        what: &'static str,
        /// The first file's value.
        ours: String,
        /// This file's.
        theirs: String,
    },
    /// The parts split the campaign different ways (shards of another N, or sharded and whole).
    #[error("{file} ran {theirs}, but {first} ran {ours}: a campaign's parts are shards of one N, or all whole")]
    Split {
        /// The file that differs.
        file: String,
        /// The first file.
        first: String,
        /// How the first file split it.
        ours: String,
        /// How this file did.
        theirs: String,
    },
    /// Two parts ran the same seed (the same shard given twice, or overlapping shards).
    #[error("seed {seed} is in both {a} and {b}: overlapping shards")]
    Overlap {
        /// The seed.
        seed: u64,
        /// One file.
        a: String,
        /// The other.
        b: String,
    },
    /// Adding a part's counts to the others' overflows.
    #[error("{file}: its {what} added to the other parts' overflow")]
    Overflow {
        /// The part that tipped it over.
        file: String,
        /// Which total.
        what: String,
    },
}

/// How a part split the campaign, for messages: `shards of 4` or `without --shard`.
fn split(part: &CampaignResult) -> String {
    match part.shards.first() {
        Some(shard) => format!("shards of {} ({})", shard.count, part.shards_text()),
        None => "without --shard".into(),
    }
}

/// Merges shard results, each named by the file it came from; they must share scenario,
/// variant, injection and shard count, and must not run a seed twice.
pub fn merge(parts: Vec<(String, CampaignResult)>) -> Result<CampaignResult, MergeError> {
    for (file, part) in &parts {
        part.check().map_err(|error| MergeError::Invalid {
            file: file.clone(),
            error,
        })?;
    }
    let mut parts = parts.into_iter();
    let (first_name, mut merged) = parts.next().ok_or(MergeError::Empty)?;
    let count = merged.shards.first().map(|s| s.count);
    let mut tally = merged.tally();
    // Each seed's part, as an index into `names`.
    let mut names = vec![first_name.clone()];
    let mut owner: BTreeMap<u64, usize> = merged.outcomes.iter().map(|o| (o.seed, 0)).collect();
    for (name, part) in parts {
        for (what, ours, theirs) in [
            ("scenario", &merged.scenario, &part.scenario),
            ("variant", &merged.variant, &part.variant),
            (
                "inject",
                &merged.inject.clone().unwrap_or_default(),
                &part.inject.clone().unwrap_or_default(),
            ),
        ] {
            if ours != theirs {
                return Err(MergeError::Mismatch {
                    file: name,
                    first: first_name,
                    what,
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                });
            }
        }
        if part.shards.first().map(|s| s.count) != count {
            return Err(MergeError::Split {
                theirs: split(&part),
                ours: split(&merged),
                file: name,
                first: first_name,
            });
        }
        let overflow = |what: String| MergeError::Overflow {
            file: name.clone(),
            what,
        };
        tally = tally
            .checked_add(&part.tally())
            .map_err(|check| overflow(format!("{check} violations")))?;
        merged.wall_secs += part.wall_secs;
        if !merged.wall_secs.is_finite() {
            return Err(overflow("wall_secs".into()));
        }
        names.push(name);
        for o in &part.outcomes {
            if let Some(a) = owner.insert(o.seed, names.len() - 1) {
                return Err(MergeError::Overlap {
                    seed: o.seed,
                    a: names[a].clone(),
                    b: names[names.len() - 1].clone(),
                });
            }
        }
        merged.seeds = SeedRange {
            start: merged.seeds.start.min(part.seeds.start),
            end: merged.seeds.end.max(part.seeds.end),
        };
        merged.shards.extend(part.shards);
        merged.jobs = merged.jobs.max(part.jobs);
        merged.timeout_secs = merged.timeout_secs.max(part.timeout_secs);
        merged.outcomes.extend(part.outcomes);
    }
    merged.outcomes.sort_by_key(|o| o.seed);
    // Shards of one N, so the same shard from two parts (over two ranges) is one index.
    merged.shards.sort_by_key(|s| s.index);
    merged.shards.dedup();
    // Shards that together cover the range are the whole campaign.
    if !merged.shards.is_empty() && merged.expected() == merged.seeds.len() {
        merged.shards.clear();
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::outcome::{Kind, NCHECKS};
    use crate::campaign::result::tests::{outcome, result};
    use crate::campaign::spec::{SeedRange, Shard};

    #[test]
    fn shards_merge_into_the_whole_campaign() {
        let a = result(
            "correct",
            Some(Shard { index: 0, count: 2 }),
            vec![
                outcome(0, Kind::Passed, [0; NCHECKS]),
                outcome(2, Kind::Passed, [0; NCHECKS]),
            ],
        );
        let b = result(
            "correct",
            Some(Shard { index: 1, count: 2 }),
            vec![
                outcome(1, Kind::Passed, [0; NCHECKS]),
                outcome(3, Kind::Violation, [1, 0, 0, 0, 0, 0, 0]),
            ],
        );
        let m = merge(vec![("b.json".into(), b), ("a.json".into(), a)]).unwrap();
        assert_eq!(
            m.outcomes.iter().map(|o| o.seed).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(
            m.shards.is_empty(),
            "two halves are the whole: {:?}",
            m.shards
        );
        assert_eq!(m.wall_secs, 2.0);
        assert_eq!(m.tally().failed(), 1);
    }

    #[test]
    fn merging_different_campaigns_or_the_same_shard_twice_is_refused() {
        let shard = Some(Shard { index: 0, count: 2 });
        let a = result(
            "correct",
            shard,
            vec![outcome(0, Kind::Passed, [0; NCHECKS])],
        );
        let b = result(
            "skip-anon-unlink",
            shard,
            vec![outcome(2, Kind::Passed, [0; NCHECKS])],
        );
        let err = merge(vec![("a".into(), a.clone()), ("b".into(), b)]).unwrap_err();
        assert!(
            matches!(
                err,
                MergeError::Mismatch {
                    what: "variant",
                    ..
                }
            ),
            "{err}"
        );
        let err = merge(vec![("a".into(), a.clone()), ("again".into(), a)]).unwrap_err();
        assert_eq!(
            err,
            MergeError::Overlap {
                seed: 0,
                a: "a".into(),
                b: "again".into()
            }
        );
        assert_eq!(merge(vec![]), Err(MergeError::Empty));
    }

    #[test]
    fn parts_split_different_ways_are_refused_naming_both_files() {
        let half = result(
            "correct",
            Some(Shard { index: 0, count: 2 }),
            vec![outcome(0, Kind::Passed, [0; NCHECKS])],
        );
        let quarter = result(
            "correct",
            Some(Shard { index: 1, count: 4 }),
            vec![outcome(1, Kind::Passed, [0; NCHECKS])],
        );
        let whole = result(
            "correct",
            None,
            vec![outcome(3, Kind::Passed, [0; NCHECKS])],
        );
        let err = merge(vec![("a".into(), half.clone()), ("b".into(), quarter)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b ran shards of 4 (1/4), but a ran shards of 2 (0/2): a campaign's parts are \
             shards of one N, or all whole"
        );
        let err = merge(vec![("a".into(), half), ("w".into(), whole)]).unwrap_err();
        assert!(matches!(err, MergeError::Split { ref theirs, .. } if theirs == "without --shard"));
    }

    #[test]
    fn counts_that_overflow_only_across_parts_are_refused_naming_the_part() {
        let near = |seed| outcome(seed, Kind::Violation, [0, u64::MAX - 1, 0, 0, 0, 0, 0]);
        let a = result("correct", Some(Shard { index: 0, count: 2 }), vec![near(0)]);
        let b = result("correct", Some(Shard { index: 1, count: 2 }), vec![near(1)]);
        let err = merge(vec![("a".into(), a), ("b".into(), b)]).unwrap_err();
        assert_eq!(
            err,
            MergeError::Overflow {
                file: "b".into(),
                what: "P2 violations".into()
            }
        );
    }

    #[test]
    fn a_part_that_breaks_the_rules_is_refused_before_anything_is_added() {
        let mut bad = result(
            "correct",
            None,
            vec![outcome(9, Kind::Passed, [0; NCHECKS])],
        );
        bad.seeds = SeedRange { start: 7, end: 3 };
        let good = result("correct", None, vec![]);
        let err = merge(vec![("good".into(), good), ("bad".into(), bad)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot merge bad: seeds: start 7 is not below end 3"),
            "{err}"
        );
    }

    #[test]
    fn two_halves_of_every_u64_seed_merge_into_the_whole_at_once() {
        let all = SeedRange {
            start: 0,
            end: u64::MAX,
        };
        let mut a = result(
            "correct",
            Some(Shard { index: 0, count: 2 }),
            vec![outcome(0, Kind::Passed, [0; NCHECKS])],
        );
        let mut b = result(
            "correct",
            Some(Shard { index: 1, count: 2 }),
            vec![outcome(u64::MAX - 2, Kind::Passed, [0; NCHECKS])],
        );
        (a.seeds, b.seeds) = (all, all);
        let m = merge(vec![("a".into(), a), ("b".into(), b)]).unwrap();
        assert!(m.shards.is_empty(), "{:?}", m.shards);
        assert_eq!(m.expected(), u64::MAX);
        assert_eq!(m.tally().runs, 2);
    }
}
