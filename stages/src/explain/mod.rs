//! The `explain` stage: permutation feature importance of the trained model on the test split,
//! through the same ONNX Runtime inference `evaluate` uses (its model loading and provider
//! choice). Each raw column of the table (a one-hot column's indicators together) is shuffled
//! across the test rows `repeats` times, seeded, and the drop in accuracy (classification) or R²
//! (regression) is recorded; for classification also the drop in each class's recall. Writes
//! `importance.json` and a bar chart.
//!
//! `importance` computes, `chart` draws; this file reads the inputs, runs the model and writes
//! the outputs together through `Staged`.

mod chart;
mod importance;

use crate::arrays::{self, Array};
use crate::evaluate::EvaluateConfig;
use crate::fields::{Field, Reader, Type};
use crate::infer::{Model, Provider};
use crate::preprocess::Preprocess;
use crate::problems::relative;
use crate::pyenv;
use crate::staged::Staged;
use crate::train::Device;
use importance::{Group, Importance, Score, Scorer, Spread};
use serde_json::{json, Value};
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};

/// The options of `explain`: what the parser reads and the schema editors get.
const FIELDS: &[Field] = &[
    Field::new(
        "repeats",
        Type::Whole {
            min: 1,
            expect: None,
        },
        "Shuffles per column; the importance is the mean metric drop over them, with its standard deviation.",
    )
    .default("5"),
    Field::new(
        "seed",
        Type::Whole {
            min: 0,
            expect: Some("a whole number from 0 to 2^64-1"),
        },
        "Seeds the shuffles: the same seed, model and data give the same figures.",
    )
    .default("0"),
    crate::evaluate::BATCH_SIZE,
    crate::evaluate::DEVICE,
];

/// Full `with:` blocks that `explain` accepts, for the schema's examples.
const EXAMPLES: &[&str] = &[r#"{"repeats": 10, "seed": 7, "batch_size": 512, "device": "cpu"}"#];

/// The `explain` stage kind.
pub(crate) struct Explain;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExplainConfig {
    pub repeats: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub device: Device,
}

impl ExplainConfig {
    pub(crate) fn parse(with: &Value) -> Result<ExplainConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(with, FIELDS, "`explain`", "with: {repeats: 5, seed: 0}")?;
        let repeats = r.whole("repeats").unwrap_or_default() as usize;
        let seed = r.whole("seed").unwrap_or_default();
        let batch_size = r.whole("batch_size").unwrap_or_default() as usize;
        let device = match r.choice("device") {
            Some("cpu") => Device::Cpu,
            Some("cuda") => Device::Cuda,
            _ => Device::Auto,
        };
        let problems = r.finish();
        if problems.is_empty() {
            Ok(ExplainConfig {
                repeats,
                seed,
                batch_size,
                device,
            })
        } else {
            Err(problems)
        }
    }
}

impl Stage for Explain {
    fn kind(&self) -> &'static str {
        "explain"
    }
    fn version(&self) -> u32 {
        1
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["importance", "plot"]
    }
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&["model"], &["test"]],
            optional: &["preprocess"],
        })
    }
    fn prepare(&self, with: &Value) -> Result<Prepared, Vec<ConfigProblem>> {
        ExplainConfig::parse(with).map(Prepared::new)
    }
    fn output_extension(&self, output: &str, _inputs: &[&str]) -> Option<&'static str> {
        match output {
            "importance" => Some("json"),
            "plot" => Some("png"),
            _ => None,
        }
    }
    fn with_schema(&self) -> Option<Value> {
        Some(crate::fields::schema(FIELDS, EXAMPLES))
    }
    /// The ONNX Runtime release that computes the figures.
    fn env_facts(&self, _with: &Value) -> Vec<(String, String)> {
        vec![("onnxruntime".into(), pyenv::ORT_VERSION.into())]
    }
    /// `device: auto` runs on the CPU where there is no GPU; only `device: cuda` insists.
    fn gpus_optional(&self, config: &Prepared) -> bool {
        config
            .get::<ExplainConfig>()
            .is_none_or(|c| c.device != Device::Cuda)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        run(ctx, ctx.config::<ExplainConfig>()?)
    }
}

/// The test split's features (rows × width) and labels.
struct TestSplit {
    rows: usize,
    width: usize,
    features: Vec<f32>,
    labels: Array,
}

