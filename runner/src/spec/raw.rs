//! `RawPipeline`: the pipeline file's shape, checked key by key (unknown keys, wrong types) with
//! every problem collected rather than stopping at the first one. Nothing here resolves names:
//! that is `validate`'s job.

use super::locate::{Seg, YPath};
use super::yaml::read_yaml;
use crate::diag::{did_you_mean, Diagnostic};
use yaml_serde::Value;

/// A diagnostic whose location is still a path into the document; located only when rendered.
#[derive(Debug, Clone)]
pub struct Pending {
    pub diag: Diagnostic,
    pub path: Option<YPath>,
}

#[derive(Debug, Default)]
pub struct Problems(pub Vec<Pending>, Quiet);

/// What decides which problems are worth reporting besides the ones already found.
#[derive(Debug, Default, Clone)]
struct Quiet {
    /// The file could not be read as YAML at all: there is nothing to validate.
    fatal: bool,
    /// Paths of numbers too large to read: other problems there would only repeat that.
    too_large: Vec<Vec<Seg>>,
}

impl Problems {
    pub fn push(&mut self, path: &YPath, message: impl Into<String>, help: Option<String>) {
        // A problem with the list or mapping holding the number is about the number too: it
        // stands there as null (`min_size: [null, 1]`).
        if self.1.too_large.iter().any(|t| {
            path.segs.starts_with(t)
                || (t.len() == path.segs.len() + 1 && t.starts_with(&path.segs))
        }) {
            return;
        }
        self.0.push(Pending {
            diag: Diagnostic::new(message).help_opt(help),
            path: Some(path.clone()),
        });
    }
    pub fn push_unlocated(&mut self, message: impl Into<String>, help: Option<String>) {
        self.0.push(Pending {
            diag: Diagnostic::new(message).help_opt(help),
            path: None,
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// An empty list that keeps quiet about what this one does, for a part of the file checked
    /// on its own (on another thread) and `append`ed afterwards.
    pub(crate) fn sibling(&self) -> Problems {
        Problems(Vec::new(), self.1.clone())
    }
    /// The problems `other` (a `sibling`) found, after this one's.
    pub(crate) fn append(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
    /// True when the file is not YAML (or not within bounds) and nothing further was checked.
    pub fn is_fatal(&self) -> bool {
        self.1.fatal
    }
}

#[derive(Debug, Clone)]
pub struct RawPlugin {
    pub name: String,
    pub path: YPath,
    pub command: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RawStage {
    pub name: String,
    pub path: YPath,
    pub uses: Option<String>,
    pub run: Option<String>,
    pub inputs: Vec<(String, String)>,
    /// Output name and its path, `None` for the default location.
    pub outputs: Vec<(String, Option<String>)>,
    pub with: Value,
    pub needs: Vec<String>,
    pub cpus: u32,
    pub gpus: u32,
    pub timeout: Option<String>,
    /// `resources.memory` in bytes.
    pub memory: Option<u64>,
    /// Variable name and its value; `None` passes sluice's own value through.
    pub env: Vec<(String, Option<String>)>,
    pub version: Option<String>,
    /// `matrix:` as written: each key with its values (expanded by `spec::matrix`).
    pub matrix: Vec<(String, Vec<serde_json::Value>)>,
    /// `matrix:` was written but had problems (already reported): `${{ matrix.K }}` in the
    /// stage is not reported again.
    pub matrix_broken: bool,
    /// The name as written under `stages:` (an instance's `name` adds its bindings).
    pub base: String,
    /// The name without a sweep's `trial` binding: what keys, default output paths and
    /// implied input names use, so that a trial keys like a plain run with its params.
    pub logical: String,
    /// Matrix values (and a sweep's `trial`), in order: `train@lr=0.1,trial=3`.
    pub bindings: Vec<(String, serde_json::Value)>,
    /// A sweep trial's params, over the pipeline's.
    pub param_overrides: std::collections::BTreeMap<String, serde_json::Value>,
    /// Where a sweep puts this stage's outputs (`.sluice/sweeps/<id>/trials/3`), prefixed to
    /// every output path; `None` in a plain run.
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RawPipeline {
    pub name: Option<String>,
    pub params: Vec<(String, Value)>,
    pub plugins: Vec<RawPlugin>,
    pub stages: Vec<RawStage>,
    /// `sweep:` as written; read by `sweep::spec`.
    pub sweep: Option<Value>,
    /// `executor:`, checked for shape; stage names are resolved by `validate`.
    pub executor: Option<super::executor::RawExecutor>,
    /// `cache:`, checked.
    pub cache: Option<super::cache::CacheSection>,
}

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "params",
    "plugins",
    "stages",
    "sweep",
    "executor",
    "cache",
];
const STAGE_KEYS: &[&str] = &[
    "uses",
    "run",
    "inputs",
    "outputs",
    "with",
    "needs",
    "resources",
    "timeout",
    "env",
    "version",
    "description",
    "matrix",
];
const PLUGIN_KEYS: &[&str] = &["command", "description"];
const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "memory"];

/// Parses YAML text (through `read_yaml`, within its bounds). A syntax error or a crossed bound
/// is returned as the only problem, and `Problems::is_fatal` says so.
pub fn parse_raw(source: &str) -> (RawPipeline, Problems) {
    let mut problems = Problems::default();
    let doc = match read_yaml(source) {
        Ok((doc, too_large)) => {
            for t in too_large {
                problems.push(
                    &YPath {
                        segs: t.path.clone(),
                        key: false,
                    },
                    t.message(),
                    Some(t.help()),
                );
                problems.1.too_large.push(t.path);
            }
            doc
        }
        Err(fatal) => {
            // `{a: ${{ x }}}`: in YAML's flow style the braces of an unquoted expression end
            // the mapping early, the commonest way to meet a syntax error.
            let on_line = fatal
                .location
                .as_ref()
                .and_then(|l| source.lines().nth(l.line.saturating_sub(1)))
                .unwrap_or("");
            let help = fatal.help.or_else(|| {
                (on_line.contains("${{") && on_line.contains('{')).then(|| {
                    "an unquoted `${{ ... }}` inside `{ ... }` ends the mapping early; quote it: `\"${{ params.x }}\"`, or write the mapping one key per line".to_string()
                })
            });
            problems.0.push(Pending {
                diag: Diagnostic::new(fatal.message)
                    .at(fatal.location)
                    .help_opt(help),
                path: None,
            });
            problems.1.fatal = true;
            return (RawPipeline::default(), problems);
        }
    };
    let root = YPath::root();
    let mut raw = RawPipeline::default();
    let Some(map) = as_map(&doc, &root, "the pipeline", &mut problems) else {
        return (raw, problems);
    };
    check_keys(map, &root, TOP_KEYS, "pipeline", &mut problems);
    if let Some(v) = map.get("name") {
        raw.name = string(v, &root.k("name"), "`name`", &mut problems);
    }
    if let Some(v) = map.get("params") {
        let p = root.k("params");
        if let Some(m) = as_map(v, &p, "`params`", &mut problems) {
            for (k, val) in m {
                if let Some(k) = key_str(k, &p, &mut problems) {
                    raw.params.push((k, val.clone()));
                }
            }
        }
    }
    if let Some(v) = map.get("sweep") {
        raw.sweep = Some(v.clone());
    }
    if let Some(v) = map.get("executor") {
        raw.executor = super::executor::read(v, &root.k("executor"), &mut problems);
    }
    if let Some(v) = map.get("cache") {
        raw.cache = super::cache::read(v, &root.k("cache"), &mut problems);
    }
    if let Some(v) = map.get("plugins") {
        let p = root.k("plugins");
        if let Some(m) = as_map(v, &p, "`plugins`", &mut problems) {
            for (k, val) in m {
                let Some(name) = key_str(k, &p, &mut problems) else {
                    continue;
                };
                if let Some(plugin) = plugin(&name, val, &p.k(&name), &mut problems) {
                    raw.plugins.push(plugin);
                }
            }
        }
    }
    // The stages are most of the document: the rest of the tree is dropped here, and each stage's
    // subtree once it is read, so the tree and the stages read from it are never both whole in
    // memory (on a pipeline of 10,000 stages, that was the peak of a no-op's memory).
    let stages = match doc {
        Value::Mapping(mut m) => m.swap_remove("stages"),
        _ => None,
    };
    match stages {
        None => problems.push_unlocated(
            "the pipeline has no `stages`",
            Some("add a `stages:` mapping with at least one stage".into()),
        ),
        Some(Value::Mapping(m)) => {
            let p = root.k("stages");
            if m.is_empty() {
                problems.push(&p, "`stages` is empty", None);
            }
            raw.stages.reserve(m.len());
            for (k, val) in m {
                let Some(name) = key_str(&k, &p, &mut problems) else {
                    continue;
                };
                if let Some(stage) = stage(&name, &val, &p.k(&name), &mut problems) {
                    raw.stages.push(stage);
                }
            }
        }
        Some(other) => {
            let _ = as_map(&other, &root.k("stages"), "`stages`", &mut problems);
        }
    }
    (raw, problems)
}

fn plugin(name: &str, v: &Value, path: &YPath, problems: &mut Problems) -> Option<RawPlugin> {
    let m = as_map(v, path, &format!("plugin `{name}`"), problems)?;
    check_keys(m, path, PLUGIN_KEYS, "plugin", problems);
    let command = match m.get("command") {
        None => {
            problems.push(
                &path.key_of(),
                format!("plugin `{name}` has no `command`"),
                Some("e.g. `command: [python3, plugins/featurize.py]`".into()),
            );
            return None;
        }
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Sequence(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                out.push(string(
                    item,
                    &path.k("command").i(i),
                    "a command word",
                    problems,
                )?);
            }
            out
        }
        Some(_) => {
            problems.push(
                &path.k("command"),
                "`command` must be a list of words or a string",
                None,
            );
            return None;
        }
    };
    if command.is_empty() {
        problems.push(&path.k("command"), "`command` is empty", None);
        return None;
    }
    Some(RawPlugin {
        name: name.to_string(),
        path: path.clone(),
        command,
    })
}

fn stage(name: &str, v: &Value, path: &YPath, problems: &mut Problems) -> Option<RawStage> {
    let m = as_map(v, path, &format!("stage `{name}`"), problems)?;
    check_keys(m, path, STAGE_KEYS, "stage", problems);
    let mut s = RawStage {
        name: name.to_string(),
        path: path.clone(),
        uses: None,
        run: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        with: Value::Null,
        needs: Vec::new(),
        cpus: 1,
        gpus: 0,
        timeout: None,
        memory: None,
        env: Vec::new(),
        version: None,
        matrix: Vec::new(),
        matrix_broken: false,
        base: name.to_string(),
        logical: name.to_string(),
        bindings: Vec::new(),
        param_overrides: Default::default(),
        root: None,
    };
    if let Some(v) = m.get("uses") {
        s.uses = string(v, &path.k("uses"), "`uses`", problems);
    }
    if let Some(v) = m.get("run") {
        s.run = string(v, &path.k("run"), "`run`", problems);
    }
    if let Some(v) = m.get("inputs") {
        let p = path.k("inputs");
        if let Some(im) = as_map(v, &p, "`inputs`", problems) {
            for (k, val) in im {
                if let Some(k) = key_str(k, &p, problems) {
                    if let Some(val) = string(val, &p.k(&k), "an input path", problems) {
                        s.inputs.push((k, val));
                    }
                }
            }
        }
    }
    if let Some(v) = m.get("outputs") {
        let p = path.k("outputs");
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(n) = string(item, &p.i(i), "an output name", problems) {
                        if s.outputs.iter().any(|(o, _)| *o == n) {
                            problems.push(&p.i(i), format!("output `{n}` is listed twice"), None);
                            continue;
                        }
                        s.outputs.push((n, None));
                    }
                }
            }
            Value::Mapping(om) => {
                for (k, val) in om {
                    if let Some(k) = key_str(k, &p, problems) {
                        let val = match val {
                            Value::Null => None,
                            other => string(other, &p.k(&k), "an output path", problems),
                        };
                        s.outputs.push((k, val));
                    }
                }
            }
            _ => problems.push(
                &p,
                "`outputs` must be a mapping of names to paths, or a list of names",
                None,
            ),
        }
    }
    if let Some(v) = m.get("with") {
        if !matches!(v, Value::Mapping(_) | Value::Null) {
            problems.push(&path.k("with"), "`with` must be a mapping", None);
        } else {
            s.with = v.clone();
        }
    }
    if let Some(v) = m.get("needs") {
        let p = path.k("needs");
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(n) = string(item, &p.i(i), "a stage name", problems) {
                        s.needs.push(n);
                    }
                }
            }
            Value::String(one) => s.needs.push(one.clone()),
            _ => problems.push(&p, "`needs` must be a list of stage names", None),
        }
    }
    if let Some(v) = m.get("resources") {
        let p = path.k("resources");
        if let Some(rm) = as_map(v, &p, "`resources`", problems) {
            check_keys(rm, &p, RESOURCE_KEYS, "resource", problems);
            if let Some(c) = rm.get("cpus") {
                if let Some(n) = count(c, &p.k("cpus"), "cpus", 1, problems) {
                    s.cpus = n;
                }
            }
            if let Some(g) = rm.get("gpus") {
                if let Some(n) = count(g, &p.k("gpus"), "gpus", 0, problems) {
                    s.gpus = n;
                }
            }
            if let Some(v) = rm.get("memory") {
                s.memory = memory(v, &p.k("memory"), problems);
            }
        }
    }
    if let Some(v) = m.get("timeout") {
        s.timeout = scalar_string(v, &path.k("timeout"), "`timeout`", problems);
    }
    if let Some(v) = m.get("version") {
        s.version = scalar_string(v, &path.k("version"), "`version`", problems);
    }
    if let Some(v) = m.get("matrix") {
        let before = problems.0.len();
        s.matrix = super::matrix::read(v, &path.k("matrix"), problems);
        s.matrix_broken = problems.0.len() > before;
    }
    if let Some(v) = m.get("env") {
        let p = path.k("env");
        match v {
            Value::Mapping(em) => {
                for (k, val) in em {
                    if let Some(k) = key_str(k, &p, problems) {
                        let val = match val {
                            Value::Null => None,
                            other => scalar_string(other, &p.k(&k), "an environment value", problems),
                        };
                        s.env.push((k, val));
                    }
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(n) = string(item, &p.i(i), "a variable name", problems) {
                        s.env.push((n, None));
                    }
                }
            }
            _ => problems.push(
                &p,
                "`env` must be a mapping of variable names to values (or ~ to pass sluice's own value through)",
                None,
            ),
        }
    }
    Some(s)
}

