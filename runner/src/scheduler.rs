//! The dispatcher: the run's state (`Dispatcher`) and who changes it. Workers (a fixed pool of
//! `--jobs` threads, `workers.rs`) run ready stages; each records its own stage's end in the
//! state and starts what became ready, under one mutex, so a stage's end wakes no other thread.
//! The calling thread runs a loop for everything else: signals, the `Control` requests of
//! `sluice watch` and `sluice sweep` (`control.rs`), and timeouts and kill escalation, which are
//! deadlines it wakes up for. Every change goes through a `Dispatcher` method, one per kind of
//! event, followed by `step`.

use crate::cancel::{CancelReason, CancelToken};
use crate::error::StageError;
use crate::events::{Event, Outcome};
use crate::exec::signal_group;
use crate::job::{Completed, GroupSlot, Job, JobMsg, JobResult, RunCtx};
use crate::lock::{LockEntry, LockFile, LockedOutput};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod control;
mod lock_writer;
mod settle;
mod stop;
#[cfg(test)]
mod tests;
mod workers;

pub use control::Control;
use control::Supersede;
use lock_writer::LockWriter;
use settle::{settle_up_to_date, Settled};
use workers::Workers;

pub struct DispatchOptions {
    pub jobs: usize,
    /// GPU device ids available to hand out.
    pub gpus: Vec<u32>,
    pub keep_going: bool,
    pub selection: BTreeSet<usize>,
    pub forced: BTreeSet<usize>,
    pub kill_grace: Duration,
    /// Where to write the lock file as stages complete.
    pub lock_path: PathBuf,
    pub lock_mirror_dir: PathBuf,
}

#[derive(Debug)]
pub struct StageReport {
    pub outcome: Outcome,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct DispatchReport {
    pub stages: BTreeMap<usize, StageReport>,
    pub interrupted: bool,
    pub lock: Arc<LockFile>,
    pub lock_error: Option<String>,
    /// `Control::Rerun` requests that arrived after the run had been told to stop: the caller
    /// owes them a later run.
    pub deferred: BTreeSet<usize>,
}

struct Running {
    started: Instant,
    cancel: CancelToken,
    group: GroupSlot,
    deadline: Option<Instant>,
    kill_at: Option<Instant>,
    cpus: usize,
    gpus: Vec<u32>,
}

const LOCK_WRITE_INTERVAL: Duration = Duration::from_millis(1000);

/// The run's state machine, behind one mutex: the workers and the calling thread's loop change
/// it only through its methods, each followed by `step`.
struct Dispatcher {
    ctx: Arc<RunCtx>,
    /// The job queue the workers take from; `None` once the run is over.
    queue: Option<Sender<Job>>,
    opts: DispatchOptions,
    jobs: usize,
    position: BTreeMap<usize, usize>,
    waiting: BTreeMap<usize, usize>,
    ready: BTreeSet<(usize, usize)>,
    running: BTreeMap<usize, Running>,
    done: BTreeMap<usize, StageReport>,
    cpus_free: usize,
    gpus_free: Vec<u32>,
    stop: Option<CancelReason>,
    /// The lock as this run leaves it: the run's starting lock until a stage's entry changes,
    /// so a no-op run never copies it.
    lock: Arc<LockFile>,
    lock_dirty: bool,
    lock_written: Instant,
    lock_error: Option<String>,
    lock_writer: LockWriter,
    /// Running stages being stopped by a `Control`: to run again, or to be dropped.
    superseded: BTreeMap<usize, Supersede>,
    /// Running stages being stopped by `Control::Prune`, with why.
    pruning: BTreeMap<usize, String>,
    deferred: BTreeSet<usize>,
}

pub(crate) fn dispatch(
    ctx: Arc<RunCtx>,
    opts: DispatchOptions,
    signals: Receiver<i32>,
    control: Receiver<Control>,
) -> DispatchReport {
    // Nothing can be up to date without a lock entry or a cached record: a first run in a fresh
    // workspace skips the pre-pass (for a wide pipeline, every stage's fingerprint).
    let settled = if ctx.lock.stages.is_empty() && ctx.store.local_is_empty() {
        Settled::new()
    } else {
        settle_up_to_date(&ctx, &opts.selection, &opts.forced)
    };
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let shared = Arc::new(Mutex::new(Dispatcher::new(
        ctx.clone(),
        opts,
        settled,
        job_tx,
    )));
    let workers = Workers::spawn(&ctx, &shared, job_rx);
    run(&shared, &workers.msgs, signals, control);
    // Closing the job queue lets the workers leave.
    lock(&shared).queue = None;
    workers.join();
    let d = match Arc::try_unwrap(shared) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => unreachable!("every worker has left"),
    };
    d.into_report()
}

