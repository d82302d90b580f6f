//! The options of a `train` stage's `with:`, declared once as [`Field`]s: the tables
//! `config.rs` reads with the shared field reader, and the JSON Schema `sluice schema` gives
//! editors. `model` and `optimizer` take a name or a mapping whose fields depend on its `type`,
//! so each type has its own table and the schema is `anyOf` them.

use crate::fields::{object_schema, Field, Type, Wording};
use serde_json::{json, Value};

pub(super) const MODELS: &[&str] = &["linear", "logistic", "mlp", "cnn"];
const LOSSES: &[&str] = &["cross_entropy", "mse", "l1", "bce_with_logits"];
pub(super) const OPTIMIZERS: &[&str] = &["adamw", "sgd"];
const ACTIVATIONS: &[&str] = &["relu", "tanh", "gelu", "sigmoid"];
const METRICS: &[&str] = &["val_loss", "val_accuracy", "val_rmse"];

/// How `train` words a name that is none of a choice's.
pub(super) const NOUN: Wording = Wording::Noun {
    listing: "choose one of",
    help_on_wrong_type: false,
};
const FLAG: Type = Type::Bool {
    expect: "true or false",
};

const fn choice(names: &'static [&'static str]) -> Type {
    Type::Choice {
        names,
        wording: NOUN,
    }
}

const fn whole(min: u64) -> Type {
    Type::Whole { min, expect: None }
}

const fn number(min: f64, max: f64, open_min: bool) -> Type {
    Type::Number { min, max, open_min }
}

/// The options of `train`: what the parser reads and the schema editors get.
pub(crate) const FIELDS: &[Field] = &[
    Field::new(
        "model",
        Type::Custom(model_schema),
        "A built-in model (linear, logistic, mlp, cnn), as a name or a mapping with its options, or `{onnx: PATH}` for your own; default: cnn for images, linear for regression, mlp otherwise.",
    ),
    Field::new(
        "loss",
        choice(LOSSES),
        "default: cross_entropy for classification, mse for regression.",
    ),
    Field::new(
        "optimizer",
        Type::Custom(optimizer_schema),
        "adamw or sgd, as a name or a mapping with its options; default: adamw.",
    ),
    Field::new(
        "schedule",
        Type::Section(SCHEDULE),
        "The learning-rate schedule: warm-up epochs, then constant or linear decay.",
    ),
    Field::new("epochs", whole(1), "Passes over the training data.").default("20"),
    Field::new("batch_size", whole(1), "Rows (or images) per step.").default("32"),
    Field::new("shuffle", FLAG, "Shuffle the training data every epoch.").default("true"),
    Field::new(
        "seed",
        whole(0),
        "Seed of initialisation, shuffling and augmentation.",
    )
    .default("0"),
    Field::new(
        "augment",
        Type::Section(AUGMENT),
        "Random changes to training images.",
    ),
    Field::new(
        "early_stopping",
        Type::Custom(early_stopping_schema),
        "Stop when a validation metric stops improving; null turns it off.",
    ),
    Field::new(
        "device",
        choice(&["auto", "cpu", "cuda"]),
        "Where training runs: auto uses CUDA when the stage has a GPU and the CUDA environment is installed.",
    )
    .default("\"auto\""),
    Field::new(
        "task",
        choice(&["classification", "regression"]),
        "default: taken from the data (classification for a text label or images).",
    ),
    Field::new(
        "target_scaling",
        choice(TARGET_SCALINGS),
        "Regression only: standard trains on targets standardized by the train split's mean and std, and the exported model maps its predictions back to target units; none trains on the raw targets.",
    )
    .default("\"standard\""),
];

pub(super) const TARGET_SCALINGS: &[&str] = &["standard", "none"];

const SCHEDULE: &[Field] = &[
    Field::new(
        "warmup_epochs",
        number(0.0, f64::INFINITY, false),
        "Epochs of linear warm-up from 0.",
    )
    .default("0"),
    Field::new(
        "decay",
        choice(&["linear", "constant"]),
        "After warm-up: constant, or linear decay to 0.",
    )
    .default("\"constant\""),
];

const AUGMENT: &[Field] = &[
    Field::new("hflip", FLAG, "Flip images horizontally at random.").default("false"),
    Field::new(
        "crop_padding",
        whole(0),
        "Pad by this many pixels, then crop at random.",
    )
    .default("0"),
    Field::new(
        "rotate_degrees",
        number(0.0, 180.0, false),
        "Rotate by up to this many degrees either way.",
    )
    .default("0"),
];

pub(super) const EARLY_STOPPING: &[Field] = &[
    Field::new(
        "patience",
        whole(1),
        "Epochs without improvement before stopping.",
    )
    .default("5"),
    Field::new("metric", choice(METRICS), "The metric watched.").default("\"val_loss\""),
    Field::new(
        "min_delta",
        number(0.0, f64::INFINITY, false),
        "The least change that counts as improvement.",
    )
    .default("0"),
];

pub(super) const LINEAR: &[Field] = &[Field::new(
    "type",
    choice(&["linear", "logistic"]),
    "One fully connected layer; logistic adds a sigmoid.",
)
.required()];

