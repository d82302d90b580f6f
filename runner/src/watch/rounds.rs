//! `watch`: the loop behind `sluice watch`. It alone owns the watch state (the last good
//! pipeline, its sources and their last-seen content, the running round, what is pending) and
//! reacts to typed messages: file-system events (handed over by `Debounce`), the round's engine
//! events and its end, signals, and poll ticks.
//!
//! One round (an engine run) goes on at a time, in its own thread. A confirmed change to a source
//! affects its readers and everything downstream. While a round runs with the current pipeline,
//! the affected stages are handed to its dispatcher as `Control::Rerun`: running ones are stopped
//! (process group killed, partial outputs dropped) and started again with the new inputs, and the
//! rest of the round carries on. A valid edit of the pipeline file withdraws the changed stages
//! from a running round instead, and they run in the next round, with the new pipeline. Cache
//! rules apply as in any run: the engine decides each affected stage (up to date, restore, run).

use super::debounce::{Debounce, Ready};
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
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default quiet time before file events are handled, for writes not reported finished and
/// for bursts.
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
    debounce: Debounce,
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
    let (fs_tx, fs_rx) = crossbeam_channel::unbounded::<notify::Result<notify::Event>>();
    let fs = FsWatch::new(fs_tx, opts.poll_only);
    let debounce = Debounce::new(opts.debounce);
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
        debounce,
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
        mut fs_rx: Receiver<notify::Result<notify::Event>>,
        mut signals: Receiver<i32>,
    ) -> WatchEnd {
        loop {
            let (events, done) = match &self.round {
                Some(r) => (r.events.clone(), r.done.clone()),
                None => (never(), never()),
            };
            let settle = self
                .debounce
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let tick = [self.fs.poll_timeout(), settle]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::from_secs(3600));
            select! {
                recv(fs_rx) -> event => match event {
                    Ok(event) => {
                        // Everything the kernel has reported so far is looked at together.
                        self.on_fs_event(event);
                        for event in fs_rx.try_iter() {
                            self.on_fs_event(event);
                        }
                    }
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
            if let Some(ready) = self.debounce.take(Instant::now()) {
                self.on_ready(ready);
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

    fn on_fs_event(&mut self, event: notify::Result<notify::Event>) {
        match event {
            Ok(event) => self.debounce.add(&event, Instant::now()),
            Err(e) => match (&e.kind, e.paths.first()) {
                (notify::ErrorKind::MaxFilesWatch, Some(p)) => {
                    let reason = "the inotify watch limit is reached (raise \
                                  `fs.inotify.max_user_watches`)"
                        .to_string();
                    let fallback = self.fs.fall_back(p, reason);
                    self.report_fallbacks(fallback.into_iter().collect());
                }
                _ => self.emit(Notice::WatchWarning {
                    message: format!("file watcher: {e}"),
                }),
            },
        }
    }

    /// Handles what the debouncer hands over. A change it confirms makes the writes that follow
    /// closely a burst, handled together when it ends.
    fn on_ready(&mut self, ready: Ready) {
        let mut paths = ready.paths;
        if ready.rescan {
            // The kernel's event queue overflowed: anything may have changed.
            paths.extend(self.sources.abs_paths());
            paths.insert(self.pipeline.file.clone());
            paths.insert(promoted_path(&self.pipeline.file));
        }
        if self.on_paths(paths) {
            self.debounce.acted(Instant::now());
        }
    }

    /// Handles paths that events or polling named: confirm by content, then rerun what changed.
    /// Returns whether anything did.
    fn on_paths(&mut self, paths: BTreeSet<PathBuf>) -> bool {
        self.fs.refresh_roots(&paths);
        let pipeline_file = self.pipeline.file.clone();
        let promoted_file = promoted_path(&pipeline_file);
        let reloaded = paths
            .iter()
            .any(|p| pipeline_file.starts_with(p) || promoted_file.starts_with(p))
            && self.check_pipeline();
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
        let changed = !affected.is_empty();
        if changed {
            self.schedule(affected);
        }
        self.sync_watches(false);
        reloaded || changed
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
    /// changed. Returns whether they had.
    fn check_pipeline(&mut self) -> bool {
        let now = definition(&self.hasher, &self.pipeline.file);
        if now == self.pipeline_seen {
            return false;
        }
        self.pipeline_seen = now;
        if now.pipeline.is_none() {
            // Mid-save (removed before the new file is renamed in): the next event settles it.
            return true;
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
                return true;
            }
            Err(e) => {
                self.emit(Notice::PipelineInvalid {
                    errors: format!("error: {}\n", crate::error::chain(&e)),
                });
                return true;
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
        true
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
