//! Executing external stages. The scheduler hands a ready stage's process to an `Executor`; today
//! that is `LocalExecutor` (child processes in their own process groups), and a cluster executor
//! can implement the same trait later.

mod child;
pub mod guard;
mod logfile;
mod process;
pub mod procfs;
pub mod protocol;
pub mod slurm;
mod spawn;

pub use child::{output, run_in_group, GroupIo};
pub use logfile::StageLog;
pub(crate) use process::resolve_program;
pub use process::{LocalExecutor, RemoteLocalExecutor};

use crate::cancel::CancelToken;
use crate::events::StageEventSink;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a process's stdout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Plain output, copied to the log.
    Log,
    /// JSON lines of the stage protocol (anything else is logged).
    Protocol,
}

/// A process to run for a stage.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub stdin: Option<Vec<u8>>,
    pub stdout: Stdout,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// Exit code, or `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The protocol's final `result` message, if one came.
    pub result: Option<protocol::ResultMsg>,
    /// Why the process ended without an exit status, when the executor knows better than
    /// "no status" (a Slurm job ended by its time limit, or cancelled by someone else).
    pub lost: Option<String>,
}

/// What an executor may call back into while a process runs.
pub struct ExecControl<'a> {
    /// Called with the process group id right after the spawn.
    pub on_spawn: &'a (dyn Fn(i32) + Sync),
    pub cancel: &'a CancelToken,
    pub events: &'a StageEventSink,
    pub log: &'a StageLog,
    /// What a cluster executor asks the cluster for; a local executor ignores it.
    pub job: JobFacts<'a>,
}

/// The stage a process belongs to, as a cluster executor needs it.
#[derive(Debug, Clone, Copy)]
pub struct JobFacts<'a> {
    pub stage: &'a str,
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub workspace: &'a std::path::Path,
    pub cpus: u32,
    pub gpus: u32,
    /// Bytes.
    pub memory: Option<u64>,
    pub timeout: Option<std::time::Duration>,
    pub slurm: &'a crate::pipeline::SlurmJob,
}

pub trait Executor: Send + Sync {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> std::io::Result<ExecOutcome>;

    /// Whether processes run on another machine (a cluster node) that shares the workspace's
    /// filesystem but not this process: built-in stages then run there as `sluice __stage`
    /// processes (`crate::onestage`) instead of in-process.
    fn remote(&self) -> bool {
        false
    }
}

/// Sends `signal` to a whole process group. A group that is already gone is fine.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid addresses the process group; no memory involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}
