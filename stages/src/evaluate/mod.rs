//! The `evaluate` stage: runs the trained model on the test split in Rust (ONNX Runtime through
//! `ort`, batched) and writes `metrics.json`, the per-row predictions and PNG plots (confusion
//! matrix, training curves from `history`, ROC for two classes); `require:` gates fail
//! the stage — and so block whatever depends on it, such as deploy — when a metric misses its bar.
//!
//! `metrics` computes the figures, `plots` draws them; this file reads the inputs, runs the model, checks gates and
//! writes the outputs together through `Staged`.

mod device;
mod history;
pub mod metrics;
pub use history::history_path;
pub(crate) mod plots;
mod source_rows;

use crate::arrays::{self, Array};
use crate::fields::{Field, Reader, Type, Wording};
use crate::infer::{self, Build, Library, Model, Provider};
use crate::problems::problem;
use crate::problems::relative;
use crate::pyenv::{self, Step};
use crate::staged::Staged;
use crate::train::Device;
use device::{CudaRuntime, Target};
use serde_json::{json, Value};
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};
use std::path::Path;

/// `batch_size` of the stages that run a model over a split (evaluate, explain).
pub(crate) const BATCH_SIZE: Field = Field::new(
    "batch_size",
    Type::Whole {
        min: 1,
        expect: None,
    },
    "Rows per inference batch.",
)
.default("1024");

/// `device` of the stages that run a model over a split (evaluate, explain).
pub(crate) const DEVICE: Field = Field::new(
    "device",
    Type::Choice {
        names: &["auto", "cpu", "cuda"],
        wording: Wording::Noun {
            listing: "choose one of",
            help_on_wrong_type: true,
        },
    },
    "Where the model runs: auto uses a GPU when the stage has one and CUDA is installed.",
)
.default("\"auto\"");

/// The options of `evaluate`: what the parser reads and the schema editors get.
const FIELDS: &[Field] = &[
    BATCH_SIZE,
    DEVICE,
    Field::new(
        "require",
        Type::Custom(require_schema),
        "Bars the metrics must clear, e.g. `accuracy: \">= 0.9\"`; a bare number means >=. The stage fails when one is missed.",
    ),
];

/// Full `with:` blocks that `evaluate` accepts, for the schema's examples.
const EXAMPLES: &[&str] = &[
    r#"{"batch_size": 256, "device": "cpu", "require": {"accuracy": ">= 0.9", "log_loss": "< 0.5"}}"#,
    r#"{"require": {"r2": 0.8}}"#,
];

fn require_schema() -> Value {
    // What `parse_bar` reads: a number, or a comparison operator and a finite number.
    let bar = json!({
        "type": ["number", "string"],
        "pattern": r"^\s*(>=|<=|==|>|<)\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$",
    });
    let metrics: serde_json::Map<String, Value> = metrics::NAMES
        .iter()
        .map(|m| (m.to_string(), bar.clone()))
        .collect();
    json!({"type": "object", "additionalProperties": false, "properties": metrics})
}

/// The `evaluate` stage kind.
pub(crate) struct Evaluate;

/// A bar a metric must clear: `accuracy: ">= 0.9"`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    pub metric: String,
    pub op: &'static str,
    pub bar: f64,
}

