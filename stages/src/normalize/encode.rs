//! Encoding: one table (any split) through a fitted [`Preprocess`] into the arrays written as
//! `.npy`, with the column lookups `fit` shares. Every error names the split's file, the row and
//! the column.

use super::preprocess::{ApplyError, Preprocess, Task};
use super::NormalizeError;
use crate::npy;
use crate::table::Table;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};

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

    pub(super) fn features_npy(&self, width: usize) -> Vec<u8> {
        npy::f32_matrix(self.rows, width, &self.features)
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

/// Column `name` as text, for categories: `1` in a CSV and `1` in a Parquet integer column are
/// the same category.
pub(super) fn texts(table: &Table, name: &str) -> Result<Vec<String>, NormalizeError> {
    let column = table.batch.column(table.column_index(name)?);
    let cast =
        arrow::compute::cast(column, &DataType::Utf8).map_err(|_| NormalizeError::Unsupported {
            path: table.source.clone(),
            column: name.to_string(),
            data_type: column.data_type().clone(),
        })?;
    let text = cast.as_string::<i32>();
    (0..text.len())
        .map(|row| {
            if text.is_null(row) {
                Err(missing(table, row, name))
            } else {
                Ok(text.value(row).to_string())
            }
        })
        .collect()
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
    let numeric = artifact
        .numeric
        .iter()
        .map(|c| numbers(table, &c.name, c.method.name()))
        .collect::<Result<Vec<_>, _>>()?;
    let categorical = artifact
        .categorical
        .iter()
        .map(|c| texts(table, &c.name))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = table.rows();
    let mut features = Vec::with_capacity(rows * artifact.features.len());
    let (mut row_numbers, mut row_texts) = (Vec::new(), Vec::new());
    for row in 0..rows {
        row_numbers.clear();
        row_numbers.extend(numeric.iter().map(|c| c[row]));
        row_texts.clear();
        row_texts.extend(categorical.iter().map(|c| c[row].as_str()));
        artifact
            .encode(&row_numbers, &row_texts, &mut features)
            .map_err(|e| match e {
                ApplyError::UnknownCategory { column, value } => NormalizeError::UnknownCategory {
                    path: table.source.clone(),
                    row: row + 1,
                    column,
                    value,
                },
                other => NormalizeError::Config(other.to_string()),
            })?;
    }

    let label = &artifact.label;
    let (mut classes, mut values) = (Vec::new(), Vec::new());
    match (&label.task, &label.classes) {
        (Task::Classification, Some(names)) => {
            for (row, value) in table.keys(&label.column, "label")?.into_iter().enumerate() {
                let code =
                    names
                        .binary_search(&value)
                        .map_err(|_| NormalizeError::UnknownLabel {
                            path: table.source.clone(),
                            split,
                            row: row + 1,
                            value,
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