/// The run state, for a thread that changes it. A panic while it was held (a bug, and reported
/// as one by that thread) leaves it as it was: the run still ends in an orderly way.
fn lock(shared: &Mutex<Dispatcher>) -> std::sync::MutexGuard<'_, Dispatcher> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop on the calling thread: signals, control requests, timeouts and kill escalation,
/// until nothing runs and nothing more will start. Jobs' ends are handled by the workers
/// themselves (`Workers`); a worker wakes this loop only when the run may be over or a deadline
/// may have moved.
fn run(
    shared: &Mutex<Dispatcher>,
    msgs: &Receiver<JobMsg>,
    signals: Receiver<i32>,
    control: Receiver<Control>,
) {
    // A closed control channel would be ready forever; `never` keeps `select!` quiet instead.
    let mut control = control;
    loop {
        let wait = {
            let mut d = lock(shared);
            d.check_deadlines();
            if d.step(false).over {
                break;
            }
            d.until_next_deadline()
        };
        select! {
            recv(msgs) -> msg => match msg {
                Ok(JobMsg::Executing { idx }) => lock(shared).executing(idx),
                Ok(JobMsg::Wake) => {}
                Err(_) => break,
            },
            recv(control) -> msg => match msg {
                Ok(c) => lock(shared).control(c),
                Err(_) => control = crossbeam_channel::never(),
            },
            recv(signals) -> sig => {
                if sig.is_ok() {
                    lock(shared).signalled();
                }
            }
            default(wait) => {}
        }
    }
}

/// What `Dispatcher::step` did.
pub(super) struct Step {
    /// Nothing runs and nothing more will start.
    pub over: bool,
    /// The first job started, kept for the worker that asked (it runs it at once, without a
    /// trip through the queue that would wake another thread); the rest went to the queue.
    pub kept: Option<Job>,
}

impl Dispatcher {
    /// The run's starting state: the settled stages finished as up to date, the others ready or
    /// waiting for their upstream.
    fn new(
        ctx: Arc<RunCtx>,
        opts: DispatchOptions,
        settled: Settled,
        queue: Sender<Job>,
    ) -> Dispatcher {
        let jobs = opts.jobs.max(1);
        let graph = &ctx.pipeline.graph;
        let position: BTreeMap<usize, usize> = graph
            .topo_order()
            .iter()
            .enumerate()
            .map(|(p, &i)| (i, p))
            .collect();
        let mut lock = ctx.lock.clone();
        if lock.pipeline != ctx.pipeline.name {
            Arc::make_mut(&mut lock).pipeline = ctx.pipeline.name.clone();
        }
        let by_name = &ctx.pipeline.by_name;
        if lock.stages.keys().any(|k| !by_name.contains_key(k)) {
            Arc::make_mut(&mut lock).retain_stages(by_name.keys().map(String::as_str));
        }
        // The record follows the promotion this run's params came from, and is written even
        // when no stage changes: a dropped promotion is warned about once, by the run that drops it.
        let promoted = ctx.pipeline.promoted.as_ref().map(|p| p.record());
        let lock_dirty = lock.promoted != promoted;
        if lock_dirty {
            Arc::make_mut(&mut lock).promoted = promoted;
        }
        let mut waiting = BTreeMap::new();
        let mut ready = BTreeSet::new();
        for &i in &opts.selection {
            if settled.contains_key(&i) {
                continue;
            }
            let n = graph
                .deps(i)
                .filter(|d| opts.selection.contains(d) && !settled.contains_key(d))
                .count();
            if n == 0 {
                ready.insert((position[&i], i));
            } else {
                waiting.insert(i, n);
            }
        }
        let mut d = Dispatcher {
            gpus_free: opts.gpus.clone(),
            ctx,
            queue: Some(queue),
            jobs,
            position,
            waiting,
            ready,
            running: BTreeMap::new(),
            done: BTreeMap::new(),
            cpus_free: jobs,
            stop: None,
            lock,
            lock_dirty,
            lock_written: Instant::now(),
            lock_error: None,
            lock_writer: LockWriter::new(opts.lock_path.clone(), opts.lock_mirror_dir.clone()),
            superseded: BTreeMap::new(),
            pruning: BTreeMap::new(),
            deferred: BTreeSet::new(),
            opts,
        };
        let now = Instant::now();
        for (i, entry) in settled {
            if let Some(entry) = entry {
                let name = d.ctx.pipeline.stages[i].id.0.clone();
                d.record_entry(&name, Some(*entry));
            }
            d.finish(i, Outcome::UpToDate, now, None, Vec::new());
        }
        d
    }