impl Gate {
    fn passes(&self, value: f64) -> bool {
        match self.op {
            ">=" => value >= self.bar,
            ">" => value > self.bar,
            "<=" => value <= self.bar,
            "<" => value < self.bar,
            _ => value == self.bar,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EvaluateConfig {
    pub batch_size: usize,
    pub device: Device,
    pub gates: Vec<Gate>,
}

impl EvaluateConfig {
    pub(crate) fn parse(with: &Value) -> Result<EvaluateConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(
            with,
            FIELDS,
            "`evaluate`",
            "with: {require: {accuracy: \">= 0.9\"}}",
        )?;
        let batch_size = r.whole("batch_size").unwrap_or_default() as usize;
        let device = match r.choice("device") {
            Some("cpu") => Device::Cpu,
            Some("cuda") => Device::Cuda,
            _ => Device::Auto,
        };
        let require = r.get("require");
        let problems = r.problems_mut();
        let mut gates = Vec::new();
        match require {
            None => {}
            Some(Value::Object(m)) => {
                for (metric, bar) in m {
                    if !metrics::NAMES.contains(&metric.as_str()) {
                        let help = did_you_mean(metric, metrics::NAMES.iter().copied())
                            .unwrap_or_else(|| format!("metrics: {}", metrics::NAMES.join(", ")));
                        problems.push(problem(
                            &["require", metric],
                            format!("unknown metric `{metric}`"),
                            Some(help),
                        ));
                        continue;
                    }
                    match parse_bar(bar) {
                        Some((op, bar)) => gates.push(Gate {
                            metric: metric.clone(),
                            op,
                            bar,
                        }),
                        None => problems.push(problem(
                            &["require", metric],
                            format!("`require.{metric}` must be a comparison such as \">= 0.9\", not {bar}"),
                            Some("operators: >=, >, <=, <, ==; a bare number means >=".into()),
                        )),
                    }
                }
            }
            Some(v) => problems.push(problem(
                &["require"],
                format!("`require` must be a mapping of metric to bar, not {v}"),
                Some("write e.g. `require: {accuracy: \">= 0.9\", log_loss: \"< 0.5\"}`".into()),
            )),
        }
        let problems = r.finish();
        if problems.is_empty() {
            Ok(EvaluateConfig {
                batch_size,
                device,
                gates,
            })
        } else {
            Err(problems)
        }
    }
}

fn parse_bar(v: &Value) -> Option<(&'static str, f64)> {
    if let Some(x) = v.as_f64() {
        return Some((">=", x));
    }
    let s = v.as_str()?.trim();
    for op in [">=", "<=", "==", ">", "<"] {
        if let Some(rest) = s.strip_prefix(op) {
            let x: f64 = rest.trim().parse().ok()?;
            return x.is_finite().then_some((op, x));
        }
    }
    None
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    /// 2: a field holding a carriage return is quoted in the predictions.
    fn version(&self) -> u32 {
        2
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["metrics", "plots", "predictions"]
    }
    fn output_extension(&self, output: &str, _inputs: &[&str]) -> Option<&'static str> {
        match output {
            "metrics" => Some("json"),
            "predictions" => Some("csv"),
            _ => None,
        }
    }
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&["model"], &["test"]],
            optional: &["preprocess", "history"],
        })
    }
    fn prepare(&self, with: &Value) -> Result<Prepared, Vec<ConfigProblem>> {
        EvaluateConfig::parse(with).map(Prepared::new)
    }
    fn with_schema(&self) -> Option<Value> {
        Some(crate::fields::schema(FIELDS, EXAMPLES))
    }
    /// The ONNX Runtime release that computes the figures.
    fn env_facts(&self, _with: &Value) -> Vec<(String, String)> {
        vec![("onnxruntime".into(), pyenv::ORT_VERSION.into())]
    }
    /// `device: auto` evaluates on the CPU where there is no GPU; only `device: cuda` insists.
    fn gpus_optional(&self, config: &Prepared) -> bool {
        config
            .get::<EvaluateConfig>()
            .is_none_or(|c| c.device != Device::Cuda)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        run(ctx, ctx.config::<EvaluateConfig>()?)
    }
}

/// The CPU library, fetched first when needed (with notices).
fn cpu_library(ctx: &StageContext<'_>) -> Result<Library, StageError> {
    let path = pyenv::ensure_runtime(&ctx.cancel, &mut |step| match step {
        Step::Phase(text) => ctx.events.log("notice", text.to_string()),
        Step::Packages { line, .. } => ctx.events.progress(
            0.0,
            None,
            Some("download".into()),
            Some(format!("pip: {line}")),
        ),
    })
    .map_err(StageError::from)?;
    Ok(Library {
        path,
        build: Build::Cpu,
        cuda_libraries: Vec::new(),
    })
}