pub(super) const MLP: &[Field] = &[
    Field::new("type", choice(&["mlp"]), "Fully connected layers.").required(),
    Field::new(
        "hidden",
        Type::Custom(positive_list_schema),
        "Widths of the hidden layers.",
    )
    .default("[64]"),
    Field::new("activation", choice(ACTIVATIONS), "Between layers.").default("\"relu\""),
    Field::new(
        "dropout",
        DROPOUT,
        "Dropout probability after each hidden layer.",
    )
    .default("0"),
];

pub(super) const CNN: &[Field] = &[
    Field::new(
        "type",
        choice(&["cnn"]),
        "Convolutions, then a fully connected layer.",
    )
    .required(),
    Field::new(
        "channels",
        Type::Custom(positive_list_schema),
        "Channels of each convolution block.",
    )
    .default("[32, 64]"),
    Field::new("hidden", whole(1), "Width of the fully connected layer.").default("128"),
    Field::new("kernel", whole(1), "Kernel size; odd.").default("3"),
    Field::new(
        "dropout",
        DROPOUT,
        "Dropout probability before the last layer.",
    )
    .default("0"),
];

const DROPOUT: Type = number(0.0, 0.95, false);

pub(super) const ONNX: &[Field] = &[
    Field::new(
        "onnx",
        Type::Custom(onnx_path_schema),
        "Your ONNX model, usually `${{ inputs.model }}`.",
    )
    .required(),
    Field::new(
        "trainable",
        Type::Custom(names_schema),
        "The parameters to train; default: all but `frozen`.",
    ),
    Field::new(
        "frozen",
        Type::Custom(names_schema),
        "Parameters kept as they are.",
    ),
];

const LR: Field = Field::new(
    "lr",
    number(0.0, 10.0, true),
    "Learning rate; default: 0.01 for linear, logistic and mlp, 0.001 otherwise.",
);

pub(super) const SGD: &[Field] = &[
    Field::new("type", choice(&["sgd"]), "Stochastic gradient descent.").required(),
    LR,
];

pub(super) const ADAMW: &[Field] = &[
    Field::new(
        "type",
        choice(&["adamw"]),
        "Adam with decoupled weight decay.",
    )
    .default("\"adamw\""),
    LR,
    Field::new(
        "betas",
        Type::Custom(betas_schema),
        "Decay rates of the moment estimates.",
    )
    .default("[0.9, 0.999]"),
    Field::new("eps", number(0.0, 1.0, true), "Added to the denominator.").default("1e-8"),
    Field::new(
        "weight_decay",
        number(0.0, 1.0, false),
        "Decoupled weight decay of weight matrices and kernels (parameters of rank 2 or more); biases and normalization parameters are not decayed.",
    )
    .default("0.01"),
];

/// Full `with:` blocks that `train` accepts, for the schema's examples.
pub(crate) const EXAMPLES: &[&str] = &[
    r#"{"model": {"type": "mlp", "hidden": [64, 32], "activation": "relu", "dropout": 0.1}, "loss": "cross_entropy", "optimizer": {"type": "adamw", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}, "schedule": {"warmup_epochs": 1, "decay": "linear"}, "epochs": 30, "batch_size": 64, "shuffle": true, "seed": 7, "early_stopping": {"patience": 5, "metric": "val_loss", "min_delta": 0.001}, "device": "cpu", "task": "classification"}"#,
    r#"{"model": {"type": "cnn", "channels": [16, 32], "hidden": 64, "kernel": 5, "dropout": 0.2}, "optimizer": {"type": "sgd", "lr": 0.1}, "augment": {"hflip": true, "crop_padding": 2, "rotate_degrees": 10}, "early_stopping": null}"#,
    r#"{"model": {"onnx": "models/net.onnx", "trainable": ["fc.weight"], "frozen": []}, "optimizer": "sgd", "task": "regression", "loss": "mse"}"#,
    r#"{"model": "linear"}"#,
    r#"{"model": {"type": "logistic"}}"#,
];

fn model_schema() -> Value {
    json!({"anyOf": [
        {"type": "string", "enum": MODELS},
        object_schema(LINEAR),
        object_schema(MLP),
        object_schema(CNN),
        object_schema(ONNX),
    ]})
}

fn optimizer_schema() -> Value {
    json!({"anyOf": [
        {"type": "string", "enum": OPTIMIZERS},
        object_schema(SGD),
        object_schema(ADAMW),
    ]})
}

fn early_stopping_schema() -> Value {
    let mut schema = object_schema(EARLY_STOPPING);
    schema["type"] = json!(["object", "null"]);
    schema
}

fn positive_list_schema() -> Value {
    json!({"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1})
}

fn names_schema() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn onnx_path_schema() -> Value {
    json!({"type": "string", "minLength": 1})
}

fn betas_schema() -> Value {
    let beta = json!({"type": "number", "minimum": 0, "exclusiveMaximum": 1});
    json!({"type": "array", "items": beta, "minItems": 2, "maxItems": 2})
}
