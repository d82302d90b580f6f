//! The `normalize` stage: train/val/test tables in; per split a directory with `features.npy`
//! (float32 `[N, F]`), `labels.npy` (int64 or float32 `[N]`) and, when `split` gave the rows
//! their source ids, `rows.npy` (int64 `[N]`); and the `preprocess` JSON artifact out. Images
//! get `files.json` instead of `rows.npy`: each row's source file.
//!
//! `config` parses `with:`, `fit` learns the statistics from the train split only, `preprocess`
//! holds the artifact and applies it (with `repair`'s missing-value fills and clipping fences),
//! `encode` turns a table into arrays. This file reads the inputs, writes the outputs through
//! `Staged` so that a failure leaves none of them, and turns every failure into one message
//! naming the file. When the train input is a directory, the
//! splits are ImageFolders and `images` does the work: `features.npy` is float32 `[N, C, H, W]`.

mod config;
mod encode;
mod fit;
mod images;
pub mod preprocess;
mod repair;

use crate::npy;
use crate::problems::relative;
use crate::staged::{OutputFile, Staged, StagedError};
use crate::table::{self, row_id, Pieces, TableError};
use arrow::datatypes::DataType;
use config::NormalizeConfig;
use preprocess::Preprocess;

/// `with:` read for tables and for images.
type NormalizeModes = crate::modes::Modes<NormalizeConfig, images::ImageNormalizeConfig>;
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};
use std::path::Path;

const SPLITS: [&str; 3] = ["train", "val", "test"];
const PREPROCESS: &str = "preprocess";
const FEATURES: &str = "features.npy";
const LABELS: &str = "labels.npy";
/// Each row's id in the table `split` read (see `table::row_id`), when the split carries it.
const ROWS: &str = "rows.npy";
/// Each image row's source file, workspace-relative, in the features' row order.
const FILES: &str = "files.json";
const STEPS: f64 = 5.0;

