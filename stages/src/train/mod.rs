//! The `train` stage: trains a model with ONNX Runtime's training runtime.
//!
//! That runtime exists only as Python wheels, so the training loop runs in a worker process
//! (`stages/python/sluice_train`, embedded in the binary) inside a virtual environment that
//! `pyenv` creates on first use. This side does everything else: it checks `with:`, learns the
//! task, classes and data shape from the inputs, chooses the device (`device`), prepares the
//! environment with visible progress, and starts the worker through the stage protocol: one
//! JSON request on stdin, progress, logs and metrics back as JSON lines, relayed to the
//! display. Checkpoints live under `.sluice/resume/<stage key>`, so a killed run resumes when the
//! same computation runs again, and are dropped once it succeeds.

mod config;
mod device;
mod options;

use crate::arrays;
use crate::problems::relative;
use crate::pyenv::{self, Flavor, Step};
pub(crate) use config::Device;
use config::{DataFacts, Model, Task, TrainConfig};
use serde_json::{json, Value};
use sluice_runner::exec::{ProcessSpec, Stdout};
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};
use std::path::{Path, PathBuf};

/// The `train` stage kind.
pub(crate) struct Train;

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        1
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["artifacts", "history", "model"]
    }
    fn output_extension(&self, output: &str, _inputs: &[&str]) -> Option<&'static str> {
        match output {
            "model" => Some("onnx"),
            "history" => Some("json"),
            _ => None,
        }
    }
    /// `model` is a user's own ONNX model (`model: {onnx: ...}`), as an input so that editing
    /// it retrains.
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&["train"]],
            optional: &["val", "preprocess", "model"],
        })
    }
    fn prepare(&self, with: &Value) -> Result<Prepared, Vec<ConfigProblem>> {
        TrainConfig::parse(with).map(Prepared::new)
    }
    fn with_schema(&self) -> Option<Value> {
        Some(crate::fields::schema(options::FIELDS, options::EXAMPLES))
    }
    /// The worker's code and the pinned runtime: a new trainer retrains.
    fn env_facts(&self, _with: &Value) -> Vec<(String, String)> {
        vec![("train.worker".into(), pyenv::code_fact())]
    }
    /// `device: auto` trains on the CPU where there is no GPU; only `device: cuda` insists.
    fn gpus_optional(&self, config: &Prepared) -> bool {
        config
            .get::<TrainConfig>()
            .is_none_or(|c| c.device != Device::Cuda)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        run(ctx, ctx.config::<TrainConfig>()?)
    }
}

fn run(ctx: &StageContext<'_>, config: &TrainConfig) -> Result<(), StageError> {
    let train = ctx.inputs.get("train").ok_or_else(|| {
        StageError::new(
            "`train` needs an input named `train`: a split directory written by `normalize`",
        )
        .hint("write `inputs: {train: ${{ stages.normalize.outputs.train }}, val: ..., preprocess: ...}`")
    })?;
    let facts = data_facts(ctx, config, train)?;
    if config.augment.any() && !facts.images {
        return Err(
            StageError::new("`augment` applies to images, and this data is a table")
                .hint("remove `augment`, or train on an image split"),
        );
    }
    let model_path = match &config.model {
        Some(Model::Onnx { path, .. }) => Some(user_model(ctx, path)?),
        _ => None,
    };
    let resolved = config.resolve(&facts, model_path.map(|p| p.display().to_string()));

    let choice = device::choose(
        config.device,
        &ctx.gpus,
        pyenv::find(Flavor::Cuda).is_some(),
    )?;
    if let Some(note) = &choice.note {
        if ctx.gpus.is_empty() {
            ctx.events.log("notice", note.clone());
        } else {
            ctx.events.warn(note.clone());
        }
    }
    let env = prepare(ctx, choice.flavor)?;
    let worker = pyenv::worker_dir(&env)?;

    let resume = ctx.workspace.join(".sluice").join("resume").join(&ctx.key);
    let request = json!({
        "protocol": sluice_runner::exec::protocol::PROTOCOL_VERSION,
        "stage": ctx.stage,
        "kind": "train",
        "workspace": ctx.workspace,
        "inputs": ctx.inputs,
        "outputs": ctx.outputs,
        "with": resolved,
        "params": ctx.params,
        "scratch": ctx.scratch,
        "devices": {"gpus": ctx.gpus},
        "train": {
            "device": choice.device,
            "auto": choice.auto,
            "resume_dir": resume,
            "artifacts_cache": ctx.workspace.join(".sluice").join("artifacts"),
        },
    });
    let mut body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    body.push(b'\n');
    let mut vars = ctx.env.clone();
    vars.extend(pyenv::worker_env(&env, &worker));
    let spec = ProcessSpec {
        program: env.python.display().to_string(),
        args: vec!["-m".into(), "sluice_train".into()],
        env: vars,
        cwd: ctx.workspace.clone(),
        stdin: Some(body),
        stdout: Stdout::Protocol,
    };
    let out = ctx
        .processes
        .run(&spec)
        .map_err(|e| format!("cannot start the training worker `{}`: {e}", spec.program))?;
    if ctx.cancel.is_cancelled() {
        // A sweep gave up on this trial for good (a resumed sweep does not run it again): its
        // checkpoints would only take disk. Any other stop keeps them to resume from.
        if ctx.cancel.reason() == Some(sluice_runner::cancel::CancelReason::Pruned) {
            let _ = std::fs::remove_dir_all(&resume);
        }
        return Err("cancelled".into());
    }
    match (out.result, out.code, out.signal) {
        (Some(r), Some(0), _) if r.is_ok() => {
            for (k, v) in r.metrics {
                if let Some(x) = v.as_f64() {
                    ctx.events.metric(&k, x, None);
                }
            }
            // The result is about to be cached; its checkpoints are no use any more.
            let _ = std::fs::remove_dir_all(&resume);
            Ok(())
        }
        // The worker names absolute paths; the workspace-relative ones are what users wrote.
        (Some(r), _, _) if !r.is_ok() => Err(r
            .message
            .unwrap_or(r.status)
            .replace(&format!("{}/", ctx.workspace.display()), "")
            .into()),
        (_, Some(0), _) => {
            Err("the training worker exited without its final result (see the stage log)".into())
        }
        (_, Some(code), _) => {
            Err(format!("the training worker exited with code {code} (see the stage log)").into())
        }
        (_, None, Some(sig)) => {
            Err(format!("the training worker was killed by signal {sig}").into())
        }
        _ => Err("the training worker ended without an exit status".into()),
    }
}

