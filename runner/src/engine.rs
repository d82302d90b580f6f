//! `Engine`: the entry points the binary calls (`run`, `plan`, `status`, `gc`), tying a validated
//! pipeline to a workspace, its cache, its hash memo and its lock file.

use crate::cache::{
    CacheStore, GcOptions, GcStats, LocalStore, RemoteError, RemoteSettings, RemoteStore,
    RemoteSummary, TieredStore,
};
use crate::diag::did_you_mean;
use crate::events::{Event, Outcome};
use crate::exec::{Executor, LocalExecutor};
use crate::hash::Hasher;
use crate::job::RunCtx;
use crate::lock::{LockFile, LockReadError};
use crate::pipeline::Pipeline;
use crate::plan::{plan_ahead, Planned};
use crate::scheduler::{dispatch, Control, DispatchOptions, StageReport};
use crate::stage::StageRegistry;
use crate::workspace::{new_run_id, LockHolder, Workspace};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown stage `{name}`")]
    UnknownStage { name: String, help: Option<String> },
    #[error("`--force {name}` names a stage this run does not include")]
    ForceOutsideSelection { name: String },
    #[error("another sluice run holds this workspace{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { pid: Option<u32> },
    #[error(transparent)]
    Lock(#[from] LockReadError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn help(&self) -> Option<String> {
        match self {
            EngineError::UnknownStage { help, .. } => help.clone(),
            EngineError::Busy { .. } => {
                Some("wait for it to finish, or run without `--no-wait` to queue behind it".into())
            }
            EngineError::ForceOutsideSelection { name } => Some(format!(
                "add `{name}` to the stages to run, or drop `--force {name}`"
            )),
            EngineError::Lock(_) => {
                Some("fix or delete the lock file; the cache still holds every result".into())
            }
            EngineError::Io { .. } => None,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}

/// Which stages a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub targets: Vec<String>,
    pub downstream: bool,
}

pub struct RunOptions {
    pub selection: Selection,
    pub force: Vec<String>,
    pub jobs: usize,
    /// GPU identifiers to hand out (as `CUDA_VISIBLE_DEVICES` would name them).
    pub gpus: Vec<String>,
    pub keep_going: bool,
    /// Wait for another run in the same workspace instead of failing.
    pub wait: bool,
    pub kill_grace: Duration,
}

#[derive(Debug)]
pub struct RunSummary {
    pub run_id: String,
    pub stages: BTreeMap<usize, StageReport>,
    pub interrupted: bool,
    pub duration: Duration,
    /// Stages a `Control::Rerun` asked for after the run had stopped starting stages (see
    /// `Engine::run_controlled`): still owed a run.
    pub deferred: BTreeSet<usize>,
    /// What the remote cache did, when there is one.
    pub remote: Option<RemoteSummary>,
    /// `--remote-required`: a remote failure fails the run.
    pub remote_required: bool,
}

impl RunSummary {
    /// Whether the run did what was asked of it: not interrupted, and every stage succeeded,
    /// was pruned, or was skipped. A skipped stage in a run that was neither interrupted nor
    /// had a failure can only sit below a pruned one, so a sweep whose only non-successes are
    /// prunes and their skips is ok, while any failure or cancellation is not.
    pub fn ok(&self) -> bool {
        let remote_failed =
            self.remote_required && self.remote.as_ref().is_some_and(|r| r.failed.is_some());
        !self.interrupted
            && !remote_failed
            && self.stages.values().all(|s| {
                s.outcome.is_success() || matches!(s.outcome, Outcome::Pruned | Outcome::Skipped)
            })
    }
    pub fn count(&self, o: Outcome) -> usize {
        self.stages.values().filter(|s| s.outcome == o).count()
    }
}

pub struct Engine {
    pub ws: Workspace,
    pub registry: StageRegistry,
    pub executor: Arc<dyn Executor>,
    pub store: Arc<dyn CacheStore>,
    /// The remote cache behind `store`, when one is configured and usable.
    pub remote: Option<Arc<RemoteStore>>,
    remote_required: bool,
    /// Why a configured remote is not used (missing credentials), said at the start of each run.
    remote_off: Option<String>,
}

impl Engine {
    pub fn new(ws: Workspace, registry: StageRegistry) -> Engine {
        let store = Arc::new(LocalStore::new(ws.cache_dir()));
        Engine {
            ws,
            registry,
            executor: Arc::new(LocalExecutor),
            store,
            remote: None,
            remote_required: false,
            remote_off: None,
        }
    }

