//! Encoding: one table (any split) through a fitted [`Preprocess`] into the arrays written as
//! `.npy`, with the column lookups `fit` shares. Every error names the split's file, the row and
//! the column.

use super::preprocess::{Preprocess, Task, Unknown};
use super::NormalizeError;
use crate::npy;
use crate::table::hash::TextHash;
use crate::table::{Pieces, Table};
use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Float64Type};
use rayon::prelude::*;
use std::collections::HashMap;

/// The labels of one split: class codes (classification) or values (regression).
#[derive(Debug, PartialEq)]
pub(super) enum Labels {
    Classes(Vec<i64>),
    Values(Vec<f32>),
}

impl Labels {
    /// No rows, of the kind `task` gives.
    pub(super) fn empty(task: Task) -> Labels {
        match task {
            Task::Classification => Labels::Classes(Vec::new()),
            Task::Regression => Labels::Values(Vec::new()),
        }
    }

    /// Writes `labels.npy` to `out`.
    pub(super) fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            Labels::Classes(c) => npy::write_vector(out, c),
            Labels::Values(v) => npy::write_vector(out, v),
        }
    }
}

/// What becomes of a missing (empty or NaN) numeric value.
#[derive(Debug, Clone, Copy)]
pub(super) enum OnMissing {
    /// It is an error.
    Fail,
    /// It becomes this value.
    Fill(f64),
    /// It is left out (the values a fill is fitted from).
    Skip,
}

/// Column `name` as numbers; `method` names what needs them, in the error for a text column.
/// Empty values and NaN are errors unless `on_missing` fills or skips them, and infinities
/// always are: a model cannot be fed them. An infinity would also break the fitted artifact,
/// whose JSON has no number for it.
pub(super) fn numbers(
    table: &Table,
    name: &str,
    method: &'static str,
    on_missing: OnMissing,
) -> Result<ScalarBuffer<f64>, NormalizeError> {
    let column = table.batch.column(table.column_index(name)?);
    if !column.data_type().is_numeric() {
        return Err(NormalizeError::NotNumeric {
            path: table.source.clone(),
            column: name.to_string(),
            data_type: column.data_type().clone(),
            method,
        });
    }
    let cast = arrow::compute::cast(column, &DataType::Float64).map_err(|_| {
        NormalizeError::NotNumeric {
            path: table.source.clone(),
            column: name.to_string(),
            data_type: column.data_type().clone(),
            method,
        }
    })?;
    let values = cast.as_primitive::<Float64Type>();
    let present = |row: usize| values.is_valid(row) && !values.value(row).is_nan();
    if !matches!(on_missing, OnMissing::Fail) {
        if let Some(row) = values.iter().position(|x| x.is_some_and(f64::is_infinite)) {
            return Err(NormalizeError::Infinite {
                path: table.source.clone(),
                row: row + 1,
                column: name.to_string(),
                value: values.value(row),
            });
        }
    }
    match on_missing {
        OnMissing::Fail => {}
        OnMissing::Fill(fill) => {
            return Ok((0..values.len())
                .map(|row| {
                    if present(row) {
                        values.value(row)
                    } else {
                        fill
                    }
                })
                .collect())
        }
        OnMissing::Skip => {
            return Ok((0..values.len())
                .filter(|&row| present(row))
                .map(|row| values.value(row))
                .collect())
        }
    }
    let bad = match values.nulls() {
        Some(nulls) if nulls.null_count() > 0 => {
            values.iter().position(|x| x.is_none_or(|x| !x.is_finite()))
        }
        _ => values.values().iter().position(|x| !x.is_finite()),
    };
    match bad {
        Some(row) if values.is_valid(row) && values.value(row).is_infinite() => {
            Err(NormalizeError::Infinite {
                path: table.source.clone(),
                row: row + 1,
                column: name.to_string(),
                value: values.value(row),
            })
        }
        Some(row) => Err(missing(table, row, name)),
        None => Ok(values.values().clone()),
    }
}

/// Each value's index among `categories` (sorted and distinct, as `fit` makes them), or -1 for a
/// value that is not one of them; `text` has no nulls. On every core; a few categories are
/// compared with each (cheaper than hashing), more are looked up by hash.
pub(super) fn codes(text: &StringArray, categories: &[String]) -> Vec<i32> {
    const FEW: usize = 8;
    let index: HashMap<&str, i32, TextHash> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i32))
        .collect();
    let find = |value: &str| -> i32 {
        if categories.len() <= FEW {
            categories
                .iter()
                .position(|c| c == value)
                .map_or(-1, |i| i as i32)
        } else {
            index.get(value).copied().unwrap_or(-1)
        }
    };
    let mut out = vec![0i32; text.len()];
    const BLOCK: usize = 1 << 16;
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = find(text.value(block * BLOCK + i));
            }
        });
    out
}

