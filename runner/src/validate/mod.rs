//! Validation: `RawPipeline` → `Pipeline`. Resolves kinds, params, `${{ }}` references and paths,
//! derives the edges, seals the graph, and collects every problem it finds (with its location in
//! the file and a did-you-mean where one helps) before failing.
//!
//! This file holds the entry point (`load`) and the [`Validator`], whose `run` is the list of
//! phases. Each phase lives with what it checks: `params` (params and `--set`), `kinds` (plugins
//! and `uses:`/`run:`), `outputs` (output paths, symbolic link escapes, outputs written twice),
//! `stages` (pass 2: each stage's inputs, `with:`, command, env, timeout), `splice` (`${{ }}`
//! substitution), `edges` (needs, inputs linked to producers or found missing, cycles) and
//! `duration` (the `timeout` syntax).
//!
//! Every read of the filesystem or the environment goes through `probe`, which records it: the
//! load cache (`loads`) keeps a successful load with those probes and serves it again while the
//! pipeline file, `--set`, the promoted params, the binary and every probe's answer are unchanged.

mod duration;
mod edges;
mod executor;
mod kinds;
mod loads;
mod outputs;
mod params;
mod probe;
mod splice;
mod stages;

pub use duration::{parse_duration, DurationError, MAX_TIMEOUT, MIN_TIMEOUT};
pub use params::MAX_SET_BYTES;
pub use splice::shell_quote;

use crate::diag::{Diagnostic, Diagnostics};
use crate::paths::{Containment, WorkPath};
use crate::pipeline::{Pipeline, StageDef, StageKind};
use crate::spec::locate::Index;
use crate::spec::raw::{parse_raw, Problems, RawStage};
use crate::spec::yaml::MAX_FILE_BYTES;
use crate::spec::{RawPipeline, YPath};
use crate::stage::StageRegistry;
use crate::sweep::promote::{read_promoted, Promoted};
use edges::Edges;
use probe::Probes;
use rayon::prelude::*;
use stages::Known;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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
    /// A sweep's trials: stages copied per trial over the matrix-expanded pipeline.
    pub sweep: Option<&'a crate::sweep::expand::Layout>,
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

/// Whether `load` layers the pipeline's promoted params file (`sweep::promote`) over its
/// `params:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotedParams {
    /// Every command that runs or shows the pipeline: the promotion is what the pipeline means now.
    Layer,
    /// `sluice sweep`: a sweep searches around the pipeline as written, so that its trials, its
    /// shared stages and its id depend on the pipeline file and the sweep spec alone, never on
    /// an earlier sweep's promotion.
    Ignore,
}

/// Reads, parses and validates a pipeline file, with its promoted params layered in.
pub fn load(opts: &LoadOptions<'_>) -> Result<Pipeline, LoadError> {
    load_with(opts, PromotedParams::Layer)
}

/// `load`, choosing whether the promoted params file is layered in. A load of an unchanged
/// pipeline in an unchanged workspace is served from the load cache (`loads`).
pub fn load_with(opts: &LoadOptions<'_>, promoted: PromotedParams) -> Result<Pipeline, LoadError> {
    let source = read_source(opts)?;
    let file = std::path::absolute(opts.file).unwrap_or_else(|_| opts.file.to_path_buf());
    // A sweep's layout is not in the key: its loads always validate.
    let key = match opts.sweep {
        None => loads::Key::new(opts, promoted, &file, &source),
        Some(_) => None,
    };
    if let Some(key) = &key {
        if let Some(p) = loads::lookup(opts, &file, key) {
            tracing::debug!(file = %opts.display, "load cache: hit");
            return Ok(p);
        }
        tracing::debug!(file = %opts.display, "load cache: miss");
    }
    let mut probes = Probes::default();
    let loaded = validate(opts, promoted, source, file, &mut probes);
    if let (Some(key), Ok(p)) = (&key, &loaded) {
        loads::store(opts, key, p, &probes);
    }
    loaded
}

