//! [`TrainConfig`]: the `with:` block of a `train` stage, parsed into types with every problem
//! reported at its path, then resolved (defaults filled in from the data) into the request the
//! worker reads. The worker trusts what it gets: every value range is checked here.

use super::options::{
    ADAMW, CNN, EARLY_STOPPING, FIELDS, LINEAR, MLP, MODELS, NOUN, ONNX, OPTIMIZERS, SGD,
};
use crate::fields::{choose, Reader};
use crate::problems::problem;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sluice_runner::stage::ConfigProblem;

/// Where training runs, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Device {
    /// CUDA when the stage has a GPU and the CUDA environment is installed, else CPU (said so).
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Task {
    Classification,
    Regression,
}

/// The model to train. Built-in ones are built by the worker from the data's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Model {
    Linear,
    Logistic,
    Mlp {
        hidden: Vec<u64>,
        activation: String,
        dropout: f64,
    },
    Cnn {
        channels: Vec<u64>,
        hidden: u64,
        kernel: u64,
        dropout: f64,
    },
    /// A user's ONNX model; `path` is as written (workspace-relative) until resolved.
    Onnx {
        path: String,
        trainable: Option<Vec<String>>,
        frozen: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Optimizer {
    Adamw {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
    Sgd {
        lr: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Schedule {
    pub warmup_epochs: f64,
    pub decay: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Augment {
    pub hflip: bool,
    pub crop_padding: u64,
    pub rotate_degrees: f64,
}

impl Augment {
    pub(crate) fn any(&self) -> bool {
        self.hflip || self.crop_padding > 0 || self.rotate_degrees > 0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct EarlyStopping {
    pub patience: u64,
    pub metric: String,
    pub min_delta: f64,
}

/// `with:` as written, checked. `None` fields get defaults from the data in `resolve`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrainConfig {
    pub model: Option<Model>,
    pub loss: Option<String>,
    pub optimizer: Optimizer,
    /// Without an explicit `lr`, the default depends on the model (see `resolve`).
    pub lr_given: bool,
    pub schedule: Schedule,
    pub epochs: u64,
    pub batch_size: u64,
    pub shuffle: bool,
    pub seed: u64,
    pub augment: Augment,
    pub early_stopping: Option<EarlyStopping>,
    pub device: Device,
    pub task: Option<Task>,
    /// `standard` (the default) or `none`; applies to regression only.
    pub target_scaling: String,
}

/// The default learning rate, and the default for fully connected models on tables.
pub(crate) const DEFAULT_LR: f64 = 0.001;
pub(crate) const TABLE_LR: f64 = 0.01;

/// A list of positive whole numbers at `path`, else `default` and a problem.
fn uints(
    problems: &mut Vec<ConfigProblem>,
    path: &[&str],
    v: Option<&Value>,
    default: &[u64],
) -> Vec<u64> {
    let Some(v) = v else { return default.to_vec() };
    match v.as_array().and_then(|a| {
        a.iter()
            .map(|x| x.as_u64().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
    }) {
        Some(list) if !list.is_empty() => list,
        _ => {
            problems.push(problem(
                path,
                format!(
                    "`{}` must be a list of positive whole numbers, not {v}",
                    path.join(".")
                ),
                Some(format!(
                    "write e.g. `{}: [64, 32]`",
                    path.last().copied().unwrap_or("")
                )),
            ));
            default.to_vec()
        }
    }
}

/// A list of names at `path`, else none and a problem.
fn strings(problems: &mut Vec<ConfigProblem>, path: &[&str], v: &Value) -> Vec<String> {
    match v.as_array().and_then(|a| {
        a.iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
    }) {
        Some(list) => list,
        None => {
            problems.push(problem(
                path,
                format!("`{}` must be a list of names, not {v}", path.join(".")),
                None,
            ));
            Vec::new()
        }
    }
}

impl TrainConfig {
    pub(crate) fn parse(with: &Value) -> Result<TrainConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(with, FIELDS, "`train`", "with: {model: mlp, epochs: 30}")?;
        let model = parse_model(&mut r);
        let loss = r.choice("loss").map(str::to_string);
        let mut lr_given = false;
        let optimizer = parse_optimizer(&mut r, &mut lr_given);
        let schedule = parse_schedule(&mut r);
        let epochs = r.whole("epochs").unwrap_or_default();
        let batch_size = r.whole("batch_size").unwrap_or_default();
        let shuffle = r.flag("shuffle").unwrap_or_default();
        let seed = r.whole("seed").unwrap_or_default();
        let augment = parse_augment(&mut r);
        let early_stopping = match r.get("early_stopping") {
            None | Some(Value::Null) => None,
            Some(_) => parse_early_stopping(&mut r),
        };
        let device = match r.choice("device") {
            Some("cpu") => Device::Cpu,
            Some("cuda") => Device::Cuda,
            _ => Device::Auto,
        };
        let task = match r.choice("task") {
            Some("classification") => Some(Task::Classification),
            Some("regression") => Some(Task::Regression),
            _ => None,
        };
        let target_scaling = r.choice("target_scaling").unwrap_or("standard").to_string();
        if task == Some(Task::Classification) && r.has("target_scaling") {
            r.report(
                &["target_scaling"],
                "`target_scaling` applies to regression, and `task` is classification".into(),
                Some("remove `target_scaling`".into()),
            );
        }
        if let (Some(Task::Regression), Some(l)) = (task, &loss) {
            if l == "cross_entropy" || l == "bce_with_logits" {
                r.report(
                    &["loss"],
                    format!("`{l}` is a classification loss, and `task` is regression"),
                    Some("use `loss: mse` or `loss: l1`".into()),
                );
            }
        }
        let problems = r.finish();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(TrainConfig {
            model,
            loss,
            optimizer,
            lr_given,
            schedule,
            epochs,
            batch_size,
            shuffle,
            seed,
            augment,
            early_stopping,
            device,
            task,
            target_scaling,
        })
    }

    /// The `with` the worker gets: every default filled in for this data.
    pub(crate) fn resolve(&self, data: &DataFacts, model_path: Option<String>) -> Value {
        let model = match &self.model {
            Some(Model::Onnx {
                trainable, frozen, ..
            }) => Model::Onnx {
                path: model_path.unwrap_or_default(),
                trainable: trainable.clone(),
                frozen: frozen.clone(),
            },
            Some(m) => m.clone(),
            None if data.images => default_cnn(),
            None if data.task == Task::Regression => Model::Linear,
            None => default_mlp(),
        };
        // Measured on iris and digits: small table models want 0.01, the CNN (and models of
        // unknown depth) 0.001.
        let mut optimizer = self.optimizer.clone();
        if !self.lr_given {
            let lr = match model {
                Model::Linear | Model::Logistic | Model::Mlp { .. } => TABLE_LR,
                Model::Cnn { .. } | Model::Onnx { .. } => DEFAULT_LR,
            };
            match &mut optimizer {
                Optimizer::Adamw { lr: l, .. } | Optimizer::Sgd { lr: l } => *l = lr,
            }
        }
        let loss = self.loss.clone().unwrap_or_else(|| {
            match data.task {
                Task::Classification => "cross_entropy",
                Task::Regression => "mse",
            }
            .to_string()
        });
        json!({
            "task": data.task,
            "classes": data.classes,
            "model": model,
            "loss": loss,
            "optimizer": optimizer,
            "schedule": self.schedule,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "augment": self.augment,
            "early_stopping": self.early_stopping,
            // Class ids are not scaled: only regression targets are.
            "target_scaling": match data.task {
                Task::Regression => self.target_scaling.as_str(),
                Task::Classification => "none",
            },
        })
    }
}

/// What the train stage learns from its inputs before starting the worker.
#[derive(Debug, Clone)]
pub(crate) struct DataFacts {
    pub task: Task,
    pub classes: Option<Vec<String>>,
    pub images: bool,
}

fn default_mlp() -> Model {
    Model::Mlp {
        hidden: vec![64],
        activation: "relu".into(),
        dropout: 0.0,
    }
}

fn default_cnn() -> Model {
    Model::Cnn {
        channels: vec![32, 64],
        hidden: 128,
        kernel: 3,
        dropout: 0.0,
    }
}

fn parse_model(r: &mut Reader<'_>) -> Option<Model> {
    let v = r.get("model")?;
    let (kind, m) = match v {
        Value::String(_) => (
            choose(r.problems_mut(), &["model"], v, MODELS, &NOUN)?,
            None,
        ),
        Value::Object(m) if m.contains_key("onnx") => {
            let mut s = r.nested("model", m, ONNX);
            s.unknown_keys("a user model takes: ", "");
            let model = parse_onnx(&mut s);
            r.absorb(s);
            return model;
        }
        Value::Object(m) => {
            let Some(t) = m.get("type") else {
                r.report(
                    &["model"],
                    "`model` needs a `type` (or `onnx: PATH` for your own model)".into(),
                    Some(format!("types: {}", MODELS.join(", "))),
                );
                return None;
            };
            let kind = choose(r.problems_mut(), &["model", "type"], t, MODELS, &NOUN)?;
            (kind, Some(m))
        }
        _ => {
            r.report(
                &["model"],
                format!("`model` must be a model type or a mapping, not {v}"),
                Some("write e.g. `model: mlp` or `model: {type: mlp, hidden: [64, 64]}`".into()),
            );
            return None;
        }
    };
    let empty = Map::new();
    let fields = match kind {
        "linear" | "logistic" => LINEAR,
        "mlp" => MLP,
        _ => CNN,
    };
    let mut s = r.nested("model", m.unwrap_or(&empty), fields);
    s.unknown_keys(&format!("`{kind}` takes: "), "");
    let model = match kind {
        "linear" => Model::Linear,
        "logistic" => Model::Logistic,
        "mlp" => {
            let activation = s.choice("activation").unwrap_or("relu").to_string();
            let hidden_value = s.get("hidden");
            Model::Mlp {
                hidden: uints(s.problems_mut(), &["model", "hidden"], hidden_value, &[64]),
                activation,
                dropout: s.number("dropout").unwrap_or_default(),
            }
        }
        _ => {
            let kernel = s.whole("kernel").unwrap_or_default();
            if kernel.is_multiple_of(2) {
                s.report(
                    &["kernel"],
                    format!("`model.kernel` must be odd (3, 5, ...), not {kernel}"),
                    None,
                );
            }
            let channels_value = s.get("channels");
            Model::Cnn {
                channels: uints(
                    s.problems_mut(),
                    &["model", "channels"],
                    channels_value,
                    &[32, 64],
                ),
                hidden: s.whole("hidden").unwrap_or_default(),
                kernel,
                dropout: s.number("dropout").unwrap_or_default(),
            }
        }
    };
    r.absorb(s);
    Some(model)
}

/// `model: {onnx: PATH, ...}`, a user's model.
fn parse_onnx(s: &mut Reader<'_>) -> Option<Model> {
    let path = match s.get("onnx") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        other => {
            s.report(
                &["onnx"],
                format!("`model.onnx` must be the path of an ONNX file, not {}", other.unwrap_or(&Value::Null)),
                Some("declare the file as an input and write `model: {onnx: \"${{ inputs.model }}\"}`".into()),
            );
            return None;
        }
    };
    let trainable = s
        .get("trainable")
        .map(|t| strings(s.problems_mut(), &["model", "trainable"], t));
    let frozen = s
        .get("frozen")
        .map(|f| strings(s.problems_mut(), &["model", "frozen"], f))
        .unwrap_or_default();
    Some(Model::Onnx {
        path,
        trainable,
        frozen,
    })
}

fn parse_optimizer(r: &mut Reader<'_>, lr_given: &mut bool) -> Optimizer {
    let (kind, m) = match r.get("optimizer") {
        None => (Some("adamw"), None),
        Some(v @ Value::String(_)) => (
            choose(r.problems_mut(), &["optimizer"], v, OPTIMIZERS, &NOUN),
            None,
        ),
        Some(Value::Object(m)) => (
            match m.get("type") {
                Some(t) => choose(
                    r.problems_mut(),
                    &["optimizer", "type"],
                    t,
                    OPTIMIZERS,
                    &NOUN,
                ),
                None => Some("adamw"),
            },
            Some(m),
        ),
        Some(v) => {
            r.report(
                &["optimizer"],
                format!("`optimizer` must be `adamw`, `sgd` or a mapping, not {v}"),
                Some("write e.g. `optimizer: {type: adamw, lr: 0.001}`".into()),
            );
            (None, None)
        }
    };
    let empty = Map::new();
    let sgd = kind == Some("sgd");
    let mut s = r.nested(
        "optimizer",
        m.unwrap_or(&empty),
        if sgd { SGD } else { ADAMW },
    );
    let lr = s.number("lr").unwrap_or(DEFAULT_LR);
    *lr_given = s.has("lr");
    let optimizer = if sgd {
        s.unknown_keys("`sgd` takes: ", "");
        Optimizer::Sgd { lr }
    } else {
        s.unknown_keys("`adamw` takes: ", "");
        let betas = match s.get("betas") {
            None => [0.9, 0.999],
            Some(b) => match b
                .as_array()
                // Every element must be a number: `[0.9, "x", 0.999]` is not two numbers.
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
            {
                Some(v) if v.len() == 2 && v.iter().all(|x| (0.0..1.0).contains(x)) => [v[0], v[1]],
                _ => {
                    s.report(
                        &["betas"],
                        format!("`optimizer.betas` must be two numbers in [0, 1), not {b}"),
                        Some("write e.g. `betas: [0.9, 0.999]`".into()),
                    );
                    [0.9, 0.999]
                }
            },
        };
        Optimizer::Adamw {
            lr,
            betas,
            eps: s.number("eps").unwrap_or_default(),
            weight_decay: s.number("weight_decay").unwrap_or_default(),
        }
    };
    r.absorb(s);
    optimizer
}

fn parse_schedule(r: &mut Reader<'_>) -> Schedule {
    let mut schedule = Schedule {
        warmup_epochs: 0.0,
        decay: "constant".into(),
    };
    let Some(mut s) = r.section("schedule", "schedule: {warmup_epochs: 1, decay: linear}") else {
        return schedule;
    };
    schedule.warmup_epochs = s.number("warmup_epochs").unwrap_or_default();
    if let Some(d) = s.choice("decay") {
        schedule.decay = d.into();
    }
    r.absorb(s);
    schedule
}

fn parse_augment(r: &mut Reader<'_>) -> Augment {
    let Some(mut s) = r.section("augment", "augment: {hflip: true, crop_padding: 2}") else {
        return Augment {
            hflip: false,
            crop_padding: 0,
            rotate_degrees: 0.0,
        };
    };
    let augment = Augment {
        hflip: s.flag("hflip").unwrap_or_default(),
        crop_padding: s.whole("crop_padding").unwrap_or_default(),
        rotate_degrees: s.number("rotate_degrees").unwrap_or_default(),
    };
    r.absorb(s);
    augment
}

fn parse_early_stopping(r: &mut Reader<'_>) -> Option<EarlyStopping> {
    let mut s = r.mapping(
        "early_stopping",
        EARLY_STOPPING,
        "early_stopping: {patience: 5, metric: val_loss}",
        "`early_stopping` takes: ",
    )?;
    let stopping = s.choice("metric").map(|metric| EarlyStopping {
        patience: s.whole("patience").unwrap_or_default(),
        metric: metric.into(),
        min_delta: s.number("min_delta").unwrap_or_default(),
    });
    r.absorb(s);
    stopping
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(with: Value) -> Vec<String> {
        TrainConfig::parse(&with)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| format!("{}: {}", p.path.join("."), p.message))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = TrainConfig::parse(&Value::Null).unwrap();
        assert_eq!(c.epochs, 20);
        assert_eq!(c.device, Device::Auto);
        assert!(c.model.is_none());
        let resolved = c.resolve(
            &DataFacts {
                task: Task::Classification,
                classes: Some(vec!["a".into(), "b".into()]),
                images: true,
            },
            None,
        );
        assert_eq!(resolved["model"]["type"], "cnn");
        assert_eq!(resolved["loss"], "cross_entropy");
        assert_eq!(resolved["optimizer"]["type"], "adamw");
        assert_eq!(resolved["optimizer"]["lr"], DEFAULT_LR);
        let table = c.resolve(
            &DataFacts {
                task: Task::Classification,
                classes: None,
                images: false,
            },
            None,
        );
        assert_eq!(table["model"]["type"], "mlp");
        assert_eq!(table["optimizer"]["lr"], TABLE_LR);
        let given = TrainConfig::parse(&json!({"optimizer": {"lr": 0.5}})).unwrap();
        let r = given.resolve(
            &DataFacts {
                task: Task::Classification,
                classes: None,
                images: false,
            },
            None,
        );
        assert_eq!(r["optimizer"]["lr"], 0.5);
    }

    #[test]
    fn shorthand_and_full_forms() {
        let c = TrainConfig::parse(&json!({"model": "logistic", "optimizer": "sgd"})).unwrap();
        assert_eq!(c.model, Some(Model::Logistic));
        assert_eq!(c.optimizer, Optimizer::Sgd { lr: DEFAULT_LR });
        let c = TrainConfig::parse(&json!({"model": {"type": "mlp", "hidden": [8, 4], "dropout": 0.1},
            "optimizer": {"lr": 0.01, "betas": [0.8, 0.99]}, "early_stopping": {"patience": 3, "metric": "val_accuracy"}}))
        .unwrap();
        assert_eq!(
            c.model,
            Some(Model::Mlp {
                hidden: vec![8, 4],
                activation: "relu".into(),
                dropout: 0.1
            })
        );
        assert_eq!(c.early_stopping.unwrap().metric, "val_accuracy");
    }

    #[test]
    fn every_problem_with_its_path() {
        let p = problems(
            json!({"modle": "mlp", "epochs": 0, "optimizer": {"type": "adam", "lr": -1},
            "model": {"type": "cnn", "kernel": 4}, "device": "gpu", "augment": {"flip": true}}),
        );
        let text = p.join("\n");
        assert!(text.contains("modle: unknown option `modle`"), "{text}");
        assert!(
            text.contains("epochs: `epochs` must be a whole number of at least 1, not 0"),
            "{text}"
        );
        assert!(
            text.contains("optimizer.type: unknown type `adam`"),
            "{text}"
        );
        assert!(
            text.contains("optimizer.lr: `optimizer.lr` must be a number above 0"),
            "{text}"
        );
        assert!(
            text.contains("model.kernel: `model.kernel` must be odd"),
            "{text}"
        );
        assert!(text.contains("device: unknown device `gpu`"), "{text}");
        assert!(
            text.contains("augment.flip: unknown option `flip`"),
            "{text}"
        );
    }

    #[test]
    fn betas_are_two_numbers_with_nothing_else() {
        for bad in [
            json!([0.9, "x", 0.999]),
            json!([0.9]),
            json!([0.9, 1.0]),
            json!("0.9"),
        ] {
            let p = problems(json!({"optimizer": {"betas": bad.clone()}}));
            assert_eq!(
                p,
                vec![format!(
                    "optimizer.betas: `optimizer.betas` must be two numbers in [0, 1), not {bad}"
                )]
            );
        }
        assert!(problems(json!({"optimizer": {"betas": [0.5, 0.5]}})).is_empty());
    }

    #[test]
    fn regression_with_a_classification_loss() {
        let p = problems(json!({"task": "regression", "loss": "cross_entropy"}));
        assert_eq!(
            p,
            vec!["loss: `cross_entropy` is a classification loss, and `task` is regression"]
        );
    }

    #[test]
    fn regression_targets_are_standardized_unless_turned_off() {
        let facts = |task| DataFacts {
            task,
            classes: None,
            images: false,
        };
        let c = TrainConfig::parse(&Value::Null).unwrap();
        let regression = c.resolve(&facts(Task::Regression), None);
        assert_eq!(regression["target_scaling"], "standard");
        assert_eq!(regression["model"]["type"], "linear");
        // Class ids are never scaled.
        let classes = c.resolve(&facts(Task::Classification), None);
        assert_eq!(classes["target_scaling"], "none");
        let off = TrainConfig::parse(&json!({"target_scaling": "none"})).unwrap();
        assert_eq!(
            off.resolve(&facts(Task::Regression), None)["target_scaling"],
            "none"
        );
        assert_eq!(
            problems(json!({"task": "classification", "target_scaling": "standard"})),
            vec!["target_scaling: `target_scaling` applies to regression, and `task` is classification"]
        );
        assert_eq!(problems(json!({"target_scaling": "minmax"})).len(), 1);
    }
}
