//! `SweepSpec`: what a sweep varies and how it judges trials, read from a pipeline's `sweep:`
//! section (`parse`, every problem at its YAML path) or from the command line
//! (`SweepOverrides`, applied over the section or standing alone). Names are not checked against
//! the pipeline here (declared params, the metric's stage): validation does that.

use crate::canonical::canonical_json;
use crate::diag::did_you_mean;
use crate::spec::raw::Problems;
use crate::spec::yaml::read_yaml;
use crate::spec::YPath;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use yaml_serde::Value;

/// The most trials one sweep may have, grid or random.
pub const MAX_TRIALS: usize = 100_000;
/// The defaults of `prune: median`: how many trials must have finished before the rule stops
/// any, and how many epochs every trial runs before it may be stopped.
pub const DEFAULT_MIN_TRIALS: usize = 4;
pub const DEFAULT_WARMUP_EPOCHS: u64 = 3;
/// The metric the pruning rule watches unless told otherwise (the train stage reports it).
pub const DEFAULT_PRUNE_METRIC: &str = "val_loss";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every combination of the listed values.
    Grid,
    /// `trials` seeded draws from the distributions.
    Random,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
        }
    }
}

/// Whether a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Max,
    Min,
}

impl Direction {
    /// `min` for names that measure a mistake (`loss`, `error`, `rmse`, `mae`, `mse`), else `max`.
    pub fn default_for(metric: &str) -> Direction {
        let name = metric.to_ascii_lowercase();
        if ["loss", "error", "rmse", "mae", "mse"]
            .iter()
            .any(|w| name.contains(w))
        {
            Direction::Min
        } else {
            Direction::Max
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Max => "max",
            Direction::Min => "min",
        }
    }
    fn parse(text: &str) -> Option<Direction> {
        match text {
            "max" => Some(Direction::Max),
            "min" => Some(Direction::Min),
            _ => None,
        }
    }
}

/// What one param takes in a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// A list: the grid's values, or a random sweep's uniform choice. Scalars only.
    Values(Vec<Json>),
    /// A float drawn uniformly from `[lo, hi]`.
    Uniform(f64, f64),
    /// A float whose logarithm is uniform (`0 < lo < hi`).
    #[serde(rename = "loguniform")]
    LogUniform(f64, f64),
    /// A whole number from `lo` to `hi`, both included.
    Int(i64, i64),
}

impl Dist {
    /// How many distinct values a grid gets from it: only lists have a count.
    fn grid_len(&self) -> Option<usize> {
        match self {
            Dist::Values(v) => Some(v.len()),
            _ => None,
        }
    }
}

/// `STAGE.NAME`: a value in that stage's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricRef {
    pub stage: String,
    pub name: String,
}

impl MetricRef {
    /// `evaluate.accuracy` → stage `evaluate`, name `accuracy`.
    pub fn parse(text: &str) -> Result<MetricRef, String> {
        let bad = || {
            format!("`{text}` is not `STAGE.METRIC`, e.g. `evaluate.accuracy` or `evaluate.rmse`")
        };
        let (stage, name) = text.split_once('.').ok_or_else(bad)?;
        let stage_ok = !stage.is_empty()
            && stage
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !stage_ok || name.trim().is_empty() || name.trim() != name {
            return Err(bad());
        }
        Ok(MetricRef {
            stage: stage.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for MetricRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.name)
    }
}

/// The median stopping rule's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSpec {
    /// A per-epoch metric the trials' stages report (`val_loss`, `val_accuracy`, ...).
    pub metric: String,
    pub direction: Direction,
    /// Completed trials needed before any trial is stopped.
    pub min_trials: usize,
    /// Epochs every trial runs before it may be stopped.
    pub warmup_epochs: u64,
}