fn read_test(ctx: &StageContext<'_>, dir: &std::path::Path) -> Result<TestSplit, StageError> {
    let ws = &ctx.workspace;
    let features_path = dir.join("features.npy");
    let labels_path = dir.join("labels.npy");
    let shown = relative(ws, &features_path);
    let Array::F32 { shape, data } = arrays::read(&features_path, &shown)? else {
        return Err(format!("`{shown}` must hold float32 features").into());
    };
    let [rows, width] = shape[..] else {
        return Err(StageError::new(format!(
            "`{shown}` has shape {shape:?}; `explain` permutes the columns of a table's features (rows × features)"
        ))
        .hint("explain a model trained on a table; image models are not supported"));
    };
    if rows < 2 {
        return Err(StageError::new(format!(
            "`{}`: the test split has {rows} rows, and shuffling needs at least 2",
            relative(ws, dir)
        ))
        .hint("give `split` a larger test ratio"));
    }
    let labels = arrays::read(&labels_path, &relative(ws, &labels_path))?;
    if labels.shape() != [rows] {
        return Err(format!(
            "`{}` has shape {:?}, but the features have {rows} rows",
            relative(ws, &labels_path),
            labels.shape()
        )
        .into());
    }
    Ok(TestSplit {
        rows,
        width,
        features: data,
        labels,
    })
}

