//! Campaigns: one scenario over many seeds, each seed a `vmm run` child with its own report, then
//! a results table, the first failing seed with the command that reproduces it, and JSON.
//!
//! A campaign splits into shards (`seed % N == K`) that can run on separate machines; their JSON
//! files merge into the result of the whole campaign.
//!
//! - [`spec`]: the seed range, the shard, and the cursor that streams the seeds a shard takes.
//! - [`task_index`](mod@task_index): the job engine's task index, K of `--shard auto/N`.
//! - [`outcome`]: how one seed ended, read from the child's exit status and report.
//! - [`result`]: every seed's outcome, the tally, the JSON form.
//! - [`read`]: a result read back from JSON, every field checked.
//! - [`table`]: the results table and the reproduction command.
//! - [`merge`](mod@merge): shards' results into the whole campaign's.
//! - [`runner`]: the children, the worker pool and the progress line.

pub mod merge;
pub mod outcome;
pub mod read;
pub mod result;
pub mod runner;
pub mod spec;
pub mod table;
pub mod task_index;

pub use merge::{merge, MergeError};
pub use outcome::{Kind, SeedOutcome};
pub use read::JsonError;
pub use result::{CampaignResult, Tally};
pub use runner::{run_campaign, CampaignConfig, CampaignError};
pub use spec::{SeedCursor, SeedRange, Seeds, Shard, ShardArg};