impl Default for PruneSpec {
    fn default() -> Self {
        PruneSpec {
            metric: DEFAULT_PRUNE_METRIC.to_string(),
            direction: Direction::default_for(DEFAULT_PRUNE_METRIC),
            min_trials: DEFAULT_MIN_TRIALS,
            warmup_epochs: DEFAULT_WARMUP_EPOCHS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub method: Method,
    /// In written order: the grid's first param is its outermost loop.
    pub params: Vec<(String, Dist)>,
    /// Random sweeps only (a grid has the product of its lists).
    pub trials: Option<usize>,
    /// Random sweeps only.
    pub seed: u64,
    pub metric: MetricRef,
    pub direction: Direction,
    pub prune: Option<PruneSpec>,
    /// Stages a sweep does not run, besides deploy stages and what depends on them.
    pub skip: Vec<String>,
}

const SWEEP_KEYS: &[&str] = &[
    "method",
    "params",
    "trials",
    "seed",
    "metric",
    "direction",
    "prune",
    "skip",
];
const DIST_KEYS: &[&str] = &["choice", "uniform", "loguniform", "int"];
const PRUNE_KEYS: &[&str] = &["rule", "metric", "direction", "min_trials", "warmup_epochs"];

/// Reads a `sweep:` section; `path` is where it stands (`sweep`). Every problem is pushed at its
/// path; `None` when there was any.
pub fn parse(v: &Value, path: &YPath, problems: &mut Problems) -> Option<SweepSpec> {
    let before = problems.0.len();
    let Value::Mapping(m) = v else {
        problems.push(
            path,
            format!("`sweep` must be a mapping, found {}", type_name(v)),
            Some("e.g. `sweep: {params: {lr: [0.1, 0.01]}, metric: evaluate.accuracy}`".into()),
        );
        return None;
    };
    for k in m.keys() {
        match k {
            Value::String(k) if SWEEP_KEYS.contains(&k.as_str()) => {}
            Value::String(k) => problems.push(
                &path.k(k).key_of(),
                format!("unknown sweep key `{k}`"),
                Some(
                    did_you_mean(k, SWEEP_KEYS.iter().copied())
                        .unwrap_or_else(|| format!("a sweep takes: {}", SWEEP_KEYS.join(", "))),
                ),
            ),
            other => problems.push(
                path,
                format!("keys must be strings, found {}", type_name(other)),
                None,
            ),
        }
    }

    let method = match m.get("method") {
        None => None,
        Some(Value::String(s)) if s == "grid" => Some(Method::Grid),
        Some(Value::String(s)) if s == "random" => Some(Method::Random),
        Some(other) => {
            problems.push(
                &path.k("method"),
                format!(
                    "`method` must be `grid` or `random`, found {}",
                    found(other)
                ),
                None,
            );
            None
        }
    };

    let mut params = Vec::new();
    match m.get("params") {
        None => problems.push(
            &path.key_of(),
            "the sweep has no `params`",
            Some("name the params to vary, e.g. `params: {lr: [0.1, 0.01]}`".into()),
        ),
        Some(Value::Mapping(pm)) => {
            let p = path.k("params");
            if pm.is_empty() {
                problems.push(
                    &p,
                    "`params` is empty",
                    Some("name at least one param to vary".into()),
                );
            }
            for (k, dv) in pm {
                let Value::String(name) = k else {
                    problems.push(
                        &p,
                        format!("param names must be strings, found {}", type_name(k)),
                        None,
                    );
                    continue;
                };
                if let Some(d) = dist(dv, &p.k(name), problems) {
                    params.push((name.clone(), d));
                }
            }
        }
        Some(other) => problems.push(
            &path.k("params"),
            format!(
                "`params` must be a mapping of param names, found {}",
                type_name(other)
            ),
            None,
        ),
    }

    let trials = m.get("trials").and_then(|t| match t.as_u64() {
        Some(n) if n >= 1 && n <= MAX_TRIALS as u64 => Some(n as usize),
        _ => {
            problems.push(
                &path.k("trials"),
                format!(
                    "`trials` must be a whole number from 1 to {MAX_TRIALS}, found {}",
                    found(t)
                ),
                None,
            );
            None
        }
    });
    let seed = match m.get("seed") {
        None => 0,
        Some(s) => s.as_u64().unwrap_or_else(|| {
            problems.push(
                &path.k("seed"),
                format!(
                    "`seed` must be a whole number from 0 to {}, found {}",
                    u64::MAX,
                    found(s)
                ),
                None,
            );
            0
        }),
    };

    let metric = match m.get("metric") {
        None => {
            problems.push(
                &path.key_of(),
                "the sweep has no `metric`",
                Some("name the metric to optimize as `STAGE.METRIC`, e.g. `metric: evaluate.accuracy`".into()),
            );
            None
        }
        Some(Value::String(s)) => match MetricRef::parse(s) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(&path.k("metric"), format!("`metric`: {e}"), None);
                None
            }
        },
        Some(other) => {
            problems.push(
                &path.k("metric"),
                format!(
                    "`metric` must be `STAGE.METRIC` text, found {}",
                    type_name(other)
                ),
                None,
            );
            None
        }
    };
    let direction = m
        .get("direction")
        .and_then(|d| direction(d, &path.k("direction"), problems));

