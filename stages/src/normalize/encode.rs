//! Encoding: one table (any split) through a fitted [`Preprocess`] into the arrays written as
//! `.npy`, with the column lookups `fit` shares. Every error names the split's file, the row and
//! the column.

use super::preprocess::{ApplyError, Preprocess, Task};
use super::NormalizeError;
use crate::npy;
use crate::table::Table;
use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Float64Type};
use rayon::prelude::*;

/// The arrays of one split.
pub(super) struct Arrays {
    pub(super) rows: usize,
    /// Row-major `[rows, features]`.
    pub(super) features: Vec<f32>,
    /// Class codes (classification).
    pub(super) classes: Vec<i64>,
    /// Label values (regression).
    pub(super) values: Vec<f32>,
}

impl Arrays {
    /// A split with no rows: `[0, F]` features and `[0]` labels.
    pub(super) fn empty() -> Arrays {
        Arrays {
            rows: 0,
            features: Vec::new(),
            classes: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Writes `features.npy` to `out`.
    pub(super) fn write_features(
        &self,
        out: &mut impl std::io::Write,
        width: usize,
    ) -> std::io::Result<()> {
        npy::write_f32_matrix(out, self.rows, width, &self.features)
    }
}

/// Column `name` as numbers; `method` names what needs them, in the error for a text column.
/// Empty values and NaN are errors: a model cannot be fed them, and `clean` can fill them.
pub(super) fn numbers(
    table: &Table,
    name: &str,
    method: &'static str,
) -> Result<Vec<f64>, NormalizeError> {
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
    (0..values.len())
        .map(|row| {
            if values.is_null(row) || values.value(row).is_nan() {
                Err(missing(table, row, name))
            } else {
                Ok(values.value(row))
            }
        })
        .collect()
}

/// Column `name` as a `Utf8` array without nulls, for categories: `1` in a CSV and `1` in a
/// Parquet integer column are the same category.
pub(super) fn texts(table: &Table, name: &str) -> Result<ArrayRef, NormalizeError> {
    let column = table.batch.column(table.column_index(name)?);
    let cast =
        arrow::compute::cast(column, &DataType::Utf8).map_err(|_| NormalizeError::Unsupported {
            path: table.source.clone(),
            column: name.to_string(),
            data_type: column.data_type().clone(),
        })?;
    match cast.logical_nulls().and_then(|n| n.iter().position(|v| !v)) {
        Some(row) => Err(missing(table, row, name)),
        None => Ok(cast),
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
pub(super) fn encode(
    artifact: &Preprocess,
    table: &Table,
    split: &'static str,
) -> Result<Arrays, NormalizeError> {
    // On every core; the first error in column order is the one reported.
    let numeric = artifact
        .numeric
        .par_iter()
        .map(|c| numbers(table, &c.name, c.method.name()))
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let categorical = artifact
        .categorical
        .iter()
        .map(|c| texts(table, &c.name))
        .collect::<Result<Vec<_>, _>>()?;
    let categorical: Vec<&StringArray> = categorical.iter().map(|a| a.as_string()).collect();
    let rows = table.rows();
    let width = artifact.features.len();
    let mut features = vec![0f32; rows * width];
    // Blocks of rows on every core; the first failing block holds the first failing row.
    const BLOCK: usize = 1 << 14;
    features
        .par_chunks_mut((BLOCK * width).max(1))
        .enumerate()
        .try_for_each(|(block, out)| {
            let (mut row_numbers, mut row_texts) = (Vec::new(), Vec::new());
            let mut encoded = Vec::with_capacity(out.len());
            let first = block * BLOCK;
            for row in first..(first + BLOCK).min(rows) {
                row_numbers.clear();
                row_numbers.extend(numeric.iter().map(|c| c[row]));
                row_texts.clear();
                row_texts.extend(categorical.iter().map(|c| c.value(row)));
                artifact
                    .encode(&row_numbers, &row_texts, &mut encoded)
                    .map_err(|e| match e {
                        ApplyError::UnknownCategory { column, value } => {
                            NormalizeError::UnknownCategory {
                                path: table.source.clone(),
                                row: row + 1,
                                column,
                                value,
                            }
                        }
                        other => NormalizeError::Config(other.to_string()),
                    })?;
            }
            out.copy_from_slice(&encoded);
            Ok::<(), NormalizeError>(())
        })?;

    let label = &artifact.label;
    let (mut classes, mut values) = (Vec::new(), Vec::new());
    match (&label.task, &label.classes) {
        (Task::Classification, Some(names)) => {
            let keys = table.keys(&label.column, "label")?;
            for (row, value) in crate::table::texts(&keys).into_iter().enumerate() {
                let code = names
                    .binary_search_by(|k| k.as_str().cmp(value))
                    .map_err(|_| NormalizeError::UnknownLabel {
                        path: table.source.clone(),
                        split,
                        row: row + 1,
                        value: value.to_string(),
                    })?;
                classes.push(code as i64);
            }
        }
        _ => {
            let column = table.batch.column(table.column_index(&label.column)?);
            if !column.data_type().is_numeric() {
                return Err(NormalizeError::LabelType {
                    path: table.source.clone(),
                    column: label.column.clone(),
                    data_type: column.data_type().clone(),
                });
            }
            values = numbers(table, &label.column, "regression")?
                .into_iter()
                .map(|x| x as f32)
                .collect();
        }
    }
    Ok(Arrays {
        rows,
        features,
        classes,
        values,
    })
}
