//! Which stages an edit of the pipeline file changed: a stage counts as changed when anything
//! that defines it differs (kind, command or `with`, params, inputs and outputs, env, resources,
//! version), or when it is new. Stage indices are not compared, so reordering stages is no change.

use crate::pipeline::{Pipeline, StageDef};
use std::collections::BTreeSet;

/// Names of the stages of `new` whose definitions differ from `old`'s, or that are new.
pub(crate) fn changed_stages(old: &Pipeline, new: &Pipeline) -> BTreeSet<String> {
    new.stages
        .iter()
        .filter(|s| {
            old.stage(&s.id.0)
                .is_none_or(|o| definition(o) != definition(s))
        })
        .map(|s| s.id.0.clone())
        .collect()
}

/// Names of the stages of `old` that `new` no longer has.
pub(crate) fn removed_stages(old: &Pipeline, new: &Pipeline) -> BTreeSet<String> {
    old.stages
        .iter()
        .filter(|s| new.stage(&s.id.0).is_none())
        .map(|s| s.id.0.clone())
        .collect()
}

/// Everything that defines a stage, as comparable text. Upstream stages appear through input
/// paths, so a renamed upstream output changes its readers too.
fn definition(s: &StageDef) -> String {
    let inputs: Vec<(&str, &str)> = s
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.path.as_str()))
        .collect();
    let outputs: Vec<(&str, &str)> = s
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.path.as_str()))
        .collect();
    format!(
        "{:?}|{inputs:?}|{outputs:?}|{}|{}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{:?}",
        s.kind,
        s.with,
        s.config_text,
        s.params,
        s.env,
        s.cpus,
        s.gpus,
        s.gpus_optional,
        s.timeout,
        s.version,
        s.facts
    )
}
