//! One stage's turn in a run, on a worker thread: fingerprint, decide, then restore or execute,
//! check and store. Reports back to the dispatcher, which alone owns the run's state.

use crate::cache::{
    CacheStore, Inline, OutputRecord, RestoreError, StageRecord, INLINE_MAX, RECORD_FORMAT,
};
use crate::cancel::CancelToken;
use crate::error::StageError;
use crate::events::{Event, StageEventSink};
use crate::exec::protocol::{Devices, Request, PROTOCOL_VERSION};
use crate::exec::{Executor, ProcessSpec, StageLog, Stdout};
use crate::fingerprint::{Fingerprint, Overlay};
use crate::hash::{metadata_snapshot, ContentHash, Hasher};
use crate::lock::LockFile;
use crate::paths::output_site;
use crate::pipeline::{Pipeline, StageDef, StageKind};
use crate::plan::{Checker, Decision, Reasons, RunReason};
use crate::stage::{StageContext, StageRegistry};
use crate::workspace::Workspace;
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

mod process;

pub use process::ENV_ALLOWLIST;
pub(crate) use process::{process_env, GroupSlot, JobProcesses};

/// Shared, read-only context for every job of a run.
pub(crate) struct RunCtx {
    pub pipeline: Arc<Pipeline>,
    pub ws: Workspace,
    pub hasher: Arc<Hasher>,
    pub store: Arc<dyn CacheStore>,
    /// The remote cache behind `store`, when there is one (for its counts).
    pub remote: Option<Arc<crate::cache::RemoteStore>>,
    pub registry: StageRegistry,
    pub executor: Arc<dyn Executor>,
    /// The lock as it was when the run started; a stage's own entry only changes after it ends.
    pub lock: Arc<LockFile>,
    pub events: Sender<Event>,
    pub run_id: String,
    /// GPU identifiers as `CUDA_VISIBLE_DEVICES` names them; jobs hold positions in this list.
    pub gpu_names: Vec<String>,
}

/// Sent from a job to the dispatcher.
pub(crate) enum JobMsg {
    /// The stage started executing (see `spawned` for when this is sent); the dispatcher finds
    /// its process group, if any, in the job's `GroupSlot`.
    Executing { idx: usize },
    /// The run may be over, or a deadline may have moved: the dispatch loop looks again.
    Wake,
}

/// What became of a stage, as the job saw it.
pub(crate) enum JobResult {
    UpToDate(Completed),
    Restored(Completed),
    /// Ran and succeeded; `cached` is false when its inputs changed while it ran.
    Ran(Completed, bool),
    Failed {
        error: StageError,
        log_tail: Vec<String>,
    },
    Cancelled {
        log_tail: Vec<String>,
    },
}

/// A successful stage's fingerprint and outputs, for the lock file.
pub(crate) struct Completed {
    pub fp: Fingerprint,
    pub key: ContentHash,
    pub outputs: BTreeMap<String, OutputRecord>,
}

pub(crate) struct Job {
    pub idx: usize,
    /// Positions in `RunCtx::gpu_names`.
    pub gpus: Vec<u32>,
    pub forced: bool,
    pub cancel: CancelToken,
    pub group: GroupSlot,
    /// Set when the stage needs more GPUs than exist: it fails only if it must execute, so an
    /// up-to-date or cached result is still used.
    pub gpu_shortfall: Option<String>,
}

impl RunCtx {
    pub(crate) fn gpu_names(&self, positions: &[u32]) -> Vec<String> {
        positions
            .iter()
            .filter_map(|&p| self.gpu_names.get(p as usize).cloned())
            .collect()
    }
}

/// The cheap check done inline by the dispatcher before any worker is involved: `Some` when the
/// stage is up to date. Anything else (including errors) is left to a full job, which reports it.
/// `known` holds input hashes this check may take as they are: files the same pass has just
/// hashed (see `scheduler::settle_up_to_date`).
pub(crate) fn check_up_to_date(ctx: &RunCtx, idx: usize, known: &Overlay) -> Option<Completed> {
    let stage = &ctx.pipeline.stages[idx];
    let root = &ctx.pipeline.root;
    let fp = Fingerprint::compute(stage, root, &ctx.hasher, known).ok()?;
    let key = fp.key();
    // Local only: a remote lookup here would put a network round trip per stage on the
    // dispatcher's thread; a stage the remote has goes to a worker, which asks it.
    let local = crate::cache::LocalOnly(ctx.store.as_ref());
    let checker = Checker {
        root,
        hasher: &ctx.hasher,
        store: &local,
    };
    match checker.decide(stage, &fp, &key, ctx.lock.stages.get(&stage.id.0)) {
        Decision::UpToDate(outputs) => Some(Completed { fp, key, outputs }),
        _ => None,
    }
}