pub(super) fn check_keys(
    m: &yaml_serde::Mapping,
    path: &YPath,
    allowed: &[&str],
    what: &str,
    problems: &mut Problems,
) {
    for k in m.keys() {
        let Value::String(k) = k else { continue };
        if !allowed.contains(&k.as_str()) {
            let help = did_you_mean(k, allowed.iter().copied())
                .unwrap_or_else(|| format!("a {what} takes: {}", allowed.join(", ")));
            problems.push(
                &path.k(k).key_of(),
                format!("unknown {what} key `{k}`"),
                Some(help),
            );
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
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

pub(super) fn as_map<'a>(
    v: &'a Value,
    path: &YPath,
    what: &str,
    problems: &mut Problems,
) -> Option<&'a yaml_serde::Mapping> {
    match v {
        Value::Mapping(m) => Some(m),
        other => {
            problems.push(
                path,
                format!("{what} must be a mapping, found {}", type_name(other)),
                None,
            );
            None
        }
    }
}

pub(super) fn key_str(k: &Value, parent: &YPath, problems: &mut Problems) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        other => {
            let text = yaml_serde::to_string(other).unwrap_or_default();
            problems.push(
                parent,
                format!("keys must be strings, found `{}`", text.trim()),
                None,
            );
            None
        }
    }
}