/// The Python environment, installed on first use with its progress on the stage's display.
fn prepare(ctx: &StageContext<'_>, flavor: Flavor) -> Result<pyenv::PythonEnv, StageError> {
    let mut last = 0;
    pyenv::ensure(flavor, &ctx.cancel, &mut |step| match step {
        Step::Phase(text) => {
            ctx.events.log("notice", text.to_string());
            ctx.events
                .progress(0.0, None, Some("packages".into()), Some(text.to_string()));
        }
        Step::Packages { done, total, line } => {
            if done != last && line.starts_with("Collecting") {
                last = done;
                ctx.events
                    .log("notice", format!("  [{done}/{total}] {line}"));
            }
            let line: String = line.chars().take(80).collect();
            ctx.events.progress(
                done as f64,
                Some(total as f64),
                Some("packages".into()),
                Some(format!("pip: {line}")),
            );
        }
    })
    .map_err(StageError::from)
}

/// Task, class names and data kind: from the `preprocess` artifact when given (it is what
/// serving will use), else from `task:` and the arrays themselves.
fn data_facts(
    ctx: &StageContext<'_>,
    config: &TrainConfig,
    train: &Path,
) -> Result<DataFacts, StageError> {
    let features = train.join("features.npy");
    let labels = train.join("labels.npy");
    let shape = arrays::header(&features, &relative(&ctx.workspace, &features))?.shape;
    let label_dtype = arrays::header(&labels, &relative(&ctx.workspace, &labels))?.dtype;
    let images = shape.len() == 4;
    if !(shape.len() == 2 || images) {
        return Err(format!(
            "`{}` has shape {shape:?}; `train` reads [N, F] tables or [N, C, H, W] images, as `normalize` writes them",
            relative(&ctx.workspace, &features)
        ).into());
    }
    let from_labels = if label_dtype == arrays::Dtype::I64 {
        Task::Classification
    } else {
        Task::Regression
    };
    let Some(pre) = ctx.inputs.get("preprocess") else {
        return Ok(DataFacts {
            task: config.task.unwrap_or(from_labels),
            classes: None,
            images,
        });
    };
    let text = std::fs::read_to_string(pre)
        .map_err(|e| format!("cannot read `{}`: {e}", relative(&ctx.workspace, pre)))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        StageError::new(format!(
            "`{}` is not a preprocess artifact: {e}",
            relative(&ctx.workspace, pre)
        ))
        .hint(PREPROCESS_HINT)
    })?;
    let strings = |v: Option<&Value>| {
        v.and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
    };
    let (task, classes) = if v.get("kind").and_then(Value::as_str) == Some("images") {
        (Task::Classification, strings(v.get("classes")))
    } else {
        let label = v.get("label");
        let task = match label.and_then(|l| l.get("task")).and_then(Value::as_str) {
            Some("regression") => Task::Regression,
            Some("classification") => Task::Classification,
            _ => {
                return Err(StageError::new(format!(
                    "`{}` names no label task",
                    relative(&ctx.workspace, pre)
                ))
                .hint(PREPROCESS_HINT))
            }
        };
        (task, strings(label.and_then(|l| l.get("classes"))))
    };
    if let Some(t) = config.task.filter(|t| *t != task) {
        return Err(StageError::new(format!(
            "`task: {}` contradicts `{}`, which says the label is for {}",
            json!(t).as_str().unwrap_or_default(),
            relative(&ctx.workspace, pre),
            json!(task).as_str().unwrap_or_default()
        ))
        .hint("drop `task:`; it is read from the preprocess artifact"));
    }
    if task != from_labels {
        return Err(StageError::new(format!(
            "`{}` holds {label_dtype:?} labels, which does not fit the {} task of `{}`",
            relative(&ctx.workspace, &labels),
            json!(task).as_str().unwrap_or_default(),
            relative(&ctx.workspace, pre)
        ))
        .hint("give the split and the preprocess artifact of the same `normalize` stage"));
    }
    Ok(DataFacts {
        task,
        classes,
        images,
    })
}

const PREPROCESS_HINT: &str = "give the `preprocess` output of `normalize`";

/// A user model must be a declared input too, so that editing it retrains.
fn user_model(ctx: &StageContext<'_>, path: &str) -> Result<PathBuf, StageError> {
    let abs = ctx.workspace.join(path);
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if !abs.is_file() {
        return Err(
            StageError::new(format!("`model.onnx`: `{path}` does not exist"))
                .hint("give the path of an ONNX file, relative to the workspace"),
        );
    }
    if !ctx.inputs.values().any(|p| canon(p) == canon(&abs)) {
        return Err(StageError::new(format!(
            "`model.onnx`: `{path}` must also be a declared input, so that editing the model retrains it"
        ))
        .hint(format!(
            "write `inputs: {{model: {path}}}` and `model: {{onnx: \"${{{{ inputs.model }}}}\"}}`"
        )));
    }
    Ok(abs)
}