/// Runs `job` on the worker numbered `slot` (each worker runs one job at a time, and its slot
/// names the scratch directory its local stages share; see `prepare`).
pub(crate) fn run_job(ctx: &RunCtx, job: &Job, slot: usize, tx: &Sender<JobMsg>) -> JobResult {
    let stage = &ctx.pipeline.stages[job.idx];
    let root = &ctx.pipeline.root;
    let fail = |message: String| failed(message.into(), None);
    let fp = match Fingerprint::compute(stage, root, &ctx.hasher, &Overlay::new()) {
        Ok(fp) => fp,
        Err(e) => return fail(crate::error::chain(&e)),
    };
    let key = fp.key();
    tracing::debug!(stage = %stage.id, key = %key.short(), "fingerprint computed");
    let decision = if job.forced {
        Decision::Run(RunReason::Forced.into())
    } else {
        Checker {
            root,
            hasher: &ctx.hasher,
            store: ctx.store.as_ref(),
        }
        .decide(stage, &fp, &key, ctx.lock.stages.get(&stage.id.0))
    };
    tracing::debug!(stage = %stage.id, decision = decision.label(), "decided");
    let reason = match decision {
        Decision::UpToDate(outputs) => return JobResult::UpToDate(Completed { fp, key, outputs }),
        Decision::Restore(record) => {
            match ctx
                .store
                .restore_cancellable(root, &record, &ctx.hasher, &job.cancel)
            {
                Ok(()) => match after_restore(ctx, stage) {
                    Ok(()) => {
                        if ctx.store.is_remote(&key) {
                            if let Some(remote) = &ctx.remote {
                                remote.count_restored();
                            }
                            let _ = ctx.events.send(Event::StageLog {
                                stage: stage.id.0.clone(),
                                level: "info".into(),
                                message: crate::events::RESTORED_FROM_REMOTE.into(),
                            });
                        }
                        return JobResult::Restored(Completed {
                            fp,
                            key,
                            outputs: record.outputs,
                        });
                    }
                    Err(why) => RunReason::RestoreRefused(why).into(),
                },
                Err(RestoreError::Corrupt(why)) => {
                    ctx.store.forget(&key);
                    let _ = ctx.events.send(Event::Warning {
                        stage: Some(stage.id.0.clone()),
                        message: format!("dropped a corrupt cache entry ({why}); running instead"),
                    });
                    RunReason::CacheCorrupt(why).into()
                }
                // The remote failed (and said so once): the stage runs instead.
                Err(RestoreError::Unavailable(why)) => RunReason::RestoreRefused(why).into(),
                Err(e) => return fail(crate::error::chain(&e)),
            }
        }
        Decision::Run(reason) => reason,
    };
    if let Some(why) = &job.gpu_shortfall {
        return fail(why.clone());
    }
    execute(ctx, job, slot, stage, fp, key, reason, tx)
}

/// A built-in stage's `after_restore`: effects beyond its outputs brought in line with them.
fn after_restore(ctx: &RunCtx, stage: &StageDef) -> Result<(), String> {
    let StageKind::Builtin { name: kind, .. } = &stage.kind else {
        return Ok(());
    };
    let Some(imp) = ctx.registry.get(kind) else {
        return Ok(());
    };
    let root = &ctx.pipeline.root;
    let outputs: BTreeMap<String, PathBuf> = stage
        .outputs
        .iter()
        .map(|o| (o.name.clone(), o.path.to_abs(root)))
        .collect();
    let restored = crate::stage::Restored {
        workspace: root,
        outputs: &outputs,
        with: &stage.with,
    };
    if let Some(line) = imp.after_restore(&restored)? {
        StageEventSink::new(&stage.id.0, ctx.events.clone()).log("notice", line);
    }
    Ok(())
}

