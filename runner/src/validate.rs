//! Validation: `RawPipeline` → `Pipeline`. Resolves kinds, params, `${{ }}` references and paths,
//! derives the edges, seals the graph, and collects every problem it finds (with its location in
//! the file and a did-you-mean where one helps) before failing.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::graph::StageGraph;
use crate::paths::{Containment, PathProblem, WorkPath};
use crate::pipeline::{Input, Output, Pipeline, StageDef, StageId, StageKind};
use crate::spec::locate::Index;
use crate::spec::raw::{parse_raw, Problems, RawStage};
use crate::spec::template::{self, Piece, Ref};
use crate::spec::yaml::{read_yaml, MAX_FILE_BYTES};
use crate::spec::YPath;
use crate::stage::StageRegistry;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `load` needs besides the file.
pub struct LoadOptions<'a> {
    /// The workspace root, canonical.
    pub root: &'a Path,
    /// The pipeline file (absolute or relative to the current directory).
    pub file: &'a Path,
    /// How to name the file in messages.
    pub display: String,
    /// `--set NAME=VALUE` overrides, values parsed as YAML scalars.
    pub overrides: &'a [(String, String)],
    pub registry: &'a StageRegistry,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read pipeline file `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline file `{path}` is larger than {} MiB\n  = help: a pipeline file holds stage definitions, not data; keep data in files the stages read", MAX_FILE_BYTES / (1024 * 1024))]
    TooLarge { path: String },
    #[error("{}", .0.render())]
    Invalid(Diagnostics),
}

/// The longest `--set` value, in bytes.
pub const MAX_SET_BYTES: usize = 64 * 1024;

/// Reads, parses and validates a pipeline file.
pub fn load(opts: &LoadOptions<'_>) -> Result<Pipeline, LoadError> {
    let source = read_source(opts)?;
    let file = std::path::absolute(opts.file).unwrap_or_else(|_| opts.file.to_path_buf());
    let (raw, mut problems) = parse_raw(&source);
    let pipeline = if problems.is_fatal() {
        None
    } else {
        Validator {
            opts,
            problems: &mut problems,
        }
        .run(raw, file)
    };
    match pipeline {
        Some(p) if problems.is_empty() => Ok(p),
        _ => {
            // One pass over the file positions every problem, however many there are.
            let index = problems
                .0
                .iter()
                .any(|p| p.diag.location.is_none() && p.path.is_some())
                .then(|| Index::build(&source));
            let mut items: Vec<Diagnostic> = problems
                .0
                .into_iter()
                .map(|p| {
                    let loc = p.diag.location.or_else(|| {
                        let path = p.path.as_ref()?;
                        index.as_ref()?.locate_enclosing(path)
                    });
                    p.diag.at(loc)
                })
                .collect();
            items.sort_by_key(|d| {
                d.location
                    .map(|l| (l.line, l.column))
                    .unwrap_or((usize::MAX, 0))
            });
            Err(LoadError::Invalid(Diagnostics {
                file: opts.display.clone(),
                source,
                items,
            }))
        }
    }
}

/// The file's text, refusing files beyond [`MAX_FILE_BYTES`] before reading them whole.
fn read_source(opts: &LoadOptions<'_>) -> Result<String, LoadError> {
    use std::io::Read as _;
    let read_err = |e| LoadError::Read {
        path: opts.display.clone(),
        source: e,
    };
    let f = std::fs::File::open(opts.file).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: opts.display.clone(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        // Located like any other problem: the first byte that is not UTF-8, in the text as an
        // editor that shows such bytes as `�` would show it.
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let source = String::from_utf8_lossy(bytes).into_owned();
        let location = crate::spec::yaml::location_of(&source, at);
        LoadError::Invalid(Diagnostics {
            file: opts.display.clone(),
            items: vec![Diagnostic::new(format!(
                "the file is not UTF-8 text: byte `0x{:02x}` cannot start or continue a character",
                bytes[at]
            ))
            .at(Some(location))
            .help("save the pipeline file as UTF-8")],
            source,
        })
    })
}

struct Validator<'a, 'b> {
    opts: &'a LoadOptions<'a>,
    problems: &'b mut Problems,
}

