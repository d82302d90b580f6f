//! `watch`: the loop behind `sluice watch`. It alone owns the watch state (the last good
//! pipeline, its sources and their last-seen content, the running round, what is pending) and
//! reacts to typed messages: debounced file-system batches, the round's engine events and its
//! end, signals, and poll ticks.
//!
//! One round (an engine run) goes on at a time, in its own thread. A confirmed change to a source
//! affects its readers and everything downstream. While a round runs with the current pipeline,
//! the affected stages are handed to its dispatcher as `Control::Rerun`: running ones are stopped
//! (process group killed, partial outputs dropped) and started again with the new inputs, and the
//! rest of the round carries on. A valid edit of the pipeline file withdraws the changed stages
//! from a running round instead, and they run in the next round, with the new pipeline. Cache
//! rules apply as in any run: the engine decides each affected stage (up to date, restore, run).

use super::fs::{Fallback, FsWatch};
use super::notice::{Notice, WatchEvent};
use super::reload::{changed_stages, removed_stages};
use super::sources::{content, Sources};
use crate::engine::{Engine, EngineError, RunOptions, RunSummary, Selection};
use crate::events::Event;
use crate::hash::{ContentHash, Hasher};
use crate::pipeline::Pipeline;
use crate::scheduler::Control;
use crate::sweep::promote::promoted_path;
use crate::validate::{load, LoadError, LoadOptions};
use crossbeam_channel::{never, select, Receiver, Sender};
use notify_debouncer_full::DebounceEventResult;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default quiet time before a batch of file events is handled.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

pub struct WatchOptions {
    pub jobs: usize,
    pub gpus: Vec<String>,
    pub kill_grace: Duration,
    pub debounce: Duration,
    /// The pipeline file as given, and how to name it in messages.
    pub file: PathBuf,
    pub display: String,
    pub overrides: Vec<(String, String)>,
    /// Poll every watched directory instead of using native events.
    pub poll_only: bool,
}

/// How watching ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// SIGINT/SIGTERM; running stages were stopped.
    Interrupted,
}

/// A burst of changes is handled after at most this many debounce periods even if it goes on,
/// so a file that is written continuously still gets its stages run.
const MAX_GATHER: u32 = 20;

/// Paths from debounced batches, held until the batches pause.
struct Gathering {
    paths: BTreeSet<PathBuf>,
    since: Instant,
    until: Instant,
}

/// What a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The whole pipeline (the first round).
    Everything,
    /// The pending stages, plus the unsettled stages above them.
    Pending,
}

/// One engine run and the channels to it.
struct Round {
    pipeline: Arc<Pipeline>,
    control: Sender<Control>,
    /// A second handle on the control channel: requests the run never read are found here.
    unread: Receiver<Control>,
    signals: Sender<i32>,
    events: Receiver<Event>,
    done: Receiver<Result<RunSummary, EngineError>>,
    thread: JoinHandle<()>,
}

/// What a pipeline's definition is read from, by content (`None`: missing or unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Definition {
    pipeline: Option<ContentHash>,
    promoted: Option<ContentHash>,
}

fn definition(hasher: &Hasher, pipeline_file: &Path) -> Definition {
    Definition {
        pipeline: content(hasher, pipeline_file),
        promoted: content(hasher, &promoted_path(pipeline_file)),
    }
}

struct Watch {
    engine: Arc<Engine>,
    opts: WatchOptions,
    out: Sender<WatchEvent>,
    pipeline: Arc<Pipeline>,
    /// The content of the pipeline file and of its promoted params file: either edited (a
    /// `sluice sweep promote`, the promotion deleted) reloads the pipeline.
    pipeline_seen: Definition,
    sources: Sources,
    hasher: Hasher,
    fs: FsWatch,
    round: Option<Round>,
    gathering: Option<Gathering>,
    /// Stages owed a run in the next round, by name (the pipeline may change before then).
    pending: BTreeSet<String>,
    /// Stages whose last verdict was not a success; rerun when something below them is.
    unsettled: BTreeSet<String>,
    interrupted: bool,
}