/// Chooses the provider (`device`, the stage's GPUs, what is installed and loaded), loads ONNX
/// Runtime if this process has not yet, and loads the model there. A CUDA provider that does
/// not load is an error with `device: cuda` and a warning and the CPU with `device: auto`.
pub(crate) fn load_model(
    ctx: &StageContext<'_>,
    config: &EvaluateConfig,
    path: &Path,
) -> Result<(Model, Provider), StageError> {
    let custom = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    let installed = pyenv::find_gpu_runtime();
    let runtime = match (infer::loaded(), &custom, &installed) {
        (Some(Build::Cpu), _, _) => CudaRuntime::CpuBuildLoaded,
        (Some(_), _, _) | (None, Some(_), _) | (None, None, Some(_)) => CudaRuntime::Ready,
        (None, None, None) => CudaRuntime::NotInstalled,
    };
    let choice = device::choose(config.device, &ctx.gpus, runtime)?;
    if let Some(note) = &choice.note {
        if ctx.gpus.is_empty() {
            ctx.events.log("notice", note.clone());
        } else {
            ctx.events.warn(note.clone());
        }
    }
    if infer::loaded().is_none() {
        // The CUDA build runs CPU sessions too: with a GPU on the stage it is the one to load,
        // whatever this stage chose, so that a later stage of the run can still use CUDA.
        let library = match (custom, installed) {
            (Some(path), _) => Library {
                path,
                build: Build::Custom,
                cuda_libraries: Vec::new(),
            },
            (None, Some(gpu)) if !ctx.gpus.is_empty() => Library {
                path: gpu.library,
                build: Build::Cuda,
                cuda_libraries: gpu.cuda_libraries,
            },
            _ => cpu_library(ctx)?,
        };
        infer::init_library(&library)?;
    }
    let shown = |mut e: StageError| {
        e.message = e
            .message
            .replace(&format!("{}/", ctx.workspace.display()), "");
        e
    };
    let Target::Cuda { gpu } = choice.target else {
        return Ok((Model::load(path, 0).map_err(shown)?, Provider::Cpu));
    };
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = device::cuda_ordinal(&gpu, visible.as_deref()).ok_or_else(|| {
        StageError::new(format!(
            "GPU `{gpu}` is not among this process's CUDA_VISIBLE_DEVICES ({})",
            visible.as_deref().unwrap_or("unset")
        ))
        .hint("name GPUs by index or by the identifiers CUDA_VISIBLE_DEVICES lists")
    })?;
    let provider = Provider::Cuda { device };
    match Model::load_on(path, 0, provider) {
        Ok(model) => Ok((model, provider)),
        Err(e) => {
            let e = shown(e);
            // The provider's own hint, or how to check the provider.
            let hint = e.hint.unwrap_or_else(|| {
                "`sluice setup --cuda` checks that the CUDA provider loads".into()
            });
            if !choice.auto {
                return Err(StageError::new(e.message)
                    .hint(format!("{hint}; `device: auto` falls back to the CPU")));
            }
            ctx.events
                .warn(format!("{}; evaluating on the CPU ({hint})", e.message));
            Ok((Model::load(path, 0).map_err(shown)?, Provider::Cpu))
        }
    }
}