    let prune = match m.get("prune") {
        None => None,
        Some(v) => prune(v, &path.k("prune"), problems),
    };

    let mut skip = Vec::new();
    match m.get("skip") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => skip.push(s.clone()),
                    other => problems.push(
                        &path.k("skip").i(i),
                        format!("a stage name must be text, found {}", type_name(other)),
                        None,
                    ),
                }
            }
        }
        Some(Value::String(s)) => skip.push(s.clone()),
        Some(other) => problems.push(
            &path.k("skip"),
            format!(
                "`skip` must be a list of stage names, found {}",
                type_name(other)
            ),
            None,
        ),
    }

    let method = method.unwrap_or_else(|| default_method(&params));
    let metric = metric?;
    let spec = SweepSpec {
        method,
        direction: direction.unwrap_or_else(|| Direction::default_for(&metric.name)),
        metric,
        params,
        trials,
        seed,
        prune,
        skip,
    };
    // What only the whole section can say, each placed where it is best fixed.
    if problems.0.len() == before {
        if let Err(e) = spec.check() {
            let at = match &e {
                Whole::GridDist(name) => path.k("params").k(name),
                Whole::NoTrials => path.k("method"),
                Whole::TrialsInGrid => path.k("trials"),
                Whole::GridTooLarge(_) => path.k("params"),
                Whole::TrialsOutOfRange(_) => path.k("trials"),
            };
            let (message, help) = e.message();
            problems.push(&at, message, help);
        }
    }
    (problems.0.len() == before).then_some(spec)
}

/// Grid unless some param has a range, which only random draws from.
fn default_method(params: &[(String, Dist)]) -> Method {
    if params.iter().all(|(_, d)| matches!(d, Dist::Values(_))) {
        Method::Grid
    } else {
        Method::Random
    }
}

fn dist(v: &Value, path: &YPath, problems: &mut Problems) -> Option<Dist> {
    match v {
        Value::Sequence(items) => values(items, path, problems).map(Dist::Values),
        Value::Mapping(m) => {
            if m.len() != 1 {
                problems.push(
                    path,
                    format!(
                        "a distribution has exactly one key ({}), found {}",
                        DIST_KEYS.join(", "),
                        m.len()
                    ),
                    Some("e.g. `{uniform: [0.0, 0.5]}`".into()),
                );
                return None;
            }
            let (k, arg) = m.iter().next()?;
            let Value::String(k) = k else {
                problems.push(
                    path,
                    format!("a distribution's key must be text, found {}", type_name(k)),
                    None,
                );
                return None;
            };
            let at = path.k(k);
            match k.as_str() {
                "choice" => match arg {
                    Value::Sequence(items) => values(items, &at, problems).map(Dist::Values),
                    other => {
                        problems.push(
                            &at,
                            format!(
                                "`choice` takes a list of values, found {}",
                                type_name(other)
                            ),
                            None,
                        );
                        None
                    }
                },
                "uniform" | "loguniform" => {
                    let (lo, hi) = pair(
                        arg,
                        &at,
                        k,
                        problems,
                        |v| v.as_f64().filter(|x| x.is_finite()),
                        "numbers",
                    )?;
                    if lo >= hi {
                        problems.push(
                            &at,
                            format!(
                                "`{k}`'s low end must be below its high end, found [{lo}, {hi}]"
                            ),
                            None,
                        );
                        return None;
                    }
                    if k == "loguniform" {
                        if lo <= 0.0 {
                            problems.push(
                                &at,
                                format!("`loguniform` needs a low end above 0, found {lo}"),
                                Some("its values are drawn evenly on a log scale, e.g. `{loguniform: [1.0e-5, 1.0e-2]}`".into()),
                            );
                            return None;
                        }
                        Some(Dist::LogUniform(lo, hi))
                    } else {
                        Some(Dist::Uniform(lo, hi))
                    }
                }
                "int" => {
                    let (lo, hi) = pair(arg, &at, k, problems, Value::as_i64, "whole numbers")?;
                    if lo > hi {
                        problems.push(&at, format!("`int`'s low end must not be above its high end, found [{lo}, {hi}]"), None);
                        return None;
                    }
                    Some(Dist::Int(lo, hi))
                }
                _ => {
                    problems.push(
                        &at.key_of(),
                        format!("unknown distribution `{k}`"),
                        Some(
                            did_you_mean(k, DIST_KEYS.iter().copied()).unwrap_or_else(|| {
                                format!("a distribution is one of: {}", DIST_KEYS.join(", "))
                            }),
                        ),
                    );
                    None
                }
            }
        }
        other => {
            problems.push(
                path,
                format!("a swept param takes a list of values or a distribution, found {}", found(other)),
                Some("e.g. `[0.1, 0.01]`, `{choice: [8, 16]}`, `{uniform: [0.0, 0.5]}`, `{loguniform: [1.0e-5, 1.0e-2]}` or `{int: [1, 4]}`".into()),
            );
            None
        }
    }
}