/// Runs `pipeline`, then reruns what its changes affect until a signal arrives. Nothing makes
/// watching fail: a path that cannot be watched is polled, and a round that cannot start is
/// reported as a warning.
pub fn watch(
    engine: Arc<Engine>,
    pipeline: Pipeline,
    opts: WatchOptions,
    out: Sender<WatchEvent>,
    signals: Receiver<i32>,
) -> WatchEnd {
    let (fs_tx, fs_rx) = crossbeam_channel::unbounded::<DebounceEventResult>();
    let fs = FsWatch::new(opts.debounce, fs_tx, opts.poll_only);
    let hasher = Hasher::load(&engine.ws.memo_path());
    let sources = Sources::new(&pipeline, &engine.ws.dir, &hasher, None);
    let pipeline_seen = definition(&hasher, &pipeline.file);
    let mut w = Watch {
        engine,
        opts,
        out,
        pipeline: Arc::new(pipeline),
        pipeline_seen,
        sources,
        hasher,
        fs,
        round: None,
        gathering: None,
        pending: BTreeSet::new(),
        unsettled: BTreeSet::new(),
        interrupted: false,
    };
    // Watches go up before the first round, so a change made while it runs is seen.
    w.sync_watches(true);
    w.start_round(Scope::Everything);
    w.run(fs_rx, signals)
}

