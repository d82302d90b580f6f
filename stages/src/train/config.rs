//! [`TrainConfig`]: the `with:` block of a `train` stage, parsed into types with every problem
//! reported at its path, then resolved (defaults filled in from the data) into the request the
//! worker reads. The worker trusts what it gets: every value range is checked here.

use crate::problems::{problem, unknown_option};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::ConfigProblem;

const KEYS: &[&str] = &[
    "model",
    "loss",
    "optimizer",
    "schedule",
    "epochs",
    "batch_size",
    "shuffle",
    "seed",
    "augment",
    "early_stopping",
    "device",
    "task",
];
const MODELS: &[&str] = &["linear", "logistic", "mlp", "cnn"];
const LOSSES: &[&str] = &["cross_entropy", "mse", "l1", "bce_with_logits"];
const OPTIMIZERS: &[&str] = &["adamw", "sgd"];
const ACTIVATIONS: &[&str] = &["relu", "tanh", "gelu", "sigmoid"];
const METRICS: &[&str] = &["val_loss", "val_accuracy", "val_rmse"];

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
}

/// The default learning rate, and the default for fully connected models on tables.
pub(crate) const DEFAULT_LR: f64 = 0.001;
pub(crate) const TABLE_LR: f64 = 0.01;

/// Collects problems while reading values.
struct Reader {
    problems: Vec<ConfigProblem>,
}

impl Reader {
    fn push(&mut self, path: &[&str], message: String, help: Option<String>) {
        self.problems.push(problem(path, message, help));
    }

    fn map<'a>(
        &mut self,
        path: &[&str],
        v: &'a Value,
        example: &str,
    ) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            _ => {
                self.push(
                    path,
                    format!("`{}` must be a mapping, not {v}", path.join(".")),
                    Some(format!("write e.g. `{example}`")),
                );
                None
            }
        }
    }

    fn keys(&mut self, path: &[&str], m: &Map<String, Value>, allowed: &[&str], what: &str) {
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                let mut p = path.to_vec();
                p.push(key);
                let help = did_you_mean(key, allowed.iter().copied())
                    .unwrap_or_else(|| format!("{what} takes: {}", allowed.join(", ")));
                self.problems.push(unknown_option(
                    &p,
                    format!("unknown option `{key}`"),
                    Some(help),
                ));
            }
        }
    }

    fn float(
        &mut self,
        path: &[&str],
        v: Option<&Value>,
        default: f64,
        min: f64,
        max: f64,
        open_min: bool,
    ) -> f64 {
        let Some(v) = v else { return default };
        match v.as_f64() {
            Some(x) if x.is_finite() && (x > min || (!open_min && x == min)) && x <= max => x,
            _ => {
                let lower = if open_min { "above" } else { "at least" };
                let upper = if max.is_finite() {
                    format!(" and at most {max}")
                } else {
                    String::new()
                };
                self.push(
                    path,
                    format!(
                        "`{}` must be a number {lower} {min}{upper}, not {v}",
                        path.join(".")
                    ),
                    None,
                );
                default
            }
        }
    }

    fn uint(&mut self, path: &[&str], v: Option<&Value>, default: u64, min: u64) -> u64 {
        let Some(v) = v else { return default };
        match v.as_u64() {
            Some(n) if n >= min => n,
            _ => {
                self.push(
                    path,
                    format!(
                        "`{}` must be a whole number of at least {min}, not {v}",
                        path.join(".")
                    ),
                    None,
                );
                default
            }
        }
    }

    fn boolean(&mut self, path: &[&str], v: Option<&Value>, default: bool) -> bool {
        let Some(v) = v else { return default };
        v.as_bool().unwrap_or_else(|| {
            self.push(
                path,
                format!("`{}` must be true or false, not {v}", path.join(".")),
                None,
            );
            default
        })
    }

    fn choice(&mut self, path: &[&str], v: &Value, names: &[&str]) -> Option<String> {
        match v.as_str() {
            Some(s) if names.contains(&s) => Some(s.to_string()),
            Some(s) => {
                let help = did_you_mean(s, names.iter().copied())
                    .unwrap_or_else(|| format!("choose one of: {}", names.join(", ")));
                self.push(
                    path,
                    format!("unknown {} `{s}`", path.last().copied().unwrap_or("value")),
                    Some(help),
                );
                None
            }
            None => {
                self.push(
                    path,
                    format!(
                        "`{}` must be one of {}, not {v}",
                        path.join("."),
                        names.join(", ")
                    ),
                    None,
                );
                None
            }
        }
    }

    fn uints(&mut self, path: &[&str], v: Option<&Value>, default: &[u64]) -> Vec<u64> {
        let Some(v) = v else { return default.to_vec() };
        match v.as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_u64().filter(|&n| n > 0))
                .collect::<Option<Vec<_>>>()
        }) {
            Some(list) if !list.is_empty() => list,
            _ => {
                self.push(
                    path,
                    format!(
                        "`{}` must be a list of positive whole numbers, not {v}",
                        path.join(".")
                    ),
                    Some(format!(
                        "write e.g. `{}: [64, 32]`",
                        path.last().copied().unwrap_or("")
                    )),
                );
                default.to_vec()
            }
        }
    }

    fn strings(&mut self, path: &[&str], v: &Value) -> Vec<String> {
        match v.as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        }) {
            Some(list) => list,
            None => {
                self.push(
                    path,
                    format!("`{}` must be a list of names, not {v}", path.join(".")),
                    None,
                );
                Vec::new()
            }
        }
    }
}

