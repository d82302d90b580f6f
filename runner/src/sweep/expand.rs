//! How a sweep's trials become one pipeline. The stages whose params include a varied one, and
//! everything downstream of them, are copied once per trial (`train@trial=3`, with the trial's
//! params and outputs under `.sluice/sweeps/<id>/trials/3/`); the upstream they need is kept once
//! (outputs under `.sluice/sweeps/<id>/shared/`). Deploy stages (and the sweep's `skip:`) and
//! what depends on them are left out: a sweep publishes nothing. Keys hash paths without the
//! slot ([`crate::paths::WorkPath::keyed`]), so every copy keys like a plain run with the trial's
//! params, and the cache carries results between the sweep, a resumed sweep and promotion.

use crate::pipeline::{Pipeline, StageKind};
use crate::spec::matrix::{instance_name, TRIAL_KEY};
use crate::spec::RawPipeline;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Which stages a sweep runs once, which per trial, and where it keeps them.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `.sluice/sweeps/<id>`, workspace-relative.
    pub dir: String,
    /// The sweep's own lock file: the workspace's stays as it is until promotion.
    pub lock_file: PathBuf,
    /// Trial number and its params.
    pub trials: Vec<(usize, BTreeMap<String, Json>)>,
    /// Stage (instance) names run once per trial.
    pub per_trial: BTreeSet<String>,
    /// Stage (instance) names run once for the whole sweep.
    pub shared: BTreeSet<String>,
}

/// What a sweep over `varied` params runs, decided on the plain pipeline.
#[derive(Debug, Clone)]
pub struct Split {
    pub per_trial: BTreeSet<String>,
    pub shared: BTreeSet<String>,
    /// Left out: deploy stages, `skip:` and their downstream.
    pub left_out: BTreeSet<String>,
}

/// Splits `pipeline`'s stages for a sweep over `varied`: per trial (those that reference a
/// varied param, and their downstream), shared (what those need), and left out (deploy stages,
/// `skip`, their downstream, and anything the trials do not need).
pub fn split(pipeline: &Pipeline, varied: &[String], skip: &[String]) -> Split {
    let g = &pipeline.graph;
    let mut excluded: BTreeSet<usize> = BTreeSet::new();
    for s in &pipeline.stages {
        let deploy = matches!(&s.kind, StageKind::Builtin { name, .. } if name == "deploy");
        if deploy || skip.iter().any(|k| k == &s.base || k == &s.id.0) {
            excluded.insert(s.idx);
        }
    }
    let excluded = g.downstream_closure(&excluded);
    let varying: BTreeSet<usize> = pipeline
        .stages
        .iter()
        .filter(|s| varied.iter().any(|v| s.params.contains_key(v)))
        .map(|s| s.idx)
        .collect();
    let per_trial: BTreeSet<usize> = g
        .downstream_closure(&varying)
        .difference(&excluded)
        .copied()
        .collect();
    let shared: BTreeSet<usize> = g
        .upstream_closure(&per_trial)
        .difference(&per_trial)
        .copied()
        .collect();
    let name = |i: &usize| pipeline.stages[*i].id.0.clone();
    Split {
        per_trial: per_trial.iter().map(name).collect(),
        shared: shared.iter().map(name).collect(),
        left_out: (0..pipeline.stages.len())
            .filter(|i| !per_trial.contains(i) && !shared.contains(i))
            .map(|i| name(&i))
            .collect(),
    }
}

impl Layout {
    /// Rewrites the (matrix-expanded) raw pipeline: shared stages once, per-trial stages once
    /// per trial in trial order, the rest dropped.
    pub fn apply(&self, raw: &mut RawPipeline) {
        let stages = std::mem::take(&mut raw.stages);
        let mut out =
            Vec::with_capacity(self.shared.len() + self.per_trial.len() * self.trials.len());
        let shared_root = format!("{}/shared", self.dir);
        for s in &stages {
            if self.shared.contains(&s.name) {
                let mut s = s.clone();
                s.root = Some(shared_root.clone());
                out.push(s);
            }
        }
        for (n, params) in &self.trials {
            let root = format!("{}/trials/{n}", self.dir);
            for s in &stages {
                if !self.per_trial.contains(&s.name) {
                    continue;
                }
                let mut t = s.clone();
                t.bindings.push((TRIAL_KEY.to_string(), Json::from(*n)));
                t.name = instance_name(&t.base, &t.bindings);
                t.logical = s.name.clone();
                t.param_overrides = params.clone();
                t.root = Some(root.clone());
                out.push(t);
            }
        }
        raw.stages = out;
    }
}

/// The name of trial `n`'s copy of stage (instance) `stage`.
pub fn trial_stage_name(pipeline: &Pipeline, stage: &str, n: usize) -> String {
    let bindings = pipeline
        .stage(stage)
        .map(|s| s.bindings.clone())
        .unwrap_or_default();
    let base = pipeline
        .stage(stage)
        .map(|s| s.base.as_str())
        .unwrap_or(stage);
    let mut b = bindings;
    b.push((TRIAL_KEY.to_string(), Json::from(n)));
    instance_name(base, &b)
}