/// Runs a stage that has to execute: prepares its log, scratch and outputs, runs it, then
/// records and caches what it wrote.
#[allow(clippy::too_many_arguments)]
fn execute(
    ctx: &RunCtx,
    job: &Job,
    slot: usize,
    stage: &StageDef,
    fp: Fingerprint,
    key: ContentHash,
    reason: Reasons,
    tx: &Sender<JobMsg>,
) -> JobResult {
    let name = &stage.id.0;
    let header = format!("[sluice] running `{name}` ({reason})");
    let prepared = match prepare(ctx, stage, slot, header) {
        Ok(p) => p,
        Err(message) => return failed(message.into(), None),
    };
    let Prepared {
        log,
        scratch,
        before,
    } = &prepared;
    let _ = ctx.events.send(Event::StageStarted {
        stage: name.clone(),
        reason: reason.to_string(),
        gpus: ctx.gpu_names(&job.gpus),
        log: log.path().display().to_string(),
    });
    let events = StageEventSink::new(name, ctx.events.clone());
    let outcome = invoke(ctx, job, stage, &key, scratch, &events, log, tx);
    if let Some(reason) = job.cancel.reason() {
        drop_outputs(ctx, stage);
        log.note(&format!(
            "[sluice] stopped: {}; partial outputs removed",
            reason.describe(stage.timeout)
        ));
        log.keep();
        return JobResult::Cancelled {
            log_tail: log.tail(),
        };
    }
    if let Err(error) = outcome {
        drop_outputs(ctx, stage);
        // The hint is not logged: the log's tail is shown under the failure, which has it.
        log.note(&format!("[sluice] failed: {}", error.message));
        return failed(error, Some(log));
    }
    let outputs = match hash_outputs(ctx, stage, log) {
        Ok(o) => o,
        Err(error) => {
            drop_outputs(ctx, stage);
            return failed(error, Some(log));
        }
    };
    // Scratch is emptied when its worker's next stage starts, and goes with the run's own
    // directory at the end: deleting one per stage made ext4's inode allocation slower.
    let completed = Completed { fp, key, outputs };
    if inputs_changed(stage, before, log, &events, &ctx.pipeline.root) {
        return JobResult::Ran(completed, false);
    }
    store(ctx, stage, completed, &events)
}

/// A failed stage; one that got as far as having a log always leaves its file.
fn failed(error: StageError, log: Option<&StageLog>) -> JobResult {
    if let Some(log) = log {
        log.keep();
    }
    JobResult::Failed {
        error,
        log_tail: log.map(|l| l.tail()).unwrap_or_default(),
    }
}

/// What `metadata_snapshot` records of one input, compared before and after the stage runs.
type InputSnapshot = Vec<(PathBuf, u64, i128, u64)>;

/// What a stage gets before it starts: its log (made when first written), an empty scratch
/// directory, and no previous run's outputs; and what its inputs looked like, to notice edits
/// made while it runs.
struct Prepared {
    log: StageLog,
    scratch: PathBuf,
    before: Vec<InputSnapshot>,
}