/// `[LO, HI]` read with `get`.
fn pair<T>(
    v: &Value,
    path: &YPath,
    what: &str,
    problems: &mut Problems,
    get: impl Fn(&Value) -> Option<T>,
    kind: &str,
) -> Option<(T, T)> {
    let items = match v {
        Value::Sequence(items) if items.len() == 2 => items,
        other => {
            problems.push(
                path,
                format!(
                    "`{what}` takes two {kind}, `[LOW, HIGH]`, found {}",
                    found(other)
                ),
                None,
            );
            return None;
        }
    };
    let mut out = Vec::with_capacity(2);
    for (i, item) in items.iter().enumerate() {
        match get(item) {
            Some(x) => out.push(x),
            None => problems.push(
                &path.i(i),
                format!("`{what}` takes {kind}, found {}", found(item)),
                None,
            ),
        }
    }
    let hi = out.pop()?;
    let lo = out.pop()?;
    Some((lo, hi))
}

/// A list of distinct scalar values.
fn values(items: &[Value], path: &YPath, problems: &mut Problems) -> Option<Vec<Json>> {
    if items.is_empty() {
        problems.push(
            path,
            "the list of values is empty",
            Some("list at least one value".into()),
        );
        return None;
    }
    let before = problems.0.len();
    let mut out: Vec<Json> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match scalar(item) {
            Ok(j) => {
                if out.contains(&j) {
                    problems.push(
                        &path.i(i),
                        format!("`{j}` is listed twice"),
                        Some("each value makes its own trials; list it once".into()),
                    );
                }
                out.push(j)
            }
            Err(e) => problems.push(&path.i(i), e, None),
        }
    }
    (problems.0.len() == before).then_some(out)
}

/// A text, number or boolean as JSON; anything else is refused, because a trial's values name
/// its instances and fill its table's cells.
fn scalar(v: &Value) -> Result<Json, String> {
    match v {
        Value::String(s) => Ok(Json::String(s.clone())),
        Value::Bool(b) => Ok(Json::Bool(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Json::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Json::from(u))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => Ok(Json::from(f)),
                    _ => Err(format!(
                        "a swept value must be a finite number, found `{n}`"
                    )),
                }
            }
        }
        other => Err(format!(
            "a swept value must be text, a number or a boolean, found {}",
            type_name(other)
        )),
    }
}

fn direction(v: &Value, path: &YPath, problems: &mut Problems) -> Option<Direction> {
    let d = v.as_str().and_then(Direction::parse);
    if d.is_none() {
        problems.push(
            path,
            format!("`direction` must be `max` or `min`, found {}", found(v)),
            None,
        );
    }
    d
}