/// `load_with`, validating from scratch, without reading or writing the load cache.
pub fn load_fresh(opts: &LoadOptions<'_>, promoted: PromotedParams) -> Result<Pipeline, LoadError> {
    let source = read_source(opts)?;
    let file = std::path::absolute(opts.file).unwrap_or_else(|_| opts.file.to_path_buf());
    validate(opts, promoted, source, file, &mut Probes::default())
}

/// The load cache's pipeline for `load_with(opts, promoted)`, if it holds a valid one; `None`
/// on a miss (nothing is validated or written). Lets tests compare a hit with a full load.
pub fn load_cached(opts: &LoadOptions<'_>, promoted: PromotedParams) -> Option<Pipeline> {
    let source = read_source(opts).ok()?;
    let file = std::path::absolute(opts.file).unwrap_or_else(|_| opts.file.to_path_buf());
    opts.sweep.is_none().then_some(())?;
    let key = loads::Key::new(opts, promoted, &file, &source)?;
    loads::lookup(opts, &file, &key)
}

/// Parses and validates `source`, the text of `opts.file` (absolute: `file`), recording what it
/// asks of the filesystem and environment in `probes`.
fn validate(
    opts: &LoadOptions<'_>,
    promoted: PromotedParams,
    source: String,
    file: PathBuf,
    probes: &mut Probes,
) -> Result<Pipeline, LoadError> {
    let (raw, mut problems) = parse_raw(&source);
    // The promoted file is checked against the names under `params:`; its problems are its
    // own file's, reported once the pipeline itself has none.
    let (promoted, promoted_problems) = match promoted {
        PromotedParams::Layer if !problems.is_fatal() => {
            let declared: Vec<&str> = raw.params.iter().map(|(k, _)| k.as_str()).collect();
            match read_promoted(&file, &opts.display, &declared) {
                Ok(p) => (p, None),
                Err(d) => (None, Some(d)),
            }
        }
        _ => (None, None),
    };
    let mut warnings = Problems::default();
    let pipeline = if problems.is_fatal() {
        None
    } else {
        Validator {
            opts,
            promoted: promoted.as_ref(),
            problems: &mut problems,
            warnings: &mut warnings,
            probes,
        }
        .run(raw, file)
    };
    match pipeline {
        Some(_) if problems.is_empty() && promoted_problems.is_some() => Err(LoadError::Invalid(
            promoted_problems.expect("checked just above"),
        )),
        Some(mut p) if problems.is_empty() => {
            if !warnings.is_empty() {
                p.warnings = located(warnings, source, &opts.display).render_each();
            }
            p.promoted = promoted;
            Ok(p)
        }
        _ => {
            promoted_given(opts, &mut problems);
            Err(LoadError::Invalid(located(problems, source, &opts.display)))
        }
    }
}

/// A promoted params file named where a pipeline was expected (it does not validate as one):
/// says which pipeline it belongs to.
fn promoted_given(opts: &LoadOptions<'_>, problems: &mut Problems) {
    let name = opts.file.file_name().map(|n| n.to_string_lossy());
    let Some(stem) = name
        .as_deref()
        .and_then(|n| n.strip_suffix(".promoted.yaml"))
    else {
        return;
    };
    let pipeline = Path::new(&opts.display).with_file_name(format!("{stem}.yaml"));
    problems.push_unlocated(
        format!("`{}` is a promoted params file, not a pipeline", opts.display),
        Some(format!(
            "name the pipeline it belongs to, `{}`: every command layers these params over its `params:`",
            pipeline.display()
        )),
    );
}

