//! Pass 2, stage by stage, once every stage's kind and outputs are known: inputs, `with:`
//! (spliced, then prepared by its kind), the `run:` command, `env:`, `timeout`, `version`, and the
//! inputs implied by references to other stages' outputs. The result is a [`Defined`] stage.

use super::duration::{parse_duration, DurationError};
use super::edges::Edges;
use super::params::Params;
use super::splice::{Scope, Splice, Used};
use super::Validator;
use crate::paths::WorkPath;
use crate::pipeline::{Input, Output, StageDef, StageId, StageKind};
use crate::spec::raw::RawStage;
use crate::spec::Seg;
use crate::spec::YPath;
use crate::stage::Prepared;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What every stage's definition may refer to: the params, all stages' outputs and names.
pub(super) struct Known<'k> {
    pub(super) params: &'k Params,
    pub(super) outputs_by_stage: &'k HashMap<String, BTreeMap<String, WorkPath>>,
    pub(super) stage_names: &'k [String],
    pub(super) index: &'k HashMap<String, usize>,
    pub(super) by_base: &'k HashMap<String, Vec<usize>>,
    pub(super) stages: &'k [RawStage],
    /// A sweep's directory, and which stages' outputs each logical output path stands for
    /// (`None` outside a sweep): a path written literally in a trial's `inputs:` means that
    /// trial's copy.
    pub(super) sweep: Option<&'k SweepPaths>,
    pub(super) executor: &'k super::executor::ExecutorSettings,
}

/// Where a sweep moved outputs: logical output path → the stages whose outputs it was.
pub(super) struct SweepPaths {
    pub(super) dir: String,
    pub(super) logical: HashMap<String, Vec<usize>>,
}

/// A stage's definition, and where a problem with each of its inputs points (in the order of
/// `def.inputs`): a declared input at its entry under `inputs:`, one implied by a reference at
/// the stage's name. Decided here, where it is known which is which.
pub(super) struct Defined {
    pub(super) def: StageDef,
    pub(super) input_at: Vec<YPath>,
}

/// What a built-in kind made of a stage's `with:` besides its problems.
#[derive(Default)]
struct KindFacts {
    prepared: Prepared,
    facts: Vec<(String, String)>,
    gpus_optional: bool,
}

impl Validator<'_, '_> {
    /// The definition of stage `idx`, whose kind pass 1 found; edges from its `needs:` go into
    /// `edges`.
    pub(super) fn define_stage(
        &mut self,
        idx: usize,
        s: &RawStage,
        kind: Option<StageKind>,
        known: &Known<'_>,
        edges: &mut Edges,
    ) -> Defined {
        let own_outputs = known
            .outputs_by_stage
            .get(&s.name)
            .cloned()
            .unwrap_or_default();
        let mut used = Used::default();
        let mut scope = Scope {
            params: known.params,
            overrides: &s.param_overrides,
            outputs_by_stage: known.outputs_by_stage,
            stage_names: known.stage_names,
            by_base: known.by_base,
            stages: known.stages,
            own: &s.name,
            own_base: &s.base,
            matrix_broken: s.matrix_broken,
            bindings: &s.bindings,
            own_inputs: None,
            own_lists: None,
            allow_own_outputs: false,
        };
        let (inputs, lists) = self.inputs(s, &scope, &mut used, known);
        scope.own_inputs = Some(&inputs);
        scope.own_lists = Some(&lists);
        scope.allow_own_outputs = true;
        let (with, unresolved) = self.with(s, &scope, &mut used);
        let kind = self.command(s, kind, &scope, &mut used);
        let env = self.env(s, &scope, &mut used);
        let timeout = self.timeout(s);
        self.check_version(s);
        let kind_facts = self.prepare_with_kind(s, kind.as_ref(), &with, &unresolved);
        self.needs(idx, s, known, edges);
        let (inputs, input_at) = all_inputs(s, inputs, lists, &used, known);

        let mut params: BTreeMap<String, Json> = used
            .params
            .iter()
            .filter_map(|p| {
                let v = s.param_overrides.get(p).or_else(|| known.params.get(p));
                v.map(|v| (p.clone(), v.clone()))
            })
            .collect();
        // Matrix values key like params, so `status` names the one that differs.
        for k in &used.matrix {
            if let Some((_, v)) = s.bindings.iter().find(|(b, _)| b == k) {
                params.insert(format!("matrix.{k}"), v.clone());
            }
        }
        let outputs = own_outputs
            .into_iter()
            .map(|(name, path)| Output { name, path })
            .collect();
        let def = StageDef {
            id: StageId(s.name.clone()),
            idx,
            base: s.base.clone(),
            bindings: s.bindings.clone(),
            sweep_dir: known.sweep.map(|w| w.dir.clone()),
            kind: kind.unwrap_or(StageKind::Run {
                command: String::new(),
            }),
            inputs,
            outputs,
            with,
            config_text: config_text(s),
            prepared: kind_facts.prepared,
            params,
            env,
            cpus: s.cpus,
            gpus: s.gpus,
            gpus_optional: kind_facts.gpus_optional,
            timeout,
            memory: s.memory,
            slurm: known.executor.job_for(&s.base),
            version: s.version.clone(),
            facts: kind_facts.facts,
        };
        Defined { def, input_at }
    }