fn prepare(
    ctx: &RunCtx,
    stage: &StageDef,
    slot: usize,
    header: String,
) -> Result<Prepared, String> {
    let root = &ctx.pipeline.root;
    let name = &stage.id.0;
    let mut sites = Vec::with_capacity(stage.outputs.len());
    for o in &stage.outputs {
        let Some(site) = output_site(root, &o.path) else {
            return Err(format!(
                "output `{}` (`{}`) resolves outside the workspace through a symbolic link",
                o.name, o.path
            ));
        };
        sites.push(site);
    }
    let log = StageLog::new(
        &ctx.ws.logs_dir(&ctx.run_id).join(format!("{name}.log")),
        header,
    );
    // Stale outputs go first: a stage must never find (or leave) a previous run's files.
    for (o, site) in stage.outputs.iter().zip(sites) {
        let abs = o.path.to_abs(root);
        if site.occupied {
            crate::atomic::remove_path(&abs)
                .map_err(|e| format!("cannot remove old output `{}`: {e}", o.path))?;
        }
        // Most outputs share a directory that already exists (the containment check has often
        // just gone through it): a `stat` answers that without the `mkdir` that would lock the
        // directory the running stages are creating files in.
        if site.dir_exists {
            continue;
        }
        if let Some(parent) = abs.parent().filter(|p| !p.is_dir()) {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    let scratch = if ctx.executor.remote() && !stage.slurm.local {
        // On a cluster node a cancelled job may outlive its worker's wait for it: a directory
        // of its own means a later stage never shares it.
        let dir = ctx.ws.scratch_dir(&ctx.run_id, name);
        let _ = crate::atomic::remove_path(&dir);
        std::fs::create_dir_all(&dir).map(|()| dir)
    } else {
        ctx.ws.scratch_slot(&ctx.run_id, slot)
    }
    .map_err(|e| format!("cannot prepare the scratch directory: {e}"))?;
    Ok(Prepared {
        log,
        scratch,
        before: input_snapshots(stage, root),
    })
}

fn input_snapshots(stage: &StageDef, root: &std::path::Path) -> Vec<InputSnapshot> {
    stage
        .inputs
        .iter()
        .map(|i| metadata_snapshot(&i.path.to_abs(root)))
        .collect()
}

/// Runs the stage itself, by its kind: in process, as a shell command, or as a plugin.
#[allow(clippy::too_many_arguments)]
fn invoke(
    ctx: &RunCtx,
    job: &Job,
    stage: &StageDef,
    key: &ContentHash,
    scratch: &std::path::Path,
    events: &StageEventSink,
    log: &StageLog,
    tx: &Sender<JobMsg>,
) -> Result<(), StageError> {
    let root = &ctx.pipeline.root;
    let name = &stage.id.0;
    let processes = JobProcesses {
        ctx,
        job,
        events,
        log,
        tx,
    };
    let inputs: BTreeMap<String, PathBuf> = stage
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.path.to_abs(root)))
        .collect();
    let outputs: BTreeMap<String, PathBuf> = stage
        .outputs
        .iter()
        .map(|o| (o.name.clone(), o.path.to_abs(root)))
        .collect();
    match &stage.kind {
        StageKind::Builtin {
            name: kind,
            version,
        } if runs_remotely(ctx, stage) => crate::onestage::submit::run_remotely(
            ctx,
            job,
            stage,
            (kind, *version),
            crate::onestage::submit::Invocation {
                key,
                scratch,
                inputs,
                outputs,
                events,
                log,
                tx,
            },
        ),
        StageKind::Builtin { name: kind, .. } => {
            if stage.timeout.is_some() {
                let _ = tx.send(JobMsg::Executing { idx: job.idx });
            }
            let Some(imp) = ctx.registry.get(kind) else {
                return Err(format!("built-in stage kind `{kind}` is not in this build").into());
            };
            // Caught here as well as around the whole job, so that a panicking stage's partial
            // outputs are removed and its log says what happened, like any failure.
            crate::panics::catch(|| {
                imp.run(&StageContext {
                    key: key.to_string(),
                    env: process_env(ctx, stage, job, scratch),
                    processes: &processes,
                    pipeline: &ctx.pipeline.name,
                    stage: name,
                    workspace: root.clone(),
                    inputs,
                    outputs,
                    with: &stage.with,
                    prepared: &stage.prepared,
                    params: &stage.params,
                    scratch: scratch.to_path_buf(),
                    gpus: ctx.gpu_names(&job.gpus),
                    cancel: job.cancel.clone(),
                    events: events.clone(),
                })
            })
            .unwrap_or_else(|panic| Err(panic.into()))
        }
        StageKind::Run { command } => {
            let spec = ProcessSpec {
                program: "sh".into(),
                args: vec!["-c".into(), command.clone()],
                env: process_env(ctx, stage, job, scratch),
                cwd: root.clone(),
                stdin: None,
                stdout: Stdout::Log,
            };
            processes.run_checked(&spec, false)
        }
        StageKind::Plugin {
            name: kind,
            command,
            ..
        } => {
            let request = Request {
                protocol: PROTOCOL_VERSION,
                stage: name,
                kind,
                workspace: root.clone(),
                inputs,
                outputs,
                with: &stage.with,
                params: &stage.params,
                scratch: scratch.to_path_buf(),
                devices: Devices {
                    gpus: ctx.gpu_names(&job.gpus),
                },
            };
            let mut body = serde_json::to_vec(&request).expect("requests always serialize");
            body.push(b'\n');
            let spec = ProcessSpec {
                program: command[0].clone(),
                args: command[1..].to_vec(),
                env: process_env(ctx, stage, job, scratch),
                cwd: root.clone(),
                stdin: Some(body),
                stdout: Stdout::Protocol,
            };
            processes.run_checked(&spec, true)
        }
    }
}

