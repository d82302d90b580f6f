//! The `split` stage: one table in, train/val/test Parquet files and a JSON summary out; or, given
//! an input named `images` instead, an ImageFolder in and one ImageFolder per split out
//! (`images`).
//!
//! `config` parses `with:`, `assign` decides which rows go where (pure, seeded), `summary` says
//! what came out; this file reads the input, writes the outputs through `Staged` so that a
//! failure leaves none of them, and turns every failure into one message naming the file.

mod assign;
mod config;
mod images;
mod summary;

use crate::image_folder::FolderError;
use crate::problems::relative;
use crate::staged::{Staged, StagedError};
use crate::table::{self, row_id, TableError};
use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use config::{Method, SplitConfig};
use rayon::prelude::*;
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};

/// `with:` read for tables and for images.
type SplitModes = crate::modes::Modes<SplitConfig, SplitConfig>;

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    Train = 0,
    Val = 1,
    Test = 2,
}

impl Part {
    pub(crate) const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }
}

const INPUT: &str = "table";
const IMAGES: &str = "images";
const SUMMARY: &str = "summary";
const STEPS: f64 = 6.0;

/// The `split` stage kind.
pub(crate) struct Split;

#[derive(Debug, thiserror::Error)]
enum SplitError {
    #[error("{0}")]
    Config(String),
    #[error("`split` needs an input named `table` (or `images`){}", .suggestion.as_ref().map(|s| format!("; {s}")).unwrap_or_default())]
    NoInput { suggestion: Option<String> },
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error("the pipeline gave no path for output `{0}`")]
    NoOutput(&'static str),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("`{path}`: {source}")]
    Assign {
        path: String,
        #[source]
        source: assign::AssignError,
    },
    #[error("cannot select the rows of the {part} split: {source}")]
    Take {
        part: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error(transparent)]
    Staged(#[from] StagedError),
    #[error("cancelled")]
    Cancelled,
}

impl From<SplitError> for StageError {
    fn from(e: SplitError) -> StageError {
        let hint = match &e {
            SplitError::NoInput { .. } => Some(crate::problems::TABLE_OR_IMAGES_HINT.to_string()),
            SplitError::Folder(f) => f.hint(),
            SplitError::Table(t) => t.hint(),
            SplitError::Assign { source, .. } => source.hint(),
            _ => None,
        };
        StageError::new(e.to_string()).hint_opt(hint)
    }
}

impl Stage for Split {
    fn kind(&self) -> &'static str {
        "split"
    }
    /// 2: Parquet written in parallel, floats without a dictionary; 3: floats uncompressed
    /// (the same data each time); 4: the source row id column `sluice_row`.
    fn version(&self) -> u32 {
        4
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["train", "val", "test", SUMMARY]
    }
    /// The parts are Parquet tables, or folders in the image mode.
    fn output_extension(&self, output: &str, inputs: &[&str]) -> Option<&'static str> {
        match output {
            SUMMARY => Some("json"),
            _ if inputs.contains(&IMAGES) => None,
            _ => Some("parquet"),
        }
    }
    /// `prepare` sees `with:` but not the inputs. Every image `with:` is a valid table one
    /// except for a `label` (which image mode refuses when it runs), so the table rules' problems
    /// are reported; both modes' parses are kept, and `run` takes the one for its mode.
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&[INPUT, IMAGES]],
            optional: &[],
        })
    }
    fn prepare(&self, with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
        SplitModes::prepare(SplitConfig::parse(with), images::parse(with), false)
    }
    fn with_schema(&self) -> Option<serde_json::Value> {
        Some(crate::fields::schema(config::FIELDS, config::EXAMPLES))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        Ok(run(ctx, ctx.config::<SplitModes>()?)?)
    }
}