pub(super) fn string(
    v: &Value,
    path: &YPath,
    what: &str,
    problems: &mut Problems,
) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            problems.push(
                path,
                format!("{what} must be a string, found {}", type_name(other)),
                None,
            );
            None
        }
    }
}

/// Strings, numbers and booleans, as text (for `timeout: 30` and `version: 2`).
pub(super) fn scalar_string(
    v: &Value,
    path: &YPath,
    what: &str,
    problems: &mut Problems,
) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            problems.push(
                path,
                format!(
                    "{what} must be a string or number, found {}",
                    type_name(other)
                ),
                None,
            );
            None
        }
    }
}

/// The most CPU slots or GPUs one stage may ask for.
const MAX_COUNT: u64 = 1024;

/// A whole number from `min` to [`MAX_COUNT`] for the resource `name`.
fn count(v: &Value, path: &YPath, name: &str, min: u64, problems: &mut Problems) -> Option<u32> {
    match v.as_u64() {
        Some(n) if (min..=MAX_COUNT).contains(&n) => Some(n as u32),
        _ => {
            problems.push(
                path,
                format!(
                    "`{name}` must be a whole number from {min} to {MAX_COUNT}, found {}",
                    found(v)
                ),
                None,
            );
            None
        }
    }
}

/// The least and most memory a stage may ask for: under a mebibyte is surely a missing unit,
/// and 64 TiB is beyond any node.
const MIN_MEMORY: u64 = 1 << 20;
const MAX_MEMORY: u64 = 64 << 40;

