//! Reading a campaign result back from its JSON (`vmm campaign merge`), trusting nothing in it:
//! every field is parsed strictly, and [`CampaignResult::check`] holds the rules the rest of the
//! campaign code relies on. A refusal names the field as a path into the JSON (`outcomes[3].seed`)
//! and says what is wrong, in one line. Nothing here walks a seed range.

use super::outcome::SeedOutcome;
use super::result::{CampaignResult, Tally, DEFAULT_TIMEOUT_SECS, FORMAT};
use super::spec::{SeedRange, Shard};
use crate::inject::InjectSpec;
use mm_core::abi::find_scenario;
use mm_core::Variant;
use serde_json::Value;
use std::collections::BTreeSet;

/// Why a campaign result (read from JSON, or handed to a merge) was refused: the field, as a path
/// into the JSON (`outcomes[3].seed`), and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct JsonError {
    /// Where: `seeds.start`, `shards[1]`, `outcomes[3].violations.P2`, …
    pub field: String,
    /// What.
    pub problem: String,
}

impl JsonError {
    /// `problem` with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> JsonError {
        JsonError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error, its field inside `outer` (`outcomes[3]` + `seed`).
    pub fn within(self, outer: &str) -> JsonError {
        let field = match self.field.as_str() {
            "" => outer.to_string(),
            inner => format!("{outer}.{inner}"),
        };
        JsonError {
            field,
            problem: self.problem,
        }
    }
}

/// `v[key]` as text, `None` when missing or null.
pub(super) fn optional_text<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, JsonError> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(JsonError::new(key, "not text")),
    }
}

/// `v[key]` as seconds, finite and at least 0 (more than 0 if `positive`); `default` when missing.
pub(super) fn seconds(
    v: &Value,
    key: &str,
    default: f64,
    positive: bool,
) -> Result<f64, JsonError> {
    if v[key].is_null() {
        return Ok(default);
    }
    match v[key].as_f64() {
        Some(s) if s.is_finite() && (s > 0.0 || (s == 0.0 && !positive)) => Ok(s),
        _ if positive => Err(JsonError::new(key, "not a number of seconds above 0")),
        _ => Err(JsonError::new(key, "not a number of seconds of at least 0")),
    }
}

/// `v[key]` as a whole number.
fn whole(v: &Value, key: &str) -> Result<u64, JsonError> {
    v[key]
        .as_u64()
        .ok_or_else(|| JsonError::new(key, "missing or not a whole number from 0 to 2^64-1"))
}

