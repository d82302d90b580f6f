//! `RawExecutor`: the pipeline's `executor:` section as written — Slurm defaults for every job
//! (`slurm:`) and per-stage overrides (`stages:`) — checked key by key. Stage names are resolved
//! and the settings merged into each stage by `validate::executor`.

use super::locate::YPath;
use super::raw::{as_map, check_keys, key_str, scalar_string, string, type_name, Problems};
use yaml_serde::Value;

const EXECUTOR_KEYS: &[&str] = &["slurm", "stages"];
const SLURM_KEYS: &[&str] = &["partition", "account", "qos", "sbatch_args", "poll"];
const OVERRIDE_KEYS: &[&str] = &["local", "partition", "account", "qos", "sbatch_args"];

/// Slurm settings as written, at one level (defaults or one stage's override).
#[derive(Debug, Clone, Default)]
pub struct RawSlurm {
    pub local: Option<bool>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub sbatch_args: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RawExecutor {
    pub defaults: RawSlurm,
    /// `executor.slurm.poll` as written, with its place.
    pub poll: Option<(String, YPath)>,
    /// Stage name as written, where its override is, and the override.
    pub stages: Vec<(String, YPath, RawSlurm)>,
}

pub(super) fn read(v: &Value, path: &YPath, problems: &mut Problems) -> Option<RawExecutor> {
    let m = as_map(v, path, "`executor`", problems)?;
    check_keys(m, path, EXECUTOR_KEYS, "pipeline `executor`", problems);
    let mut raw = RawExecutor::default();
    if let Some(v) = m.get("slurm") {
        let p = path.k("slurm");
        if let Some(sm) = as_map(v, &p, "`executor.slurm`", problems) {
            check_keys(sm, &p, SLURM_KEYS, "`executor.slurm`", problems);
            raw.defaults = settings(sm, &p, problems);
            if let Some(v) = sm.get("poll") {
                let pp = p.k("poll");
                raw.poll = scalar_string(v, &pp, "`poll`", problems).map(|s| (s, pp));
            }
        }
    }
    if let Some(v) = m.get("stages") {
        let p = path.k("stages");
        if let Some(stages) = as_map(v, &p, "`executor.stages`", problems) {
            for (k, v) in stages {
                let Some(name) = key_str(k, &p, problems) else {
                    continue;
                };
                let sp = p.k(&name);
                let Some(om) = as_map(v, &sp, "a stage's executor settings", problems) else {
                    continue;
                };
                check_keys(om, &sp, OVERRIDE_KEYS, "stage executor", problems);
                let mut o = settings(om, &sp, problems);
                if let Some(v) = om.get("local") {
                    match v {
                        Value::Bool(b) => o.local = Some(*b),
                        other => problems.push(
                            &sp.k("local"),
                            format!("`local` must be true or false, found {}", type_name(other)),
                            None,
                        ),
                    }
                }
                raw.stages.push((name, sp, o));
            }
        }
    }
    Some(raw)
}

/// `partition`, `account`, `qos` and `sbatch_args` at one level.
fn settings(m: &yaml_serde::Mapping, path: &YPath, problems: &mut Problems) -> RawSlurm {
    let text = |key: &str, problems: &mut Problems| {
        m.get(key)
            .and_then(|v| string(v, &path.k(key), &format!("`{key}`"), problems))
    };
    let mut s = RawSlurm {
        partition: text("partition", problems),
        account: text("account", problems),
        qos: text("qos", problems),
        ..RawSlurm::default()
    };
    if let Some(v) = m.get("sbatch_args") {
        let p = path.k("sbatch_args");
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(a) = scalar_string(item, &p.i(i), "an sbatch argument", problems) {
                        s.sbatch_args.push(a);
                    }
                }
            }
            other => problems.push(
                &p,
                format!(
                    "`sbatch_args` must be a list of arguments, found {}",
                    type_name(other)
                ),
                Some("write one argument per item: `sbatch_args: [\"--constraint=a100\"]`".into()),
            ),
        }
    }
    s
}