impl TrainConfig {
    pub(crate) fn parse(with: &Value) -> Result<TrainConfig, Vec<ConfigProblem>> {
        let map = crate::problems::with_map(with, "with: {model: mlp, epochs: 30}")?;
        let mut r = Reader {
            problems: Vec::new(),
        };
        r.keys(&[], map, KEYS, "`train`");
        let model = map.get("model").and_then(|v| parse_model(&mut r, v));
        let loss = map.get("loss").and_then(|v| r.choice(&["loss"], v, LOSSES));
        let mut lr_given = false;
        let optimizer = parse_optimizer(&mut r, map.get("optimizer"), &mut lr_given);
        let schedule = parse_schedule(&mut r, map.get("schedule"));
        let epochs = r.uint(&["epochs"], map.get("epochs"), 20, 1);
        let batch_size = r.uint(&["batch_size"], map.get("batch_size"), 32, 1);
        let shuffle = r.boolean(&["shuffle"], map.get("shuffle"), true);
        let seed = r.uint(&["seed"], map.get("seed"), 0, 0);
        let augment = parse_augment(&mut r, map.get("augment"));
        let early_stopping = match map.get("early_stopping") {
            None | Some(Value::Null) => None,
            Some(v) => parse_early_stopping(&mut r, v),
        };
        let device = match map.get("device") {
            None => Device::Auto,
            Some(v) => match r
                .choice(&["device"], v, &["auto", "cpu", "cuda"])
                .as_deref()
            {
                Some("cpu") => Device::Cpu,
                Some("cuda") => Device::Cuda,
                _ => Device::Auto,
            },
        };
        let task = map.get("task").and_then(|v| {
            match r
                .choice(&["task"], v, &["classification", "regression"])
                .as_deref()
            {
                Some("classification") => Some(Task::Classification),
                Some("regression") => Some(Task::Regression),
                _ => None,
            }
        });
        if let (Some(Task::Regression), Some(l)) = (task, &loss) {
            if l == "cross_entropy" || l == "bce_with_logits" {
                r.push(
                    &["loss"],
                    format!("`{l}` is a classification loss, and `task` is regression"),
                    Some("use `loss: mse` or `loss: l1`".into()),
                );
            }
        }
        if !r.problems.is_empty() {
            return Err(r.problems);
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

fn parse_model(r: &mut Reader, v: &Value) -> Option<Model> {
    let (kind, m) = match v {
        Value::String(_) => (r.choice(&["model"], v, MODELS)?, None),
        Value::Object(m) if m.contains_key("onnx") => {
            r.keys(
                &["model"],
                m,
                &["onnx", "trainable", "frozen"],
                "a user model",
            );
            let path = match m.get("onnx") {
                Some(Value::String(p)) if !p.is_empty() => p.clone(),
                other => {
                    r.push(
                        &["model", "onnx"],
                        format!("`model.onnx` must be the path of an ONNX file, not {}", other.unwrap_or(&Value::Null)),
                        Some("declare the file as an input and write `model: {onnx: \"${{ inputs.model }}\"}`".into()),
                    );
                    return None;
                }
            };
            let trainable = m
                .get("trainable")
                .map(|t| r.strings(&["model", "trainable"], t));
            let frozen = m
                .get("frozen")
                .map(|f| r.strings(&["model", "frozen"], f))
                .unwrap_or_default();
            return Some(Model::Onnx {
                path,
                trainable,
                frozen,
            });
        }
        Value::Object(m) => {
            let Some(t) = m.get("type") else {
                r.push(
                    &["model"],
                    "`model` needs a `type` (or `onnx: PATH` for your own model)".into(),
                    Some(format!("types: {}", MODELS.join(", "))),
                );
                return None;
            };
            (r.choice(&["model", "type"], t, MODELS)?, Some(m))
        }
        _ => {
            r.push(
                &["model"],
                format!("`model` must be a model type or a mapping, not {v}"),
                Some("write e.g. `model: mlp` or `model: {type: mlp, hidden: [64, 64]}`".into()),
            );
            return None;
        }
    };
    let empty = Map::new();
    let m = m.unwrap_or(&empty);
    let get = |k: &str| m.get(k);
    let model = match kind.as_str() {
        "linear" | "logistic" => {
            r.keys(&["model"], m, &["type"], &format!("`{kind}`"));
            if kind == "linear" {
                Model::Linear
            } else {
                Model::Logistic
            }
        }
        "mlp" => {
            r.keys(
                &["model"],
                m,
                &["type", "hidden", "activation", "dropout"],
                "`mlp`",
            );
            let activation = get("activation")
                .and_then(|a| r.choice(&["model", "activation"], a, ACTIVATIONS))
                .unwrap_or_else(|| "relu".into());
            Model::Mlp {
                hidden: r.uints(&["model", "hidden"], get("hidden"), &[64]),
                activation,
                dropout: r.float(&["model", "dropout"], get("dropout"), 0.0, 0.0, 0.95, false),
            }
        }
        _ => {
            r.keys(
                &["model"],
                m,
                &["type", "channels", "hidden", "kernel", "dropout"],
                "`cnn`",
            );
            let kernel = r.uint(&["model", "kernel"], get("kernel"), 3, 1);
            if kernel.is_multiple_of(2) {
                r.push(
                    &["model", "kernel"],
                    format!("`model.kernel` must be odd (3, 5, ...), not {kernel}"),
                    None,
                );
            }
            Model::Cnn {
                channels: r.uints(&["model", "channels"], get("channels"), &[32, 64]),
                hidden: r.uint(&["model", "hidden"], get("hidden"), 128, 1),
                kernel,
                dropout: r.float(&["model", "dropout"], get("dropout"), 0.0, 0.0, 0.95, false),
            }
        }
    };
    Some(model)
}

fn parse_optimizer(r: &mut Reader, v: Option<&Value>, lr_given: &mut bool) -> Optimizer {
    let adamw = |lr| Optimizer::Adamw {
        lr,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let Some(v) = v else { return adamw(DEFAULT_LR) };
    let (kind, m) = match v {
        Value::String(_) => (r.choice(&["optimizer"], v, OPTIMIZERS), None),
        Value::Object(m) => (
            match m.get("type") {
                Some(t) => r.choice(&["optimizer", "type"], t, OPTIMIZERS),
                None => Some("adamw".into()),
            },
            Some(m),
        ),
        _ => {
            r.push(
                &["optimizer"],
                format!("`optimizer` must be `adamw`, `sgd` or a mapping, not {v}"),
                Some("write e.g. `optimizer: {type: adamw, lr: 0.001}`".into()),
            );
            (None, None)
        }
    };
    let empty = Map::new();
    let m = m.unwrap_or(&empty);
    let lr = r.float(
        &["optimizer", "lr"],
        m.get("lr"),
        DEFAULT_LR,
        0.0,
        10.0,
        true,
    );
    *lr_given = m.contains_key("lr");
    match kind.as_deref() {
        Some("sgd") => {
            r.keys(&["optimizer"], m, &["type", "lr"], "`sgd`");
            Optimizer::Sgd { lr }
        }
        _ => {
            r.keys(
                &["optimizer"],
                m,
                &["type", "lr", "betas", "eps", "weight_decay"],
                "`adamw`",
            );
            let betas = match m.get("betas") {
                None => [0.9, 0.999],
                Some(b) => match b
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
                {
                    Some(v) if v.len() == 2 && v.iter().all(|x| (0.0..1.0).contains(x)) => {
                        [v[0], v[1]]
                    }
                    _ => {
                        r.push(
                            &["optimizer", "betas"],
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
                eps: r.float(&["optimizer", "eps"], m.get("eps"), 1e-8, 0.0, 1.0, true),
                weight_decay: r.float(
                    &["optimizer", "weight_decay"],
                    m.get("weight_decay"),
                    0.01,
                    0.0,
                    1.0,
                    false,
                ),
            }
        }
    }
}

fn parse_schedule(r: &mut Reader, v: Option<&Value>) -> Schedule {
    let mut s = Schedule {
        warmup_epochs: 0.0,
        decay: "constant".into(),
    };
    let Some(v) = v else { return s };
    let Some(m) = r.map(
        &["schedule"],
        v,
        "schedule: {warmup_epochs: 1, decay: linear}",
    ) else {
        return s;
    };
    r.keys(&["schedule"], m, &["warmup_epochs", "decay"], "`schedule`");
    s.warmup_epochs = r.float(
        &["schedule", "warmup_epochs"],
        m.get("warmup_epochs"),
        0.0,
        0.0,
        f64::INFINITY,
        false,
    );
    if let Some(d) = m.get("decay") {
        if let Some(d) = r.choice(&["schedule", "decay"], d, &["linear", "constant"]) {
            s.decay = d;
        }
    }
    s
}

fn parse_augment(r: &mut Reader, v: Option<&Value>) -> Augment {
    let mut a = Augment {
        hflip: false,
        crop_padding: 0,
        rotate_degrees: 0.0,
    };
    let Some(v) = v else { return a };
    let Some(m) = r.map(&["augment"], v, "augment: {hflip: true, crop_padding: 2}") else {
        return a;
    };
    r.keys(
        &["augment"],
        m,
        &["hflip", "crop_padding", "rotate_degrees"],
        "`augment`",
    );
    a.hflip = r.boolean(&["augment", "hflip"], m.get("hflip"), false);
    a.crop_padding = r.uint(&["augment", "crop_padding"], m.get("crop_padding"), 0, 0);
    a.rotate_degrees = r.float(
        &["augment", "rotate_degrees"],
        m.get("rotate_degrees"),
        0.0,
        0.0,
        180.0,
        false,
    );
    a
}

fn parse_early_stopping(r: &mut Reader, v: &Value) -> Option<EarlyStopping> {
    let m = r.map(
        &["early_stopping"],
        v,
        "early_stopping: {patience: 5, metric: val_loss}",
    )?;
    r.keys(
        &["early_stopping"],
        m,
        &["patience", "metric", "min_delta"],
        "`early_stopping`",
    );
    let metric = match m.get("metric") {
        None => "val_loss".to_string(),
        Some(x) => r.choice(&["early_stopping", "metric"], x, METRICS)?,
    };
    Some(EarlyStopping {
        patience: r.uint(&["early_stopping", "patience"], m.get("patience"), 5, 1),
        metric,
        min_delta: r.float(
            &["early_stopping", "min_delta"],
            m.get("min_delta"),
            0.0,
            0.0,
            f64::INFINITY,
            false,
        ),
    })
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
    fn regression_with_a_classification_loss() {
        let p = problems(json!({"task": "regression", "loss": "cross_entropy"}));
        assert_eq!(
            p,
            vec!["loss: `cross_entropy` is a classification loss, and `task` is regression"]
        );
    }
}