/// The `normalize` stage kind.
pub(crate) struct Normalize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum NormalizeError {
    #[error("{0}")]
    Config(String),
    #[error("`normalize` needs an input named `train`{}", maybe(.suggestion))]
    NoInput { suggestion: Option<String> },
    #[error("the pipeline gave no path for output `{0}`")]
    NoOutput(&'static str),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("`{path}`: the train split has no rows, so there is nothing to fit")]
    EmptyTrain { path: String },
    #[error("`{path}`: column `{column}` has type {data_type}, which `{method}` cannot scale")]
    NotNumeric {
        path: String,
        column: String,
        data_type: DataType,
        method: &'static str,
    },
    #[error("`{path}`: column `{column}` has type {data_type}, which `normalize` cannot encode")]
    Unsupported {
        path: String,
        column: String,
        data_type: DataType,
    },
    #[error("`{path}`: the label `{column}` has type {data_type}, and a regression label must be numeric")]
    LabelType {
        path: String,
        column: String,
        data_type: DataType,
    },
    #[error("`{path}`: the label `{column}` looks continuous ({data_type} with {distinct} distinct values in the train split), and `task` is classification")]
    ContinuousLabel {
        path: String,
        column: String,
        data_type: DataType,
        distinct: usize,
    },
    #[error("`{path}`: column `{column}` has type {data_type}, which `{method}` cannot fill")]
    FillType {
        path: String,
        column: String,
        data_type: DataType,
        method: &'static str,
    },
    #[error("`{path}`: column `{column}` has no value in the train split to fit a fill from")]
    NothingToImpute { path: String, column: String },
    #[error("`{path}` row {row}: column `{column}` is empty")]
    Missing {
        path: String,
        row: usize,
        column: String,
    },
    #[error("`{path}` row {row}: column `{column}` holds `{value}`")]
    Infinite {
        path: String,
        row: usize,
        column: String,
        value: f64,
    },
    #[error("`{path}` row {row}: label `{value}` of the {split} split does not occur in the train split")]
    UnknownLabel {
        path: String,
        split: &'static str,
        row: usize,
        value: String,
    },
    #[error("`{path}` row {row}: column `{column}` has the category `{value}`, which the train split does not have")]
    UnknownCategory {
        path: String,
        row: usize,
        column: String,
        value: String,
    },
    #[error(transparent)]
    Folder(#[from] crate::image_folder::FolderError),
    #[error("`{path}`: {message}")]
    Image { path: String, message: String },
    #[error("`{path}`: the class is not in the train split `{train}`")]
    UnknownClass { path: String, train: String },
    #[error("the train split is a folder of images, so `{split}` must be one too")]
    MixedInputs { split: String },
    #[error(transparent)]
    Staged(#[from] StagedError),
    #[error("cancelled")]
    Cancelled,
}

impl NormalizeError {
    /// How to fix it, for the renderer to show apart from the message.
    fn hint(&self) -> Option<String> {
        Some(match self {
            NormalizeError::NoInput { .. } => {
                "write `inputs: {train: ..., val: ..., test: ...}`; only `train` is required".into()
            }
            NormalizeError::Table(t) => return t.hint(),
            NormalizeError::Folder(f) => return f.hint(),
            NormalizeError::NotNumeric { column, .. } => {
                format!("encode it instead: `categorical: {{columns: {{{column}: onehot}}}}`")
            }
            NormalizeError::Unsupported { column, .. } => {
                format!("drop it with `drop: [{column}]`, or cast it with `clean`")
            }
            NormalizeError::LabelType { .. } => {
                "use `task: classification`, or cast the column with `clean`".into()
            }
            NormalizeError::ContinuousLabel { column, .. } => format!(
                "set `task: regression` to predict `{column}` as a number; if its values are class ids, cast it to text or integers with `clean`"
            ),
            NormalizeError::Missing { column, .. } => format!(
                "fill it from the train split with `impute: {{columns: {{{column}: median}}}}` (or `mode` for text), or drop such rows with `clean`'s `missing: {{{column}: drop}}`"
            ),
            NormalizeError::FillType { column, .. } => format!(
                "fill text columns with their most frequent value: `impute: {{columns: {{{column}: mode}}}}`"
            ),
            NormalizeError::NothingToImpute { column, .. } => {
                format!("drop the column with `drop: [{column}]`")
            }
            NormalizeError::Infinite { .. } => "a model cannot be fed infinite values; remove those rows or replace the values before `normalize`".into(),
            NormalizeError::UnknownLabel { .. } => "the model can only predict classes it was trained on; split with `method: stratified`".into(),
            NormalizeError::UnknownCategory { .. } => "`unknown_category: ignore` encodes it as all zeros (one-hot) or -1 (ordinal)".into(),
            NormalizeError::Image { .. } => "`clean` drops files that do not decode; run it first".into(),
            NormalizeError::UnknownClass { .. } => "the model can only predict classes it was trained on; split with `split`, which keeps every class in train".into(),
            NormalizeError::MixedInputs { .. } => {
                "give `normalize` the three outputs of one `split` stage".into()
            }
            NormalizeError::Config(_)
            | NormalizeError::NoOutput(_)
            | NormalizeError::EmptyTrain { .. }
            | NormalizeError::Staged(_)
            | NormalizeError::Cancelled => return None,
        })
    }

    /// The error with its row number counted from `by` rows earlier: an error found in one
    /// piece of a table, named by its row in the whole table.
    fn shifted(self, by: usize) -> NormalizeError {
        match self {
            NormalizeError::Missing { path, row, column } => NormalizeError::Missing {
                path,
                row: row + by,
                column,
            },
            NormalizeError::Infinite {
                path,
                row,
                column,
                value,
            } => NormalizeError::Infinite {
                path,
                row: row + by,
                column,
                value,
            },
            NormalizeError::UnknownCategory {
                path,
                row,
                column,
                value,
            } => NormalizeError::UnknownCategory {
                path,
                row: row + by,
                column,
                value,
            },
            other => other,
        }
    }
}

fn maybe(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
}

impl From<NormalizeError> for StageError {
    fn from(e: NormalizeError) -> StageError {
        StageError::new(e.to_string()).hint_opt(e.hint())
    }
}

impl Stage for Normalize {
    fn kind(&self) -> &'static str {
        "normalize"
    }
    /// 2: image parts hold `files.json`.
    fn version(&self) -> u32 {
        2
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["train", "val", "test", PREPROCESS]
    }
    /// The parts are folders of `.npy` files.
    fn output_extension(&self, output: &str, _inputs: &[&str]) -> Option<&'static str> {
        (output == PREPROCESS).then_some("json")
    }
    /// `prepare` sees `with:` but not the inputs: it parses `with:` for both modes, and reports
    /// the image mode's problems for a `with:` naming an image option, the table mode's for any
    /// other; `run` takes the parse of its mode.
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&["train"]],
            optional: &["val", "test"],
        })
    }
    fn prepare(&self, with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
        let for_images = with.as_object().is_some_and(|m| {
            m.keys()
                .any(|k| images::ImageNormalizeConfig::is_image_key(k))
        });
        NormalizeModes::prepare(
            NormalizeConfig::parse(with),
            images::ImageNormalizeConfig::parse(with),
            for_images,
        )
    }
    fn with_schema(&self) -> Option<serde_json::Value> {
        // Image options select the image mode, any other `with:` is the table mode's.
        Some(serde_json::json!({"anyOf": [
            crate::fields::schema(config::FIELDS, config::EXAMPLES),
            crate::fields::schema(images::FIELDS, images::EXAMPLES),
        ]}))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        Ok(run(ctx, ctx.config::<NormalizeModes>()?)?)
    }
}

