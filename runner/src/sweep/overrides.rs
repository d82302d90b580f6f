//! The command line's sweep flags (`SweepOverrides`): laid over a pipeline's `sweep:` section
//! (`SweepSpec::apply`) or, for a pipeline without one, the whole sweep
//! (`SweepSpec::from_overrides`). `--param`'s SPEC syntax is read here.

use super::spec::{
    default_method, scalar, Direction, Dist, Method, MetricRef, PruneSpec, SweepSpec, Whole,
};
use crate::spec::yaml::read_yaml;
use serde_json::Value as Json;

impl SweepSpec {
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
