//! One built-in stage run as a process of its own: `sluice __stage JOB.json`. An executor whose
//! processes run on another machine (`Executor::remote`, a cluster node) cannot call a built-in
//! stage in-process, so the submitting sluice writes a [`StageJob`] (everything `Stage::run`
//! needs) and runs the sluice binary itself on it. The node re-prepares `with:` through the
//! registry, runs the stage and speaks the plugin protocol on stdout (progress, log and metric
//! lines, then the final `result`), so the submitter reads it exactly as it reads a plugin. The
//! submitter still computes keys, verifies, hashes and stores outputs and writes the lock: only
//! the call to `Stage::run` moves.
//!
//! `job_file.rs` holds the description and its bounded read; `node.rs` the node's side (the
//! stage's context, its events as protocol lines, its child processes); `submit.rs` the
//! submitter's side, called from `job.rs`.

mod job_file;
mod node;
mod protocol_out;
pub(crate) mod submit;

pub use job_file::{JobFileError, StageJob, JOB_FILE_FORMAT, MAX_JOB_FILE_BYTES};
pub use node::run_on_node;

/// The hidden subcommand that runs one stage: `sluice __stage JOB.json`.
pub const STAGE_ARG: &str = "__stage";