    /// After any change of state: starts what fits (unless the run is stopping) and writes the
    /// lock file when a write is due. A worker asking (`keep`) keeps the first job started.
    pub(super) fn step(&mut self, keep: bool) -> Step {
        let mut kept = None;
        if self.stop.is_none() {
            for job in self.start_ready() {
                if keep && kept.is_none() {
                    kept = Some(job);
                } else if let Some(queue) = &self.queue {
                    let _ = queue.send(job);
                }
            }
        }
        if self.lock_dirty
            && !self.lock_writer.busy()
            && self.lock_written.elapsed()
                >= LOCK_WRITE_INTERVAL.max(self.lock_writer.last_took() * 50)
        {
            self.queue_lock_write();
        }
        Step {
            over: self.running.is_empty() && (self.ready.is_empty() || self.stop.is_some()),
            kept,
        }
    }

    /// Ends the run: every selected stage that never started is skipped, the lock file is
    /// written a last time, and the verdicts go to the caller.
    fn into_report(mut self) -> DispatchReport {
        let interrupted = self.stop >= Some(CancelReason::Interrupt);
        let left: Vec<usize> = self
            .opts
            .selection
            .iter()
            .copied()
            .filter(|i| !self.done.contains_key(i))
            .collect();
        for i in left {
            let msg = if interrupted {
                "not started: interrupted"
            } else {
                "not started: the run stopped after a failure"
            };
            self.finish(
                i,
                Outcome::Skipped,
                Instant::now(),
                Some(msg.into()),
                Vec::new(),
            );
        }
        if let Some(e) = self.lock_writer.finish() {
            self.lock_error.get_or_insert(e);
        }
        if self.lock_dirty {
            self.write_lock();
        }
        DispatchReport {
            stages: self.done,
            interrupted,
            lock: self.lock,
            lock_error: self.lock_error,
            deferred: self.deferred,
        }
    }

    fn start_ready(&mut self) -> Vec<Job> {
        // Pick in topological order what fits the free slots. Every stage takes at least one
        // CPU slot, so the scan ends as soon as they are used up: a wide ready set costs
        // nothing per message.
        let mut cpus = self.cpus_free;
        let mut gpus = self.gpus_free.len();
        let mut chosen = Vec::new();
        for &(pos, idx) in &self.ready {
            if cpus == 0 {
                break;
            }
            let stage = &self.ctx.pipeline.stages[idx];
            let need_cpus = (stage.cpus as usize).min(self.jobs);
            // A stage that wants more GPUs than exist takes none; its job fails if it must run.
            let need_gpus = if stage.gpus as usize <= self.opts.gpus.len() {
                stage.gpus as usize
            } else if stage.gpus_optional {
                self.opts.gpus.len()
            } else {
                0
            };
            if need_cpus <= cpus && need_gpus <= gpus {
                chosen.push((pos, idx, need_cpus, need_gpus));
                cpus -= need_cpus;
                gpus -= need_gpus;
            }
        }
        let mut started = Vec::with_capacity(chosen.len());
        for (pos, idx, need_cpus, need_gpus) in chosen {
            self.ready.remove(&(pos, idx));
            let stage = &self.ctx.pipeline.stages[idx];
            let want = stage.gpus as usize;
            let have = self.opts.gpus.len();
            let gpu_shortfall = (want > have && !stage.gpus_optional).then(|| {
                format!(
                    "needs {want} GPU{} but {have} {} available (see `--gpus`)",
                    if want == 1 { "" } else { "s" },
                    if have == 1 { "is" } else { "are" }
                )
            });
            self.cpus_free -= need_cpus;
            let gpus: Vec<u32> = self.gpus_free.drain(..need_gpus).collect();
            let cancel = CancelToken::default();
            let group = GroupSlot::default();
            self.running.insert(
                idx,
                Running {
                    started: Instant::now(),
                    cancel: cancel.clone(),
                    group: group.clone(),
                    deadline: None,
                    kill_at: None,
                    cpus: need_cpus,
                    gpus: gpus.clone(),
                },
            );
            started.push(Job {
                idx,
                gpus,
                forced: self.opts.forced.contains(&idx),
                cancel,
                group,
                gpu_shortfall,
            });
        }
        started
    }