/// `resources.memory`: a whole number with a binary unit (`512M`, `4G`; `K`, `M`, `G`, `T`),
/// from [`MIN_MEMORY`] to [`MAX_MEMORY`].
fn memory(v: &Value, path: &YPath, problems: &mut Problems) -> Option<u64> {
    let help = "write a whole number with a unit: `512M`, `4G` (K, M, G and T are powers of 1024)";
    let parsed = match v {
        Value::String(s) => parse_memory(s),
        _ => None,
    };
    match parsed {
        Some(n) if (MIN_MEMORY..=MAX_MEMORY).contains(&n) => Some(n),
        Some(_) => {
            problems.push(
                path,
                format!("`memory` must be from 1M to 64T, found {}", found(v)),
                None,
            );
            None
        }
        None => {
            problems.push(
                path,
                format!("`memory` must be an amount like `4G`, found {}", found(v)),
                Some(help.into()),
            );
            None
        }
    }
}

/// `4G` → 4 GiB in bytes; `None` for anything else (a bare number has no unit to trust).
pub fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim();
    let unit = t.chars().last()?.to_ascii_uppercase();
    let shift = match unit {
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    let digits = &t[..t.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// A value as a message names it: scalars as written, the rest by their type.
pub(crate) fn found(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        Value::String(s) if s.chars().count() <= 40 => format!("the text `{s}`"),
        other => type_name(other).to_string(),
    }
}
