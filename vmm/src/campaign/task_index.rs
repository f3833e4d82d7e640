//! The job engine's task index, for `--shard auto/N`: one identical command line in every task of
//! a Kubernetes Indexed Job, a Slurm job array or a GNU parallel run, each task taking shard K of
//! N from the index its engine gave it (docs/shards.md).
//!
//! The first variable set (and not empty) decides, in this order:
//!
//! | variable | engine | K |
//! | --- | --- | --- |
//! | `JOB_COMPLETION_INDEX` | Kubernetes Indexed Job (`completionMode: Indexed`) | the index, 0-based |
//! | `SLURM_ARRAY_TASK_ID` | Slurm job array (`--array=0-3`, or `1-4`, …) | the id minus `SLURM_ARRAY_TASK_MIN` (0 when unset) |
//! | `PARALLEL_SEQ` | GNU parallel | the job's sequence number minus 1 (it counts from 1) |

use std::fmt;

/// Kubernetes Indexed Jobs: the pod's completion index, 0-based.
pub const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";
/// Slurm job arrays: this task's array id.
pub const SLURM_ARRAY_TASK_ID: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm job arrays: the lowest id of the array.
pub const SLURM_ARRAY_TASK_MIN: &str = "SLURM_ARRAY_TASK_MIN";
/// GNU parallel: the job's sequence number, 1-based.
pub const PARALLEL_SEQ: &str = "PARALLEL_SEQ";

/// A 0-based task index and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskIndex {
    /// K.
    pub index: u64,
    /// The variables it was computed from, as `NAME=value` (for messages).
    pub source: String,
}

impl fmt::Display for TaskIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task index {} from {}", self.index, self.source)
    }
}

/// Reads the task index through `env`, a variable lookup (`std::env::var(name).ok()` in `vmm`).
pub fn task_index(env: impl Fn(&str) -> Option<String>) -> Result<TaskIndex, String> {
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let number = |name: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{name}={value:?} is not a task index (a whole number)"))
    };
    if let Some(value) = var(JOB_COMPLETION_INDEX) {
        return Ok(TaskIndex {
            index: number(JOB_COMPLETION_INDEX, &value)?,
            source: format!("{JOB_COMPLETION_INDEX}={value}"),
        });
    }
    if let Some(value) = var(SLURM_ARRAY_TASK_ID) {
        let id = number(SLURM_ARRAY_TASK_ID, &value)?;
        let Some(min) = var(SLURM_ARRAY_TASK_MIN) else {
            return Ok(TaskIndex {
                index: id,
                source: format!("{SLURM_ARRAY_TASK_ID}={id}"),
            });
        };
        let min = number(SLURM_ARRAY_TASK_MIN, &min)?;
        let index = id.checked_sub(min).ok_or_else(|| {
            format!("{SLURM_ARRAY_TASK_ID}={id} is below {SLURM_ARRAY_TASK_MIN}={min}")
        })?;
        return Ok(TaskIndex {
            index,
            source: format!("{SLURM_ARRAY_TASK_ID}={id} - {SLURM_ARRAY_TASK_MIN}={min}"),
        });
    }
    if let Some(value) = var(PARALLEL_SEQ) {
        let seq = number(PARALLEL_SEQ, &value)?;
        let index = seq
            .checked_sub(1)
            .ok_or_else(|| format!("{PARALLEL_SEQ}=0, but GNU parallel counts jobs from 1"))?;
        return Ok(TaskIndex {
            index,
            source: format!("{PARALLEL_SEQ}={seq} - 1"),
        });
    }
    Err(format!(
        "no task index in the environment (set {JOB_COMPLETION_INDEX}: Kubernetes Indexed Job, \
         {SLURM_ARRAY_TASK_ID}: Slurm job array, or {PARALLEL_SEQ}: GNU parallel)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup in `vars`, as the process environment would answer.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn index(vars: &[(&str, &str)]) -> Result<u64, String> {
        task_index(env(vars)).map(|t| t.index)
    }

    #[test]
    fn a_kubernetes_completion_index_is_k_as_it_is() {
        assert_eq!(index(&[(JOB_COMPLETION_INDEX, "0")]), Ok(0));
        assert_eq!(index(&[(JOB_COMPLETION_INDEX, "3")]), Ok(3));
    }

    #[test]
    fn a_slurm_array_id_counts_from_the_arrays_lowest_id() {
        assert_eq!(index(&[(SLURM_ARRAY_TASK_ID, "2")]), Ok(2));
        let from_one = [(SLURM_ARRAY_TASK_ID, "4"), (SLURM_ARRAY_TASK_MIN, "1")];
        assert_eq!(index(&from_one), Ok(3));
        let below = [(SLURM_ARRAY_TASK_ID, "0"), (SLURM_ARRAY_TASK_MIN, "1")];
        assert!(index(&below).unwrap_err().contains("below"));
    }

    #[test]
    fn gnu_parallels_sequence_number_counts_from_one() {
        assert_eq!(index(&[(PARALLEL_SEQ, "1")]), Ok(0));
        assert_eq!(index(&[(PARALLEL_SEQ, "4")]), Ok(3));
        assert!(index(&[(PARALLEL_SEQ, "0")])
            .unwrap_err()
            .contains("counts jobs from 1"));
    }

    #[test]
    fn the_first_engine_in_order_decides() {
        let all = [
            (PARALLEL_SEQ, "1"),
            (SLURM_ARRAY_TASK_ID, "5"),
            (JOB_COMPLETION_INDEX, "2"),
        ];
        assert_eq!(index(&all), Ok(2));
        assert_eq!(index(&all[..2]), Ok(5));
        let t = task_index(env(&all[..1])).unwrap();
        assert_eq!(t.to_string(), "task index 0 from PARALLEL_SEQ=1 - 1");
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        assert_eq!(
            index(&[(JOB_COMPLETION_INDEX, ""), (PARALLEL_SEQ, "2")]),
            Ok(1)
        );
    }

    #[test]
    fn no_index_or_a_malformed_one_is_an_error_naming_the_variables() {
        let none = index(&[]).unwrap_err();
        for name in [JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, PARALLEL_SEQ] {
            assert!(none.contains(name), "{none}");
        }
        for bad in ["x", "-1", "1.5", "0x2"] {
            let e = index(&[(JOB_COMPLETION_INDEX, bad)]).unwrap_err();
            assert!(e.contains("is not a task index"), "{bad}: {e}");
        }
        let e = index(&[(SLURM_ARRAY_TASK_ID, "1"), (SLURM_ARRAY_TASK_MIN, "one")]).unwrap_err();
        assert!(e.starts_with(SLURM_ARRAY_TASK_MIN), "{e}");
    }
}
