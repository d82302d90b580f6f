//! The `Stage` trait that built-in stages implement, the context they run with, and the
//! `StageRegistry` the binary fills from the `sluice-stages` crate. The runner never names a
//! built-in stage itself: it only knows the trait.

pub use crate::error::StageError;
use crate::events::StageEventSink;
use crate::exec::{ExecOutcome, ProcessSpec};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the binary and built-in stages have always named it; it lives in `cancel`.
pub use crate::cancel::CancelToken;

/// Everything a built-in stage gets. Paths are absolute; outputs do not exist yet.
pub struct StageContext<'a> {
    /// The pipeline's `name:`.
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub workspace: PathBuf,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    /// `with:` as substituted, raw; kinds read their options from `prepared` instead.
    pub with: &'a serde_json::Value,
    /// What the kind's [`Stage::prepare`] made of `with:` when the pipeline loaded.
    pub prepared: &'a Prepared,
    pub params: &'a BTreeMap<String, serde_json::Value>,
    /// A private directory, empty when the stage starts, removed at the end of the run.
    pub scratch: PathBuf,
    /// GPU identifiers; `CUDA_VISIBLE_DEVICES` semantics.
    pub gpus: Vec<String>,
    pub cancel: CancelToken,
    pub events: StageEventSink,
    /// The stage's cache key (hex). Stable across runs while inputs, config and environment
    /// facts stay the same, so state kept under it (a trainer's checkpoints) belongs to exactly
    /// this computation.
    pub key: String,
    /// The clean environment an external stage would get: the allowlist, the stage's declared
    /// `env`, `SLUICE_*` and `CUDA_VISIBLE_DEVICES` for the GPUs above.
    pub env: BTreeMap<String, String>,
    /// Starts child processes on the stage's behalf.
    pub processes: &'a dyn ProcessHost,
}

impl StageContext<'_> {
    /// The stage's prepared config as the type its kind's [`Stage::prepare`] built. Failing
    /// means a stage ran with a definition that no load prepared: a bug in sluice, not in the
    /// pipeline.
    pub fn config<T: Any>(&self) -> Result<&T, StageError> {
        self.prepared.get::<T>().ok_or_else(|| {
            StageError::new(format!(
                "stage `{}`: its `with:` was not prepared as `{}` when the pipeline loaded",
                self.stage,
                std::any::type_name::<T>()
            ))
            .hint("this is a bug in sluice; please report it")
        })
    }
}

/// A stage's `with:` as its kind's [`Stage::prepare`] read it when the pipeline loaded, kept on
/// the validated definition and handed to each of its runs, so that `with:` is parsed once.
/// Opaque to the engine: only the kind knows the type inside. It is derived from `with:`, which
/// keys, compares and prints the stage, so it takes no part in any of those itself.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl Prepared {
    pub fn new<T: Any + Send + Sync>(config: T) -> Self {
        Prepared(Arc::new(config))
    }

    /// What a kind without options prepares, and what a stage that is not built in (or whose
    /// `with:` was refused, so that it never runs) holds.
    pub fn nothing() -> Self {
        Prepared::new(())
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared::nothing()
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prepared(..)")
    }
}

/// How a built-in stage runs a child process (the training worker, pip): exactly as plugin
/// stages run, in its own process group with stdout read as the JSON stage protocol and stderr
/// in the stage's log, and known to the scheduler, so that cancellation, timeouts and Ctrl-C
/// reach it.
pub trait ProcessHost: Sync {
    fn run(&self, spec: &ProcessSpec) -> std::io::Result<ExecOutcome>;
}

/// A problem in a stage's `with:` block, at a dotted path inside it.
#[derive(Debug, Clone)]
pub struct ConfigProblem {
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
    /// Whether the message is about the key at `path` rather than its value (an unknown
    /// option): the caret then points at the key.
    pub at_key: bool,
}

/// The inputs a built-in kind reads, declared so that a misspelt, missing or conflicting input
/// is reported when the pipeline loads, with its line, instead of when the stage runs.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// Each group needs exactly one of its names: `&[&["table", "images"]]` is one or the other,
    /// `&[&["model"], &["test"]]` is both.
    pub required: &'static [&'static [&'static str]],
    pub optional: &'static [&'static str],
}