/// Column `name` as a `Utf8` array without nulls, for categories: `1` in a CSV and `1` in a
/// Parquet integer column are the same category. A null becomes `fill`, or is an error without
/// one.
pub(super) fn texts(
    table: &Table,
    name: &str,
    fill: Option<&str>,
) -> Result<ArrayRef, NormalizeError> {
    let column = table.batch.column(table.column_index(name)?);
    let cast =
        arrow::compute::cast(column, &DataType::Utf8).map_err(|_| NormalizeError::Unsupported {
            path: table.source.clone(),
            column: name.to_string(),
            data_type: column.data_type().clone(),
        })?;
    match (
        cast.logical_nulls().and_then(|n| n.iter().position(|v| !v)),
        fill,
    ) {
        (Some(_), Some(fill)) => {
            let filled: StringArray = cast
                .as_string::<i32>()
                .iter()
                .map(|v| Some(v.unwrap_or(fill)))
                .collect();
            Ok(std::sync::Arc::new(filled))
        }
        (Some(row), None) => Err(missing(table, row, name)),
        (None, _) => Ok(cast),
    }
}

fn missing(table: &Table, row: usize, column: &str) -> NormalizeError {
    NormalizeError::Missing {
        path: table.source.clone(),
        row: row + 1,
        column: column.to_string(),
    }
}