    /// The declared inputs, spliced and checked as workspace paths; those that gather every
    /// instance of a matrix stage's output (`[*]`) as lists.
    fn inputs(
        &mut self,
        s: &RawStage,
        scope: &Scope<'_>,
        used: &mut Used,
        known: &Known<'_>,
    ) -> (BTreeMap<String, WorkPath>, BTreeMap<String, Vec<WorkPath>>) {
        let mut inputs = BTreeMap::new();
        let mut lists = BTreeMap::new();
        for (k, v) in &s.inputs {
            let p = s.path.k("inputs").k(k);
            if is_gather(v) {
                let Some(Json::Array(items)) =
                    self.splice_value(&yaml_serde::Value::String(v.clone()), &p, scope, used)
                else {
                    continue;
                };
                let paths: Vec<WorkPath> = items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .filter_map(|t| self.work_path(t, &p, &format!("input `{k}`")))
                    .collect();
                lists.insert(k.clone(), paths);
                continue;
            }
            let refs_before = used.stage_outputs.len();
            let Some(text) = self.splice_text(v, &p, scope, Splice::Text, used) else {
                continue;
            };
            if let Some(mut wp) = self.work_path(&text, &p, &format!("input `{k}`")) {
                if used.stage_outputs.len() == refs_before {
                    if let Some(moved) = known.sweep.and_then(|w| w.moved(&wp, s, known)) {
                        wp = moved;
                    }
                }
                inputs.insert(k.clone(), wp);
            }
        }
        (inputs, lists)
    }

    /// `with:` spliced, and the paths in it whose `${{ }}` failed to resolve.
    fn with(&mut self, s: &RawStage, scope: &Scope<'_>, used: &mut Used) -> (Json, Vec<Vec<Seg>>) {
        let with_path = s.path.k("with");
        let before = self.problems.0.len();
        let with = match &s.with {
            yaml_serde::Value::Null => Json::Object(Default::default()),
            v => self
                .splice_value(v, &with_path, scope, used)
                .unwrap_or(Json::Null),
        };
        // Values whose `${{ }}` failed to resolve stand as null in `with`; the kind's own check
        // would only add a second, derived error about them.
        let unresolved = self.problems.0[before..]
            .iter()
            .filter_map(|p| p.path.as_ref().map(|p| p.segs.clone()))
            .collect();
        (with, unresolved)
    }

    /// The kind, with a `run:` command's expressions spliced in (quoted for the shell).
    fn command(
        &mut self,
        s: &RawStage,
        mut kind: Option<StageKind>,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<StageKind> {
        if let Some(StageKind::Run { command }) = &mut kind {
            if let Some(c) = self.splice_text(command, &s.path.k("run"), scope, Splice::Shell, used)
            {
                *command = c;
            }
        }
        kind
    }

    /// `env:`, spliced; a variable without a value takes the one sluice runs with.
    fn env(
        &mut self,
        s: &RawStage,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, v) in &s.env {
            // The environment cannot hold such a name: `A=B` would set `A` to `B=...`.
            if k.is_empty() || k.contains(['=', '\0']) {
                self.problems.push(
                    &s.path.k("env").k(k).key_of(),
                    if k.is_empty() {
                        "an environment variable name is empty".to_string()
                    } else {
                        format!(
                            "environment variable name `{}` contains `=` or a NUL",
                            k.escape_debug()
                        )
                    },
                    Some("name variables with letters, digits and `_`, e.g. `MY_VAR`".into()),
                );
                continue;
            }
            if k == "CUDA_VISIBLE_DEVICES" || k.starts_with("SLUICE_") {
                self.problems.push(
                    &s.path.k("env").k(k).key_of(),
                    format!("`{k}` is set by sluice and cannot be declared"),
                    Some("GPUs are assigned through `resources: {gpus: N}`".into()),
                );
                continue;
            }
            let value = match v {
                Some(v) => self.splice_text(v, &s.path.k("env").k(k), scope, Splice::Text, used),
                None => Some(self.probes.env(k)),
            };
            if let Some(value) = value {
                env.insert(k.clone(), value);
            }
        }
        env
    }

