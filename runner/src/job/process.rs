//! How a job runs a stage's processes: the environment they get, the executor call with the
//! dispatcher told what it needs (`GroupSlot`, `spawned`), and the exit status read as the
//! stage's success or failure.

use super::{Job, JobMsg, RunCtx};
use crate::error::StageError;
use crate::events::StageEventSink;
use crate::exec::{ExecControl, ExecOutcome, ProcessSpec, StageLog};
use crate::pipeline::StageDef;
use crate::stage::ProcessHost;
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// The process group a job's stage runs in right now (none: 0), written by the worker as it
/// spawns and read by the dispatcher when it stops the stage. Shared state rather than a message
/// per stage: every message wakes the dispatcher, and a cold run of small stages is CPU-bound.
///
/// A stop cannot fall between the two: the worker stores the group, then reads the stage's
/// `CancelToken`; the dispatcher cancels the token, then reads the group (all `SeqCst`), so at
/// least one of them sees the other's write. A dispatcher that sees the group signals it; a
/// worker that sees the token signals its own group (`exec::process`) and tells the dispatcher
/// (`spawned`), which then escalates as it would have.
#[derive(Clone, Default)]
pub(crate) struct GroupSlot(Arc<AtomicI32>);

impl GroupSlot {
    pub(crate) fn set(&self, pgid: i32) {
        self.0.store(pgid, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> Option<i32> {
        let pgid = self.0.load(Ordering::SeqCst);
        (pgid > 0).then_some(pgid)
    }
}

/// The environment variables passed through to external stages unless a stage declares more.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "TERM",
    "TZ",
    "TMPDIR",
];

/// A job's processes (a `run:` stage's shell, a plugin, a built-in stage's children, a stage
/// submitted to run elsewhere), each registered with the dispatcher while it runs.
pub(crate) struct JobProcesses<'a> {
    pub(crate) ctx: &'a RunCtx,
    pub(crate) job: &'a Job,
    pub(crate) events: &'a StageEventSink,
    pub(crate) log: &'a StageLog,
    pub(crate) tx: &'a Sender<JobMsg>,
}

impl ProcessHost for JobProcesses<'_> {
    fn run(&self, spec: &ProcessSpec) -> std::io::Result<ExecOutcome> {
        self.execute(spec)
    }
}

impl JobProcesses<'_> {
    /// Runs one of the job's processes through the executor, its group in the job's
    /// `GroupSlot` while it runs.
    fn execute(&self, spec: &ProcessSpec) -> std::io::Result<ExecOutcome> {
        let (ctx, job) = (self.ctx, self.job);
        let stage = &ctx.pipeline.stages[job.idx];
        let timed = stage.timeout.is_some();
        let on_spawn = |pgid: i32| spawned(job, timed, self.tx, pgid);
        let ctl = ExecControl {
            on_spawn: &on_spawn,
            cancel: &job.cancel,
            events: self.events,
            log: self.log,
            job: job_facts(ctx, stage),
        };
        tracing::debug!(stage = %stage.id, program = %spec.program, args = ?spec.args, "spawning");
        let outcome = ctx.executor.execute(spec, &ctl);
        job.group.set(0);
        outcome
    }

    /// Runs a stage's process through the executor until it ends; a process that cannot start
    /// is said so in words.
    pub(crate) fn start(&self, spec: &ProcessSpec) -> Result<ExecOutcome, String> {
        self.execute(spec).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("cannot start `{}`: command not found", spec.program)
            } else {
                format!("cannot start `{}`: {e}", spec.program)
            }
        })
    }

    /// Runs a stage's process to its end and reads its exit (and, for a plugin, its final
    /// `result` message) as success or failure. A plugin's `hint` goes with its failure, shown
    /// apart from the message as every stage's hint is.
    pub(super) fn run_checked(&self, spec: &ProcessSpec, protocol: bool) -> Result<(), StageError> {
        let out = self.start(spec)?;
        let hint = out.result.as_ref().and_then(|r| r.hint.clone());
        match (out.code, out.signal) {
            (Some(0), _) => {}
            (Some(code), _) => {
                let detail = out
                    .result
                    .as_ref()
                    .and_then(|r| r.message.clone())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                return Err(
                    StageError::new(format!("exited with code {code}{detail}")).hint_opt(hint)
                );
            }
            (None, Some(sig)) => return Err(format!("killed by signal {sig}").into()),
            (None, None) => {
                return Err(out
                    .lost
                    .unwrap_or_else(|| "ended without an exit status".into())
                    .into())
            }
        }
        if protocol {
            match out.result {
                None => {
                    return Err(
                        "the plugin exited 0 without sending its final `result` message (see docs/plugins.md)".into(),
                    )
                }
                Some(r) if !r.is_ok() => {
                    return Err(StageError::new(format!(
                        "the plugin reported an error: {}",
                        r.message.unwrap_or_else(|| r.status.clone())
                    ))
                    .hint_opt(hint))
                }
                Some(r) => {
                    for (k, v) in r.metrics {
                        if let Some(x) = v.as_f64() {
                            self.events.metric(&k, x, None);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A stage's process exists (`pgid` 0: one with no local group, such as a Slurm job, is seen
/// running). The dispatcher is told only where it has something to do: start a timeout's clock,
/// or stop a group spawned after the stage was cancelled (see `GroupSlot`).
fn spawned(job: &Job, timed: bool, tx: &Sender<JobMsg>, pgid: i32) {
    job.group.set(pgid);
    if timed || job.cancel.is_cancelled() {
        let _ = tx.send(JobMsg::Executing { idx: job.idx });
    }
}

fn job_facts<'a>(ctx: &'a RunCtx, stage: &'a StageDef) -> crate::exec::JobFacts<'a> {
    crate::exec::JobFacts {
        stage: &stage.id.0,
        pipeline: &ctx.pipeline.name,
        run_id: &ctx.run_id,
        workspace: &ctx.pipeline.root,
        cpus: stage.cpus,
        gpus: stage.gpus,
        memory: stage.memory,
        timeout: stage.timeout,
        slurm: &stage.slurm,
    }
}

pub(crate) fn process_env(
    ctx: &RunCtx,
    stage: &StageDef,
    job: &Job,
    scratch: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = ENV_ALLOWLIST
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.insert("SLUICE_STAGE".into(), stage.id.0.clone());
    env.insert(
        "SLUICE_WORKSPACE".into(),
        ctx.pipeline.root.display().to_string(),
    );
    env.insert("SLUICE_SCRATCH".into(), scratch.display().to_string());
    // Stages without GPUs see none, so undeclared GPU use cannot collide with a GPU stage.
    env.insert(
        "CUDA_VISIBLE_DEVICES".into(),
        ctx.gpu_names(&job.gpus).join(","),
    );
    for (k, v) in &stage.env {
        env.insert(k.clone(), v.clone());
    }
    env
}