    /// A job said it started executing: a timeout's clock starts, and a group spawned after
    /// the stage was cancelled is stopped (see `GroupSlot`).
    fn executing(&mut self, idx: usize) {
        let timeout = self.ctx.pipeline.stages[idx].timeout;
        let force = self.stop == Some(CancelReason::ForceKill);
        let grace = self.opts.kill_grace;
        let Some(r) = self.running.get_mut(&idx) else {
            return;
        };
        if r.deadline.is_none() && r.cancel.reason() != Some(CancelReason::TimedOut) {
            // A timeout too long for the clock (thousands of years) is no deadline at all,
            // not a panic of the dispatch loop.
            r.deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        }
        if let (Some(pgid), true) = (r.group.get(), r.cancel.is_cancelled()) {
            signal_group(pgid, if force { libc::SIGKILL } else { libc::SIGTERM });
            if !force && r.kill_at.is_none() {
                r.kill_at = Instant::now().checked_add(grace);
            }
        }
    }

    fn job_done(&mut self, idx: usize, result: JobResult) {
        let Some(r) = self.running.remove(&idx) else {
            return;
        };
        self.cpus_free += r.cpus;
        self.gpus_free.extend(r.gpus.iter().copied());
        self.gpus_free.sort_unstable();
        if let Some(how) = self.superseded.remove(&idx) {
            self.superseded_done(idx, how, r.started, result);
            return;
        }
        let name = self.ctx.pipeline.stages[idx].id.0.clone();
        let timeout = self.ctx.pipeline.stages[idx].timeout;
        let stopped_by = r.cancel.reason();
        let timed_out = stopped_by == Some(CancelReason::TimedOut);
        // Only a stage that did stop is pruned: one whose result made it out before the request
        // keeps it.
        let pruned = self.pruning.remove(&idx);
        let timeout_msg = || {
            format!(
                "{}; its process group was killed",
                CancelReason::TimedOut.describe(timeout)
            )
        };
        let (outcome, message, tail) = match result {
            JobResult::UpToDate(c) => {
                self.record(&name, Some(c));
                (Outcome::UpToDate, None, Vec::new())
            }
            JobResult::Restored(c) => {
                self.record(&name, Some(c));
                (Outcome::Restored, None, Vec::new())
            }
            JobResult::Ran(c, cached) => {
                self.record(&name, cached.then_some(c));
                (Outcome::Ran, None, Vec::new())
            }
            JobResult::Failed { log_tail, .. } if timed_out => {
                (Outcome::TimedOut, Some(timeout_msg().into()), log_tail)
            }
            JobResult::Failed { error, log_tail } => (Outcome::Failed, Some(error), log_tail),
            JobResult::Cancelled { log_tail } if timed_out => {
                (Outcome::TimedOut, Some(timeout_msg().into()), log_tail)
            }
            JobResult::Cancelled { .. } if pruned.is_some() => (
                Outcome::Pruned,
                Some(pruned_message(pruned.as_deref(), "; partial outputs removed").into()),
                Vec::new(),
            ),
            JobResult::Cancelled { .. } => (
                Outcome::Cancelled,
                Some(
                    format!(
                        "{}; partial outputs removed",
                        stopped_by.map_or_else(|| "cancelled".into(), |why| why.describe(timeout))
                    )
                    .into(),
                ),
                Vec::new(),
            ),
        };
        self.finish(idx, outcome, r.started, message, tail);
        if outcome.is_success() {
            let dependents: Vec<usize> = self.ctx.pipeline.graph.dependents(idx).collect();
            for dep in dependents {
                if let Some(n) = self.waiting.get_mut(&dep) {
                    *n -= 1;
                    if *n == 0 {
                        self.waiting.remove(&dep);
                        self.ready.insert((self.position[&dep], dep));
                    }
                }
            }
        } else if outcome.is_failure() {
            self.on_failure(idx);
        } else if outcome == Outcome::Pruned {
            self.skip_downstream(idx, "was pruned");
        }
    }