    fn timeout(&mut self, s: &RawStage) -> Option<Duration> {
        let t = s.timeout.as_ref()?;
        match parse_duration(t) {
            Ok(d) => Some(d),
            Err(e) => {
                let help = match e {
                    DurationError::Unreadable => {
                        "write e.g. `90s`, `10m`, `1h30m`, `2d` or a number of seconds"
                    }
                    DurationError::OutOfRange => "write e.g. `30m`, `12h` or `7d`",
                };
                self.problems.push(
                    &s.path.k("timeout"),
                    format!("`timeout` {e}, found `{}`", truncate(t, 40)),
                    Some(help.into()),
                );
                None
            }
        }
    }

    fn check_version(&mut self, s: &RawStage) {
        if s.version.as_deref().is_some_and(|v| v.contains("${{")) {
            self.problems.push(
                &s.path.k("version"),
                "`version` cannot contain `${{ }}` expressions",
                Some("write a literal version; params are part of the key already".into()),
            );
        }
    }

    /// A built-in kind's own checks of the stage's input names, and its `with:` prepared (its
    /// problems reported, leaving out those under `unresolved` paths), with what the kind says
    /// about the stage's environment.
    fn prepare_with_kind(
        &mut self,
        s: &RawStage,
        kind: Option<&StageKind>,
        with: &Json,
        unresolved: &[Vec<Seg>],
    ) -> KindFacts {
        let Some(StageKind::Builtin {
            name: kind_name, ..
        }) = kind
        else {
            return KindFacts::default();
        };
        let Some(stage) = self.opts.registry.get(kind_name) else {
            return KindFacts::default();
        };
        if let Some(declared) = stage.inputs() {
            let given: Vec<&str> = s.inputs.iter().map(|(k, _)| k.as_str()).collect();
            for (name, message, help) in declared.check(kind_name, &given) {
                let at = match name {
                    Some(n) => s.path.k("inputs").k(&n),
                    None if s.inputs.is_empty() => s.path.clone(),
                    None => s.path.k("inputs"),
                };
                self.problems
                    .push(&at, format!("stage `{}`: {message}", s.base), help);
            }
        }
        let with_path = s.path.k("with");
        let (prepared, problems, warnings) = match stage.prepare(with) {
            Ok(prepared) => {
                let warnings = stage.warnings(&prepared);
                (prepared, Vec::new(), warnings)
            }
            // The pipeline is refused, so the stage never runs and needs no config.
            Err(problems) => (Prepared::nothing(), problems, Vec::new()),
        };
        let problems = problems.into_iter().map(|p| (p, false));
        for (problem, warning) in problems.chain(warnings.into_iter().map(|p| (p, true))) {
            let mut p = with_path.clone();
            for seg in &problem.path {
                p = p.k(seg);
            }
            if unresolved.iter().any(|u| p.segs.starts_with(u)) {
                continue;
            }
            if problem.at_key {
                p = p.key_of();
            }
            let into = if warning {
                &mut *self.warnings
            } else {
                &mut *self.problems
            };
            // A value that came from the matrix is wrong where the matrix lists it.
            if let Some((key, i, text)) = matrix_source(s, &problem.path) {
                let shown: Vec<&str> = problem.path.iter().map(String::as_str).collect();
                into.push(
                    &s.path.k("matrix").k(&key).i(i),
                    format!(
                        "stage `{}`: `with.{}` takes `{text}` from `matrix.{key}` (instance `{}`): {}",
                        s.base,
                        shown.join("."),
                        s.name,
                        problem.message
                    ),
                    problem.help,
                );
                continue;
            }
            into.push(
                &p,
                format!("stage `{}`: {}", s.base, problem.message),
                problem.help,
            );
        }
        KindFacts {
            facts: stage.env_facts(with),
            gpus_optional: stage.gpus_optional(&prepared),
            prepared,
        }
    }
}