fn prune(v: &Value, path: &YPath, problems: &mut Problems) -> Option<PruneSpec> {
    let rule_problem = |v: &Value, at: &YPath, problems: &mut Problems| {
        problems.push(
            at,
            format!("the only pruning rule is `median`, found {}", found(v)),
            Some("`prune: median` stops a trial whose metric is worse than the median of the finished trials' at the same epoch; leave `prune` out (or write `none`) not to prune".into()),
        );
    };
    match v {
        Value::String(s) if s == "median" => Some(PruneSpec::default()),
        Value::String(s) if s == "none" => None,
        Value::Bool(false) | Value::Null => None,
        Value::Mapping(m) => {
            let mut spec = PruneSpec::default();
            for k in m.keys() {
                if let Value::String(k) = k {
                    if !PRUNE_KEYS.contains(&k.as_str()) {
                        problems.push(
                            &path.k(k).key_of(),
                            format!("unknown prune key `{k}`"),
                            Some(did_you_mean(k, PRUNE_KEYS.iter().copied()).unwrap_or_else(
                                || format!("`prune` takes: {}", PRUNE_KEYS.join(", ")),
                            )),
                        );
                    }
                }
            }
            match m.get("rule") {
                Some(Value::String(s)) if s == "median" => {}
                None => {}
                Some(other) => rule_problem(other, &path.k("rule"), problems),
            }
            match m.get("metric") {
                None => {}
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    spec.metric = s.clone();
                    spec.direction = Direction::default_for(s);
                }
                Some(other) => problems.push(
                    &path.k("metric"),
                    format!(
                        "`metric` must name a per-epoch metric (e.g. `val_loss`), found {}",
                        found(other)
                    ),
                    None,
                ),
            }
            if let Some(d) = m.get("direction") {
                if let Some(d) = direction(d, &path.k("direction"), problems) {
                    spec.direction = d;
                }
            }
            if let Some(n) = m.get("min_trials") {
                match n.as_u64() {
                    Some(n) if n >= 1 && n <= MAX_TRIALS as u64 => spec.min_trials = n as usize,
                    _ => problems.push(
                        &path.k("min_trials"),
                        format!(
                            "`min_trials` must be a whole number from 1 to {MAX_TRIALS}, found {}",
                            found(n)
                        ),
                        None,
                    ),
                }
            }
            if let Some(n) = m.get("warmup_epochs") {
                match n.as_u64() {
                    Some(n) => spec.warmup_epochs = n,
                    None => problems.push(
                        &path.k("warmup_epochs"),
                        format!("`warmup_epochs` must be a whole number, found {}", found(n)),
                        None,
                    ),
                }
            }
            Some(spec)
        }
        other => {
            rule_problem(other, path, problems);
            None
        }
    }
}

/// A problem of the section as a whole.
#[derive(Debug)]
enum Whole {
    GridDist(String),
    NoTrials,
    TrialsInGrid,
    GridTooLarge(u128),
    TrialsOutOfRange(usize),
}

impl Whole {
    fn message(&self) -> (String, Option<String>) {
        match self {
            Whole::GridDist(name) => (
                format!("a grid sweep takes lists of values, and `{name}` has a range"),
                Some(
                    "list the values (`[1, 2, 3]`), or use `method: random` to draw from the range"
                        .into(),
                ),
            ),
            Whole::NoTrials => (
                "a random sweep needs `trials`".into(),
                Some("say how many trials to draw, e.g. `trials: 32`".into()),
            ),
            Whole::TrialsInGrid => (
                "`trials` is for random sweeps; a grid runs every combination".into(),
                Some("remove `trials`, or use `method: random`".into()),
            ),
            Whole::GridTooLarge(n) => (
                format!(
                    "the grid has {n} combinations, more than the {MAX_TRIALS} a sweep may run"
                ),
                Some("list fewer values, or use `method: random` with `trials`".into()),
            ),
            Whole::TrialsOutOfRange(n) => (
                format!("a sweep runs from 1 to {MAX_TRIALS} trials, not {n}"),
                None,
            ),
        }
    }
}

impl SweepSpec {
    /// What holds across fields: grids list values and stay within bounds, random sweeps say how
    /// many trials.
    fn check(&self) -> Result<(), Whole> {
        match self.method {
            Method::Grid => {
                if self.trials.is_some() {
                    return Err(Whole::TrialsInGrid);
                }
                let mut product: u128 = 1;
                for (name, d) in &self.params {
                    let n = d.grid_len().ok_or_else(|| Whole::GridDist(name.clone()))?;
                    product = product.saturating_mul(n as u128);
                }
                if product > MAX_TRIALS as u128 {
                    return Err(Whole::GridTooLarge(product));
                }
            }
            Method::Random => match self.trials {
                None => return Err(Whole::NoTrials),
                Some(n) if n == 0 || n > MAX_TRIALS => return Err(Whole::TrialsOutOfRange(n)),
                Some(_) => {}
            },
        }
        Ok(())
    }

