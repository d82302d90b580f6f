//! The cleaning rules, one file each, applied in the order `drop_columns`, `cast`, `filter`,
//! `missing`, `duplicates`, `outliers` to the table as it was read: in [`Pieces`] (a CSV file's
//! chunks, a Parquet file's row groups), never joined into one batch. Joining is a copy of the
//! whole table in fresh memory, which is what costs most on the machines sluice is measured on.
//! Each rule takes what the previous rule left and returns the new pieces (or mask) and its part
//! of the report. Fill values, fences and duplicates are those of the whole table, and rows in
//! errors are rows of the whole table: the pieces are only how it lies in memory.
//!
//! Values are replaced with `zip`, so no rule touches a cell as text. The rules that drop rows
//! (`missing`, `duplicates`, `outliers`) only narrow a mask of the rows still in (one over the
//! whole table, sliced for each piece), each looking at those rows alone; the caller drops them
//! all with one `filter` per piece at the end. Duplicate rows are found by hashing each row a
//! column at a time.
//!
//! This file holds what the rules share: [`RuleError`], replacing a column in every piece, a
//! numeric column's pieces as the `f64` parts `quantile` reads (`missing`'s mean and median,
//! `outliers`' fences), and the tests' fixtures.

mod cast;
mod drop_columns;
mod duplicates;
mod filter;
mod missing;
mod outliers;

pub(crate) use cast::cast;
pub(crate) use drop_columns::drop_columns;
pub(crate) use duplicates::duplicates;
pub(crate) use filter::filter;
pub(crate) use missing::missing;
pub(crate) use outliers::outliers;

use super::expr::EvalError;
use crate::quantile;
use crate::table::Pieces;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RuleError {
    #[error("row {row}: column `{column}` value `{value}` cannot be cast to {to}")]
    Cast {
        row: usize,
        column: String,
        value: String,
        to: &'static str,
    },
    #[error("{0}")]
    Filter(#[from] EvalError),
    #[error("`{rule}` needs a numeric column, and `{column}` has type {data_type}")]
    NotNumeric {
        rule: &'static str,
        column: String,
        data_type: DataType,
    },
    #[error("column `{column}` has no values to take the {rule} of")]
    NoValues { rule: &'static str, column: String },
    #[error("the constant {value} cannot fill column `{column}` of type {data_type}")]
    Constant {
        value: Value,
        column: String,
        data_type: DataType,
    },
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Column `index` of every piece.
fn column_pieces(pieces: &Pieces, index: usize) -> Vec<ArrayRef> {
    pieces
        .batches
        .iter()
        .map(|b| b.column(index).clone())
        .collect()
}

/// `pieces` with column `index` replaced by `arrays` (one per piece) of type `data_type`,
/// keeping the field's name.
fn replace(
    pieces: &Pieces,
    index: usize,
    data_type: DataType,
    arrays: Vec<ArrayRef>,
) -> Result<Pieces, RuleError> {
    let mut fields: Vec<Field> = pieces
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[index] = Field::new(fields[index].name(), data_type, true);
    let schema = Arc::new(Schema::new(fields));
    let batches = pieces
        .batches
        .iter()
        .zip(arrays)
        .map(|(batch, array)| {
            let mut columns = batch.columns().to_vec();
            columns[index] = array;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pieces {
        schema,
        batches,
        source: pieces.source.clone(),
    })
}

/// The text of one value, for messages.
fn show(array: &ArrayRef, row: usize) -> String {
    arrow::util::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// A numeric column's pieces as `f64`, each with which of its rows count: those with a value, of
/// the rows `keep` (over the whole table) leaves in; all rows without a mask. NaN never counts
/// (see [`quantile::each`]).
fn counted_floats(
    rule: &'static str,
    column: &str,
    arrays: &[ArrayRef],
    keep: Option<&BooleanArray>,
) -> Result<Vec<(Float64Array, Option<BooleanBuffer>)>, RuleError> {
    let mut first = 0;
    arrays
        .iter()
        .map(|array| {
            if !array.data_type().is_numeric() {
                return Err(RuleError::NotNumeric {
                    rule,
                    column: column.to_string(),
                    data_type: array.data_type().clone(),
                });
            }
            let floats = arrow::compute::cast(array, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .clone();
            let keep = keep.map(|k| k.slice(first, array.len()));
            first += array.len();
            let counts = match (floats.nulls().filter(|n| n.null_count() > 0), keep) {
                (None, None) => None,
                (Some(nulls), None) => Some(nulls.inner().clone()),
                (None, Some(keep)) => Some(keep.values().clone()),
                (Some(nulls), Some(keep)) => Some(nulls.inner() & keep.values()),
            };
            Ok((floats, counts))
        })
        .collect()
}

/// [`counted_floats`] as the parts of one column that [`quantile`] reads.
fn parts(counted: &[(Float64Array, Option<BooleanBuffer>)]) -> Vec<quantile::Part<'_>> {
    counted
        .iter()
        .map(|(floats, counts)| quantile::Part::new(floats.values(), counts.as_ref()))
        .collect()
}

/// What the rules' tests share: small tables, and each rule run on a table whole and in pieces.
#[cfg(test)]
mod testing {
    use super::{show, RuleError};
    use crate::table::Pieces;
    use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    pub(super) fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    pub(super) fn ints(v: Vec<Option<i64>>) -> ArrayRef {
        Arc::new(Int64Array::from(v))
    }

    pub(super) fn texts(v: Vec<Option<&str>>) -> ArrayRef {
        Arc::new(StringArray::from(v))
    }

    /// `b` as one piece, and cut into pieces of at most two rows with an empty one among them.
    pub(super) fn cuts(b: &RecordBatch) -> [Pieces; 2] {
        let whole = Pieces {
            schema: b.schema(),
            batches: vec![b.clone()],
            source: "t.csv".into(),
        };
        let mut batches = vec![b.slice(0, b.num_rows().min(1)), b.slice(0, 0)];
        let mut first = batches[0].num_rows();
        while first < b.num_rows() {
            let len = 2.min(b.num_rows() - first);
            batches.push(b.slice(first, len));
            first += len;
        }
        let cut = Pieces {
            batches,
            ..whole.clone()
        };
        [whole, cut]
    }

    /// What `rule` gives on `b` whole, after checking that it gives the same on `b` in pieces:
    /// the pieces are only how a table lies in memory.
    pub(super) fn both<T: PartialEq + std::fmt::Debug>(
        b: &RecordBatch,
        rule: impl Fn(Pieces) -> Result<T, RuleError>,
    ) -> Result<T, RuleError> {
        let [whole, cut] = cuts(b);
        let (whole, cut) = (rule(whole), rule(cut));
        match (&whole, &cut) {
            (Ok(w), Ok(c)) => assert_eq!(w, c, "in pieces"),
            (Err(w), Err(c)) => assert_eq!(w.to_string(), c.to_string(), "in pieces"),
            _ => panic!("in pieces: {whole:?} but {cut:?}"),
        }
        whole
    }

    /// A rule's pieces as one batch, with the rows its mask drops dropped.
    pub(super) fn apply(p: Pieces, keep: Option<BooleanArray>) -> RecordBatch {
        let b = arrow::compute::concat_batches(&p.schema, &p.batches).unwrap();
        match keep {
            Some(k) => arrow::compute::filter_record_batch(&b, &k).unwrap(),
            None => b,
        }
    }

    pub(super) fn col(b: &RecordBatch, name: &str) -> Vec<String> {
        let a = b.column_by_name(name).unwrap();
        (0..a.len())
            .map(|i| if a.is_null(i) { "-".into() } else { show(a, i) })
            .collect()
    }
}
