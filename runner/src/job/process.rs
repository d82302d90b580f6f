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

/// Child processes of a built-in stage, registered with the dispatcher like a plugin's.
pub(super) struct JobProcesses<'a> {
    pub(super) ctx: &'a RunCtx,
    pub(super) job: &'a Job,
    pub(super) events: &'a StageEventSink,
    pub(super) log: &'a StageLog,
    pub(super) tx: &'a Sender<JobMsg>,
}

impl ProcessHost for JobProcesses<'_> {
    fn run(&self, spec: &ProcessSpec) -> std::io::Result<ExecOutcome> {
        execute(self.ctx, self.job, spec, self.events, self.log, self.tx)
    }
}

/// Runs one of the job's processes through the executor, its group in the job's `GroupSlot`
/// while it runs.
fn execute(
    ctx: &RunCtx,
    job: &Job,
    spec: &ProcessSpec,
    events: &StageEventSink,
    log: &StageLog,
    tx: &Sender<JobMsg>,
) -> std::io::Result<ExecOutcome> {
    let stage = &ctx.pipeline.stages[job.idx];
    let timed = stage.timeout.is_some();
    let on_spawn = |pgid: i32| spawned(job, timed, tx, pgid);
    let ctl = ExecControl {
        on_spawn: &on_spawn,
        cancel: &job.cancel,
        events,
        log,
        job: job_facts(ctx, stage),
    };
    tracing::debug!(stage = %stage.id, program = %spec.program, args = ?spec.args, "spawning");
    let outcome = ctx.executor.execute(spec, &ctl);
    job.group.set(0);
    outcome
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

/// Runs a stage's process to its end and reads its exit (and, for a plugin, its final `result`
/// message) as success or failure. A plugin's `hint` goes with its failure, shown apart from the
/// message as every stage's hint is.
pub(super) fn run_process(
    ctx: &RunCtx,
    job: &Job,
    spec: &ProcessSpec,
    events: &StageEventSink,
    log: &StageLog,
    tx: &Sender<JobMsg>,
    protocol: bool,
) -> Result<(), StageError> {
    let out = start_process(ctx, job, spec, events, log, tx)?;
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
            return Err(StageError::new(format!("exited with code {code}{detail}")).hint_opt(hint));
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
                        events.metric(&k, x, None);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs a stage's process through the executor, registered with the dispatcher (so that
/// cancellation, timeouts and Ctrl-C reach it), until it ends.
pub(crate) fn start_process(
    ctx: &RunCtx,
    job: &Job,
    spec: &ProcessSpec,
    events: &StageEventSink,
    log: &StageLog,
    tx: &Sender<JobMsg>,
) -> Result<ExecOutcome, String> {
    execute(ctx, job, spec, events, log, tx).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("cannot start `{}`: command not found", spec.program)
        } else {
            format!("cannot start `{}`: {e}", spec.program)
        }
    })
}