    /// Updates the lock entry of a finished stage (`None` drops it: the result is not trusted).
    fn record(&mut self, name: &str, completed: Option<Completed>) {
        self.record_entry(name, completed.map(lock_entry));
    }

    /// `record` for an entry already made.
    fn record_entry(&mut self, name: &str, entry: Option<LockEntry>) {
        match entry {
            Some(entry) => {
                if self.lock.stages.get(name) != Some(&entry) {
                    Arc::make_mut(&mut self.lock)
                        .stages
                        .insert(name.to_string(), entry);
                    self.lock_dirty = true;
                }
            }
            None => {
                if self.lock.stages.contains_key(name) {
                    Arc::make_mut(&mut self.lock).stages.remove(name);
                    self.lock_dirty = true;
                }
            }
        }
    }

    fn on_failure(&mut self, idx: usize) {
        if self.opts.keep_going {
            self.skip_downstream(idx, "failed");
        } else if self.stop.is_none() {
            self.stop = Some(CancelReason::StageFailed);
            self.cancel_all(CancelReason::StageFailed);
        }
    }

    /// Skips every selected stage below `idx` that has not finished, saying the upstream stage
    /// `what` ("failed", "was pruned").
    fn skip_downstream(&mut self, idx: usize, what: &str) {
        let below = self
            .ctx
            .pipeline
            .graph
            .downstream_closure(&[idx].into_iter().collect());
        let upstream = self.ctx.pipeline.stages[idx].id.0.clone();
        for i in below {
            if i == idx || !self.opts.selection.contains(&i) || self.done.contains_key(&i) {
                continue;
            }
            self.waiting.remove(&i);
            self.ready.retain(|&(_, j)| j != i);
            self.finish(
                i,
                Outcome::Skipped,
                Instant::now(),
                Some(format!("upstream `{upstream}` {what}").into()),
                Vec::new(),
            );
        }
    }

    /// Reports a stage's end. `detail` is why it failed, or was skipped or cancelled.
    fn finish(
        &mut self,
        idx: usize,
        outcome: Outcome,
        started: Instant,
        detail: Option<StageError>,
        log_tail: Vec<String>,
    ) {
        let duration = started.elapsed();
        // A failure's hint stays apart from its message all the way to the reporters.
        let (message, hint) = detail.map_or((None, None), |d| (Some(d.message), d.hint));
        let _ = self.ctx.events.send(Event::StageFinished {
            stage: self.ctx.pipeline.stages[idx].id.0.clone(),
            outcome,
            duration_ms: duration.as_millis() as u64,
            message,
            hint,
            log_tail,
        });
        self.done.insert(idx, StageReport { outcome, duration });
    }

    /// Hands the lock as it is now to the lock writer (see `lock_writer.rs`). Writing a large
    /// lock takes a while (~60 ms at 10,000 stages): at most once per fifty times that, so it
    /// stays a small part of the run's CPU. A run killed between writes loses nothing: its
    /// finished stages are found again through their cache records (appended as each stage
    /// ends), up to date or restored, never run again.
    fn queue_lock_write(&mut self) {
        self.lock_writer.write(self.lock.clone());
        self.lock_dirty = false;
        self.lock_written = Instant::now();
    }

    /// Writes the lock now, on this thread: the run's last write.
    fn write_lock(&mut self) {
        if let Err(e) = self
            .lock
            .save_mirrored(&self.opts.lock_path, &self.opts.lock_mirror_dir)
        {
            self.lock_error = Some(lock_writer::describe(&self.opts.lock_path, &e));
        }
        self.lock_dirty = false;
    }
}

/// A pruned stage's message: `pruned: ` and the caller's reason, then `rest`.
fn pruned_message(why: Option<&str>, rest: &str) -> String {
    match why.filter(|w| !w.is_empty()) {
        Some(w) => format!("pruned: {w}{rest}"),
        None => format!("pruned{rest}"),
    }
}

fn lock_entry(c: Completed) -> LockEntry {
    LockEntry {
        key: c.key,
        fingerprint: c.fp,
        output_hashes: c
            .outputs
            .into_iter()
            .map(|(k, o)| {
                (
                    k,
                    LockedOutput {
                        path: o.path,
                        hash: o.hash,
                    },
                )
            })
            .collect(),
    }
}