/// Encodes every row of `table`, the `split` split.
/// Writes the features of every row of `table` (one piece) into `out`, row-major; errors name
/// rows of the piece.
fn encode_features(
    artifact: &Preprocess,
    table: &Table,
    out: &mut [f32],
) -> Result<(), NormalizeError> {
    // On every core; the first error in column order is the one reported.
    let numeric = artifact
        .numeric
        .par_iter()
        .map(|c| {
            let on_missing = c
                .fill
                .as_ref()
                .map_or(OnMissing::Fail, |f| OnMissing::Fill(f.value));
            numbers(table, &c.name, c.method.name(), on_missing)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let categorical = artifact
        .categorical
        .iter()
        .map(|c| texts(table, &c.name, c.fill.as_ref().map(|f| f.value.as_str())))
        .collect::<Result<Vec<_>, _>>()?;
    let coded: Vec<Vec<i32>> = artifact
        .categorical
        .par_iter()
        .zip(&categorical)
        .map(|(c, text)| codes(text.as_string(), &c.categories))
        .collect();
    if artifact.unknown_category == Unknown::Error {
        // The first row with an unknown category, and in it the first such column.
        let first = coded
            .iter()
            .enumerate()
            .filter_map(|(c, codes)| Some((codes.iter().position(|&k| k < 0)?, c)))
            .min();
        if let Some((row, c)) = first {
            return Err(NormalizeError::UnknownCategory {
                path: table.source.clone(),
                row: row + 1,
                column: artifact.categorical[c].name.clone(),
                value: categorical[c].as_string::<i32>().value(row).to_string(),
            });
        }
    }
    let width = artifact.features.len();
    // Blocks of rows on every core.
    const BLOCK: usize = 1 << 14;
    out.par_chunks_mut((BLOCK * width).max(1))
        .enumerate()
        .for_each(|(block, out)| {
            for (i, out) in out.chunks_exact_mut(width).enumerate() {
                let row = block * BLOCK + i;
                artifact.write_row(
                    |c| numeric[c][row],
                    |c| usize::try_from(coded[c][row]).ok(),
                    out,
                );
            }
        });
    Ok(())
}

/// Column `name` of every piece as numbers (see [`numbers`]); errors name rows of the whole
/// table.
pub(super) fn piece_numbers(
    pieces: &Pieces,
    name: &str,
    method: &'static str,
    on_missing: OnMissing,
) -> Result<Vec<ScalarBuffer<f64>>, NormalizeError> {
    pieces
        .tables()
        .map(|(first, table)| {
            numbers(&table, name, method, on_missing).map_err(|e| e.shifted(first))
        })
        .collect()
}

/// Column `name` of every piece as text (see [`texts`]); errors name rows of the whole table.
pub(super) fn piece_texts(
    pieces: &Pieces,
    name: &str,
    fill: Option<&str>,
) -> Result<Vec<ArrayRef>, NormalizeError> {
    pieces
        .tables()
        .map(|(first, table)| texts(&table, name, fill).map_err(|e| e.shifted(first)))
        .collect()
}

/// Encodes every row of `pieces`, the `split` split, a piece at a time, handing each piece's
/// features (row-major) to `sink` in row order, and returns the labels. The pieces share one
/// buffer: the split's features are never whole in memory, and fresh memory (which the kernel
/// must find and zero, page by page) is taken once, for the largest piece.
pub(super) fn encode(
    artifact: &Preprocess,
    pieces: &Pieces,
    split: &'static str,
    mut sink: impl FnMut(&[f32]) -> Result<(), NormalizeError>,
) -> Result<Labels, NormalizeError> {
    let width = artifact.features.len();
    let mut features: Vec<f32> = Vec::new();
    for (first, table) in pieces.tables() {
        // Every value is written by `encode_features`; only growth is zeroed.
        features.resize(table.rows() * width, 0.0);
        encode_features(artifact, &table, &mut features).map_err(|e| e.shifted(first))?;
        sink(&features)?;
    }

    let label = &artifact.label;
    match (&label.task, &label.classes) {
        (Task::Classification, Some(names)) => {
            let mut labels = Vec::with_capacity(pieces.rows());
            let mut first = 0;
            for keys in pieces.keys(&label.column, "label")? {
                let keys = keys.as_string::<i32>();
                let found = codes(keys, names);
                if let Some(row) = found.iter().position(|&k| k < 0) {
                    return Err(NormalizeError::UnknownLabel {
                        path: pieces.source.clone(),
                        split,
                        row: first + row + 1,
                        value: keys.value(row).to_string(),
                    });
                }
                labels.extend(found.into_iter().map(i64::from));
                first += keys.len();
            }
            Ok(Labels::Classes(labels))
        }
        _ => {
            let index = pieces.column_index(&label.column)?;
            let data_type = pieces.schema.field(index).data_type();
            if !data_type.is_numeric() {
                return Err(NormalizeError::LabelType {
                    path: pieces.source.clone(),
                    column: label.column.clone(),
                    data_type: data_type.clone(),
                });
            }
            let mut labels = Vec::with_capacity(pieces.rows());
            for values in piece_numbers(pieces, &label.column, "regression", OnMissing::Fail)? {
                labels.extend(values.iter().map(|&x| x as f32));
            }
            Ok(Labels::Values(labels))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::NormalizeConfig;
    use super::super::fit;
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn piece(x: Vec<Option<f64>>, y: Vec<&str>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
            ("y", Arc::new(StringArray::from(y)) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn a_table_in_pieces_encodes_as_one_and_names_rows_of_the_whole() {
        let config = NormalizeConfig::parse(&serde_json::json!({"label": "y"})).unwrap();
        let a = piece(vec![Some(1.0), Some(2.0)], vec!["p", "q"]);
        let b = piece(vec![Some(4.0), Some(8.0), Some(5.0)], vec!["q", "p", "q"]);
        let whole = arrow::compute::concat_batches(&a.schema(), [&a, &b]).unwrap();
        let schema = a.schema();
        let pieces = |batches: Vec<RecordBatch>| Pieces {
            schema: schema.clone(),
            batches,
            source: "t.parquet".into(),
        };
        let (split, joined) = (pieces(vec![a.clone(), b]), pieces(vec![whole]));
        let artifact = fit::fit(&config, &split).unwrap();
        assert_eq!(artifact, fit::fit(&config, &joined).unwrap());
        // Features as handed over, a piece at a time.
        let run = |pieces: &Pieces| {
            let mut features = Vec::new();
            let labels = encode(&artifact, pieces, "train", |f| {
                features.extend_from_slice(f);
                Ok(())
            })
            .unwrap();
            (features, labels)
        };
        let (x, y) = (run(&split), run(&joined));
        assert_eq!(x, y);
        assert_eq!(x.0.len(), 5 * artifact.features.len());
        assert_eq!(x.1, Labels::Classes(vec![0, 1, 1, 0, 1]));

        // A missing value in the second piece is named by its row in the whole table.
        let bad = piece(vec![Some(3.0), None], vec!["p", "q"]);
        let Err(e) = encode(&artifact, &pieces(vec![a, bad]), "val", |_| Ok(())) else {
            panic!("a missing value must fail");
        };
        assert_eq!(
            e.to_string(),
            NormalizeError::Missing {
                path: "t.parquet".into(),
                row: 4,
                column: "x".into(),
            }
            .to_string()
        );
    }
}