    /// The names of the varied params, in written order.
    pub fn varied(&self) -> Vec<String> {
        self.params.iter().map(|(n, _)| n.clone()).collect()
    }

    /// How many trials the sweep asks for (a grid's product, a random sweep's `trials`).
    pub fn planned_trials(&self) -> usize {
        match self.method {
            Method::Grid => self
                .params
                .iter()
                .map(|(_, d)| d.grid_len().unwrap_or(0))
                .product(),
            Method::Random => self.trials.unwrap_or(0),
        }
    }

    /// `<pipeline name>-<8 hex digits>`: the same resolved spec gives the same id, which is how a
    /// rerun finds (and resumes) its sweep. A grid's seed plays no part.
    pub fn id(&self, pipeline_name: &str) -> String {
        let mut form = self.clone();
        if form.method == Method::Grid {
            form.seed = 0;
            form.trials = None;
        }
        let json = serde_json::to_value(&form).expect("a sweep spec serializes");
        let hash = blake3::hash(canonical_json(&json).as_bytes());
        format!("{pipeline_name}-{}", &hash.to_hex()[..8])
    }

    /// Lays the command line over the pipeline's section. A `--param` replaces that param's
    /// spec (or adds the param); `--metric` without `--direction` takes the new name's default.
    pub fn apply(&mut self, o: &SweepOverrides) -> Result<(), String> {
        for (name, text) in &o.params {
            let d = parse_param_spec(text).map_err(|e| format!("`--param {name}={text}`: {e}"))?;
            match self.params.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = d,
                None => self.params.push((name.clone(), d)),
            }
        }
        if let Some(m) = &o.metric {
            self.metric = MetricRef::parse(m).map_err(|e| format!("`--metric`: {e}"))?;
            self.direction = Direction::default_for(&self.metric.name);
        }
        if let Some(d) = o.direction {
            self.direction = d;
        }
        if let Some(m) = o.method {
            self.method = m;
            // The file's trial count belongs to its random sweep, not to a grid asked for here.
            if m == Method::Grid && o.trials.is_none() {
                self.trials = None;
            }
        }
        if let Some(t) = o.trials {
            self.trials = Some(t);
        }
        if let Some(s) = o.seed {
            self.seed = s;
        }
        match o.prune {
            Some(PruneChoice::Median) if self.prune.is_none() => {
                self.prune = Some(PruneSpec::default())
            }
            Some(PruneChoice::Median) => {}
            Some(PruneChoice::Off) => self.prune = None,
            None => {}
        }
        self.check_overridden()
    }

    /// A sweep made from the command line alone, for a pipeline without a `sweep:` section.
    pub fn from_overrides(o: &SweepOverrides) -> Result<SweepSpec, String> {
        if o.params.is_empty() {
            return Err("the pipeline has no `sweep:` section, so `--param NAME=SPEC` is needed (e.g. `--param lr=0.1,0.01`)".into());
        }
        let Some(metric) = &o.metric else {
            return Err("the pipeline has no `sweep:` section, so `--metric STAGE.METRIC` is needed (e.g. `--metric evaluate.accuracy`)".into());
        };
        let metric = MetricRef::parse(metric).map_err(|e| format!("`--metric`: {e}"))?;
        let mut params = Vec::new();
        for (name, text) in &o.params {
            let d = parse_param_spec(text).map_err(|e| format!("`--param {name}={text}`: {e}"))?;
            match params
                .iter_mut()
                .find(|(n, _): &&mut (String, Dist)| n == name)
            {
                Some(slot) => slot.1 = d,
                None => params.push((name.clone(), d)),
            }
        }
        let method = o.method.unwrap_or(if o.trials.is_some() {
            Method::Random
        } else {
            default_method(&params)
        });
        let spec = SweepSpec {
            method,
            trials: o.trials,
            seed: o.seed.unwrap_or(0),
            direction: o
                .direction
                .unwrap_or_else(|| Direction::default_for(&metric.name)),
            metric,
            params,
            prune: matches!(o.prune, Some(PruneChoice::Median)).then(PruneSpec::default),
            skip: Vec::new(),
        };
        spec.check_overridden()?;
        Ok(spec)
    }

    fn check_overridden(&self) -> Result<(), String> {
        self.check().map_err(|e| {
            let (message, _) = e.message();
            let help = match e {
                Whole::GridDist(_) => "list the values (`--param NAME=a,b,c`), or draw from the range with `--method random --trials N`",
                Whole::NoTrials => "say how many trials to draw with `--trials N`",
                Whole::TrialsInGrid => "leave out `--trials`, or add `--method random`",
                Whole::GridTooLarge(_) => "list fewer values, or use `--method random --trials N`",
                Whole::TrialsOutOfRange(_) => "ask for fewer trials with `--trials N`",
            };
            format!("{message}\nhint: {help}")
        })
    }
}