/// Rows `rows` (numbers in the whole table) of a table read in `pieces`, which start at the
/// rows `starts`. The columns are gathered on every core: a split's rows are scattered over the
/// table, so gathering is mostly waiting on memory.
fn pick(
    schema: &SchemaRef,
    pieces: &[&RecordBatch],
    starts: &[usize],
    rows: &[usize],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let indices: Vec<(usize, usize)> = rows.iter().map(|&row| table::locate(starts, row)).collect();
    let columns = (0..schema.fields().len())
        .into_par_iter()
        .map(|column| {
            let arrays: Vec<&dyn Array> =
                pieces.iter().map(|p| p.column(column).as_ref()).collect();
            arrow::compute::interleave(&arrays, &indices)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
}

fn run(ctx: &StageContext<'_>, modes: &SplitModes) -> Result<(), SplitError> {
    if let Some(folder) = ctx.inputs.get(IMAGES) {
        return images::run(ctx, folder, &modes.images);
    }
    let _memory = table::MemoryScope::enter();
    let config = modes
        .table
        .as_ref()
        .map_err(|problems| SplitError::Config(crate::problems::one_line(problems)))?;
    let input = ctx.inputs.get(INPUT).ok_or_else(|| SplitError::NoInput {
        suggestion: sluice_runner::diag::did_you_mean(INPUT, ctx.inputs.keys().map(String::as_str)),
    })?;
    let source = relative(&ctx.workspace, input);
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(SplitError::Cancelled)
        } else {
            Ok(())
        }
    };

    // The row groups as read, never joined: rows are picked from them directly.
    let pieces = table::Pieces::read(input, &source)?;
    row_id::carried(&pieces)?;
    let rows = pieces.rows();
    step(1.0, format!("read {rows} rows from {source}"))?;

    let labels = match &config.label {
        Some(column) => Some(pieces.coded(column, "label")?),
        None => None,
    };
    let groups = match &config.group {
        Some(column) => Some(pieces.coded(column, "group")?),
        None => None,
    };
    let assigned = match (config.method, &labels, &groups) {
        (Method::Random, _, _) => assign::random(rows, &config.ratios, config.seed),
        (Method::Stratified, Some(labels), _) => assign::stratified(
            labels,
            config.label.as_deref().unwrap_or_default(),
            &config.ratios,
            config.seed,
        ),
        (Method::Grouped, _, Some(groups)) => assign::grouped(
            groups,
            config.group.as_deref().unwrap_or_default(),
            &config.ratios,
            config.seed,
        ),
        // `SplitConfig::parse` requires the column each method needs.
        (method, _, _) => {
            return Err(SplitError::Config(format!(
                "`method: {}` is missing its column",
                method.name()
            )))
        }
    }
    .map_err(|e| SplitError::Assign {
        path: source.clone(),
        source: e,
    })?;
    step(2.0, "assigned rows to splits".into())?;

    let starts = pieces.starts();
    let pieces_ref: Vec<&RecordBatch> = pieces.batches.iter().collect();
    let mut staged = Staged::new(&ctx.scratch);
    for (i, part) in Part::ALL.into_iter().enumerate() {
        let dest = ctx
            .outputs
            .get(part.name())
            .ok_or(SplitError::NoOutput(part.name()))?;
        let tmp = staged.path_for(part.name(), dest)?;
        let out_schema = row_id::with_id_field(&pieces.schema);
        let mut out = table::io::ParquetOut::create(&tmp, out_schema.clone())?;
        // A row group's worth of the split's rows at a time: never a copy of the whole split.
        for rows in assigned.rows(part).chunks(table::io::ROW_GROUP) {
            let take = |e| SplitError::Take {
                part: part.name(),
                source: e,
            };
            let batch = pick(&pieces.schema, &pieces_ref, &starts, rows).map_err(take)?;
            let batch = row_id::add_ids(batch, rows, &out_schema).map_err(take)?;
            out.write(&batch)?;
        }
        out.finish()?;
        step(
            3.0 + i as f64,
            format!(
                "wrote {} rows to the {} split",
                assigned.rows(part).len(),
                part.name()
            ),
        )?;
    }

    let summary = summary::build(config, &source, &assigned, labels.as_ref(), groups.as_ref());
    let dest = ctx
        .outputs
        .get(SUMMARY)
        .ok_or(SplitError::NoOutput(SUMMARY))?;
    let mut text = serde_json::to_string_pretty(&summary).expect("JSON values always serialize");
    text.push('\n');
    staged.write(SUMMARY, dest, text.as_bytes())?;
    step(STEPS, "wrote the summary".into())?;
    staged.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn rows_picked_from_pieces_are_the_rows_of_the_whole_table() {
        let whole = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from_iter_values(0..10)) as _),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("r{i}")),
                )) as _,
            ),
        ])
        .unwrap();
        // Pieces of 3, 0, 4 and 3 rows, as row groups of a Parquet file might come.
        let pieces = [
            whole.slice(0, 3),
            whole.slice(3, 0),
            whole.slice(3, 4),
            whole.slice(7, 3),
        ];
        let refs: Vec<&RecordBatch> = pieces.iter().collect();
        let starts = [0, 3, 3, 7];
        let rows = [0, 2, 3, 6, 7, 9];
        let indices = arrow::array::UInt64Array::from_iter_values(rows.iter().map(|&r| r as u64));
        assert_eq!(
            pick(&whole.schema(), &refs, &starts, &rows).unwrap(),
            arrow::compute::take_record_batch(&whole, &indices).unwrap()
        );
    }
}
