//! `parse`: a pipeline's `sweep:` section read into a `SweepSpec`, key by key, with every
//! problem pushed at its YAML path (unknown keys with a did-you-mean) rather than stopping at
//! the first.

use super::spec::{
    default_method, scalar, Direction, Dist, Method, MetricRef, PruneSpec, SweepSpec, Whole,
    MAX_TRIALS,
};
use crate::diag::did_you_mean;
use crate::spec::raw::{found, type_name, Problems};
use crate::spec::YPath;
use serde_json::Value as Json;
use yaml_serde::Value;

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

    let method = method.unwrap_or(if trials.is_some() {
        Method::Random
    } else {
        default_method(&params)
    });
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
                Whole::NoTrials if m.contains_key("method") => path.k("method"),
                Whole::NoTrials => path.key_of(),
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
