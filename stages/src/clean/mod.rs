//! The `clean` stage: one table in, a cleaned Parquet table and a JSON report out; or, given an
//! input named `images` instead, an ImageFolder in and a cleaned ImageFolder (in the output still
//! named `table`, the kind's one data output) and a JSON report out (`images`).
//!
//! `config` parses `with:`, `expr` the `filter:` expression, `rules/` holds one file per rule;
//! this file reads the input (in the pieces it was read in, never joined), checks every column
//! the config names against it, applies the rules in their fixed order, and writes both outputs
//! through `Staged` so that a failure leaves neither.

mod config;
pub(crate) mod expr;
mod images;
pub(crate) use images::{parse_size, size_schema};
mod leakage;
mod rules;

use crate::image_folder::FolderError;
use crate::modes::Modes;
use crate::problems::relative;
use crate::staged::{Staged, StagedError};
use crate::table::{self, row_id, TableError};
use arrow::array::{ArrayRef, Int64Array};
use arrow::record_batch::RecordBatch;
use config::CleanConfig;
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use sluice_runner::stage::{ConfigProblem, Inputs};
use sluice_runner::{Prepared, Stage, StageContext, StageError};

/// `with:` read for tables and for images.
type CleanModes = Modes<CleanConfig, images::ImageCleanConfig>;
use std::sync::Arc;

const INPUT: &str = "table";
const IMAGES: &str = "images";
const TABLE: &str = "table";
const REPORT: &str = "report";
const STEPS: f64 = 8.0;
/// Rows filtered as one task when the kept rows are written.
const UNIT: usize = 1 << 17;

/// The `clean` stage kind.
pub(crate) struct Clean;

#[derive(Debug, thiserror::Error)]
enum CleanError {
    #[error("{0}")]
    Config(String),
    #[error("`clean` needs an input named `table` (or `images`){}", .suggestion.as_ref().map(|s| format!("; {s}")).unwrap_or_default())]
    NoInput { suggestion: Option<String> },
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error("the pipeline gave no path for output `{0}`")]
    NoOutput(&'static str),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("`{path}`{}{source}", if matches!(.source, rules::RuleError::Cast { .. }) { " " } else { ": " })]
    Rule {
        path: String,
        #[source]
        source: rules::RuleError,
    },
    #[error(transparent)]
    Staged(#[from] StagedError),
    #[error("cancelled")]
    Cancelled,
}

impl From<CleanError> for StageError {
    fn from(e: CleanError) -> StageError {
        let hint = match &e {
            CleanError::NoInput { .. } => Some(crate::problems::TABLE_OR_IMAGES_HINT.to_string()),
            CleanError::Folder(f) => f.hint(),
            CleanError::Table(t) => t.hint(),
            _ => None,
        };
        StageError::new(e.to_string()).hint_opt(hint)
    }
}

impl Stage for Clean {
    fn kind(&self) -> &'static str {
        "clean"
    }
    /// 2: Parquet written in parallel, floats without a dictionary; 3: floats uncompressed;
    /// 4: row groups of 1,048,576 kept rows (the same data each time); 5: the source row id
    /// column `sluice_row`.
    fn version(&self) -> u32 {
        5
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[TABLE, REPORT]
    }
    /// Tables are Parquet; in the image mode the table is a folder.
    fn output_extension(&self, output: &str, inputs: &[&str]) -> Option<&'static str> {
        match output {
            TABLE if inputs.contains(&IMAGES) => None,
            TABLE => Some("parquet"),
            _ => Some("json"),
        }
    }
    /// One table or one image folder: which one decides the mode.
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&[INPUT, IMAGES]],
            optional: &[],
        })
    }
    /// `prepare` sees `with:` but not the inputs: it parses `with:` for both modes, and reports
    /// the image mode's problems for a `with:` naming an image option, the table mode's for any
    /// other; `run` takes the parse of its mode.
    fn prepare(&self, with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
        let for_images = with
            .as_object()
            .is_some_and(|m| m.keys().any(|k| images::ImageCleanConfig::is_image_key(k)));
        CleanModes::prepare(
            CleanConfig::parse(with),
            images::ImageCleanConfig::parse(with),
            for_images,
        )
    }
    /// Rules fitted on every row, test rows included (see `leakage`).
    fn warnings(&self, prepared: &Prepared) -> Vec<ConfigProblem> {
        match prepared.get::<CleanModes>().map(|m| &m.table) {
            Some(Ok(config)) => leakage::warnings(config),
            _ => Vec::new(),
        }
    }
    fn with_schema(&self) -> Option<serde_json::Value> {
        // Image options select the image mode, any other `with:` is the table mode's.
        Some(serde_json::json!({"anyOf": [
            crate::fields::schema(config::FIELDS, config::EXAMPLES),
            crate::fields::schema(images::FIELDS, images::EXAMPLES),
        ]}))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        Ok(run(ctx, ctx.config::<CleanModes>()?)?)
    }
}