/// `--prune median|none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneChoice {
    Median,
    Off,
}

/// The sweep flags of the command line, laid over the pipeline's `sweep:` section.
#[derive(Debug, Clone, Default)]
pub struct SweepOverrides {
    pub method: Option<Method>,
    pub trials: Option<usize>,
    pub seed: Option<u64>,
    /// `--param NAME=SPEC`, in the order given.
    pub params: Vec<(String, String)>,
    /// `STAGE.METRIC` as typed.
    pub metric: Option<String>,
    pub direction: Option<Direction>,
    pub prune: Option<PruneChoice>,
}

/// `--param`'s SPEC: `a,b,c` (YAML scalars), `choice:a,b`, `uniform:LO,HI`,
/// `loguniform:LO,HI` or `int:LO,HI`.
pub fn parse_param_spec(text: &str) -> Result<Dist, String> {
    let (kind, rest) = match text.split_once(':') {
        Some((k @ ("choice" | "uniform" | "loguniform" | "int"), rest)) => (Some(k), rest),
        _ => (None, text),
    };
    let items = rest
        .split(',')
        .map(|s| {
            let s = s.trim();
            if s.is_empty() {
                return Err("an empty value (two commas in a row, or one at an end)".to_string());
            }
            let (v, too_large) =
                read_yaml(s).map_err(|e| format!("`{s}` is not a YAML value: {}", e.message))?;
            if !too_large.is_empty() {
                return Err(format!("`{s}` is too large a number"));
            }
            scalar(&v).map_err(|e| format!("`{s}`: {e}"))
        })
        .collect::<Result<Vec<Json>, String>>()?;
    let pair = |what: &str| -> Result<(Json, Json), String> {
        match items.as_slice() {
            [lo, hi] => Ok((lo.clone(), hi.clone())),
            _ => Err(format!("`{what}:` takes two values, `{what}:LOW,HIGH`")),
        }
    };
    let float = |j: &Json, what: &str| {
        j.as_f64()
            .ok_or_else(|| format!("`{what}:` takes numbers, found `{j}`"))
    };
    match kind {
        None | Some("choice") => {
            for (i, v) in items.iter().enumerate() {
                if items[..i].contains(v) {
                    return Err(format!("`{v}` is listed twice"));
                }
            }
            Ok(Dist::Values(items))
        }
        Some(what @ ("uniform" | "loguniform")) => {
            let (lo, hi) = pair(what)?;
            let (lo, hi) = (float(&lo, what)?, float(&hi, what)?);
            if lo >= hi {
                return Err(format!(
                    "the low end must be below the high end, found {lo},{hi}"
                ));
            }
            if what == "loguniform" {
                if lo <= 0.0 {
                    return Err(format!("`loguniform:` needs a low end above 0, found {lo}"));
                }
                return Ok(Dist::LogUniform(lo, hi));
            }
            Ok(Dist::Uniform(lo, hi))
        }
        _ => {
            let (lo, hi) = pair("int")?;
            let (Some(lo), Some(hi)) = (lo.as_i64(), hi.as_i64()) else {
                return Err(format!("`int:` takes whole numbers, found `{lo},{hi}`"));
            };
            if lo > hi {
                return Err(format!(
                    "the low end must not be above the high end, found {lo},{hi}"
                ));
            }
            Ok(Dist::Int(lo, hi))
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A value as a message names it: scalars as written, the rest by their type.
fn found(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        Value::String(s) if s.chars().count() <= 40 => format!("the text `{s}`"),
        other => type_name(other).to_string(),
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
