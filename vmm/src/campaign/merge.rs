//! Merging the JSON results of a campaign's shards into the result of the whole campaign.

use super::result::CampaignResult;
use super::spec::SeedRange;
use std::collections::BTreeMap;

/// Why shard results cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("nothing to merge")]
    Empty,
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
}

/// Merges shard results, each named by the file it came from; they must share scenario and
/// variant and must not run a seed twice.
pub fn merge(parts: Vec<(String, CampaignResult)>) -> Result<CampaignResult, MergeError> {
    let mut parts = parts.into_iter();
    let (first_name, mut merged) = parts.next().ok_or(MergeError::Empty)?;
    let mut owner: BTreeMap<u64, String> = merged
        .outcomes
        .iter()
        .map(|o| (o.seed, first_name.clone()))
        .collect();
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
        for o in &part.outcomes {
            if let Some(a) = owner.insert(o.seed, name.clone()) {
                return Err(MergeError::Overlap {
                    seed: o.seed,
                    a,
                    b: name,
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
        merged.wall_secs += part.wall_secs;
        merged.outcomes.extend(part.outcomes);
    }
    merged.outcomes.sort_by_key(|o| o.seed);
    merged.shards.sort_by_key(|s| (s.count, s.index));
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
    use crate::campaign::spec::Shard;

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
}
