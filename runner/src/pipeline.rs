//! `Pipeline`: a validated pipeline. Every reference is resolved, every template substituted,
//! every path normalised and checked, and the stage graph is acyclic. Later steps (planning,
//! scheduling, caching) rely on this and never re-check it.

use crate::graph::StageGraph;
use crate::paths::WorkPath;
use crate::stage::Prepared;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A stage's name, as written under `stages:`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct StageId(pub String);

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a stage is carried out.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]

pub enum StageKind {
    /// A Rust `Stage` from the registry.
    Builtin { name: String, version: u32 },
    /// An external executable speaking the JSON stage protocol.
    Plugin {
        name: String,
        command: Vec<String>,
        /// Command words that are files in the workspace: their content is part of the key.
        files: Vec<WorkPath>,
    },
    /// A shell command (`sh -c`).
    Run { command: String },
}

impl StageKind {
    /// The kind as it appears in keys, lock files and status output.
    pub fn label(&self) -> String {
        match self {
            StageKind::Builtin { name, version } => format!("builtin:{name}@{version}"),
            StageKind::Plugin { name, .. } => format!("plugin:{name}"),
            StageKind::Run { .. } => "run".to_string(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Input {
    pub name: String,
    pub path: WorkPath,
    /// The stage whose output this input is (or lies inside), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<usize>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub name: String,
    pub path: WorkPath,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageDef {
    pub id: StageId,
    pub idx: usize,
    /// The stage's name as written under `stages:`; an instance of a `matrix:` stage (or a sweep
    /// trial's copy) has `id` `base@key=value,...`.
    pub base: String,
    /// The instance's matrix values (and a sweep's `trial`), in order; empty for a plain stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<(String, serde_json::Value)>,
    /// A sweep's directory (`.sluice/sweeps/<id>`) when this stage is part of one: the key
    /// hashes paths under it without their slot (`shared/`, `trials/<n>/`), so a trial's stage
    /// has the key a plain run with the trial's params would have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_dir: Option<String>,
    pub kind: StageKind,
    /// Sorted by name. Includes upstream outputs referenced from `with` or `run`.
    pub inputs: Vec<Input>,
    /// Sorted by name.
    pub outputs: Vec<Output>,
    /// `with:` with every expression substituted.
    pub with: serde_json::Value,
    /// `with:` and `run:` as written, before substitution. The key hashes this rather than the
    /// substituted text: params, input and output paths are keyed on their own, so a changed
    /// param shows up as that param alone in `status`.
    pub config_text: String,
    /// What the built-in kind's `prepare` made of `with`, for its runs; nothing for other kinds.
    /// Not stored by the load cache, which prepares `with` again.
    #[serde(skip)]
    pub prepared: Prepared,
    /// The params this stage references, with their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Declared environment variables, resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub cpus: u32,
    pub gpus: u32,
    /// The stage's kind can do without GPUs (a trainer with `device: auto`): where fewer exist
    /// than it asks for, it gets what there is instead of failing.
    pub gpus_optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// `resources: {memory: 4G}` in bytes. Not part of the key (like `cpus`): how much memory a
    /// stage is given does not change what it writes. Locally it only documents the need; the
    /// Slurm executor asks for it (`--mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// How a cluster executor submits this stage: `executor:`'s defaults merged with the
    /// stage's own override. Never part of the key, so a cluster run and a local run share the
    /// cache.
    #[serde(default, skip_serializing_if = "SlurmJob::is_default")]
    pub slurm: SlurmJob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Environment facts a built-in stage declares as relevant to its results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<(String, String)>,
}

/// A stage's Slurm settings (`executor:` in the pipeline), defaults and override merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlurmJob {
    /// `local: true`: runs on the submitting machine whatever the executor.
    pub local: bool,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Extra `sbatch` arguments: the defaults', then the stage's own (a later flag wins).
    pub sbatch_args: Vec<String>,
}

impl SlurmJob {
    /// No settings: what a stage has without an `executor:` section (left out of stored loads).
    fn is_default(&self) -> bool {
        *self == SlurmJob::default()
    }
}

/// How often the Slurm executor asks `squeue` about its live jobs, unless the pipeline says.
pub const DEFAULT_SLURM_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The pipeline file, absolute.
    pub file: PathBuf,
    /// The pipeline file as the user named it, for messages.
    pub display_file: String,
    /// The workspace root, canonical.
    pub root: PathBuf,
    pub params: BTreeMap<String, serde_json::Value>,
    pub stages: Vec<StageDef>,
    pub graph: StageGraph,
    pub by_name: HashMap<String, usize>,
    /// Instances by the name written under `stages:` (a plain stage is its own one instance).
    pub by_base: HashMap<String, Vec<usize>>,
    /// Where the lock file is, when not beside the pipeline (a sweep keeps its own).
    pub lock_file: Option<PathBuf>,
    /// `sweep:`, read and checked; `sluice run` leaves it alone.
    pub sweep: Option<crate::sweep::spec::SweepSpec>,
    /// What validation found worth saying but not worth refusing, each rendered with its place
    /// in the file (message, location, source line, `help:`), without the `warning:` label.
    pub warnings: Vec<String>,
    /// The promoted params layered over `params:` (under `--set`), when the pipeline has a
    /// promoted file and the load layered it.
    pub promoted: Option<crate::sweep::promote::Promoted>,
    /// `executor.slurm.poll`: how often `squeue` is asked about live jobs.
    pub slurm_poll: Duration,
    /// `cache:`: the remote cache the pipeline names, if any.
    pub cache: crate::spec::cache::CacheSection,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&StageDef> {
        self.by_name.get(name).map(|&i| &self.stages[i])
    }

    /// The stages a name selects: the instance of that name, or every instance of the stage
    /// written under that name.
    pub fn select_name(&self, name: &str) -> Option<Vec<usize>> {
        match self.by_name.get(name) {
            Some(&i) => Some(vec![i]),
            None => self.by_base.get(name).cloned(),
        }
    }

    /// The lock file: beside the pipeline file (or where a sweep keeps its own).
    pub fn lock_path(&self) -> PathBuf {
        if let Some(f) = &self.lock_file {
            return f.clone();
        }
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sluice".into());
        self.file.with_file_name(format!("{stem}.lock"))
    }
}