impl Watch {
    fn run(
        &mut self,
        mut fs_rx: Receiver<DebounceEventResult>,
        mut signals: Receiver<i32>,
    ) -> WatchEnd {
        loop {
            let (events, done) = match &self.round {
                Some(r) => (r.events.clone(), r.done.clone()),
                None => (never(), never()),
            };
            let settle = self
                .gathering
                .as_ref()
                .map(|g| g.until.saturating_duration_since(Instant::now()));
            let tick = [self.fs.poll_timeout(), settle]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::from_secs(3600));
            select! {
                recv(fs_rx) -> batch => match batch {
                    Ok(batch) => self.on_batch(batch),
                    // No native watcher (everything is polled): a closed channel would be
                    // ready forever.
                    Err(_) => fs_rx = never(),
                },
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        self.emit_engine(ev);
                    }
                }
                recv(done) -> result => {
                    if let Ok(result) = result {
                        self.round_done(result);
                    }
                    if self.interrupted {
                        return WatchEnd::Interrupted;
                    }
                }
                recv(signals) -> sig => {
                    let Ok(sig) = sig else {
                        signals = never();
                        continue;
                    };
                    self.interrupted = true;
                    match &self.round {
                        // The dispatcher stops its stages (a second signal kills them at once);
                        // the loop ends when the round does.
                        Some(r) => {
                            let _ = r.signals.send(sig);
                        }
                        None => return WatchEnd::Interrupted,
                    }
                }
                default(tick) => {}
            }
            if self
                .gathering
                .as_ref()
                .is_some_and(|g| g.until <= Instant::now())
            {
                let g = self.gathering.take().expect("checked above");
                self.on_paths(g.paths);
            }
            let changed = self.fs.poll();
            if !changed.is_empty() {
                self.on_paths(changed);
            }
        }
    }

    fn emit(&self, n: Notice) {
        let _ = self.out.send(WatchEvent::Watch(n));
    }

    fn emit_engine(&self, ev: Event) {
        let _ = self.out.send(WatchEvent::Engine(ev));
    }

    fn on_batch(&mut self, batch: DebounceEventResult) {
        match batch {
            Ok(events) => {
                let rescan = events.iter().any(|e| e.need_rescan());
                // Opening or reading a file changes nothing, and the loop's own hashing opens
                // sources: counting those would feed back into itself.
                let mut paths: BTreeSet<PathBuf> = events
                    .into_iter()
                    .filter(|e| may_change(&e.event.kind))
                    .flat_map(|e| e.event.paths)
                    .collect();
                if rescan {
                    // The kernel's event queue overflowed: anything may have changed.
                    paths.extend(self.sources.abs_paths());
                    paths.insert(self.pipeline.file.clone());
                    paths.insert(promoted_path(&self.pipeline.file));
                }
                if paths.is_empty() {
                    return;
                }
                // The debouncer settles each path on its own, so a burst of writes (a folder of
                // images being copied in) arrives as a stream of batches. They are gathered until
                // the stream pauses, so the burst reruns its stages once rather than per batch.
                let now = Instant::now();
                let settle = (self.opts.debounce / 2).max(Duration::from_millis(5));
                match &mut self.gathering {
                    Some(g) => {
                        g.paths.extend(paths);
                        g.until = (now + settle).min(g.since + self.opts.debounce * MAX_GATHER);
                    }
                    None => {
                        self.gathering = Some(Gathering {
                            paths,
                            since: now,
                            until: now + settle,
                        })
                    }
                }
            }
            Err(errors) => {
                let mut fallbacks = Vec::new();
                for e in errors {
                    match (&e.kind, e.paths.first()) {
                        (notify::ErrorKind::MaxFilesWatch, Some(p)) => {
                            let reason = "the inotify watch limit is reached (raise \
                                          `fs.inotify.max_user_watches`)"
                                .to_string();
                            fallbacks.extend(self.fs.fall_back(p, reason));
                        }
                        _ => self.emit(Notice::WatchWarning {
                            message: format!("file watcher: {e}"),
                        }),
                    }
                }
                self.report_fallbacks(fallbacks);
            }
        }
    }

    /// Handles paths that events or polling named: confirm by content, then rerun what changed.
    fn on_paths(&mut self, paths: BTreeSet<PathBuf>) {
        self.fs.refresh_roots(&paths);
        let pipeline_file = self.pipeline.file.clone();
        let promoted_file = promoted_path(&pipeline_file);
        if paths
            .iter()
            .any(|p| pipeline_file.starts_with(p) || promoted_file.starts_with(p))
        {
            self.check_pipeline();
        }
        let changed = self.sources.confirm(&paths, &self.hasher);
        let mut affected = BTreeSet::new();
        for source in changed {
            let closure = self
                .pipeline
                .graph
                .downstream_closure(&self.sources.readers(&source));
            self.emit(Notice::Changed {
                path: source.to_string(),
                stages: self.names(&closure),
            });
            affected.extend(closure);
        }
        if !affected.is_empty() {
            self.schedule(affected);
        }
        self.sync_watches(false);
    }

    /// Stage names in dependency order.
    fn names(&self, set: &BTreeSet<usize>) -> Vec<String> {
        self.pipeline
            .graph
            .topo_order()
            .iter()
            .filter(|i| set.contains(i))
            .map(|&i| self.pipeline.stages[i].id.0.clone())
            .collect()
    }

    /// Reruns `affected` (indices into the current pipeline): inside the running round when it
    /// runs this pipeline, otherwise in the next round.
    fn schedule(&mut self, affected: BTreeSet<usize>) {
        match &self.round {
            Some(r) if Arc::ptr_eq(&r.pipeline, &self.pipeline) => {
                let _ = r.control.send(Control::Rerun(affected));
            }
            Some(_) => {
                let names = self.names(&affected);
                self.pending.extend(names);
            }
            None => {
                let names = self.names(&affected);
                self.pending.extend(names);
                self.start_round(Scope::Pending);
            }
        }
    }

    /// The pipeline file (or its promoted params file) was touched: reload it if its bytes
    /// changed.
    fn check_pipeline(&mut self) {
        let now = definition(&self.hasher, &self.pipeline.file);
        if now == self.pipeline_seen {
            return;
        }
        self.pipeline_seen = now;
        if now.pipeline.is_none() {
            // Mid-save (removed before the new file is renamed in): the next event settles it.
            return;
        }
        let loaded = load(&LoadOptions {
            root: &self.engine.ws.root,
            file: &self.opts.file,
            display: self.opts.display.clone(),
            overrides: &self.opts.overrides,
            registry: &self.engine.registry,
            sweep: None,
        });
        let new = match loaded {
            Ok(p) => p,
            Err(LoadError::Invalid(d)) => {
                self.emit(Notice::PipelineInvalid { errors: d.render() });
                return;
            }
            Err(e) => {
                self.emit(Notice::PipelineInvalid {
                    errors: format!("error: {}\n", crate::error::chain(&e)),
                });
                return;
            }
        };
        let changed = changed_stages(&self.pipeline, &new);
        let removed = removed_stages(&self.pipeline, &new);
        let roots: BTreeSet<usize> = changed.iter().map(|n| new.by_name[n]).collect();
        let affected = new.graph.downstream_closure(&roots);
        let affected_names: BTreeSet<String> = affected
            .iter()
            .map(|&i| new.stages[i].id.0.clone())
            .collect();
        if let Some(r) = &self.round {
            // Stages of the running round that the edit changed or removed stop now; the changed
            // ones run in the next round, with their new definitions.
            let old = &r.pipeline;
            let withdraw: BTreeSet<usize> = affected_names
                .iter()
                .chain(&removed)
                .filter_map(|n| old.by_name.get(n).copied())
                .collect();
            if !withdraw.is_empty() {
                let _ = r.control.send(Control::Withdraw(withdraw));
            }
        }
        let sources = Sources::new(&new, &self.engine.ws.dir, &self.hasher, Some(&self.sources));
        self.sources = sources;
        self.pipeline = Arc::new(new);
        self.unsettled
            .retain(|n| self.pipeline.by_name.contains_key(n));
        self.emit(Notice::Changed {
            path: self.opts.display.clone(),
            stages: self.names(&affected),
        });
        self.pending.extend(affected_names);
        if self.round.is_none() && !self.pending.is_empty() {
            self.start_round(Scope::Pending);
        }
        self.sync_watches(true);
    }

    fn sync_watches(&mut self, announce: bool) {
        let before = self.fs.counts();
        let sources = self
            .sources
            .abs_paths()
            .chain(std::iter::once(self.pipeline.file.clone()));
        let fallbacks = self.fs.sync(sources);
        let changed = !fallbacks.is_empty();
        self.report_fallbacks(fallbacks);
        let after = self.fs.counts();
        if announce || (changed && before != after) {
            self.emit(Notice::Watching {
                sources: self.sources.len() + 1,
                native: after.0,
                polled: after.1,
            });
        }
    }

    fn report_fallbacks(&self, fallbacks: Vec<Fallback>) {
        for f in fallbacks {
            let path = f
                .path
                .strip_prefix(&self.pipeline.root)
                .map(|p| p.display().to_string())
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| f.path.display().to_string());
            self.emit(Notice::Polling {
                path,
                reason: f.reason,
            });
        }
    }

    /// Starts a round over `scope`; pending work is taken.
    fn start_round(&mut self, scope: Scope) {
        let pipeline = self.pipeline.clone();
        let exact = (scope == Scope::Pending).then(|| {
            let wanted: BTreeSet<usize> = std::mem::take(&mut self.pending)
                .iter()
                .filter_map(|n| pipeline.by_name.get(n).copied())
                .collect();
            let unsettled: BTreeSet<usize> = self
                .unsettled
                .iter()
                .filter_map(|n| pipeline.by_name.get(n).copied())
                .collect();
            let above = pipeline.graph.upstream_closure(&wanted);
            let mut stages = wanted;
            stages.extend(above.intersection(&unsettled));
            stages
        });
        if exact.as_ref().is_some_and(|s| s.is_empty()) {
            return;
        }
        let (control, unread) = crossbeam_channel::unbounded();
        let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
        let (ev_tx, events) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let engine = self.engine.clone();
        let opts = RunOptions {
            selection: Selection::default(),
            force: Vec::new(),
            jobs: self.opts.jobs,
            gpus: self.opts.gpus.clone(),
            // A failure stops only what depends on it: the rest of the pipeline stays current.
            keep_going: true,
            wait: true,
            kill_grace: self.opts.kill_grace,
        };
        let (p, rx) = (pipeline.clone(), unread.clone());
        let thread = std::thread::spawn(move || {
            let result = engine.run_controlled(p, opts, exact, ev_tx, sig_rx, rx);
            let _ = done_tx.send(result);
        });
        self.round = Some(Round {
            pipeline,
            control,
            unread,
            signals: sig_tx,
            events,
            done,
            thread,
        });
    }

    fn round_done(&mut self, result: Result<RunSummary, EngineError>) {
        let Some(round) = self.round.take() else {
            return;
        };
        // The engine has returned: every event it sent is already queued.
        for ev in round.events.try_iter() {
            self.emit_engine(ev);
        }
        let _ = round.thread.join();
        let name = |i: usize| round.pipeline.stages[i].id.0.clone();
        // Reruns the run never read, or read after it had stopped starting stages, are owed.
        // (Withdrawn stages are already pending under their new definitions.)
        for c in round.unread.try_iter() {
            if let Control::Rerun(set) = c {
                let closure = round.pipeline.graph.downstream_closure(&set);
                self.pending.extend(closure.into_iter().map(name));
            }
        }
        match result {
            Ok(summary) => {
                self.pending
                    .extend(summary.deferred.iter().copied().map(name));
                for (&i, report) in &summary.stages {
                    if report.outcome.is_success() {
                        self.unsettled.remove(&name(i));
                    } else {
                        self.unsettled.insert(name(i));
                    }
                }
            }
            Err(e) => self.emit(Notice::WatchWarning {
                message: match e.help() {
                    Some(h) => format!("{} (help: {h})", crate::error::chain(&e)),
                    None => crate::error::chain(&e),
                },
            }),
        }
        if self.interrupted {
            return;
        }
        if self.pending.is_empty() {
            self.emit(Notice::Waiting);
        } else {
            self.start_round(Scope::Pending);
            if self.round.is_none() {
                self.emit(Notice::Waiting);
            }
        }
    }
}

/// Whether an event kind can mean different content: everything but opening and reading.
fn may_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