impl Inputs {
    /// Every name the kind reads.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .required
            .iter()
            .flat_map(|g| g.iter().copied())
            .collect();
        names.extend(self.optional);
        names
    }

    /// The problems with `given` (the names of a stage's `inputs:`), for a kind called `kind`:
    /// `(name, message, help)`, the name being the input a problem is about, if one.
    pub fn check(
        &self,
        kind: &str,
        given: &[&str],
    ) -> Vec<(Option<String>, String, Option<String>)> {
        let names = self.names();
        let list = Self::listing(&names);
        let mut problems = Vec::new();
        for name in given {
            if !names.contains(name) {
                let help = crate::diag::did_you_mean(name, names.iter().copied()).map_or_else(
                    || format!("its inputs are {list}"),
                    |d| format!("{d} Its inputs are {list}"),
                );
                problems.push((
                    Some(name.to_string()),
                    format!("`{kind}` has no input `{name}`"),
                    Some(help),
                ));
            }
        }
        // A misspelt name already explains the required input it was meant to be.
        if !problems.is_empty() {
            return problems;
        }
        for group in self.required {
            let present: Vec<&str> = group
                .iter()
                .copied()
                .filter(|n| given.contains(n))
                .collect();
            let either = Self::alternatives(group);
            match present.len() {
                1 => {}
                0 => problems.push((
                    None,
                    format!("`{kind}` needs {either} input"),
                    Some(format!("its inputs are {list}")),
                )),
                _ => problems.push((
                    Some(present[1].to_string()),
                    format!("`{kind}` takes {either} input, not several"),
                    Some(format!("use one `{kind}` stage per input")),
                )),
            }
        }
        problems
    }

    /// "`a`, `b` and `c`".
    fn listing(names: &[&str]) -> String {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => quoted.join(""),
        }
    }

    /// "a `model`", "a `table` or an `images`".
    fn alternatives(group: &[&str]) -> String {
        let article = |n: &str| {
            if n.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            }
        };
        group
            .iter()
            .map(|n| format!("{} `{n}`", article(n)))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// What a built-in stage sees after its outputs were restored from the cache instead of run.
pub struct Restored<'a> {
    pub workspace: &'a std::path::Path,
    pub outputs: &'a BTreeMap<String, PathBuf>,
    pub with: &'a serde_json::Value,
}

/// A built-in stage kind.
pub trait Stage: Send + Sync {
    /// The name used in `uses:`.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the stage's output for the same input changes, so caches invalidate.
    fn version(&self) -> u32;
    /// The outputs this kind writes; pipelines may override their paths but not their names.
    fn outputs(&self) -> &'static [&'static str];
    /// The inputs it reads, checked when the pipeline loads; `None` accepts any names.
    fn inputs(&self) -> Option<Inputs> {
        None
    }
    /// Reads `with:` (substituted) once per stage when the pipeline loads: its problems are
    /// reported with their places before anything runs, and the config is what every run of the
    /// stage gets (`ctx.config::<T>()`), so `with:` is never parsed again.
    fn prepare(&self, _with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
        Ok(Prepared::nothing())
    }
    /// Problems with a prepared `with:` that do not stop the pipeline: a setting that works but
    /// gives worse results than another way (a statistic fitted on test rows, say). Reported
    /// with their places when the pipeline loads, once per command, as warnings.
    fn warnings(&self, _prepared: &Prepared) -> Vec<ConfigProblem> {
        Vec::new()
    }
    /// The JSON Schema of the kind's `with:` block, for `sluice schema`; `None` leaves it an
    /// unchecked mapping.
    fn with_schema(&self) -> Option<serde_json::Value> {
        None
    }
    /// Facts about the environment that change results (runtime versions, execution provider).
    fn env_facts(&self, _with: &serde_json::Value) -> Vec<(String, String)> {
        Vec::new()
    }
    /// True when the stage can run without the GPUs its `resources` ask for (it falls back to
    /// the CPU itself, and says so): on a machine with fewer GPUs it gets what there is instead
    /// of failing. `config` is what this kind's `prepare` returned (nothing where it refused
    /// `with:`, and the pipeline with it).
    fn gpus_optional(&self, _config: &Prepared) -> bool {
        false
    }
    /// Runs the stage. A failure's message and hint stay apart: the binary renders the hint.
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError>;
    /// Called when the stage's outputs were restored from the cache, for a stage whose effects
    /// reach past its outputs (deploy moves a registry's `latest` pointer) to bring them in line
    /// with the restored result. `Ok(Some(line))` is logged as a notice; `Err(why)` makes the
    /// runner run the stage after all, with `why` as the reason.
    fn after_restore(&self, _restored: &Restored<'_>) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// The extension of output `output`'s default path (`json` for `out/P/S/metrics.json`), so
    /// that other tools open it; `None` for a directory. `inputs` are the names of the stage's
    /// inputs: a kind whose mode they decide writes a file in one mode and a folder in another.
    fn output_extension(&self, _output: &str, _inputs: &[&str]) -> Option<&'static str> {
        None
    }
}

/// The built-in stage kinds known to this binary.
#[derive(Default, Clone)]
pub struct StageRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn Stage>>,
}

impl StageRegistry {
    pub fn register(&mut self, stage: Arc<dyn Stage>) {
        self.kinds.insert(stage.kind(), stage);
    }
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.kinds.get(kind)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