/// Every column the config names, so that all are checked against the file before any rule runs.
fn named_columns(config: &CleanConfig) -> Vec<&str> {
    let mut names: Vec<&str> = config.drop_columns.iter().map(String::as_str).collect();
    names.extend(config.cast.iter().map(|(c, _)| c.as_str()));
    if let Some((_, e)) = &config.filter {
        names.extend(e.columns());
    }
    if let Some(m) = &config.missing {
        names.extend(m.columns.iter().map(|(c, _)| c.as_str()));
    }
    if let Some(o) = &config.outliers {
        names.extend(o.columns.iter().map(String::as_str));
    }
    names
}

fn run(ctx: &StageContext<'_>, modes: &CleanModes) -> Result<(), CleanError> {
    if let Some(folder) = ctx.inputs.get(IMAGES) {
        return images::run(ctx, folder, &modes.images);
    }
    let _memory = table::MemoryScope::enter();
    let config = modes
        .table
        .as_ref()
        .map_err(|problems| CleanError::Config(crate::problems::one_line(problems)))?;
    let input = ctx.inputs.get(INPUT).ok_or_else(|| CleanError::NoInput {
        suggestion: sluice_runner::diag::did_you_mean(INPUT, ctx.inputs.keys().map(String::as_str)),
    })?;
    let source = relative(&ctx.workspace, input);
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(CleanError::Cancelled)
        } else {
            Ok(())
        }
    };
    let rule_error = |e| CleanError::Rule {
        path: source.clone(),
        source: e,
    };

    let pieces = table::Pieces::read(input, &source)?;
    let rows_in = pieces.rows();
    // The source row ids stay out of the rules' way (a duplicate is a duplicate whatever its
    // row), follow the rows `filter` keeps, and are written back beside the rows kept.
    let (mut pieces, ids) = row_id::detach(pieces)?;
    let mut ids = ids.unwrap_or_else(|| (0..rows_in as i64).collect());
    step(1.0, format!("read {rows_in} rows from {source}"))?;
    for name in named_columns(config) {
        pieces.column_index(name)?;
    }

    let mut report = Map::new();
    report.insert("input".into(), json!(source));
    report.insert("rows_in".into(), json!(rows_in));
    if !config.drop_columns.is_empty() {
        let (p, r) = rules::drop_columns(&pieces, &config.drop_columns);
        pieces = p;
        report.insert("drop_columns".into(), r);
    }
    step(2.0, "dropped columns".into())?;
    if !config.cast.is_empty() {
        let (p, r) = rules::cast(pieces, &config.cast).map_err(rule_error)?;
        pieces = p;
        report.insert("cast".into(), r);
    }
    step(3.0, "cast columns".into())?;
    if let Some((text, expr)) = &config.filter {
        let with_ids =
            row_id::attach(pieces, &ids).map_err(|e| rule_error(rules::RuleError::Arrow(e)))?;
        let (p, r) = rules::filter(&with_ids, text, expr).map_err(rule_error)?;
        let (p, kept) = row_id::detach(p)?;
        pieces = p;
        ids = kept.expect("`filter` keeps every column, the ids included");
        report.insert("filter".into(), r);
    }
    step(4.0, "filtered rows".into())?;
    // From here on rules narrow `keep`, the rows still in; one filter drops the others at the end.
    let mut keep = None;
    if let Some(missing) = &config.missing {
        let (p, k, r) = rules::missing(pieces, missing).map_err(rule_error)?;
        (pieces, keep) = (p, k);
        report.insert("missing".into(), r);
    }
    step(5.0, "handled missing values".into())?;
    if config.drop_duplicates {
        let (k, r) = rules::duplicates(&pieces, keep.as_ref()).map_err(rule_error)?;
        keep = Some(k);
        report.insert("duplicates".into(), r);
    }
    step(6.0, "dropped duplicate rows".into())?;
    if let Some(outliers) = &config.outliers {
        let (p, k, r) = rules::outliers(pieces, keep, outliers).map_err(rule_error)?;
        (pieces, keep) = (p, k);
        report.insert("outliers".into(), r);
    }
    let keep = keep.filter(|k| k.false_count() > 0);
    let rows_out = keep.as_ref().map_or(pieces.rows(), |k| k.true_count());
    report.insert("rows_out".into(), json!(rows_out));

    let mut staged = Staged::new(&ctx.scratch);
    let dest = ctx.outputs.get(TABLE).ok_or(CleanError::NoOutput(TABLE))?;
    let tmp = staged.path_for(TABLE, dest)?;
    let out_schema = row_id::with_id_field(&pieces.schema);
    let mut out = table::io::ParquetOut::create(&tmp, out_schema.clone())?;
    // The rows still in, a row group's worth at a time, filtered on every core: never a second
    // copy of the table. Pieces are freed once written, and their memory serves the next filter.
    let mut units = Vec::new();
    let mut first = 0;
    for piece in pieces.batches {
        for start in (0..piece.num_rows()).step_by(UNIT) {
            let len = UNIT.min(piece.num_rows() - start);
            units.push((piece.slice(start, len), first + start));
        }
        first += piece.num_rows();
    }
    let mut units = units.into_iter().peekable();
    while units.peek().is_some() {
        let mut group = Vec::new();
        let mut rows = 0;
        while rows < table::io::ROW_GROUP {
            let Some(unit) = units.next() else { break };
            rows += unit.0.num_rows();
            group.push(unit);
        }
        let group = group
            .into_par_iter()
            .map(|(unit, first)| {
                let n = unit.num_rows();
                let unit_ids = Int64Array::from(ids[first..first + n].to_vec());
                let (unit, unit_ids) = match &keep {
                    Some(keep) => {
                        let keep = keep.slice(first, n);
                        let ids = arrow::compute::filter(&unit_ids, &keep)?;
                        (arrow::compute::filter_record_batch(&unit, &keep)?, ids)
                    }
                    None => (unit, Arc::new(unit_ids) as ArrayRef),
                };
                let mut columns = unit.columns().to_vec();
                columns.push(unit_ids);
                RecordBatch::try_new(out_schema.clone(), columns)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| rule_error(rules::RuleError::Arrow(e)))?;
        for unit in group.iter().filter(|u| u.num_rows() > 0) {
            out.write(unit)?;
        }
    }
    out.finish()?;
    step(7.0, format!("wrote {rows_out} rows"))?;

    let dest = ctx
        .outputs
        .get(REPORT)
        .ok_or(CleanError::NoOutput(REPORT))?;
    let mut text = serde_json::to_string_pretty(&sort(Value::Object(report)))
        .expect("JSON values always serialize");
    text.push('\n');
    staged.write(REPORT, dest, text.as_bytes())?;
    step(STEPS, "wrote the report".into())?;
    staged.commit()?;
    Ok(())
}

/// `value` with every mapping's keys in sorted order, whatever map type serde_json was built
/// with, so that the same run always gives the same bytes.
fn sort(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            let sorted: std::collections::BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
        v => v,
    }
}