/// The problems as diagnostics of the file named `file`, each at its place in `source`, in file
/// order.
pub(crate) fn located(problems: Problems, source: String, file: &str) -> Diagnostics {
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
    // The instances of a matrix stage (or a sweep's trials) share their text: a problem in it
    // is found once per instance, and said once.
    let mut seen = std::collections::HashSet::new();
    items.retain(|d| {
        seen.insert((
            d.location.map(|l| (l.line, l.column)),
            d.message.clone(),
            d.help.clone(),
        ))
    });
    Diagnostics {
        file: file.to_string(),
        source,
        items,
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

/// Checks one parsed pipeline, recording every problem in `problems`; `run` reads as the list
/// of its phases, each a method in the module named for what it checks.
struct Validator<'a, 'b> {
    opts: &'a LoadOptions<'a>,
    /// Params layered between `params:` and `--set`.
    promoted: Option<&'a Promoted>,
    problems: &'b mut Problems,
    /// What does not refuse the pipeline: [`crate::Stage::warnings`].
    warnings: &'b mut Problems,
    /// What was asked of the filesystem and the environment, for the load cache.
    probes: &'b mut Probes,
}

/// What defining one stage found besides its definition: problems, warnings, probes, edges.
type Findings = (Problems, Problems, Probes, Edges);

/// Pass 1's findings, which references to outputs need before any stage is read further.
struct Declared {
    kinds: Vec<Option<StageKind>>,
    outputs_by_stage: HashMap<String, BTreeMap<String, WorkPath>>,
    /// In a sweep, where each logical output went.
    sweep: Option<stages::SweepPaths>,
}

impl Validator<'_, '_> {
    fn run(mut self, mut raw: RawPipeline, file: PathBuf) -> Option<Pipeline> {
        let name = self.pipeline_name(raw.name.as_deref(), &file);
        let params = self.params(&raw.params);
        let plugins = self.plugins(&raw.plugins);
        let bases = self.stage_names(&raw.stages);
        let sweep = self.sweep(raw.sweep.as_ref(), &params, &raw.stages);
        let executor = self.executor(raw.executor.as_ref(), &bases);
        crate::spec::matrix::expand(&mut raw, self.problems);
        if let Some(layout) = self.opts.sweep {
            layout.apply(&mut raw);
        }
        let declared = self.declare_stages(&raw.stages, &plugins, &name);
        let index: HashMap<String, usize> = raw
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let mut by_base: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in raw.stages.iter().enumerate() {
            by_base.entry(s.base.clone()).or_default().push(i);
        }
        let known = Known {
            params: &params,
            outputs_by_stage: &declared.outputs_by_stage,
            stage_names: &bases,
            index: &index,
            by_base: &by_base,
            stages: &raw.stages,
            sweep: declared.sweep.as_ref(),
            executor: &executor,
        };
        let (mut stages, input_at, mut edges) =
            self.define_stages(&raw.stages, declared.kinds, &known);
        self.check_outputs(&raw.stages, &stages);
        self.link_inputs(&mut stages, &input_at, &mut edges);
        let graph = self.seal(&raw.stages, &stages, &edges)?;
        Some(Pipeline {
            name,
            file,
            display_file: self.opts.display.clone(),
            root: self.opts.root.to_path_buf(),
            params,
            stages,
            graph,
            by_name: index,
            by_base,
            lock_file: self.opts.sweep.map(|l| l.lock_file.clone()),
            sweep,
            warnings: Vec::new(),
            promoted: None,
            slurm_poll: executor.poll(),
            cache: raw.cache.clone().unwrap_or_default(),
        })
    }

    /// The pipeline's `name:`, or the file's stem.
    fn pipeline_name(&mut self, declared: Option<&str>, file: &Path) -> String {
        let name = declared.map(str::to_string).unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        });
        if !is_ident(&name) {
            self.problems.push(
                &YPath::root().k("name"),
                format!("pipeline name `{name}` must use only letters, digits, `_` and `-`"),
                None,
            );
        }
        name
    }

    /// `sweep:`, read and checked against the pipeline: varied params declared, the metric's
    /// and `skip:`'s stages present.
    fn sweep(
        &mut self,
        v: Option<&yaml_serde::Value>,
        params: &BTreeMap<String, serde_json::Value>,
        stages: &[RawStage],
    ) -> Option<crate::sweep::spec::SweepSpec> {
        let path = YPath::root().k("sweep");
        let spec = crate::sweep::spec::parse(v?, &path, self.problems)?;
        for (name, _) in &spec.params {
            if !params.contains_key(name) {
                let help = crate::diag::did_you_mean(name, params.keys().map(String::as_str))
                    .unwrap_or_else(|| {
                        format!("declare `{name}` under `params:` with the value a plain run uses")
                    });
                self.problems.push(
                    &path.k("params").k(name).key_of(),
                    format!("sweep param `{name}` is not declared under `params:`"),
                    Some(help),
                );
            }
        }
        let names = || stages.iter().map(|s| s.base.as_str());
        let check_stage = |what: String, name: &str, at: YPath, problems: &mut Problems| {
            if !names().any(|n| n == name) {
                problems.push(
                    &at,
                    format!("{what} names unknown stage `{name}`"),
                    crate::diag::did_you_mean(name, names()),
                );
            }
        };
        check_stage(
            format!("sweep metric `{}`", spec.metric),
            &spec.metric.stage,
            path.k("metric"),
            self.problems,
        );
        for (i, k) in spec.skip.iter().enumerate() {
            check_stage(
                "`sweep.skip`".to_string(),
                k,
                path.k("skip").i(i),
                self.problems,
            );
        }
        Some(spec)
    }

    /// The stages' names as written, in order, each checked (before matrix expansion).
    fn stage_names(&mut self, stages: &[RawStage]) -> Vec<String> {
        for s in stages {
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
        stages.iter().map(|s| s.name.clone()).collect()
    }

    /// Pass 1: every stage's kind and output paths.
    fn declare_stages(
        &mut self,
        stages: &[RawStage],
        plugins: &BTreeMap<String, kinds::Plugin>,
        pipeline: &str,
    ) -> Declared {
        let mut kinds = Vec::new();
        let mut outputs_by_stage = HashMap::new();
        let mut containment = Containment::new(self.opts.root);
        let mut sweep = self.opts.sweep.map(|l| stages::SweepPaths {
            dir: l.dir.clone(),
            logical: HashMap::new(),
        });
        for (i, s) in stages.iter().enumerate() {
            let kind = self.kind(s, plugins);
            let mut outs = self.outputs(s, kind.as_ref(), pipeline, &mut containment);
            if let Some(root) = &s.root {
                for p in outs.values_mut() {
                    if let Some(w) = sweep.as_mut() {
                        w.logical.entry(p.as_str().to_string()).or_default().push(i);
                    }
                    *p = p.under(root);
                }
            }
            kinds.push(kind);
            outputs_by_stage.insert(s.name.clone(), outs);
        }
        Declared {
            kinds,
            outputs_by_stage,
            sweep,
        }
    }

    /// Pass 2: every stage's definition, where each of its inputs is written, and the edges
    /// from `needs:`.
    fn define_stages(
        &mut self,
        stages: &[RawStage],
        kinds: Vec<Option<StageKind>>,
        known: &Known<'_>,
    ) -> (Vec<StageDef>, Vec<Vec<YPath>>, Edges) {
        // Each stage is defined on its own, on every core, into lists of its own; those are then
        // recorded in stage order, so problems come out exactly as one pass in order would say.
        let (opts, promoted) = (self.opts, self.promoted);
        let (quiet, quiet_warnings, quiet_probes) =
            (&*self.problems, &*self.warnings, &*self.probes);
        // Unzipped as they are collected: the definitions land in their final vector at once,
        // never held twice (10,000 of them are megabytes).
        let (defs, rest): (Vec<StageDef>, Vec<(Vec<YPath>, Findings)>) = stages
            .par_iter()
            .enumerate()
            .zip(kinds.into_par_iter())
            .map(|((idx, s), kind)| {
                let mut problems = quiet.sibling();
                let mut warnings = quiet_warnings.sibling();
                let mut probes = quiet_probes.sibling();
                let mut edges = Edges::new();
                let defined = Validator {
                    opts,
                    promoted,
                    problems: &mut problems,
                    warnings: &mut warnings,
                    probes: &mut probes,
                }
                .define_stage(idx, s, kind, known, &mut edges);
                (
                    defined.def,
                    (defined.input_at, (problems, warnings, probes, edges)),
                )
            })
            .unzip();
        let mut input_at = Vec::with_capacity(rest.len());
        let mut edges = Edges::new();
        for (at, (problems, warnings, probes, e)) in rest {
            self.problems.append(problems);
            self.warnings.append(warnings);
            self.probes.append(probes);
            edges.extend(e);
            input_at.push(at);
        }
        (defs, input_at, edges)
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
