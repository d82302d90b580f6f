//! The submitter's side: a built-in stage run through the executor as `sluice __stage JOB.json`
//! on a machine that shares the workspace. Called from `job.rs` in place of `Stage::run`;
//! everything around the call (outputs removed first, then verified, hashed and stored) stays
//! there.

use super::job_file::{StageJob, JOB_FILE_FORMAT};
use super::STAGE_ARG;
use crate::error::StageError;
use crate::events::StageEventSink;
use crate::exec::{ProcessSpec, StageLog, Stdout};
use crate::hash::ContentHash;
use crate::job::{process_env, Job, JobMsg, JobProcesses, RunCtx};
use crate::pipeline::StageDef;
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings of sluice itself that a built-in stage reads from the environment (where the
/// training environment lives, which Python builds it, where ONNX Runtime is): the node's
/// sluice must see the submitter's, or it would run the stage differently from how it was
/// keyed. The stage's own processes still get only the clean environment in the job file.
const SLUICE_SETTINGS: &[&str] = &[
    "SLUICE_CACHE_DIR",
    "SLUICE_PYTHON",
    "XDG_CACHE_HOME",
    "ORT_DYLIB_PATH",
    "LD_LIBRARY_PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// Where a stage's job file goes: the job's directory, shared with the executor's other files
/// for it (`.sluice/slurm/<run-id>/<stage>/`).
pub(crate) fn job_file_path(ctx: &RunCtx, stage: &StageDef) -> PathBuf {
    ctx.ws
        .dir
        .join("slurm")
        .join(&ctx.run_id)
        .join(&stage.id.0)
        .join("stage.json")
}

/// The sluice binary to run on the node: this one, by its path (the node reads it from the
/// shared filesystem, like the workspace).
fn sluice_binary() -> String {
    std::fs::read_link("/proc/self/exe")
        .or_else(|_| std::env::current_exe())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sluice".into())
}

/// What a stage needs besides its definition; the same values `job.rs` builds the in-process
/// `StageContext` from.
pub(crate) struct Invocation<'a> {
    pub key: &'a ContentHash,
    pub scratch: &'a Path,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub events: &'a StageEventSink,
    pub log: &'a StageLog,
    pub tx: &'a Sender<JobMsg>,
}

/// Runs the built-in stage `stage` (of kind `kind`, version `version`) as `sluice __stage`. Its
/// `result` message's error (message and hint) is the stage's error, word for word as in-process;
/// an exit without one (the process killed, the binary missing) is reported as a plugin's is.
pub(crate) fn run_remotely(
    ctx: &RunCtx,
    job: &Job,
    stage: &StageDef,
    (kind, version): (&str, u32),
    inv: Invocation<'_>,
) -> Result<(), StageError> {
    let env = process_env(ctx, stage, job, inv.scratch);
    let description = StageJob {
        format: JOB_FILE_FORMAT,
        run_id: ctx.run_id.clone(),
        pipeline: ctx.pipeline.name.clone(),
        stage: stage.id.0.clone(),
        kind: kind.to_string(),
        kind_version: version,
        with: stage.with.clone(),
        inputs: inv.inputs,
        outputs: inv.outputs,
        params: stage.params.clone(),
        env: env.clone(),
        key: inv.key.to_string(),
        workspace: ctx.pipeline.root.clone(),
        scratch: inv.scratch.to_path_buf(),
        gpus: ctx.gpu_names(&job.gpus),
    };
    let path = job_file_path(ctx, stage);
    description
        .write(&path)
        .map_err(|e| StageError::new(crate::error::chain(&e)))?;
    let mut process_env = env;
    for k in SLUICE_SETTINGS {
        if let Ok(v) = std::env::var(k) {
            process_env.entry(k.to_string()).or_insert(v);
        }
    }
    let spec = ProcessSpec {
        program: sluice_binary(),
        args: vec![STAGE_ARG.into(), path.display().to_string()],
        env: process_env,
        cwd: ctx.pipeline.root.clone(),
        stdin: None,
        stdout: Stdout::Protocol,
    };
    // The stage log says where a built-in stage ran: on a cluster, not in this process.
    inv.log.line(&format!(
        "[{STAGE_ARG}] running as its own process: {}",
        path.display()
    ));
    let out = JobProcesses {
        ctx,
        job,
        events: inv.events,
        log: inv.log,
        tx: inv.tx,
    }
    .start(&spec)?;
    match (out.result, out.code, out.signal) {
        (Some(r), _, _) if !r.is_ok() => {
            Err(StageError::new(r.message.unwrap_or_else(|| r.status.clone())).hint_opt(r.hint))
        }
        (Some(_), Some(0), _) => Ok(()),
        (None, Some(0), _) => Err(format!(
            "`{} {STAGE_ARG}` exited 0 without its final `result` message",
            spec.program
        )
        .into()),
        (_, Some(code), _) => Err(format!("exited with code {code}").into()),
        (_, None, Some(sig)) => Err(format!("killed by signal {sig}").into()),
        (_, None, None) => Err("ended without an exit status".into()),
    }
}
