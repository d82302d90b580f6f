//! `SweepSpec`: what a sweep varies and how it judges trials. It is read from a pipeline's
//! `sweep:` section (`parse`, in `section.rs`, every problem at its YAML path) or from the
//! command line (`SweepOverrides`, in `overrides.rs`, applied over the section or standing
//! alone). Names are not checked against the pipeline here (declared params, the metric's
//! stage): validation does that.

use crate::canonical::canonical_json;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use yaml_serde::Value;

pub use super::overrides::{parse_param_spec, PruneChoice, SweepOverrides};
pub use super::section::parse;
use crate::spec::raw::type_name;

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
    pub(super) fn parse(text: &str) -> Option<Direction> {
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
    pub(super) fn grid_len(&self) -> Option<usize> {
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

/// Without a `method` (and without a trial count, which only random sweeps have): grid unless
/// some param has a range, which only random draws from.
pub(super) fn default_method(params: &[(String, Dist)]) -> Method {
    if params.iter().all(|(_, d)| matches!(d, Dist::Values(_))) {
        Method::Grid
    } else {
        Method::Random
    }
}

/// A text, number or boolean as JSON; anything else is refused, because a trial's values name
/// its instances and fill its table's cells.
pub(super) fn scalar(v: &Value) -> Result<Json, String> {
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

/// A problem of the section as a whole.
#[derive(Debug)]
pub(super) enum Whole {
    GridDist(String),
    NoTrials,
    TrialsInGrid,
    GridTooLarge(u128),
    TrialsOutOfRange(usize),
}

impl Whole {
    pub(super) fn message(&self) -> (String, Option<String>) {
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
    pub(super) fn check(&self) -> Result<(), Whole> {
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
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