impl CampaignResult {
    /// Checks what the rest of the campaign code relies on, which a result read from a file may
    /// break: a non-empty range; distinct shards of one count; each outcome's seed in the range,
    /// taken by the shards and there once; finite times; violation counts whose totals fit a
    /// `u64`. Returns the tally, counted once on the way.
    pub fn check(&self) -> Result<Tally, JsonError> {
        let SeedRange { start, end } = self.seeds;
        if start >= end {
            return Err(JsonError::new(
                "seeds",
                format!("start {start} is not below end {end} (a campaign runs at least one seed)"),
            ));
        }
        let mut indices = BTreeSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let field = || format!("shards[{i}]");
            if shard.count == 0 || shard.index >= shard.count {
                return Err(JsonError::new(
                    field(),
                    format!("{shard}: not K/N with K below N"),
                ));
            }
            if shard.count != self.shards[0].count {
                return Err(JsonError::new(
                    field(),
                    format!(
                        "{shard} is a shard of {}, but shards[0] ({}) is of {}: one campaign's \
                         shards share N",
                        shard.count, self.shards[0], self.shards[0].count
                    ),
                ));
            }
            if !indices.insert(shard.index) {
                return Err(JsonError::new(field(), format!("{shard} is listed twice")));
            }
        }
        for (i, o) in self.outcomes.iter().enumerate() {
            let field = |what: &str| format!("outcomes[{i}].{what}");
            if !(start..end).contains(&o.seed) {
                return Err(JsonError::new(
                    field("seed"),
                    format!("{} is outside the seeds {}", o.seed, self.seeds),
                ));
            }
            if let Some(first) = self.shards.first() {
                if !indices.contains(&(o.seed % first.count)) {
                    return Err(JsonError::new(
                        field("seed"),
                        format!(
                            "{} is in none of the shards ({})",
                            o.seed,
                            self.shards_text()
                        ),
                    ));
                }
            }
            if !(o.secs.is_finite() && o.secs >= 0.0) {
                return Err(JsonError::new(
                    field("secs"),
                    "not a number of seconds of at least 0",
                ));
            }
        }
        let mut seeds: Vec<u64> = self.outcomes.iter().map(|o| o.seed).collect();
        seeds.sort_unstable();
        if let Some(pair) = seeds.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(JsonError::new(
                "outcomes",
                format!("seed {} appears twice", pair[0]),
            ));
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return Err(JsonError::new(
                "timeout_secs",
                "not a number of seconds above 0",
            ));
        }
        if !(self.wall_secs.is_finite() && self.wall_secs >= 0.0) {
            return Err(JsonError::new(
                "wall_secs",
                "not a number of seconds of at least 0",
            ));
        }
        self.try_tally().map_err(|check| {
            JsonError::new(
                format!("outcomes.violations.{check}"),
                format!("the seeds' counts add up past {}", u64::MAX),
            )
        })
    }

    /// Reads [`CampaignResult::to_json`]'s output back, refusing any field that is missing,
    /// malformed or breaks [`CampaignResult::check`]; the tallies are recomputed from the
    /// outcomes, so the file's own totals are not trusted. Nothing here walks the seed range.
    pub fn from_json(v: &Value) -> Result<CampaignResult, JsonError> {
        if v["format"] != FORMAT {
            return Err(JsonError::new(
                "format",
                format!("not \"{FORMAT}\", so not a campaign result"),
            ));
        }
        let text = |key: &str| {
            v[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| JsonError::new(key, "missing or not text"))
        };
        let scenario = text("scenario")?;
        if find_scenario(&scenario).is_none() {
            return Err(JsonError::new(
                "scenario",
                format!("{scenario:?} is not a scenario of this vmm (vmm list)"),
            ));
        }
        let variant = text("variant")?;
        if Variant::from_name(&variant).is_none() {
            return Err(JsonError::new(
                "variant",
                format!("{variant:?} is not an ordering variant of this vmm (vmm list)"),
            ));
        }
        let inject = optional_text(v, "inject")?;
        if let Some(Err(e)) = inject.map(InjectSpec::parse) {
            return Err(JsonError::new("inject", e));
        }
        let range = &v["seeds"];
        let seeds = SeedRange {
            start: whole(range, "start").map_err(|e| e.within("seeds"))?,
            end: whole(range, "end").map_err(|e| e.within("seeds"))?,
        };
        let shards = v["shards"]
            .as_array()
            .ok_or_else(|| JsonError::new("shards", "missing or not a list"))?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("shards[{i}]");
                let text = s
                    .as_str()
                    .ok_or_else(|| JsonError::new(&field, "not text"))?;
                Shard::parse(text).map_err(|e| JsonError::new(&field, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = v["outcomes"]
            .as_array()
            .ok_or_else(|| JsonError::new("outcomes", "missing or not a list"))?
            .iter()
            .enumerate()
            .map(|(i, o)| {
                SeedOutcome::from_json(o).map_err(|e| e.within(&format!("outcomes[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let jobs = match &v["jobs"] {
            Value::Null => 0,
            jobs => jobs
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| JsonError::new("jobs", "not a whole number of children"))?,
        };
        let mut result = CampaignResult {
            scenario,
            variant,
            inject: inject.map(str::to_string),
            seeds,
            shards,
            jobs,
            timeout_secs: seconds(v, "timeout_secs", DEFAULT_TIMEOUT_SECS, true)?,
            wall_secs: seconds(v, "wall_secs", 0.0, false)?,
            outcomes,
        };
        // Before sorting, so `outcomes[i]` in a message is the file's i.
        result.check()?;
        result.outcomes.sort_by_key(|o| o.seed);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::outcome::{Kind, NCHECKS};
    use crate::campaign::result::tests::{outcome, result};
    use serde_json::json;

    /// An edit to a result's JSON.
    type Change = Box<dyn FnOnce(&mut Value)>;

    /// A valid result's JSON, shard 0/2 of seeds 0..4, with `change` made to it.
    fn crafted(change: impl FnOnce(&mut Value)) -> Result<CampaignResult, JsonError> {
        let r = result(
            "correct",
            Some(Shard { index: 0, count: 2 }),
            vec![
                outcome(0, Kind::Passed, [0; NCHECKS]),
                outcome(2, Kind::Violation, [1, 0, 0, 0, 0, 0, 0]),
            ],
        );
        let mut json = r.to_json("vmm");
        change(&mut json);
        CampaignResult::from_json(&json)
    }

    #[test]
    fn every_crafted_field_is_refused_naming_the_field() {
        let max = u64::MAX;
        let cases: Vec<(&str, Change, &str)> = vec![
            (
                "format",
                Box::new(|j| j["format"] = json!("x")),
                "not a campaign result",
            ),
            (
                "scenario",
                Box::new(|j| j["scenario"] = json!("nope")),
                "not a scenario",
            ),
            ("variant", Box::new(|j| j["variant"] = json!(7)), "not text"),
            (
                "inject",
                Box::new(|j| j["inject"] = json!("fail-alloc:x")),
                "",
            ),
            (
                "seeds",
                Box::new(|j| j["seeds"] = json!({ "start": 5, "end": 3 })),
                "start 5 is not below end 3",
            ),
            (
                "seeds",
                Box::new(|j| j["seeds"]["end"] = json!(0)),
                "start 0 is not below end 0",
            ),
            (
                "seeds.start",
                Box::new(|j| j["seeds"]["start"] = json!(-1)),
                "whole number",
            ),
            (
                "seeds.end",
                Box::new(|j| j["seeds"]["end"] = json!(1e30)),
                "whole number",
            ),
            (
                "shards[0]",
                Box::new(|j| j["shards"] = json!(["3/2"])),
                "K must be less than N",
            ),
            (
                "shards[0]",
                Box::new(|j| j["shards"] = json!(["0/0"])),
                "at least 1",
            ),
            (
                "shards[0]",
                Box::new(|j| j["shards"] = json!([2])),
                "not text",
            ),
            (
                "shards[1]",
                Box::new(|j| j["shards"] = json!(["0/2", "1/4"])),
                "share N",
            ),
            (
                "shards[1]",
                Box::new(|j| j["shards"] = json!(["0/2", "0/2"])),
                "listed twice",
            ),
            (
                "outcomes[1].seed",
                Box::new(|j| j["outcomes"][1]["seed"] = json!(4)),
                "4 is outside the seeds 0..4",
            ),
            (
                "outcomes[1].seed",
                Box::new(|j| j["outcomes"][1]["seed"] = json!(3)),
                "3 is in none of the shards (0/2)",
            ),
            (
                "outcomes",
                Box::new(|j| j["outcomes"][1]["seed"] = json!(0)),
                "seed 0 appears twice",
            ),
            (
                "outcomes[0].outcome",
                Box::new(|j| j["outcomes"][0]["outcome"] = json!("won")),
                "",
            ),
            (
                "outcomes[0].violations.P3",
                Box::new(|j| j["outcomes"][0]["violations"]["P3"] = json!(-2)),
                "whole number",
            ),
            (
                "outcomes[0].violations",
                Box::new(|j| j["outcomes"][0]["violations"] = json!([1])),
                "not an object",
            ),
            (
                "outcomes.violations.P1",
                Box::new(move |j| {
                    j["outcomes"][0]["violations"]["P1"] = json!(max);
                    j["outcomes"][1]["violations"]["P1"] = json!(max);
                }),
                "add up past 18446744073709551615",
            ),
            (
                "outcomes[1].secs",
                Box::new(|j| j["outcomes"][1]["secs"] = json!(-1.0)),
                "seconds",
            ),
            (
                "outcomes[0].schedule",
                Box::new(|j| j["outcomes"][0]["schedule"] = json!("0*x")),
                "",
            ),
            (
                "outcomes[0].detail",
                Box::new(|j| j["outcomes"][0]["detail"] = json!(1)),
                "text",
            ),
            (
                "outcomes",
                Box::new(|j| j["outcomes"] = json!({})),
                "not a list",
            ),
            ("jobs", Box::new(|j| j["jobs"] = json!(-3)), "whole number"),
            (
                "timeout_secs",
                Box::new(|j| j["timeout_secs"] = json!(0)),
                "above 0",
            ),
            (
                "wall_secs",
                Box::new(|j| j["wall_secs"] = json!("long")),
                "at least 0",
            ),
        ];
        for (field, change, problem) in cases {
            let err = crafted(change).expect_err(field);
            assert_eq!(err.field, field, "{err}");
            assert!(err.problem.contains(problem), "{field}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_result_over_every_u64_seed_is_read_and_counted_without_walking_the_range() {
        let r = crafted(|j| j["seeds"] = json!({ "start": 0, "end": u64::MAX })).unwrap();
        // The even seeds below 2^64 - 1, the last being 2^64 - 2.
        assert_eq!(r.expected(), u64::MAX / 2 + 1);
        let whole = crafted(|j| {
            j["seeds"] = json!({ "start": 0, "end": u64::MAX });
            j["shards"] = json!([]);
        })
        .unwrap();
        assert_eq!(whole.expected(), u64::MAX);
    }
}
