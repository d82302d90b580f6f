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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::StageRegistry;
    use crate::validate::{load, LoadOptions};

    fn pipeline(dir: &std::path::Path, yaml: &str) -> Pipeline {
        let file = dir.join("sluice.yaml");
        std::fs::write(&file, yaml).unwrap();
        load(&LoadOptions {
            root: &std::fs::canonicalize(dir).unwrap(),
            file: &file,
            display: "sluice.yaml".into(),
            overrides: &[],
            registry: &StageRegistry::default(),
            sweep: None,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_changed_and_new_stages_count_and_reordering_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let old = pipeline(
            dir.path(),
            r#"
params: {n: 1, m: 2}
stages:
  a: {run: "echo ${{ params.n }} > ${{ outputs.o }}", outputs: [o]}
  b: {run: "cat ${{ stages.a.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
  c: {run: "echo ${{ params.m }} > ${{ outputs.o }}", outputs: [o]}
  gone: {run: "true > ${{ outputs.o }}", outputs: [o]}
"#,
        );
        let new = pipeline(
            dir.path(),
            r#"
params: {n: 1, m: 3}
stages:
  b: {run: "cat ${{ stages.a.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
  a: {run: "echo ${{ params.n }} > ${{ outputs.o }}", outputs: [o]}
  c: {run: "echo ${{ params.m }} > ${{ outputs.o }}", outputs: [o]}
  d: {run: "true > ${{ outputs.o }}", outputs: [o]}
"#,
        );
        let changed: Vec<String> = changed_stages(&old, &new).into_iter().collect();
        assert_eq!(changed, ["c", "d"]);
        let removed: Vec<String> = removed_stages(&old, &new).into_iter().collect();
        assert_eq!(removed, ["gone"]);
    }
}