fn run(ctx: &StageContext<'_>, config: &EvaluateConfig) -> Result<(), StageError> {
    let need = |name: &str, what: &str| {
        ctx.inputs.get(name).ok_or_else(|| {
            StageError::new(format!("`evaluate` needs an input named `{name}`: {what}"))
                .hint("write `inputs: {model: ${{ stages.train.outputs.model }}, test: ${{ stages.normalize.outputs.test }}, preprocess: ...}`")
        })
    };
    let model_path = need("model", "the model.onnx that `train` writes")?;
    let test = need("test", "the test split directory that `normalize` writes")?;
    let ws = &ctx.workspace;
    let features_path = test.join("features.npy");
    let labels_path = test.join("labels.npy");
    let Array::F32 {
        shape,
        data: features,
    } = arrays::read(&features_path, &relative(ws, &features_path))?
    else {
        return Err(format!(
            "`{}` must hold float32 features",
            relative(ws, &features_path)
        )
        .into());
    };
    let labels = arrays::read(&labels_path, &relative(ws, &labels_path))?;
    let n = shape.first().copied().unwrap_or(0);
    if n == 0 {
        return Err(StageError::new(format!(
            "`{}`: the test split has no rows, so there is nothing to evaluate",
            relative(ws, test)
        ))
        .hint("give `split` a test ratio above 0"));
    }
    if labels.shape() != [n] {
        return Err(format!(
            "`{}` has shape {:?}, but the features have {n} rows",
            relative(ws, &labels_path),
            labels.shape()
        )
        .into());
    }
    let preprocess = match ctx.inputs.get("preprocess") {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read `{}`: {e}", relative(ws, p)))
                .and_then(|t| {
                    serde_json::from_str::<Value>(&t).map_err(|e| {
                        format!("`{}` is not a preprocess artifact: {e}", relative(ws, p))
                    })
                })?,
        ),
        None => None,
    };

    let (model, provider) = load_model(ctx, config, model_path)?;
    ctx.events.log(
        "info",
        match provider {
            Provider::Cpu => format!("running the model on {}", provider.name()),
            Provider::Cuda { device } => {
                format!(
                    "running the model on {} (CUDA device {device})",
                    provider.name()
                )
            }
        },
    );
    let row: usize = shape[1..].iter().product();
    let mut outputs: Vec<f32> = Vec::new();
    let mut width = 0;
    let mut done = 0;
    while done < n {
        if ctx.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let take = config.batch_size.min(n - done);
        let mut batch_shape = shape.clone();
        batch_shape[0] = take;
        let out = model.run(
            &batch_shape,
            features[done * row..(done + take) * row].to_vec(),
        )?;
        let first = &out[0];
        width = first.shape.iter().skip(1).product::<usize>().max(1);
        outputs.extend_from_slice(&first.values);
        done += take;
        ctx.events
            .progress(done as f64, Some(n as f64), Some("rows".into()), None);
    }
    let output_name = &model.outputs[0].0;

    let (report, predictions) = match labels {
        Array::I64 { data, .. } => {
            let classes = class_names(preprocess.as_ref(), &data, width);
            let k = classes.len();
            let probs = if width == k {
                metrics::softmax(&outputs, k)
            } else if width == 1 && k == 2 {
                metrics::sigmoid_pairs(&outputs)
            } else {
                return Err(StageError::new(format!(
                    "the model's output `{output_name}` has {width} values per row, but there are {k} classes ({})",
                    classes.join(", ")
                ))
                .hint("evaluate the model `train` wrote from the same normalize outputs"));
            };
            let mut ids = Vec::with_capacity(n);
            for (i, &l) in data.iter().enumerate() {
                if l < 0 || l as usize >= k {
                    return Err(format!(
                        "`{}` row {i}: class id {l} is outside 0..{}",
                        relative(ws, &labels_path),
                        k - 1
                    )
                    .into());
                }
                ids.push(l as usize);
            }
            let report = metrics::classification(&ids, &probs, &classes);
            let pred = metrics::argmax(&probs, k);
            let mut csv = String::from("row,label,predicted");
            for c in &classes {
                csv.push_str(&format!(",p_{}", csv_field(c)));
            }
            csv.push('\n');
            for i in 0..n {
                csv.push_str(&format!(
                    "{i},{},{}",
                    csv_field(&classes[ids[i]]),
                    csv_field(&classes[pred[i]])
                ));
                for p in &probs[i * k..(i + 1) * k] {
                    csv.push_str(&format!(",{p}"));
                }
                csv.push('\n');
            }
            (
                with_task(report, "classification", n, output_name, provider),
                csv,
            )
        }
        Array::F32 { data, .. } => {
            if width != 1 {
                return Err(format!("the model's output `{output_name}` has {width} values per row; a regression model predicts one").into());
            }
            let report = metrics::regression(&data, &outputs);
            let mut csv = String::from("row,target,prediction\n");
            for i in 0..n {
                csv.push_str(&format!("{i},{},{}\n", data[i], outputs[i]));
            }
            (
                with_task(report, "regression", n, output_name, provider),
                csv,
            )
        }
    };

    let predictions = match source_rows::read(ctx, test, n)? {
        Some(source) => source_rows::prepend(&predictions, &source),
        None => predictions,
    };

    let mut failed = Vec::new();
    for gate in &config.gates {
        let Some(value) = report["metrics"][&gate.metric].as_f64() else {
            return Err(StageError::new(format!(
                "`require` names `{}`, which this {} evaluation does not compute",
                gate.metric,
                report["task"].as_str().unwrap_or_default(),
            ))
            .hint(format!(
                "it reports {}",
                report["metrics"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            )));
        };
        ctx.events.metric(&gate.metric, value, None);
        if !gate.passes(value) {
            failed.push(format!(
                "{} is {value:.4}, and `require` asks for {} {}",
                gate.metric, gate.op, gate.bar
            ));
        }
    }
    if !failed.is_empty() {
        // A failed stage keeps no outputs, so the figures go into the message itself, and into
        // the history, where `sluice metrics` shows them as failing the gate.
        history::remember(ctx, &report["metrics"], &failed);
        let figures: Vec<String> = report["metrics"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, v)| v.as_f64().map(|x| format!("{name} {x:.4}")))
            .collect();
        return Err(StageError::new(format!(
            "the model misses its bar: {}\n  its metrics on the test split: {}",
            failed.join("; "),
            figures.join(" · ")
        ))
        .hint("improve the model or relax `require`"));
    }
    for (k, v) in report["metrics"].as_object().into_iter().flatten() {
        if let Some(x) = v.as_f64() {
            ctx.events.metric(k, x, None);
        }
    }
    let out = |name: &str| {
        ctx.outputs
            .get(name)
            .ok_or_else(|| format!("the pipeline gave no path for output `{name}`"))
    };
    let mut staged = Staged::new(&ctx.scratch);
    let text = serde_json::to_string_pretty(&report).expect("metrics serialize") + "\n";
    staged
        .write("metrics", out("metrics")?, text.as_bytes())
        .map_err(|e| e.to_string())?;
    staged
        .write("predictions", out("predictions")?, predictions.as_bytes())
        .map_err(|e| e.to_string())?;
    let dir = staged
        .dir_for("plots", out("plots")?)
        .map_err(|e| e.to_string())?;
    if let Some(m) = report.get("confusion_matrix") {
        let labels: Vec<String> = serde_json::from_value(m["labels"].clone()).unwrap_or_default();
        let matrix: Vec<Vec<u64>> = serde_json::from_value(m["matrix"].clone()).unwrap_or_default();
        plots::confusion(&dir.join("confusion_matrix.png"), &labels, &matrix)?;
    }
    if let Some(points) = report["roc_curve"]["points"].as_array() {
        let points: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        plots::roc(
            &dir.join("roc_curve.png"),
            &points,
            report["metrics"]["roc_auc"].as_f64(),
        )?;
    }
    if let Some(h) = ctx.inputs.get("history") {
        let history: Value = std::fs::read_to_string(h)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| {
                format!(
                    "`{}` is not a history.json written by `train`",
                    relative(ws, h)
                )
            })?;
        plots::curves(&dir.join("training_curves.png"), &history)?;
    }
    staged.commit().map_err(|e| e.to_string())?;
    history::remember(ctx, &report["metrics"], &[]);
    Ok(())
}

