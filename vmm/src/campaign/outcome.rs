//! What became of one seed: read from the child's exit status and its `--report` JSON.

use super::read::{optional_text, seconds, JsonError};
use crate::guest_text::printable;
use crate::sched::Schedule;
use serde_json::{json, Value};
use std::fmt;

/// The probe checks, in the order of the per-check counts.
pub const CHECKS: [&str; NCHECKS] = ["P1", "P2", "P3", "P4", "P5", "P6", "P7"];

/// How many probe checks there are.
pub const NCHECKS: usize = 7;

/// How a seed's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The guest passed and the probes found nothing.
    Passed,
    /// The probes found violations of the ordering rule.
    Violation,
    /// The guest failed (abort, exception, triple fault, probe walk error, …).
    GuestFailure,
    /// The guest's watchdog stopped it, or the campaign killed the child.
    Timeout,
    /// The child could not be run or left no usable report.
    Error,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 5] = [
        Kind::Passed,
        Kind::Violation,
        Kind::GuestFailure,
        Kind::Timeout,
        Kind::Error,
    ];

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Passed => "passed",
            Kind::Violation => "violation",
            Kind::GuestFailure => "guest-failure",
            Kind::Timeout => "timeout",
            Kind::Error => "error",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One seed's result.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// How it ended.
    pub kind: Kind,
    /// Violations found, per check P1..P7.
    pub violations: [u64; NCHECKS],
    /// The failure in one line (the guest's, the probes', or why the child could not run).
    pub detail: Option<String>,
    /// Wall time of the child, in seconds.
    pub secs: f64,
    /// The interleaving the race scheduler chose, for race scenarios (`--schedule` replays it).
    pub schedule: Option<String>,
}

impl SeedOutcome {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed,
            "outcome": self.kind.name(),
            "violations": checks_json(&self.violations),
            "detail": self.detail,
            "secs": self.secs,
            "schedule": self.schedule,
        })
    }

    /// From [`SeedOutcome::to_json`]'s output; an error names the field (`seed`, `secs`, …).
    pub fn from_json(v: &Value) -> Result<SeedOutcome, JsonError> {
        let seed = v["seed"]
            .as_u64()
            .ok_or_else(|| JsonError::new("seed", "missing or not a whole number"))?;
        let kind = v["outcome"]
            .as_str()
            .and_then(Kind::from_name)
            .ok_or_else(|| {
                JsonError::new("outcome", format!("seed {seed} has no known outcome"))
            })?;
        let schedule = optional_text(v, "schedule")?;
        if let Some(Err(e)) = schedule.map(str::parse::<Schedule>) {
            return Err(JsonError::new("schedule", e.to_string()));
        }
        Ok(SeedOutcome {
            seed,
            kind,
            violations: checks_from_json_strictly(&v["violations"])
                .map_err(|e| e.within("violations"))?,
            // A merged file's text reaches the table: escaped like the guest's own.
            detail: optional_text(v, "detail")?.map(|d| printable(d.as_bytes())),
            secs: seconds(v, "secs", 0.0, false)?,
            schedule: schedule.map(str::to_string),
        })
    }
}

/// Per-check counts as `{ "P1": n, … }`.
pub fn checks_json(counts: &[u64; NCHECKS]) -> Value {
    Value::Object(
        CHECKS
            .iter()
            .zip(counts)
            .map(|(c, n)| (c.to_string(), json!(n)))
            .collect(),
    )
}

/// Reads `{ "P1": n, … }`, missing checks as 0 (for a child's report, which this vmm wrote; a
/// campaign file is read strictly, by [`checks_from_json_strictly`]).
pub fn checks_from_json(v: &Value) -> [u64; NCHECKS] {
    CHECKS.map(|c| v[c].as_u64().unwrap_or(0))
}

/// Reads `{ "P1": n, … }`, missing checks (or a missing object) as 0; a count that is not a whole
/// number is an error naming its check.
pub fn checks_from_json_strictly(v: &Value) -> Result<[u64; NCHECKS], JsonError> {
    if !(v.is_null() || v.is_object()) {
        return Err(JsonError::new("", "not an object of counts per check"));
    }
    let mut counts = [0; NCHECKS];
    for (count, check) in counts.iter_mut().zip(CHECKS) {
        *count = match &v[check] {
            Value::Null => 0,
            n => n
                .as_u64()
                .ok_or_else(|| JsonError::new(check, "not a whole number from 0 to 2^64-1"))?,
        };
    }
    Ok(counts)
}

/// How a walker caught a wrong order at run time, read from a failure's text: `None` for
/// failures of other kinds.
pub fn dynamic_catch(detail: &str) -> Option<&'static str> {
    if detail.starts_with("use-after-free") {
        Some("use-after-free")
    } else if detail.starts_with("race: deadlock") {
        Some("deadlock")
    } else {
        None
    }
}

/// How the child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// The campaign killed it after its timeout.
    Killed,
}