/// The matrix key and value index a `with:` value at `path` was taken from, when it is written
/// as exactly `${{ matrix.KEY }}` in a matrix stage's instance.
fn matrix_source(s: &RawStage, path: &[String]) -> Option<(String, usize, String)> {
    use crate::spec::template::{parse, Piece, Ref};
    let mut v = &s.with;
    for seg in path {
        v = match v {
            yaml_serde::Value::Mapping(m) => m.get(seg.as_str())?,
            yaml_serde::Value::Sequence(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let yaml_serde::Value::String(text) = v else {
        return None;
    };
    let Ok(pieces) = parse(text) else {
        return None;
    };
    let [Piece::Expr(Ref::Matrix(key))] = pieces.as_slice() else {
        return None;
    };
    let (_, value) = s.bindings.iter().find(|(k, _)| k == key)?;
    let (_, values) = s.matrix.iter().find(|(k, _)| k == key)?;
    let i = values.iter().position(|x| x == value)?;
    Some((key.clone(), i, crate::spec::matrix::value_text(value)))
}

/// An input written as one gathering expression, `${{ stages.S.outputs.N[*] }}`.
fn is_gather(v: &str) -> bool {
    matches!(
        crate::spec::template::parse(v).as_deref(),
        Ok([crate::spec::template::Piece::Expr(
            crate::spec::template::Ref::StageOutput { all: true, .. }
        )])
    )
}

impl SweepPaths {
    /// Where a sweep put the output a literal input path names (or lies inside): the copy of
    /// the producing stage that agrees with `s` (its own trial's, or the shared one).
    fn moved(&self, p: &WorkPath, s: &RawStage, known: &Known<'_>) -> Option<WorkPath> {
        let mut cur = p.as_str();
        loop {
            if let Some(producers) = self.logical.get(cur) {
                let j = producers.iter().copied().find(|&j| {
                    crate::spec::matrix::agree(&s.bindings, &known.stages[j].bindings)
                })?;
                return Some(p.under(known.stages[j].root.as_ref()?));
            }
            cur = &cur[..cur.rfind('/')?];
        }
    }
}

/// The declared inputs (a gathered list as `NAME[0]`, `NAME[1]`, …), then the upstream outputs
/// referenced from `with:`/`run:` that no declared input already names, sorted by name; each
/// with where a problem with it points.
fn all_inputs(
    s: &RawStage,
    declared: BTreeMap<String, WorkPath>,
    lists: BTreeMap<String, Vec<WorkPath>>,
    used: &Used,
    known: &Known<'_>,
) -> (Vec<Input>, Vec<YPath>) {
    let listed = lists.into_iter().flat_map(|(name, paths)| {
        paths
            .into_iter()
            .enumerate()
            .map(move |(i, p)| (format!("{name}[{i}]"), p, name.clone()))
    });
    let mut all: Vec<(Input, YPath)> = declared
        .into_iter()
        .map(|(name, path)| (name.clone(), path, name))
        .chain(listed)
        .map(|(name, path, written)| {
            let at = s.path.k("inputs").k(&written);
            let input = Input {
                name,
                path,
                producer: None,
            };
            (input, at)
        })
        .collect();
    for (st, out) in &used.stage_outputs {
        let Some(path) = known.outputs_by_stage.get(st).and_then(|m| m.get(out)) else {
            continue;
        };
        if !all.iter().any(|(i, _)| &i.path == path) {
            // Named by the logical name: a sweep trial's input keys as a plain run's would.
            let logical = known
                .index
                .get(st)
                .map(|&i| known.stages[i].logical.as_str())
                .unwrap_or(st);
            let input = Input {
                name: format!("stages.{logical}.outputs.{out}"),
                path: path.clone(),
                producer: None,
            };
            all.push((input, s.path.key_of()));
        }
    }
    all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    all.into_iter().unzip()
}

/// The stage's configuration as written (`with:` before substitution, and `run:`), as canonical
/// JSON: what the cache key holds of it.
fn config_text(s: &RawStage) -> String {
    let raw_with = serde_json::to_value(&s.with).unwrap_or(Json::Null);
    let mut m = serde_json::Map::new();
    m.insert("with".into(), raw_with);
    m.insert(
        "run".into(),
        s.run.clone().map(Json::String).unwrap_or(Json::Null),
    );
    crate::canonical::canonical_json(&Json::Object(m))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