/// The raw columns to permute and the class names, from the preprocess artifact when there is
/// one (else one feature per group, named by index, and classes named by their ids).
fn read_preprocess(
    ctx: &StageContext<'_>,
    width: usize,
) -> Result<(Vec<Group>, Option<Vec<String>>), StageError> {
    let Some(path) = ctx.inputs.get("preprocess") else {
        return Ok((importance::unnamed_groups(width), None));
    };
    let shown = relative(&ctx.workspace, path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let p = Preprocess::from_json(&text).map_err(|e| {
        StageError::new(format!(
            "`{shown}` is not a table's preprocess artifact: {e}"
        ))
        .hint("give `explain` the `preprocess` output of `normalize` on a table")
    })?;
    let groups = importance::groups(&p);
    let made: usize = groups.iter().map(|g| g.columns.len()).sum();
    if made != width {
        return Err(StageError::new(format!(
            "`{shown}` describes {made} features, but the test split has {width}"
        ))
        .hint("give `explain` the test split and preprocess artifact of the same `normalize`"));
    }
    Ok((groups, p.label.classes))
}

fn run(ctx: &StageContext<'_>, config: &ExplainConfig) -> Result<(), StageError> {
    let need = |name: &str, what: &str| {
        ctx.inputs.get(name).ok_or_else(|| {
            StageError::new(format!("`explain` needs an input named `{name}`: {what}"))
                .hint("write `inputs: {model: ${{ stages.train.outputs.model }}, test: ${{ stages.normalize.outputs.test }}, preprocess: ...}`")
        })
    };
    let model_path = need("model", "the model.onnx that `train` writes")?;
    let test = read_test(
        ctx,
        need("test", "the test split directory that `normalize` writes")?,
    )?;
    let (groups, classes) = read_preprocess(ctx, test.width)?;

    // Model loading and the provider choice are evaluate's, so both stages run the same way.
    let loading = EvaluateConfig {
        batch_size: config.batch_size,
        device: config.device,
        gates: Vec::new(),
    };
    let (model, provider) = crate::evaluate::load_model(ctx, &loading, model_path)?;
    ctx.events.log(
        "info",
        format!(
            "permuting {} columns {} times over {} test rows on {}",
            groups.len(),
            config.repeats,
            test.rows,
            provider.name()
        ),
    );
    let (rows, width, batch) = (test.rows, test.width, config.batch_size);
    let mut predict = |features: Vec<f32>| -> Result<Vec<f32>, StageError> {
        let mut outputs = Vec::with_capacity(rows);
        for start in (0..rows).step_by(batch) {
            let take = batch.min(rows - start);
            let chunk = features[start * width..(start + take) * width].to_vec();
            let out = model.run(&[take, width], chunk)?;
            outputs.extend_from_slice(&out[0].values);
        }
        Ok(outputs)
    };
    let first = predict(test.features.clone())?;
    let scorer = scorer(&model, test.labels, classes, first.len() / rows)?;
    let baseline = scorer.score(&first);
    let ranked = {
        let mut imps = importance::permutation_importance(
            &test.features,
            rows,
            width,
            &groups,
            &scorer,
            &baseline,
            config.repeats,
            config.seed,
            &mut predict,
            &mut |done, total| {
                ctx.events.progress(
                    done as f64,
                    Some(total as f64),
                    Some("shuffles".into()),
                    None,
                );
                !ctx.cancel.is_cancelled()
            },
        )?;
        // Most important first; ties keep table order.
        imps.sort_by(|a, b| b.overall.mean.total_cmp(&a.overall.mean));
        imps
    };
    let report = report(config, &scorer, &baseline, rows, provider, &ranked);

    let out = |name: &str| {
        ctx.outputs
            .get(name)
            .ok_or_else(|| format!("the pipeline gave no path for output `{name}`"))
    };
    let mut staged = Staged::new(&ctx.scratch);
    let text = serde_json::to_string_pretty(&report).expect("importance serializes") + "\n";
    staged
        .write("importance", out("importance")?, text.as_bytes())
        .map_err(|e| e.to_string())?;
    let plot = staged
        .path_for("plot", out("plot")?)
        .map_err(|e| e.to_string())?;
    chart::bars(&plot, &ranked, scorer.metric())?;
    staged.commit().map_err(|e| e.to_string())?;
    Ok(())
}

/// The scorer for the labels' type: int64 class ids or float32 targets, checked against the
/// model's output width.
fn scorer(
    model: &Model,
    labels: Array,
    classes: Option<Vec<String>>,
    width: usize,
) -> Result<Scorer, StageError> {
    let output = &model.outputs[0].0;
    match labels {
        Array::I64 { data, .. } => {
            let classes = classes.unwrap_or_else(|| {
                let k = (data.iter().copied().max().unwrap_or(0) + 1)
                    .max(width as i64)
                    .max(2);
                (0..k).map(|i| i.to_string()).collect()
            });
            let k = classes.len();
            if width != k && !(width == 1 && k == 2) {
                return Err(StageError::new(format!(
                    "the model's output `{output}` has {width} values per row, but there are {k} classes"
                ))
                .hint("explain the model `train` wrote from the same normalize outputs"));
            }
            let mut labels = Vec::with_capacity(data.len());
            for (i, &l) in data.iter().enumerate() {
                if l < 0 || l as usize >= k {
                    return Err(
                        format!("test row {i}: class id {l} is outside 0..{}", k - 1).into(),
                    );
                }
                labels.push(l as usize);
            }
            Ok(Scorer::Classification {
                labels,
                classes,
                width,
            })
        }
        Array::F32 { data, .. } => {
            if width != 1 {
                return Err(format!(
                    "the model's output `{output}` has {width} values per row; a regression model predicts one"
                )
                .into());
            }
            Ok(Scorer::Regression { targets: data })
        }
    }
}

fn spread(s: &Spread) -> Value {
    json!({"mean": s.mean, "std": s.std, "drops": s.drops})
}

/// `importance.json`: the baseline metric and, most important first, each raw column's drop.
fn report(
    config: &ExplainConfig,
    scorer: &Scorer,
    baseline: &Score,
    rows: usize,
    provider: Provider,
    ranked: &[Importance],
) -> Value {
    let classes: &[String] = match scorer {
        Scorer::Classification { classes, .. } => classes,
        Scorer::Regression { .. } => &[],
    };
    let features: Vec<Value> = ranked
        .iter()
        .map(|imp| {
            let mut f = json!({
                "name": imp.group.name,
                "columns": imp.group.columns,
                "mean": imp.overall.mean,
                "std": imp.overall.std,
                "drops": imp.overall.drops,
            });
            if !classes.is_empty() {
                let per: serde_json::Map<String, Value> = classes
                    .iter()
                    .zip(&imp.per_class)
                    .filter_map(|(c, s)| Some((c.clone(), spread(s.as_ref()?))))
                    .collect();
                f["per_class"] = Value::Object(per);
            }
            f
        })
        .collect();
    let mut report = json!({
        "format": 1,
        "method": "permutation",
        "task": match scorer {
            Scorer::Classification { .. } => "classification",
            Scorer::Regression { .. } => "regression",
        },
        "metric": scorer.metric(),
        "baseline": baseline.overall,
        "rows": rows,
        "repeats": config.repeats,
        "seed": config.seed,
        "provider": provider.name(),
        "features": features,
    });
    if !classes.is_empty() {
        let per: serde_json::Map<String, Value> = classes
            .iter()
            .zip(&baseline.per_class)
            .filter_map(|(c, r)| Some((c.clone(), json!(r.as_ref()?))))
            .collect();
        report["baseline_recall"] = Value::Object(per);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = ExplainConfig::parse(&json!({})).unwrap();
        assert_eq!((c.repeats, c.seed, c.batch_size), (5, 0, 1024));
        assert_eq!(c.device, Device::Auto);
        let p = ExplainConfig::parse(&json!({"repeats": 0, "sede": 1})).unwrap_err();
        let text: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {} {:?}", p.path.join("."), p.message, p.help))
            .collect();
        let text = text.join("\n");
        assert!(
            text.contains("repeats: `repeats` must be a whole number of at least 1, not 0"),
            "{text}"
        );
        assert!(text.contains("seed"), "{text}");
    }
}
