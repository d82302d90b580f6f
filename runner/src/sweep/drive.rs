//! Running a sweep: the plain pipeline is split (`expand::split`), the trials laid out as one
//! pipeline (`expand::Layout`, validated like any pipeline), and that pipeline run once by the
//! engine, keep-going, within `--jobs` and the GPU slots. Between the engine and the caller's
//! reporter sits one thread that watches the events: per-epoch metrics feed the median rule,
//! whose verdicts go back into the run as `Control::Prune`; each trial's end becomes a
//! `TrialFinished` event (the live table). When the run ends, the trials' states and metrics
//! are gathered into `SweepResults`.

use super::expand::{split, Layout, Split};
use super::prune::{Curves, MedianRule};
use super::results::{MetricGoal, SweepResults, TrialResult, TrialState};
use super::space::{trials, Trial};
use super::spec::{Direction, SweepSpec};
use crate::engine::{Engine, EngineError, RunOptions, RunSummary};
use crate::events::{Event, Outcome};
use crate::pipeline::Pipeline;
use crate::scheduler::Control;
use crate::spec::matrix::TRIAL_KEY;
use crate::validate::LoadError;
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// A sweep laid out and validated, ready to plan or run.
pub struct Prepared {
    pub id: String,
    /// `.sluice/sweeps/<id>`, absolute.
    pub dir: PathBuf,
    pub spec: SweepSpec,
    pub trials: Vec<Trial>,
    /// Random draws dropped as repeats of an earlier trial.
    pub duplicates: usize,
    pub split: Split,
    pub pipeline: Arc<Pipeline>,
    /// Trials pruned by an earlier run of this sweep: they stay pruned and do not run again.
    pub carried: BTreeMap<usize, TrialResult>,
    /// Epochs that an earlier run of this sweep counted for each trial (same params).
    previous_epochs: BTreeMap<usize, u64>,
    /// The metric stage's name in the plain pipeline.
    metric_stage: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{message}")]
    Invalid {
        message: String,
        help: Option<String>,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl SweepError {
    pub fn help(&self) -> Option<String> {
        match self {
            SweepError::Invalid { help, .. } => help.clone(),
            SweepError::Load(_) => None,
        }
    }
}

fn invalid(message: impl Into<String>, help: impl Into<Option<String>>) -> SweepError {
    SweepError::Invalid {
        message: message.into(),
        help: help.into(),
    }
}

/// Lays `spec`'s trials out over `base` (the plain pipeline) and validates the result through
/// `load`.
pub fn prepare(
    engine: &Engine,
    base: &Pipeline,
    spec: SweepSpec,
    load: &dyn Fn(&Layout) -> Result<Pipeline, LoadError>,
) -> Result<Prepared, SweepError> {
    let varied = spec.varied();
    for v in &varied {
        if !base.params.contains_key(v) {
            return Err(invalid(
                format!(
                    "sweep param `{v}` is not declared under `params:` in {}",
                    base.display_file
                ),
                Some(format!(
                    "declare `{v}` under `params:` with the value a plain run uses"
                )),
            ));
        }
        if !base.stages.iter().any(|s| s.params.contains_key(v)) {
            return Err(invalid(
                format!(
                    "{}: `sweep.params.{v}`: no stage uses this param, so every trial would compute the same thing",
                    base.display_file
                ),
                Some(format!(
                    "refer to it as `${{{{ params.{v} }}}}` in the stages it should change"
                )),
            ));
        }
    }
    let metric_stage = match base.select_name(&spec.metric.stage).as_deref() {
        Some([i]) => base.stages[*i].id.0.clone(),
        Some(many) => {
            return Err(invalid(
                format!(
                    "the sweep's metric stage `{}` has {} matrix instances; a trial needs one metric",
                    spec.metric.stage,
                    many.len()
                ),
                Some("name one instance, e.g. `metric: STAGE@key=value.NAME`, or take the matrix off that stage".to_string()),
            ))
        }
        None => {
            return Err(invalid(
                format!("the sweep's metric names unknown stage `{}`", spec.metric.stage),
                None,
            ))
        }
    };
    let split = split(base, &varied, &spec.skip);
    if !split.per_trial.contains(&metric_stage) {
        let why = if split.left_out.contains(&metric_stage) {
            "is left out of sweeps (a deploy stage, in `skip:`, or downstream of one)"
        } else {
            "does not depend on any varied param"
        };
        return Err(invalid(
            format!(
                "{}: `sweep.metric`: stage `{metric_stage}` {why}, so every trial would report the same value",
                base.display_file
            ),
            Some(format!("pick a metric of a stage downstream of the stages that use {}", varied.join(", "))),
        ));
    }
    let drawn = trials(&spec);
    let laid = split.shared.len() + drawn.trials.len() * split.per_trial.len();
    if laid > crate::spec::matrix::MAX_INSTANCES {
        return Err(invalid(
            format!(
                "the sweep lays out {laid} stages ({} trials x {} per trial); at most {} fit in one run",
                drawn.trials.len(),
                split.per_trial.len(),
                crate::spec::matrix::MAX_INSTANCES
            ),
            Some("run fewer trials (`--trials N`), or prune harder".to_string()),
        ));
    }
    let id = spec.id(&base.name);
    let rel = format!(".sluice/sweeps/{id}");
    let dir = engine.ws.dir.join("sweeps").join(&id);
    let layout = Layout {
        dir: rel,
        lock_file: dir.join("sweep.lock"),
        trials: drawn
            .trials
            .iter()
            .map(|t| (t.n, t.params.clone()))
            .collect(),
        per_trial: split.per_trial.clone(),
        shared: split.shared.clone(),
    };
    let pipeline = load(&layout)?;
    // A rerun resumes: trials an earlier run pruned stay pruned; everything else restores from
    // the cache or the sweep's lock file.
    let previous: Vec<TrialResult> = SweepResults::load(&dir)
        .map(|r| {
            r.trials
                .into_iter()
                .filter(|t| {
                    drawn
                        .trials
                        .iter()
                        .any(|d| d.n == t.trial && d.params == t.params)
                })
                .collect()
        })
        .unwrap_or_default();
    let previous_epochs = previous
        .iter()
        .filter_map(|t| t.epochs.map(|e| (t.trial, e)))
        .collect();
    let carried = previous
        .into_iter()
        .filter(|t| t.state == TrialState::Pruned)
        .map(|t| (t.trial, t))
        .collect();
    Ok(Prepared {
        id,
        dir,
        spec,
        trials: drawn.trials,
        duplicates: drawn.duplicates,
        split,
        pipeline: Arc::new(pipeline),
        carried,
        previous_epochs,
        metric_stage,
    })
}

impl Prepared {
    /// The trial a stage of the laid-out pipeline belongs to, if it is a per-trial copy.
    fn trial_of(&self, idx: usize) -> Option<usize> {
        self.pipeline.stages[idx]
            .bindings
            .iter()
            .find(|(k, _)| k == TRIAL_KEY)
            .and_then(|(_, v)| v.as_u64())
            .map(|n| n as usize)
    }

    /// The stages this run of the sweep selects: all but the copies of carried (pruned) trials.
    pub fn selection(&self) -> BTreeSet<usize> {
        (0..self.pipeline.stages.len())
            .filter(|&i| {
                self.trial_of(i)
                    .is_none_or(|n| !self.carried.contains_key(&n))
            })
            .collect()
    }

    /// Each trial's copy of the metric stage, found in one pass over the laid-out stages.
    fn metric_copies(&self) -> HashMap<usize, usize> {
        let mut copies = HashMap::new();
        for (i, s) in self.pipeline.stages.iter().enumerate() {
            let Some(n) = self.trial_of(i) else { continue };
            let plain: Vec<(String, Json)> = s
                .bindings
                .iter()
                .filter(|(k, _)| k != TRIAL_KEY)
                .cloned()
                .collect();
            if crate::spec::matrix::instance_name(&s.base, &plain) == self.metric_stage {
                copies.insert(n, i);
            }
        }
        copies
    }
}

/// Runs a prepared sweep. Trials' stages run as one engine run (keep-going); `events` gets the
/// engine's events plus a `TrialFinished` per trial. Returns the ranked results, already
/// written to the sweep's directory.
pub fn run(
    engine: &Engine,
    prep: &Prepared,
    mut opts: RunOptions,
    events: Sender<Event>,
    signals: Receiver<i32>,
) -> Result<(SweepResults, RunSummary), EngineError> {
    opts.keep_going = true;
    let curves_path = prep.dir.join("curves.json");
    let curves = match Curves::load(&curves_path) {
        Ok(c) => c,
        Err(e) => {
            // Pruning then compares with the trials of this run only; worth saying why.
            let _ = events.send(Event::Warning {
                stage: None,
                message: format!("{e}; the curves of earlier trials are not used for pruning"),
            });
            Curves::default()
        }
    };
    let (inner_tx, inner_rx) = crossbeam_channel::unbounded::<Event>();
    let (control_tx, control_rx) = crossbeam_channel::unbounded::<Control>();
    let watcher = Watcher::new(prep, curves, curves_path.clone());
    let forward = std::thread::Builder::new()
        .name("sluice-sweep-events".into())
        .spawn(move || watcher.watch(inner_rx, events, control_tx))
        .map_err(|source| EngineError::Io {
            context: "cannot start the sweep's event thread".into(),
            source,
        })?;
    let summary = engine.run_controlled(
        prep.pipeline.clone(),
        opts,
        Some(prep.selection()),
        inner_tx,
        signals,
        control_rx,
    );
    // The engine dropped its senders when it returned: the thread drains and ends.
    let watcher = forward
        .join()
        .expect("the sweep's event thread does not panic");
    let summary = summary?;
    let _ = watcher.curves.save(&curves_path);
    let results = gather(prep, &summary, &watcher);
    if let Err(e) = results.write(&prep.dir) {
        tracing::warn!("{e}");
    }
    Ok((results, summary))
}

/// What the event thread learns while the sweep runs.
struct Watcher {
    curves: Curves,
    /// Saved whenever a trial completes, so that a sweep killed outright still resumes with
    /// the curves its finished trials left.
    curves_path: PathBuf,
    rule: Option<(MedianRule, String)>,
    /// Stage index by name, and its trial.
    trial_of: HashMap<String, (usize, usize)>,
    /// Per trial: stages still to finish.
    remaining: HashMap<usize, usize>,
    /// Per trial: the stage that reports the pruning metric.
    reporter: HashMap<usize, String>,
    pruned: BTreeSet<usize>,
    /// Per trial: duration of its finished stages, and the worst outcome seen.
    outcomes: HashMap<usize, Vec<Outcome>>,
    durations: HashMap<usize, u64>,
    params: HashMap<usize, BTreeMap<String, Json>>,
    metric_name: String,
    metric_paths: HashMap<usize, PathBuf>,
    /// Per trial: why it did not finish (its first failed or pruned stage's message).
    messages: HashMap<usize, String>,
    /// Per trial: the last epoch (`step`) any of its stages reported a metric for.
    epochs: HashMap<usize, u64>,
    total: usize,
}

impl Watcher {
    fn new(prep: &Prepared, curves: Curves, curves_path: PathBuf) -> Watcher {
        let selection = prep.selection();
        let mut trial_of = HashMap::new();
        let mut remaining: HashMap<usize, usize> = HashMap::new();
        for &i in &selection {
            if let Some(n) = prep.trial_of(i) {
                trial_of.insert(prep.pipeline.stages[i].id.0.clone(), (i, n));
                *remaining.entry(n).or_default() += 1;
            }
        }
        let mut metric_paths = HashMap::new();
        for (n, i) in prep.metric_copies() {
            if let Some(p) = metrics_output(&prep.pipeline.stages[i]) {
                metric_paths.insert(n, p.to_abs(&prep.pipeline.root));
            }
        }
        let rule = prep.spec.prune.as_ref().map(|p| {
            (
                MedianRule {
                    min_trials: p.min_trials,
                    warmup_epochs: p.warmup_epochs,
                    lower_is_better: p.direction == Direction::Min,
                },
                p.metric.clone(),
            )
        });
        Watcher {
            curves,
            curves_path,
            rule,
            trial_of,
            remaining,
            reporter: HashMap::new(),
            pruned: BTreeSet::new(),
            outcomes: HashMap::new(),
            durations: HashMap::new(),
            params: prep
                .trials
                .iter()
                .map(|t| (t.n, t.params.clone()))
                .collect(),
            metric_name: prep.spec.metric.name.clone(),
            metric_paths,
            messages: HashMap::new(),
            epochs: HashMap::new(),
            total: prep.trials.len(),
        }
    }

    fn watch(
        mut self,
        rx: Receiver<Event>,
        out: Sender<Event>,
        control: Sender<Control>,
    ) -> Watcher {
        for ev in rx {
            match &ev {
                Event::StageMetric {
                    stage,
                    name,
                    value,
                    step: Some(epoch),
                } => self.metric(stage, name, *value, *epoch, &control),
                Event::StageFinished {
                    stage,
                    outcome,
                    duration_ms,
                    message,
                    ..
                } => {
                    let _ = out.send(ev.clone());
                    if outcome.is_failure() || *outcome == Outcome::Pruned {
                        if let (Some(&(_, n)), Some(m)) = (self.trial_of.get(stage), message) {
                            self.messages.entry(n).or_insert_with(|| m.clone());
                        }
                    }
                    if let Some(done) = self.finished(stage, *outcome, *duration_ms) {
                        let _ = out.send(done);
                    }
                    continue;
                }
                _ => {}
            }
            let _ = out.send(ev);
        }
        self
    }

    fn metric(
        &mut self,
        stage: &str,
        name: &str,
        value: f64,
        epoch: u64,
        control: &Sender<Control>,
    ) {
        if let Some(&(_, n)) = self.trial_of.get(stage) {
            let e = self.epochs.entry(n).or_default();
            *e = (*e).max(epoch);
        }
        let Some((rule, metric)) = &self.rule else {
            return;
        };
        if name != metric {
            return;
        }
        let Some(&(idx, n)) = self.trial_of.get(stage) else {
            return;
        };
        self.reporter.entry(n).or_insert_with(|| stage.to_string());
        self.curves.report(n, epoch, value);
        if self.pruned.contains(&n) {
            return;
        }
        if let Some(verdict) = rule.check(&self.curves, n, epoch) {
            self.pruned.insert(n);
            let _ = control.send(Control::Prune(vec![(idx, verdict.describe(metric))]));
        }
    }

    /// Notes a finished stage; returns the trial's `TrialFinished` when it was its last.
    fn finished(&mut self, stage: &str, outcome: Outcome, ms: u64) -> Option<Event> {
        let &(_, n) = self.trial_of.get(stage)?;
        if self.reporter.get(&n).is_some_and(|r| r == stage) && outcome.is_success() {
            self.curves.complete(n);
            if let Err(e) = self.curves.save(&self.curves_path) {
                tracing::warn!("{e}");
            }
        }
        self.outcomes.entry(n).or_default().push(outcome);
        *self.durations.entry(n).or_default() += ms;
        let left = self.remaining.get_mut(&n)?;
        *left -= 1;
        if *left > 0 {
            return None;
        }
        // Restored trials reported no epochs: their curve (from curves.json) is complete.
        if self.outcomes[&n].iter().all(|o| o.is_success())
            && self.curves.values(n).next().is_some()
        {
            self.curves.complete(n);
        }
        let state = trial_state(&self.outcomes[&n]);
        let metric = if state == TrialState::Done {
            self.metric_paths
                .get(&n)
                .and_then(|p| read_metrics(p))
                .and_then(|m| m.get(&self.metric_name).and_then(Json::as_f64))
        } else {
            None
        };
        Some(Event::TrialFinished {
            trial: n,
            of: self.total,
            state: state.as_str().to_string(),
            metric_name: self.metric_name.clone(),
            metric,
            params: self.params.get(&n).cloned().unwrap_or_default(),
            duration_ms: self.durations[&n],
        })
    }
}

/// A trial's state from its stages' outcomes.
fn trial_state(outcomes: &[Outcome]) -> TrialState {
    if outcomes.contains(&Outcome::Pruned) {
        TrialState::Pruned
    } else if outcomes.iter().any(|o| o.is_failure()) {
        TrialState::Failed
    } else if outcomes.iter().all(|o| o.is_success()) {
        TrialState::Done
    } else if outcomes.contains(&Outcome::Cancelled) {
        TrialState::Cancelled
    } else {
        TrialState::Pending
    }
}

/// The metric stage's metrics file: its output named `metrics`, else its only `.json` output.
fn metrics_output(s: &crate::pipeline::StageDef) -> Option<&crate::paths::WorkPath> {
    s.outputs
        .iter()
        .find(|o| o.name == "metrics")
        .or_else(|| {
            let mut json = s
                .outputs
                .iter()
                .filter(|o| o.path.as_str().ends_with(".json"));
            match (json.next(), json.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        })
        .map(|o| &o.path)
}

/// The numbers in a metrics file: under `metrics` (evaluate's `metrics.json`), else at the top
/// level. Bounded: a metrics file over 16 MiB is not read.
fn read_metrics(path: &std::path::Path) -> Option<BTreeMap<String, Json>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > 16 * 1024 * 1024 {
        return None;
    }
    let v: Json = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let m = match v.get("metrics") {
        Some(Json::Object(m)) => m.clone(),
        _ => v.as_object()?.clone(),
    };
    Some(m.into_iter().filter(|(_, v)| v.is_number()).collect())
}

/// Every trial's result after the run.
fn gather(prep: &Prepared, summary: &RunSummary, w: &Watcher) -> SweepResults {
    let mut by_trial: HashMap<usize, Vec<(usize, Outcome, u64)>> = HashMap::new();
    for (&i, r) in &summary.stages {
        if let Some(n) = prep.trial_of(i) {
            by_trial
                .entry(n)
                .or_default()
                .push((i, r.outcome, r.duration.as_millis() as u64));
        }
    }
    let mut out = Vec::with_capacity(prep.trials.len());
    for t in &prep.trials {
        if let Some(c) = prep.carried.get(&t.n) {
            out.push(c.clone());
            continue;
        }
        let stages = by_trial.get(&t.n).map(Vec::as_slice).unwrap_or(&[]);
        let outcomes: Vec<Outcome> = stages.iter().map(|s| s.1).collect();
        let state = if outcomes.is_empty() {
            TrialState::Pending
        } else {
            trial_state(&outcomes)
        };
        let metrics = if state == TrialState::Done {
            w.metric_paths
                .get(&t.n)
                .and_then(|p| read_metrics(p))
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        // Counted from this run's per-epoch metrics; a trial restored from the cache reported
        // none, so its count comes from its curve or the previous results of this sweep.
        let epochs = w
            .epochs
            .get(&t.n)
            .copied()
            .or_else(|| w.curves.values(t.n).map(|(e, _)| e).max())
            .or_else(|| prep.previous_epochs.get(&t.n).copied());
        out.push(TrialResult {
            trial: t.n,
            rank: 0,
            params: t.params.clone(),
            state,
            metric: metrics.get(&prep.spec.metric.name).and_then(Json::as_f64),
            metrics,
            duration_ms: Some(stages.iter().map(|s| s.2).sum()),
            epochs,
            message: w.messages.get(&t.n).cloned(),
        });
    }
    let mut results = SweepResults {
        sweep: prep.id.clone(),
        pipeline: prep.pipeline.display_file.clone(),
        pipeline_file: prep.pipeline.file.clone(),
        method: prep.spec.method,
        metric: MetricGoal {
            stage: prep.spec.metric.stage.clone(),
            name: prep.spec.metric.name.clone(),
            direction: prep.spec.direction,
        },
        varied: prep.spec.varied(),
        interrupted: summary.interrupted,
        best: None,
        trials: out,
    };
    results.rank();
    results
}