/// References a piece of configuration made, collected while substituting.
#[derive(Default)]
struct Used {
    params: BTreeSet<String>,
    stage_outputs: BTreeSet<(String, String)>,
}

/// Where a template appears decides how values are spliced in.
#[derive(Clone, Copy, PartialEq)]
enum Splice {
    /// Plain text.
    Text,
    /// Inside a shell command: values are quoted when they need it.
    Shell,
}

struct Scope<'s> {
    params: &'s BTreeMap<String, Json>,
    outputs_by_stage: &'s HashMap<String, BTreeMap<String, WorkPath>>,
    stage_names: &'s [String],
    own: &'s str,
    own_inputs: Option<&'s BTreeMap<String, WorkPath>>,
    allow_own_outputs: bool,
}

impl Validator<'_, '_> {
    fn run(mut self, raw: crate::spec::RawPipeline, file: PathBuf) -> Option<Pipeline> {
        let root = self.opts.root;
        let name = raw.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        });
        let top = YPath::root();
        if !is_ident(&name) {
            self.problems.push(
                &top.k("name"),
                format!("pipeline name `{name}` must use only letters, digits, `_` and `-`"),
                None,
            );
        }

        // Params, then `--set` overrides.
        let mut params: BTreeMap<String, Json> = BTreeMap::new();
        for (k, v) in &raw.params {
            match serde_json::to_value(v) {
                Ok(j) => {
                    params.insert(k.clone(), j);
                }
                Err(e) => {
                    self.problems
                        .push(&top.k("params").k(k), format!("param `{k}`: {e}"), None)
                }
            }
        }
        for (k, v) in self.opts.overrides {
            if !params.contains_key(k) {
                let help = did_you_mean(k, params.keys().map(String::as_str))
                    .unwrap_or_else(|| "declare it under `params:` first".to_string());
                self.problems.push_unlocated(
                    format!("`--set {k}=...` names an unknown param `{k}`"),
                    Some(help),
                );
                continue;
            }
            if v.len() > MAX_SET_BYTES {
                self.problems.push_unlocated(
                    format!(
                        "`--set {k}=...` is {} bytes long; a value may have at most {MAX_SET_BYTES}",
                        v.len()
                    ),
                    Some("keep large values in a file and pass its path".into()),
                );
                continue;
            }
            // A value that does not read as YAML within bounds is taken as the text given.
            let parsed = match read_yaml(v) {
                Ok((parsed, too_large)) if too_large.is_empty() => parsed,
                _ => yaml_serde::Value::String(v.clone()),
            };
            let j = serde_json::to_value(parsed).unwrap_or(Json::String(v.clone()));
            params.insert(k.clone(), j);
        }

        // Plugins.
        let mut plugins: BTreeMap<String, (Vec<String>, Vec<WorkPath>)> = BTreeMap::new();
        for p in &raw.plugins {
            if self.opts.registry.get(&p.name).is_some() {
                self.problems.push(
                    &p.path.key_of(),
                    format!("plugin `{}` has the name of a built-in stage kind", p.name),
                    Some("rename the plugin".into()),
                );
            }
            let mut files = Vec::new();
            for word in &p.command {
                if let Ok(wp) = WorkPath::parse(word, root) {
                    if wp.to_abs(root).is_file() {
                        files.push(wp);
                    }
                }
            }
            plugins.insert(p.name.clone(), (p.command.clone(), files));
        }

        let stage_names: Vec<String> = raw.stages.iter().map(|s| s.name.clone()).collect();
        for s in &raw.stages {
            if !is_ident(&s.name) {
                self.problems.push(
                    &s.path.key_of(),
                    format!(
                        "stage name `{}` must use only letters, digits, `_` and `-`",
                        s.name
                    ),
                    None,
                );
            }
        }

        // Pass 1: kinds and output paths (references to outputs need them all).
        let mut kinds: Vec<Option<StageKind>> = Vec::new();
        let mut outputs_by_stage: HashMap<String, BTreeMap<String, WorkPath>> = HashMap::new();
        let mut containment = Containment::new(root);
        for s in &raw.stages {
            let kind = self.kind(s, &plugins);
            let outs = self.outputs(s, kind.as_ref(), &name, &mut containment);
            kinds.push(kind);
            outputs_by_stage.insert(s.name.clone(), outs);
        }

        // Pass 2: inputs, config, command, env; edges.
        let mut stages: Vec<StageDef> = Vec::new();
        let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
        let index: HashMap<String, usize> = stage_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        for (idx, s) in raw.stages.iter().enumerate() {
            let own_outputs = outputs_by_stage.get(&s.name).cloned().unwrap_or_default();
            let mut used = Used::default();
            let mut scope = Scope {
                params: &params,
                outputs_by_stage: &outputs_by_stage,
                stage_names: &stage_names,
                own: &s.name,
                own_inputs: None,
                allow_own_outputs: false,
            };
            let mut inputs: BTreeMap<String, WorkPath> = BTreeMap::new();
            for (k, v) in &s.inputs {
                let p = s.path.k("inputs").k(k);
                let Some(text) = self.splice_text(v, &p, &scope, Splice::Text, &mut used) else {
                    continue;
                };
                if let Some(wp) = self.work_path(&text, &p, &format!("input `{k}`")) {
                    inputs.insert(k.clone(), wp);
                }
            }
            scope.own_inputs = Some(&inputs);
            scope.allow_own_outputs = true;
            let with_path = s.path.k("with");
            let before = self.problems.0.len();
            let with = match &s.with {
                yaml_serde::Value::Null => Json::Object(Default::default()),
                v => self
                    .splice_value(v, &with_path, &scope, &mut used)
                    .unwrap_or(Json::Null),
            };
            // Values whose `${{ }}` failed to resolve stand as null in `with`; the kind's own
            // check would only add a second, derived error about them.
            let unresolved: Vec<Vec<crate::spec::locate::Seg>> = self.problems.0[before..]
                .iter()
                .filter_map(|p| p.path.as_ref().map(|p| p.segs.clone()))
                .collect();
            let config_text = {
                let raw_with = serde_json::to_value(&s.with).unwrap_or(Json::Null);
                let mut m = serde_json::Map::new();
                m.insert("with".into(), raw_with);
                m.insert(
                    "run".into(),
                    s.run.clone().map(Json::String).unwrap_or(Json::Null),
                );
                crate::canonical::canonical_json(&Json::Object(m))
            };
            let mut kind = kinds[idx].clone();
            if let Some(StageKind::Run { command }) = &mut kind {
                if let Some(c) =
                    self.splice_text(command, &s.path.k("run"), &scope, Splice::Shell, &mut used)
                {
                    *command = c;
                }
            }
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
                    Some(v) => {
                        self.splice_text(v, &s.path.k("env").k(k), &scope, Splice::Text, &mut used)
                    }
                    None => Some(std::env::var(k).unwrap_or_default()),
                };
                if let Some(value) = value {
                    env.insert(k.clone(), value);
                }
            }
            let timeout = s.timeout.as_ref().and_then(|t| match parse_duration(t) {
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
            });
            if s.version.as_deref().is_some_and(|v| v.contains("${{")) {
                self.problems.push(
                    &s.path.k("version"),
                    "`version` cannot contain `${{ }}` expressions",
                    Some("write a literal version; params are part of the key already".into()),
                );
            }
            let mut facts = Vec::new();
            let mut gpus_optional = false;
            if let Some(StageKind::Builtin {
                name: kind_name, ..
            }) = &kind
            {
                if let Some(stage) = self.opts.registry.get(kind_name) {
                    if let Some(declared) = stage.inputs() {
                        let given: Vec<&str> = s.inputs.iter().map(|(k, _)| k.as_str()).collect();
                        for (name, message, help) in declared.check(kind_name, &given) {
                            let at = match name {
                                Some(n) => s.path.k("inputs").k(&n),
                                None if s.inputs.is_empty() => s.path.clone(),
                                None => s.path.k("inputs"),
                            };
                            self.problems
                                .push(&at, format!("stage `{}`: {message}", s.name), help);
                        }
                    }
                    for problem in stage.check(&with) {
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
                        self.problems.push(
                            &p,
                            format!("stage `{}`: {}", s.name, problem.message),
                            problem.help,
                        );
                    }
                    facts = stage.env_facts(&with);
                    gpus_optional = stage.gpus_optional(&with);
                }
            }

            // Needs.
            for (i, n) in s.needs.iter().enumerate() {
                match index.get(n) {
                    Some(&d) => {
                        edges.insert((d, idx));
                    }
                    None => {
                        let help = did_you_mean(n, stage_names.iter().map(String::as_str));
                        self.problems.push(
                            &s.path.k("needs").i(i),
                            format!("stage `{}` needs unknown stage `{n}`", s.name),
                            help,
                        );
                    }
                }
            }

            // Inputs: explicit ones, then upstream outputs referenced from `with`/`run`.
            let mut input_list: Vec<Input> = inputs
                .into_iter()
                .map(|(name, path)| Input {
                    name,
                    path,
                    producer: None,
                })
                .collect();
            for (st, out) in &used.stage_outputs {
                let Some(path) = outputs_by_stage.get(st).and_then(|m| m.get(out)) else {
                    continue;
                };
                if !input_list.iter().any(|i| &i.path == path) {
                    input_list.push(Input {
                        name: format!("stages.{st}.outputs.{out}"),
                        path: path.clone(),
                        producer: None,
                    });
                }
            }
            input_list.sort_by(|a, b| a.name.cmp(&b.name));

            let stage_params = used
                .params
                .iter()
                .filter_map(|p| params.get(p).map(|v| (p.clone(), v.clone())))
                .collect();
            let outputs = own_outputs
                .into_iter()
                .map(|(name, path)| Output { name, path })
                .collect();
            stages.push(StageDef {
                id: StageId(s.name.clone()),
                idx,
                kind: kind.unwrap_or(StageKind::Run {
                    command: String::new(),
                }),
                inputs: input_list,
                outputs,
                with,
                config_text,
                params: stage_params,
                env,
                cpus: s.cpus,
                gpus: s.gpus,
                gpus_optional,
                timeout,
                version: s.version.clone(),
                facts,
            });
        }

        self.check_outputs(&raw.stages, &stages);
        self.link_inputs(&raw.stages, &mut stages, &mut edges);

        let graph = match StageGraph::build(stages.len(), &edges) {
            Ok(g) => Some(g),
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| stages[i].id.0.as_str()).collect();
                let first = cycle.first().copied().unwrap_or(0);
                self.problems.push(
                    &raw.stages[first].path.key_of(),
                    format!("the stages form a cycle: {}", names.join(" → ")),
                    Some(
                        "a stage cannot depend, directly or through others, on its own outputs"
                            .into(),
                    ),
                );
                None
            }
        };
        let graph = graph?;
        Some(Pipeline {
            name,
            file,
            display_file: self.opts.display.clone(),
            root: root.to_path_buf(),
            params,
            stages,
            graph,
            by_name: index,
        })
    }

    fn kind(
        &mut self,
        s: &RawStage,
        plugins: &BTreeMap<String, (Vec<String>, Vec<WorkPath>)>,
    ) -> Option<StageKind> {
        match (&s.uses, &s.run) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    &s.path.k("run").key_of(),
                    format!("stage `{}` has both `uses` and `run`", s.name),
                    Some("a stage either uses a kind or runs a command; keep one".into()),
                );
                None
            }
            (None, None) => {
                self.problems.push(
                    &s.path.key_of(),
                    format!("stage `{}` has neither `uses` nor `run`", s.name),
                    Some("add `uses: KIND` (a built-in or a plugin) or `run: COMMAND`".into()),
                );
                None
            }
            (None, Some(run)) if run.trim().is_empty() => {
                self.problems.push(
                    &s.path.k("run"),
                    format!("stage `{}` has an empty `run`", s.name),
                    Some("write the command to run, e.g. `run: python3 prepare.py`".into()),
                );
                None
            }
            (None, Some(run)) => Some(StageKind::Run {
                command: run.clone(),
            }),
            (Some(kind), None) => {
                if let Some(stage) = self.opts.registry.get(kind) {
                    Some(StageKind::Builtin {
                        name: kind.clone(),
                        version: stage.version(),
                    })
                } else if let Some((command, files)) = plugins.get(kind) {
                    Some(StageKind::Plugin {
                        name: kind.clone(),
                        command: command.clone(),
                        files: files.clone(),
                    })
                } else {
                    let known: Vec<String> = self
                        .opts
                        .registry
                        .names()
                        .map(str::to_string)
                        .chain(plugins.keys().cloned())
                        .collect();
                    let help =
                        did_you_mean(kind, known.iter().map(String::as_str)).unwrap_or_else(|| {
                            if known.is_empty() {
                                "declare it under `plugins:`".to_string()
                            } else {
                                format!(
                                    "known kinds: {}; or declare it under `plugins:`",
                                    known.join(", ")
                                )
                            }
                        });
                    self.problems.push(
                        &s.path.k("uses"),
                        format!("unknown stage kind `{kind}`"),
                        Some(help),
                    );
                    None
                }
            }
        }
    }

    fn outputs(
        &mut self,
        s: &RawStage,
        kind: Option<&StageKind>,
        pipeline: &str,
        containment: &mut Containment<'_>,
    ) -> BTreeMap<String, WorkPath> {
        let mut declared: Vec<(String, Option<String>)> = s.outputs.clone();
        if let Some(StageKind::Builtin { name, .. }) = kind {
            let allowed = self
                .opts
                .registry
                .get(name)
                .map(|st| st.outputs())
                .unwrap_or(&[]);
            for (n, _) in &declared {
                if !allowed.contains(&n.as_str()) {
                    let help = did_you_mean(n, allowed.iter().copied())
                        .unwrap_or_else(|| format!("`{name}` writes: {}", allowed.join(", ")));
                    self.problems.push(
                        &s.path.k("outputs").k(n).key_of(),
                        format!("stage kind `{name}` has no output `{n}`"),
                        Some(help),
                    );
                }
            }
            for a in allowed {
                if !declared.iter().any(|(n, _)| n == a) {
                    declared.push((a.to_string(), None));
                }
            }
        }
        let mut out = BTreeMap::new();
        for (n, p) in declared {
            let (text, ypath) = match p {
                Some(p) => {
                    if p.contains("${{") {
                        self.problems.push(
                            &s.path.k("outputs").k(&n),
                            "output paths cannot contain `${{ }}` expressions",
                            Some("write the path literally".into()),
                        );
                        continue;
                    }
                    (p, s.path.k("outputs").k(&n))
                }
                None => (
                    format!("out/{pipeline}/{}/{n}", s.name),
                    s.path.k("outputs").k(&n).key_of(),
                ),
            };
            let valid = match self.work_path(&text, &ypath, &format!("output `{n}`")) {
                Some(wp) if wp.as_str() == ".sluice" || wp.as_str().starts_with(".sluice/") => {
                    self.problems.push(
                        &ypath,
                        format!("output `{n}` is inside `.sluice/`, which sluice owns"),
                        None,
                    );
                    None
                }
                Some(wp) => match containment.check(&wp) {
                    None => Some(wp),
                    Some(escape) => {
                        let (message, help) = escape.problem(&n, &wp);
                        self.problems.push(&ypath, message, Some(help));
                        None
                    }
                },
                None => None,
            };
            // An invalid output still gets a (never used) path, so that references to it do not
            // cascade into more errors.
            let safe = |t: &str| {
                t.replace(
                    |c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "_",
                )
            };
            let placeholder = format!(".sluice/invalid/{}/{}", safe(&s.name), safe(&n));
            if let Some(wp) = valid.or_else(|| WorkPath::parse(&placeholder, self.opts.root).ok()) {
                out.insert(n, wp);
            }
        }
        out
    }

    fn work_path(&mut self, text: &str, path: &YPath, what: &str) -> Option<WorkPath> {
        // No file system accepts a NUL in a name; `"\0"` in a quoted YAML string makes one.
        if text.contains('\0') {
            self.problems.push(
                path,
                format!(
                    "{what} path `{}` contains a NUL character",
                    text.escape_debug()
                ),
                Some("remove the `\\0` from the path".into()),
            );
            return None;
        }
        match WorkPath::parse(text, self.opts.root) {
            Ok(wp) => Some(wp),
            Err(PathProblem::Empty) => {
                self.problems
                    .push(path, format!("{what} has an empty path"), None);
                None
            }
            Err(PathProblem::Escapes) => {
                self.problems.push(
                    path,
                    format!("{what} path `{text}` is outside the workspace"),
                    Some(format!(
                        "paths are relative to the workspace `{}`",
                        self.opts.root.display()
                    )),
                );
                None
            }
        }
    }

    /// Two stages may not write the same path, nor one inside the other's output.
    fn check_outputs(&mut self, raw: &[RawStage], stages: &[StageDef]) {
        let mut all: Vec<(&WorkPath, usize, &str)> = Vec::new();
        for s in stages {
            for o in &s.outputs {
                all.push((&o.path, s.idx, &o.name));
            }
        }
        all.sort();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if !b.0.is_within(a.0) {
                    break;
                }
                let (sa, sb) = (&stages[a.1].id, &stages[b.1].id);
                let msg = if a.0 == b.0 {
                    format!("stages `{sa}` and `{sb}` both write `{}`", a.0)
                } else {
                    format!(
                        "output `{}` of stage `{sb}` lies inside output `{}` of stage `{sa}`",
                        b.0, a.0
                    )
                };
                let help = "every output path belongs to exactly one stage".to_string();
                let p = if raw[b.1]
                    .outputs
                    .iter()
                    .any(|(n, p)| n == b.2 && p.is_some())
                {
                    raw[b.1].path.k("outputs").k(b.2)
                } else {
                    raw[b.1].path.key_of()
                };
                self.problems.push(&p, msg, Some(help));
            }
        }
    }

    /// Connects each input to the stage producing it, or checks that it exists.
    fn link_inputs(
        &mut self,
        raw: &[RawStage],
        stages: &mut [StageDef],
        edges: &mut BTreeSet<(usize, usize)>,
    ) {
        // Output path → producing stage; an input is produced by the stage owning the input's
        // path or its nearest ancestor (a file inside a directory output).
        let producers: HashMap<&str, usize> = stages
            .iter()
            .flat_map(|s| s.outputs.iter().map(move |o| (o.path.as_str(), s.idx)))
            .collect();
        let producer_of = |p: &WorkPath| -> Option<usize> {
            let mut cur = p.as_str();
            loop {
                if let Some(&i) = producers.get(cur) {
                    return Some(i);
                }
                cur = &cur[..cur.rfind('/')?];
            }
        };
        // Outputs that lie inside an input directory: reading the directory needs them first.
        let mut sorted: Vec<(&str, usize)> = producers.iter().map(|(p, i)| (*p, *i)).collect();
        sorted.sort();
        let inside_of = |p: &WorkPath| -> Vec<usize> {
            let prefix = format!("{}/", p.as_str());
            let start = sorted.partition_point(|(q, _)| *q < prefix.as_str());
            sorted[start..]
                .iter()
                .take_while(|(q, _)| q.starts_with(&prefix))
                .map(|(_, i)| *i)
                .collect()
        };
        let mut links: Vec<(usize, usize, Option<usize>, Vec<usize>)> = Vec::new();
        for s in stages.iter() {
            for (k, input) in s.inputs.iter().enumerate() {
                links.push((s.idx, k, producer_of(&input.path), inside_of(&input.path)));
            }
        }
        for (idx, k, producer, contained) in links {
            let s = &mut stages[idx];
            let input = &mut s.inputs[k];
            let ypath = if input.name.starts_with("stages.") {
                raw[s.idx].path.key_of()
            } else {
                raw[s.idx].path.k("inputs").k(&input.name)
            };
            if contained.contains(&s.idx) || producer == Some(s.idx) {
                self.problems.push(
                    &ypath,
                    format!("stage `{}` reads its own output through input `{}` (`{}`)", s.id, input.name, input.path),
                    Some("a stage cannot read what it writes; keep outputs out of its input directories".into()),
                );
                continue;
            }
            for &c in &contained {
                edges.insert((c, s.idx));
            }
            match producer {
                Some(p) => {
                    input.producer = Some(p);
                    edges.insert((p, s.idx));
                }
                None if !contained.is_empty() => {}
                None => {
                    let abs = input.path.to_abs(self.opts.root);
                    // A link that leads nowhere (dangling, or in a loop) is as good as missing:
                    // the stage could not read it.
                    if let (Ok(_), Err(e)) =
                        (std::fs::symlink_metadata(&abs), std::fs::metadata(&abs))
                    {
                        let target = std::fs::read_link(&abs).unwrap_or_default();
                        let what = if e.raw_os_error() == Some(libc::ELOOP) {
                            format!("that loops back to itself (through `{}`)", target.display())
                        } else {
                            format!("to `{}`, which does not exist", target.display())
                        };
                        self.problems.push(
                            &ypath,
                            format!(
                                "input `{}` of stage `{}` (`{}`) is a symbolic link {what}",
                                input.name, s.id, input.path
                            ),
                            Some(
                                "fix or remove the link, or point the input at the data itself"
                                    .into(),
                            ),
                        );
                    } else if std::fs::symlink_metadata(&abs).is_err() {
                        self.problems.push(
                            &ypath,
                            format!(
                                "input `{}` of stage `{}` (`{}`) does not exist and no stage produces it",
                                input.name, s.id, input.path
                            ),
                            Some("check the path, or add the stage that writes it".into()),
                        );
                    }
                }
            }
        }
    }

    /// Substitutes expressions in a YAML value, keeping types where a string is one expression.
    fn splice_value(
        &mut self,
        v: &yaml_serde::Value,
        path: &YPath,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<Json> {
        use yaml_serde::Value as Y;
        Some(match v {
            Y::String(s) => {
                let pieces = match template::parse(s) {
                    Ok(p) => p,
                    Err(e) => {
                        self.problems.push(path, e, None);
                        return None;
                    }
                };
                if let [Piece::Expr(Ref::Param(name))] = pieces.as_slice() {
                    used.params.insert(name.clone());
                    match scope.params.get(name) {
                        Some(v) => v.clone(),
                        None => {
                            self.unknown_param(name, path, scope);
                            return None;
                        }
                    }
                } else {
                    Json::String(self.splice_pieces(&pieces, path, scope, Splice::Text, used)?)
                }
            }
            Y::Sequence(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| {
                        self.splice_value(it, &path.i(i), scope, used)
                            .unwrap_or(Json::Null)
                    })
                    .collect(),
            ),
            Y::Mapping(m) => {
                let mut out = serde_json::Map::new();
                for (k, val) in m {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        other => yaml_serde::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    let j = self
                        .splice_value(val, &path.k(&key), scope, used)
                        .unwrap_or(Json::Null);
                    out.insert(key, j);
                }
                Json::Object(out)
            }
            Y::Tagged(t) => return self.splice_value(&t.value, path, scope, used),
            other => serde_json::to_value(other).unwrap_or(Json::Null),
        })
    }

    fn splice_text(
        &mut self,
        s: &str,
        path: &YPath,
        scope: &Scope<'_>,
        mode: Splice,
        used: &mut Used,
    ) -> Option<String> {
        match template::parse(s) {
            Ok(pieces) => self.splice_pieces(&pieces, path, scope, mode, used),
            Err(e) => {
                self.problems.push(path, e, None);
                None
            }
        }
    }

    fn splice_pieces(
        &mut self,
        pieces: &[Piece],
        path: &YPath,
        scope: &Scope<'_>,
        mode: Splice,
        used: &mut Used,
    ) -> Option<String> {
        let mut out = String::new();
        let mut ok = true;
        for piece in pieces {
            let text = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Expr(r) => self.resolve_ref(r, path, scope, used),
            };
            match text {
                Some(t) if mode == Splice::Shell => out.push_str(&shell_quote(&t)),
                Some(t) => out.push_str(&t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn resolve_ref(
        &mut self,
        r: &Ref,
        path: &YPath,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<String> {
        match r {
            Ref::Param(name) => {
                used.params.insert(name.clone());
                match scope.params.get(name) {
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(Json::Null) => Some(String::new()),
                    Some(other) => Some(other.to_string()),
                    None => {
                        self.unknown_param(name, path, scope);
                        None
                    }
                }
            }
            Ref::StageOutput { stage, output } => {
                let Some(outs) = scope.outputs_by_stage.get(stage) else {
                    let help = did_you_mean(stage, scope.stage_names.iter().map(String::as_str));
                    self.problems
                        .push(path, format!("reference to unknown stage `{stage}`"), help);
                    return None;
                };
                match outs.get(output) {
                    Some(p) => {
                        used.stage_outputs.insert((stage.clone(), output.clone()));
                        Some(p.to_string())
                    }
                    None => {
                        let help =
                            did_you_mean(output, outs.keys().map(String::as_str)).or_else(|| {
                                Some(format!(
                                    "stage `{stage}` has outputs: {}",
                                    outs.keys().cloned().collect::<Vec<_>>().join(", ")
                                ))
                            });
                        self.problems.push(
                            path,
                            format!("stage `{stage}` has no output `{output}`"),
                            help,
                        );
                        None
                    }
                }
            }
            Ref::Output(name) => {
                let own = scope.outputs_by_stage.get(scope.own);
                match own.and_then(|m| m.get(name)) {
                    Some(p) if scope.allow_own_outputs => Some(p.to_string()),
                    Some(_) => {
                        self.problems.push(
                            path,
                            "an input cannot refer to the stage's own outputs",
                            None,
                        );
                        None
                    }
                    None => {
                        let help =
                            own.and_then(|m| did_you_mean(name, m.keys().map(String::as_str)));
                        self.problems.push(
                            path,
                            format!("stage `{}` declares no output `{name}`", scope.own),
                            help,
                        );
                        None
                    }
                }
            }
            Ref::Input(name) => match scope.own_inputs {
                None => {
                    self.problems
                        .push(path, "an input cannot refer to other inputs", None);
                    None
                }
                Some(inputs) => match inputs.get(name) {
                    Some(p) => Some(p.to_string()),
                    None => {
                        let help = did_you_mean(name, inputs.keys().map(String::as_str));
                        self.problems.push(
                            path,
                            format!("stage `{}` declares no input `{name}`", scope.own),
                            help,
                        );
                        None
                    }
                },
            },
        }
    }

    fn unknown_param(&mut self, name: &str, path: &YPath, scope: &Scope<'_>) {
        let help = did_you_mean(name, scope.params.keys().map(String::as_str))
            .unwrap_or_else(|| "declare it under `params:`".to_string());
        self.problems.push(
            path,
            format!("reference to unknown param `{name}`"),
            Some(help),
        );
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Quotes a value for `sh` when it contains anything beyond a safe set of characters.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The shortest and longest timeouts: a timeout is added to the current instant, and a year is
/// far beyond any stage yet far from where that addition overflows.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// Why a `timeout` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("must be a duration")]
    Unreadable,
    #[error("must be from 1ms to 365d")]
    OutOfRange,
}

/// `90s`, `10m`, `1h30m`, `500ms`, `2.5s` or a bare number of seconds, from [`MIN_TIMEOUT`] to
/// [`MAX_TIMEOUT`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let secs = seconds(s.trim()).ok_or(DurationError::Unreadable)?;
    // Compared as floats first: `Duration::from_secs_f64` panics on values it cannot hold.
    if !(secs >= MIN_TIMEOUT.as_secs_f64() && secs <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(DurationError::OutOfRange);
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The number of seconds a duration's text stands for (possibly infinite or zero).
fn seconds(s: &str) -> Option<f64> {
    if let Ok(secs) = s.parse::<f64>() {
        return (!secs.is_nan()).then_some(secs);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                'd' => 86400.0,
                ' ' => continue,
                _ => return None,
            }
        };
        let n: f64 = num.parse().ok()?;
        total += n * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(total)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("365d"), Ok(MAX_TIMEOUT));
        assert_eq!(parse_duration("ten"), Err(DurationError::Unreadable));
        assert_eq!(parse_duration("10x"), Err(DurationError::Unreadable));
        assert_eq!(parse_duration("NaN"), Err(DurationError::Unreadable));
        for huge in ["1e300", "99999999999999999999d", "inf", "1e400", "366d"] {
            assert_eq!(
                parse_duration(huge),
                Err(DurationError::OutOfRange),
                "{huge}"
            );
        }
        for tiny in ["0", "-5", "0.0001", "0s", "-inf"] {
            assert_eq!(
                parse_duration(tiny),
                Err(DurationError::OutOfRange),
                "{tiny}"
            );
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("out/a.csv"), "out/a.csv");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