    /// Puts a remote cache behind the local one. A remote that lacks credentials is an error
    /// when `required`; otherwise each run says why it goes without it. A wrong URL is always an
    /// error: it is a mistake to fix, not a condition to work around.
    pub fn attach_remote(
        &mut self,
        settings: &RemoteSettings,
        required: bool,
    ) -> Result<(), RemoteError> {
        match RemoteStore::open(settings) {
            Ok(remote) => {
                let remote = Arc::new(remote);
                self.store = Arc::new(TieredStore::new(
                    LocalStore::new(self.ws.cache_dir()),
                    remote.clone(),
                ));
                self.remote = Some(remote);
                self.remote_required = required;
                Ok(())
            }
            Err(RemoteError::Credentials(why)) if !required => {
                let shown = crate::cache::remote::url::RemoteUrl::parse(&settings.url)
                    .map(|u| u.shown)
                    .unwrap_or_default();
                self.remote_off = Some(format!(
                    "remote cache {shown} ({}): {why}; running without it",
                    settings.origin
                ));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Resolves stage names to indices: the targets and what they need (and, with `downstream`,
    /// what depends on them). No targets means every stage.
    pub fn select(
        &self,
        pipeline: &Pipeline,
        sel: &Selection,
    ) -> Result<BTreeSet<usize>, EngineError> {
        if sel.targets.is_empty() {
            return Ok((0..pipeline.stages.len()).collect());
        }
        let targets = self.indices(pipeline, &sel.targets)?;
        let roots = if sel.downstream {
            pipeline.graph.downstream_closure(&targets)
        } else {
            targets
        };
        Ok(pipeline.graph.upstream_closure(&roots))
    }

    fn indices(
        &self,
        pipeline: &Pipeline,
        names: &[String],
    ) -> Result<BTreeSet<usize>, EngineError> {
        let mut out = BTreeSet::new();
        for n in names {
            match pipeline.select_name(n) {
                Some(found) => out.extend(found),
                None => {
                    return Err(EngineError::UnknownStage {
                        name: n.clone(),
                        help: did_you_mean(n, pipeline.stages.iter().map(|s| s.id.0.as_str()))
                            .or_else(|| {
                                let mut bases: Vec<&str> =
                                    pipeline.stages.iter().map(|s| s.base.as_str()).collect();
                                bases.dedup();
                                Some(format!("stages: {}", bases.join(", ")))
                            }),
                    })
                }
            }
        }
        Ok(out)
    }

    /// `--force` names, which must be among the selected stages.
    fn forced(
        &self,
        pipeline: &Pipeline,
        selection: &BTreeSet<usize>,
        force: &[String],
    ) -> Result<BTreeSet<usize>, EngineError> {
        let forced = self.indices(pipeline, force)?;
        match forced.iter().find(|i| !selection.contains(i)) {
            Some(&outside) => Err(EngineError::ForceOutsideSelection {
                name: pipeline.stages[outside].id.0.clone(),
            }),
            None => Ok(forced),
        }
    }

    fn load_lock(&self, pipeline: &Pipeline) -> Result<LockFile, EngineError> {
        Ok(LockFile::load_mirrored(
            &pipeline.lock_path(),
            &pipeline.name,
            &self.ws.lock_mirror_dir(),
        )?)
    }

    /// Decides every selected stage without running anything (`status`, `run --dry-run`).
    pub fn plan(
        &self,
        pipeline: &Pipeline,
        sel: &Selection,
        force: &[String],
    ) -> Result<Vec<Planned>, EngineError> {
        let selection = self.select(pipeline, sel)?;
        let forced = self.forced(pipeline, &selection, force)?;
        let lock = self.load_lock(pipeline)?;
        let hasher = Hasher::load(&self.ws.memo_path());
        let planned = plan_ahead(
            pipeline,
            &selection,
            &forced,
            &lock,
            self.store.as_ref(),
            &hasher,
        );
        if self.ws.dir.exists() {
            let _ = hasher.save(&self.ws.memo_path());
        }
        Ok(planned)
    }

    /// Runs the selected stages. `signals` carries SIGINT/SIGTERM from the binary.
    pub fn run(
        &self,
        pipeline: Arc<Pipeline>,
        opts: RunOptions,
        events: Sender<Event>,
        signals: Receiver<i32>,
    ) -> Result<RunSummary, EngineError> {
        self.run_controlled(
            pipeline,
            opts,
            None,
            events,
            signals,
            crossbeam_channel::never(),
        )
    }

    /// `run` as `sluice watch` drives it. `exact`, when given, is the selection itself, without
    /// the upstream closure `opts.selection` would add: the watcher knows which stages a change
    /// affects and that the others are settled. `control` carries `Control` requests into the
    /// dispatch loop while the run is going (rerun or withdraw stages whose inputs or definitions
    /// changed); requests still queued when the run ends are left in the channel for the caller.
    pub fn run_controlled(
        &self,
        pipeline: Arc<Pipeline>,
        opts: RunOptions,
        exact: Option<BTreeSet<usize>>,
        events: Sender<Event>,
        signals: Receiver<i32>,
        control: Receiver<Control>,
    ) -> Result<RunSummary, EngineError> {
        let started = Instant::now();
        let selection = match exact {
            Some(stages) => stages,
            None => self.select(&pipeline, &opts.selection)?,
        };
        let forced = self.forced(&pipeline, &selection, &opts.force)?;
        let ev = events.clone();
        let mut busy_pid = None;
        let guard = self
            .ws
            .lock_run(opts.wait, |holder| {
                let message = match holder {
                    LockHolder::Running { pid } => {
                        busy_pid = pid;
                        format!(
                            "another sluice run{} is using this workspace; {}",
                            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                            if opts.wait {
                                "waiting for it to finish…"
                            } else {
                                "not waiting (--no-wait)"
                            }
                        )
                    }
                    LockHolder::Leftovers { pid, processes } => format!(
                        "an earlier sluice run (pid {pid}) ended without stopping its stage \
                         processes ({processes} still hold this workspace); stopping them before \
                         this run starts"
                    ),
                };
                let _ = ev.send(Event::Warning {
                    stage: None,
                    message,
                });
            })
            .map_err(io("cannot take the workspace lock"))?;
        let Some(_guard) = guard else {
            return Err(EngineError::Busy { pid: busy_pid });
        };
        // Holding the run lock, clear what a killed run left half-made, before it can be mistaken
        // for a result or pile up.
        let t = Instant::now();
        let swept = crate::leftovers::sweep_after_crash(&self.ws, || output_dirs(&pipeline));
        tracing::debug!(
            ms = t.elapsed().as_millis() as u64,
            swept,
            "leftovers checked"
        );
        let t = Instant::now();
        // The memo and the lock file are independent reads of megabytes each in a large
        // pipeline: read them side by side.
        let (lock, hasher) = std::thread::scope(|s| {
            let memo = s.spawn(|| {
                let hasher = Hasher::load(&self.ws.memo_path());
                tracing::debug!(ms = t.elapsed().as_millis() as u64, "hash memo loaded");
                hasher
            });
            let lock = self.load_lock(&pipeline);
            // A panic while reading the memo leaves it empty: every file is hashed again.
            (lock, memo.join().unwrap_or_default())
        });
        let lock = lock?;
        let hasher = Arc::new(hasher);
        tracing::debug!(
            stages = lock.stages.len(),
            ms = t.elapsed().as_millis() as u64,
            "lock file loaded"
        );
        if let Some(message) =
            crate::sweep::promote::reverted_warning(&pipeline, lock.promoted.as_ref())
        {
            let _ = events.send(Event::Warning {
                stage: None,
                message,
            });
        }
        if let Some(remote) = &self.remote {
            remote.begin_run(events.clone());
        }
        if let Some(message) = &self.remote_off {
            let _ = events.send(Event::Warning {
                stage: None,
                message: message.clone(),
            });
        }
        let run_id = new_run_id();
        tracing::info!(run_id = %run_id, pipeline = %pipeline.name, stages = selection.len(), jobs = opts.jobs, "run starting");
        let _ = events.send(Event::RunStarted {
            run_id: run_id.clone(),
            pipeline: pipeline.name.clone(),
            stages: selection
                .iter()
                .map(|&i| pipeline.stages[i].id.0.clone())
                .collect(),
            jobs: opts.jobs,
            gpus: opts.gpus.len(),
        });
        let ctx = Arc::new(RunCtx {
            pipeline: pipeline.clone(),
            ws: self.ws.clone(),
            hasher: hasher.clone(),
            store: self.store.clone(),
            remote: self.remote.clone(),
            registry: self.registry.clone(),
            executor: self.executor.clone(),
            lock: Arc::new(lock),
            events: events.clone(),
            run_id: run_id.clone(),
            gpu_names: opts.gpus.clone(),
        });
        let t = Instant::now();
        let report = dispatch(
            ctx,
            DispatchOptions {
                jobs: opts.jobs,
                gpus: (0..opts.gpus.len() as u32).collect(),
                keep_going: opts.keep_going,
                selection,
                forced,
                kill_grace: opts.kill_grace,
                lock_path: pipeline.lock_path(),
                lock_mirror_dir: self.ws.lock_mirror_dir(),
            },
            signals,
            control,
        );
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "dispatch finished");
        if let Some(e) = report.lock_error {
            let _ = events.send(Event::Warning {
                stage: None,
                message: e,
            });
        }
        if let Err(e) = hasher.save(&self.ws.memo_path()) {
            let _ = events.send(Event::Warning {
                stage: None,
                message: format!("cannot save the hash memo: {e}"),
            });
        }
        let _ = self.ws.register_lock_file(&pipeline.lock_path());
        let _ = std::fs::remove_dir_all(self.ws.dir.join("tmp").join(&run_id));
        // The run's Slurm job directories: every job has ended and its output is in the logs.
        let _ = std::fs::remove_dir_all(self.ws.dir.join("slurm").join(&run_id));
        let remote = self
            .remote
            .as_ref()
            .map(|r| r.finish_run(report.interrupted));
        // Freeing a large pipeline's lock, memo and definitions (hundreds of thousands of small
        // allocations) would hold up the end of the run; nothing waits for it.
        let garbage = (report.lock, hasher, pipeline);
        let _ = std::thread::Builder::new()
            .name("sluice-free".into())
            .spawn(move || drop(garbage));
        let summary = RunSummary {
            run_id,
            stages: report.stages,
            interrupted: report.interrupted,
            duration: started.elapsed(),
            deferred: report.deferred,
            remote,
            remote_required: self.remote_required,
        };
        let _ = events.send(Event::RunFinished {
            ok: summary.ok(),
            interrupted: summary.interrupted,
            duration_ms: summary.duration.as_millis() as u64,
            ran: summary.count(Outcome::Ran),
            up_to_date: summary.count(Outcome::UpToDate),
            restored: summary.count(Outcome::Restored),
            failed: summary
                .stages
                .values()
                .filter(|s| s.outcome.is_failure())
                .count(),
            skipped: summary.count(Outcome::Skipped) + summary.count(Outcome::Cancelled),
            pruned: summary.count(Outcome::Pruned),
            remote: summary.remote.clone(),
        });
        Ok(summary)
    }

    /// Removes cache entries that no known lock file refers to, the blobs only they named, and
    /// the temporaries of killed runs; with `opts.verify`, also every blob whose content does not
    /// match its name and the entries that name one.
    pub fn gc(&self, opts: GcOptions) -> Result<GcStats, EngineError> {
        let _guard = self
            .ws
            .lock_run(false, |_| {})
            .map_err(io("cannot take the workspace lock"))?
            .ok_or(EngineError::Busy { pid: None })?;
        let mut keep = HashSet::new();
        let mut dirs = BTreeSet::new();
        for path in self.ws.lock_files() {
            let lock = LockFile::load(&path, "")?;
            keep.extend(lock.stages.values().map(|e| e.key));
            dirs.extend(path.parent().map(|p| p.to_path_buf()));
            for out in lock.stages.values().flat_map(|e| e.output_hashes.values()) {
                if crate::paths::resolves_inside(&self.ws.root, &out.path) {
                    dirs.extend(
                        out.path
                            .to_abs(&self.ws.root)
                            .parent()
                            .map(|p| p.to_path_buf()),
                    );
                }
            }
        }
        let mut stats = self
            .store
            .gc(&keep, opts)
            .map_err(io("cannot clean the cache"))?;
        stats.temps_removed = crate::leftovers::sweep(&self.ws, &dirs, opts.dry_run);
        Ok(stats)
    }
}

/// The directories where a run of `pipeline` writes temporaries next to their destinations: its
/// lock file's, and those that hold its outputs.
fn output_dirs(pipeline: &Pipeline) -> BTreeSet<std::path::PathBuf> {
    let mut dirs = BTreeSet::new();
    for o in pipeline.stages.iter().flat_map(|s| s.outputs.iter()) {
        let abs = o.path.to_abs(&pipeline.root);
        let Some(parent) = abs.parent() else { continue };
        // Thousands of outputs share a few directories; following links costs a `canonicalize`
        // per output, and one output found inside is enough to list its directory.
        if dirs.contains(parent) || !crate::paths::resolves_inside(&pipeline.root, &o.path) {
            continue;
        }
        dirs.insert(parent.to_path_buf());
    }
    dirs.extend(pipeline.lock_path().parent().map(|p| p.to_path_buf()));
    dirs
}

#[cfg(test)]
mod tests;