/// Classifies a child `vmm run` from how it exited, its report (or why there is none) and the last
/// line it wrote on stderr.
pub fn classify(
    exit: ChildExit,
    report: Result<Value, String>,
    stderr_tail: &str,
) -> (Kind, [u64; NCHECKS], Option<String>) {
    let code = match exit {
        ChildExit::Killed => {
            return (
                Kind::Timeout,
                [0; NCHECKS],
                Some("killed by the campaign's timeout".into()),
            )
        }
        ChildExit::Exited(code) => code,
    };
    let why = |what: String| {
        let tail = stderr_tail.trim();
        if tail.is_empty() {
            what
        } else {
            format!("{what}: {tail}")
        }
    };
    let report = match (code, report) {
        (Some(0 | 1), Ok(report)) => report,
        (Some(0 | 1), Err(e)) => return (Kind::Error, [0; NCHECKS], Some(why(e))),
        (Some(code), _) => return (Kind::Error, [0; NCHECKS], Some(why(format!("exit {code}")))),
        (None, _) => {
            return (
                Kind::Error,
                [0; NCHECKS],
                Some(why("killed by a signal".into())),
            )
        }
    };
    // The counts hold every violation; the list only the first `MAX_VIOLATIONS`.
    let violations = if report["violation_counts"].is_object() {
        checks_from_json(&report["violation_counts"])
    } else {
        let mut counts = [0; NCHECKS];
        for v in report["violations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
        {
            if let Some(i) = CHECKS.iter().position(|&c| v["check"] == c) {
                counts[i] += 1;
            }
        }
        counts
    };
    let failure = report["failure"].as_str().map(str::to_string);
    let passed = report["passed"].as_bool() == Some(true);
    let kind = if violations.iter().any(|&n| n > 0) {
        Kind::Violation
    } else if failure
        .as_deref()
        .is_some_and(|f| f.starts_with("watchdog"))
    {
        Kind::Timeout
    } else if failure.is_some() {
        Kind::GuestFailure
    } else if passed && code == Some(0) {
        Kind::Passed
    } else {
        return (
            Kind::Error,
            violations,
            Some(why(format!(
                "exit {code:?} but the report says passed={passed}"
            ))),
        );
    };
    // Only the first line: a triple fault appends a register dump.
    let failure = failure.map(|f| f.lines().next().unwrap_or_default().to_string());
    (kind, violations, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(passed: bool, failure: Option<&str>, checks: &[&str]) -> Result<Value, String> {
        let violations: Vec<Value> = checks.iter().map(|c| json!({ "check": c })).collect();
        Ok(json!({ "passed": passed, "failure": failure, "violations": violations }))
    }

    #[test]
    fn a_merged_outcomes_detail_is_escaped_before_the_table_shows_it() {
        let v = json!({ "seed": 3, "outcome": "guest-failure", "violations": {}, "secs": 1.0,
                        "detail": "boom\nvmm: campaign passed\x1b[2J" });
        let o = SeedOutcome::from_json(&v).unwrap();
        assert_eq!(
            o.detail.as_deref(),
            Some("boom\\nvmm: campaign passed\\u{1b}[2J")
        );
    }

    #[test]
    fn a_clean_report_with_exit_zero_is_a_pass() {
        let (kind, counts, detail) =
            classify(ChildExit::Exited(Some(0)), report(true, None, &[]), "");
        assert_eq!((kind, counts, detail), (Kind::Passed, [0; NCHECKS], None));
    }

    #[test]
    fn violations_are_counted_per_check() {
        let r = report(
            false,
            Some("the probes found 3 violation(s)"),
            &["P1", "P1", "P3"],
        );
        let (kind, counts, detail) = classify(ChildExit::Exited(Some(1)), r, "");
        assert_eq!(kind, Kind::Violation);
        assert_eq!(counts, [2, 0, 1, 0, 0, 0, 0]);
        assert_eq!(detail.as_deref(), Some("the probes found 3 violation(s)"));
    }

    #[test]
    fn the_watchdog_is_a_timeout_and_other_failures_are_guest_failures() {
        let watchdog = report(
            false,
            Some("watchdog: guest did not finish within 1.0 s"),
            &[],
        );
        assert_eq!(
            classify(ChildExit::Exited(Some(1)), watchdog, "").0,
            Kind::Timeout
        );
        let fault = report(false, Some("guest triple fault on vCPU 0\n  rip=…"), &[]);
        let (kind, _, detail) = classify(ChildExit::Exited(Some(1)), fault, "");
        assert_eq!(kind, Kind::GuestFailure);
        assert_eq!(detail.as_deref(), Some("guest triple fault on vCPU 0"));
        assert_eq!(
            classify(ChildExit::Killed, Err("no report".into()), "").0,
            Kind::Timeout
        );
    }

    #[test]
    fn a_child_without_a_usable_report_is_an_error_naming_why() {
        let (kind, _, detail) = classify(
            ChildExit::Exited(Some(2)),
            Err("no report".into()),
            "vmm: bad flag\n",
        );
        assert_eq!(kind, Kind::Error);
        assert_eq!(detail.as_deref(), Some("exit 2: vmm: bad flag"));
        let (kind, _, _) = classify(ChildExit::Exited(Some(1)), Err("no report".into()), "");
        assert_eq!(kind, Kind::Error);
        let (kind, _, _) = classify(ChildExit::Exited(Some(1)), report(true, None, &[]), "");
        assert_eq!(
            kind,
            Kind::Error,
            "exit 1 with a passing report is inconsistent"
        );
    }

    #[test]
    fn an_outcome_survives_a_json_round_trip() {
        let o = SeedOutcome {
            seed: 7,
            kind: Kind::Violation,
            violations: [1, 2, 3, 4, 0, 0, 0],
            detail: Some("x".into()),
            secs: 0.5,
            schedule: Some("0*3.1".into()),
        };
        assert_eq!(SeedOutcome::from_json(&o.to_json()), Ok(o));
    }
}