fn run(ctx: &StageContext<'_>, modes: &NormalizeModes) -> Result<(), NormalizeError> {
    if !ctx.inputs.contains_key("train") {
        return Err(NormalizeError::NoInput { suggestion: None });
    }
    if ctx
        .inputs
        .get("train")
        .is_some_and(|p| images::is_folder(p))
    {
        for (split, path) in &ctx.inputs {
            if !images::is_folder(path) {
                return Err(NormalizeError::MixedInputs {
                    split: split.clone(),
                });
            }
        }
        return images::run(ctx, &modes.images);
    }
    let _memory = table::MemoryScope::enter();
    let config = modes
        .table
        .as_ref()
        .map_err(|problems| NormalizeError::Config(crate::problems::one_line(problems)))?;
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(NormalizeError::Cancelled)
        } else {
            Ok(())
        }
    };

    // Each split as it was read, in pieces: fitted and encoded a piece at a time, never joined.
    let mut tables: Vec<(&'static str, Option<Pieces>)> = Vec::new();
    for split in SPLITS {
        let table = match ctx.inputs.get(split) {
            Some(path) => Some(Pieces::read(path, &relative(&ctx.workspace, path))?),
            None => None,
        };
        tables.push((split, table));
    }
    step(1.0, "read the splits".into())?;

    let train = tables[0].1.as_ref().expect("`train` was checked above");
    let fitted = fit::fit(config, train)?;
    // Every split is encoded by the artifact as read back from its own text, exactly as a later
    // consumer will read it, so that re-applying the file reproduces `features.npy` bit for bit.
    let text = fitted.to_json();
    let artifact = Preprocess::from_json(&text).expect("the artifact reads back");
    step(
        2.0,
        format!(
            "fitted {} features on the train split",
            artifact.features.len()
        ),
    )?;

    let mut staged = Staged::new(&ctx.scratch);
    for (i, (split, table)) in tables.iter().enumerate() {
        let dest = ctx
            .outputs
            .get(*split)
            .ok_or(NormalizeError::NoOutput(SPLITS[i]))?;
        let dir = staged.dir_for(split, dest)?;
        let features = dir.join(FEATURES);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| NormalizeError::Staged(StagedError::Write { path, source })
        };
        let mut file = OutputFile::create(&features).map_err(io(&features))?;
        let rows = table.as_ref().map_or(0, Pieces::rows);
        let width = artifact.features.len();
        npy::write_f32_header(&mut file, rows, width).map_err(io(&features))?;
        let labels = match table {
            Some(table) if rows > 0 => encode::encode(&artifact, table, SPLITS[i], |piece| {
                npy::write_values(&mut file, piece).map_err(io(&features))
            })?,
            _ => encode::Labels::empty(artifact.label.task),
        };
        let path = dir.join(LABELS);
        OutputFile::create(&path)
            .and_then(|mut file| labels.write(&mut file))
            .map_err(io(&path))?;
        if let Some(ids) = table
            .as_ref()
            .and_then(|t| row_id::ids(&t.schema, &t.batches))
        {
            let path = dir.join(ROWS);
            OutputFile::create(&path)
                .and_then(|mut file| npy::write_vector(&mut file, &ids))
                .map_err(io(&path))?;
        }
        step(
            3.0 + i as f64 * 0.5,
            format!("wrote {rows} rows of the {split} split"),
        )?;
    }
    let dest = ctx
        .outputs
        .get(PREPROCESS)
        .ok_or(NormalizeError::NoOutput(PREPROCESS))?;
    staged.write(PREPROCESS, dest, text.as_bytes())?;
    step(STEPS, "wrote the preprocess artifact".into())?;
    staged.commit()?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), NormalizeError> {
    std::fs::write(path, bytes).map_err(|source| {
        NormalizeError::Staged(StagedError::Write {
            path: path.display().to_string(),
            source,
        })
    })
}