/// Whether a built-in stage runs as its own `sluice __stage` process through the executor (on a
/// cluster node) rather than in this process. The one place that decides it.
fn runs_remotely(ctx: &RunCtx, stage: &StageDef) -> bool {
    ctx.executor.remote() && !stage.slurm.local
}

/// A stopped or failed stage leaves nothing behind that a later run could mistake for a result.
fn drop_outputs(ctx: &RunCtx, stage: &StageDef) {
    for o in &stage.outputs {
        let _ = crate::atomic::remove_path(&o.path.to_abs(&ctx.pipeline.root));
    }
}

/// The hashes of what the stage wrote; a declared output it did not write fails it.
fn hash_outputs(
    ctx: &RunCtx,
    stage: &StageDef,
    log: &StageLog,
) -> Result<BTreeMap<String, OutputRecord>, StageError> {
    let mut records = BTreeMap::new();
    for o in &stage.outputs {
        // A small file's bytes are kept as they are hashed, for the record to hold inline: the
        // store then neither opens it again nor has to check it did not change in between,
        // since the content it files is the very content the hash names.
        let abs = o.path.to_abs(&ctx.pipeline.root);
        match ctx.hasher.hash_output(&abs, INLINE_MAX) {
            Ok(Some((_, Some(small)))) => {
                let (hash, inline) = Inline::hashed(small);
                let mut record = OutputRecord::new(o.path.clone(), hash, None);
                record.inline = Some(inline);
                records.insert(o.name.clone(), record);
            }
            Ok(Some((h, None))) => {
                records.insert(
                    o.name.clone(),
                    OutputRecord::new(o.path.clone(), h.hash, h.tree),
                );
            }
            Ok(None) => {
                log.note(&format!(
                    "[sluice] failed: output `{}` (`{}`) was not written",
                    o.name, o.path
                ));
                return Err(format!(
                    "the stage succeeded but did not write its output `{}` (`{}`)",
                    o.name, o.path
                )
                .into());
            }
            Err(e) => return Err(format!("cannot read output `{}`: {e}", o.path).into()),
        }
    }
    Ok(records)
}

/// Whether an input changed while the stage ran (then its result is not cached), said in its
/// log and as a warning.
fn inputs_changed(
    stage: &StageDef,
    before: &[InputSnapshot],
    log: &StageLog,
    events: &StageEventSink,
    root: &std::path::Path,
) -> bool {
    let after = input_snapshots(stage, root);
    let Some(changed) = stage
        .inputs
        .iter()
        .zip(before.iter().zip(&after))
        .find(|(_, (b, a))| b != a)
    else {
        return false;
    };
    let msg = format!(
        "input `{}` ({}) changed while the stage ran; its result is not cached and it will run again next time",
        changed.0.name, changed.0.path
    );
    log.note(&format!("[sluice] {msg}"));
    events.warn(msg);
    true
}

/// Stores a successful result in the cache; a store that fails leaves it uncached, with a
/// warning, rather than failing the stage.
fn store(
    ctx: &RunCtx,
    stage: &StageDef,
    mut completed: Completed,
    events: &StageEventSink,
) -> JobResult {
    // The outputs move into the record and back, uncopied: the small outputs' content rides
    // along to the dispatcher, which keeps only paths and hashes (`lock_entry`).
    let record = StageRecord {
        format: RECORD_FORMAT,
        stage: stage.id.0.clone(),
        key: completed.key,
        outputs: std::mem::take(&mut completed.outputs),
    };
    tracing::debug!(stage = %stage.id, key = %record.key.short(), "storing outputs in the cache");
    let stored = ctx.store.store(&ctx.pipeline.root, &record, &ctx.hasher);
    completed.outputs = record.outputs;
    if let Err(e) = stored {
        events.warn(format!("could not store outputs in the cache: {e}"));
        return JobResult::Ran(completed, false);
    }
    JobResult::Ran(completed, true)
}