fn with_task(
    mut report: Value,
    task: &str,
    rows: usize,
    output: &str,
    provider: Provider,
) -> Value {
    report["format"] = json!(1);
    report["task"] = json!(task);
    report["rows"] = json!(rows);
    report["output"] = json!(output);
    report["provider"] = json!(provider.name());
    report
}

/// Class names from the preprocess artifact (tables: `label.classes`; images: `classes`), else
/// the ids themselves.
fn class_names(preprocess: Option<&Value>, labels: &[i64], width: usize) -> Vec<String> {
    let from = |v: Option<&Value>| {
        v.and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
    };
    if let Some(p) = preprocess {
        if let Some(c) =
            from(p.get("classes")).or_else(|| from(p.get("label").and_then(|l| l.get("classes"))))
        {
            return c;
        }
    }
    let k = (labels.iter().copied().max().unwrap_or(0) + 1)
        .max(width as i64)
        .max(2) as usize;
    (0..k).map(|i| i.to_string()).collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_compare() {
        let c = EvaluateConfig::parse(
            &json!({"require": {"accuracy": ">= 0.9", "log_loss": "< 0.5", "f1_macro": 0.8}}),
        )
        .unwrap();
        assert_eq!(c.gates.len(), 3);
        let acc = c.gates.iter().find(|g| g.metric == "accuracy").unwrap();
        assert!(acc.passes(0.9) && !acc.passes(0.89));
        let ll = c.gates.iter().find(|g| g.metric == "log_loss").unwrap();
        assert!(ll.passes(0.49) && !ll.passes(0.5));
        let f1 = c.gates.iter().find(|g| g.metric == "f1_macro").unwrap();
        assert_eq!(f1.op, ">=");
    }

    #[test]
    fn device_defaults_to_auto_and_unknown_ones_are_named() {
        assert_eq!(
            EvaluateConfig::parse(&json!({})).unwrap().device,
            Device::Auto
        );
        let c = EvaluateConfig::parse(&json!({"device": "cuda", "batch_size": 8})).unwrap();
        assert_eq!((c.device, c.batch_size), (Device::Cuda, 8));
        let p = EvaluateConfig::parse(&json!({"device": "cdua"})).unwrap_err();
        assert_eq!(p[0].path, ["device"]);
        assert_eq!(p[0].message, "unknown device `cdua`");
        assert!(p[0].help.as_deref().unwrap().contains("cuda"), "{:?}", p[0]);
        let p = EvaluateConfig::parse(&json!({"device": 0})).unwrap_err();
        assert!(
            p[0].message.contains("must be one of auto, cpu, cuda"),
            "{:?}",
            p[0]
        );
    }

    #[test]
    fn unknown_metrics_and_bad_bars_are_named() {
        let p = EvaluateConfig::parse(&json!({"require": {"acuracy": ">= 0.9", "r2": "about 1"}}))
            .unwrap_err();
        let text: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {} ({:?})", p.path.join("."), p.message, p.help))
            .collect();
        let text = text.join("\n");
        assert!(
            text.contains("require.acuracy: unknown metric `acuracy`"),
            "{text}"
        );
        assert!(text.contains("accuracy"), "{text}");
        assert!(
            text.contains("require.r2: `require.r2` must be a comparison"),
            "{text}"
        );
    }
}
