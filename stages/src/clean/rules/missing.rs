//! `missing`: empty values filled per column (mean, median, mode, a constant) or their rows marked
//! to drop.

use super::{column_pieces, counted_floats, parts, replace, RuleError};
use crate::clean::config::{Fill, Missing};
use crate::quantile;
use crate::table::Pieces;
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBufferBuilder, Float64Array, Scalar, StringArray,
};
use arrow::compute::CastOptions;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// A one-value array of `data_type` holding `x`; whole-number types get `x` rounded.
fn number_scalar(x: f64, data_type: &DataType) -> Result<ArrayRef, RuleError> {
    let x = if data_type.is_integer() { x.round() } else { x };
    Ok(arrow::compute::cast(
        &Float64Array::from(vec![x]),
        data_type,
    )?)
}

/// The most frequent value of a column (its pieces in order) as a one-value array; ties go to
/// the smallest value.
fn mode(column: &str, arrays: &[ArrayRef]) -> Result<ArrayRef, RuleError> {
    let data_type = arrays
        .first()
        .map_or(DataType::Null, |a| a.data_type().clone());
    let converter = RowConverter::new(vec![SortField::new(data_type)])?;
    let rows = arrays
        .iter()
        .map(|a| converter.convert_columns(std::slice::from_ref(a)))
        .collect::<Result<Vec<_>, _>>()?;
    // Each value's count and its first row, as (piece, row of the piece).
    let mut counts: HashMap<arrow::row::Row<'_>, (usize, (usize, usize))> = HashMap::new();
    for (piece, (array, rows)) in arrays.iter().zip(&rows).enumerate() {
        for i in (0..array.len()).filter(|&i| array.is_valid(i)) {
            counts.entry(rows.row(i)).or_insert((0, (piece, i))).0 += 1;
        }
    }
    let (piece, row) = counts
        .iter()
        .max_by(|(ra, (ca, _)), (rb, (cb, _))| ca.cmp(cb).then_with(|| rb.cmp(ra)))
        .map(|(_, &(_, first))| first)
        .ok_or_else(|| RuleError::NoValues {
            rule: "mode",
            column: column.to_string(),
        })?;
    Ok(arrays[piece].slice(row, 1))
}

fn constant(column: &str, value: &Value, data_type: &DataType) -> Result<ArrayRef, RuleError> {
    let text = match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&StringArray::from(vec![text]), data_type, &options).map_err(
        |_| RuleError::Constant {
            value: value.clone(),
            column: column.to_string(),
            data_type: data_type.clone(),
        },
    )
}

/// Fills, then marks the rows still missing a value in a `drop` column: the returned mask (when
/// any row goes) says which rows stay. The rows are dropped later, together with the later rules'.
pub(crate) fn missing(
    mut pieces: Pieces,
    missing: &Missing,
) -> Result<(Pieces, Option<BooleanArray>, Value), RuleError> {
    let schema = pieces.schema.clone();
    let rows = pieces.rows();
    let mut report = BTreeMap::new();
    // Fills first, on every row, then one mask drops the rows still missing a `drop` column:
    // a row missing two such columns counts under both.
    let mut keep: Option<BooleanArray> = None;
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let fill = missing
            .columns
            .iter()
            .find(|(c, _)| c == name)
            .map_or(&missing.default, |(_, f)| f);
        let arrays = column_pieces(&pieces, index);
        let nulls: usize = arrays.iter().map(|a| a.null_count()).sum();
        let value = match fill {
            Fill::Keep => continue,
            Fill::Drop => {
                report.insert(name.clone(), json!({"dropped": nulls, "filled": 0}));
                if nulls > 0 {
                    let mut present = BooleanBufferBuilder::new(rows);
                    for array in &arrays {
                        present.append_buffer(arrow::compute::is_not_null(array)?.values());
                    }
                    let present = BooleanArray::new(present.finish(), None);
                    keep = Some(match keep {
                        None => present,
                        Some(k) => arrow::compute::and(&k, &present)?,
                    });
                }
                continue;
            }
            _ if nulls == 0 => {
                report.insert(name.clone(), json!({"dropped": 0, "filled": 0}));
                continue;
            }
            Fill::Mean => {
                let counted = counted_floats("mean", name, &arrays, None)?;
                let (_, mean) = quantile::count_and_mean(&parts(&counted)).ok_or_else(|| {
                    RuleError::NoValues {
                        rule: "mean",
                        column: name.clone(),
                    }
                })?;
                number_scalar(mean, field.data_type())?
            }
            Fill::Median => {
                let counted = counted_floats("median", name, &arrays, None)?;
                let median = quantile::quantiles(&parts(&counted), &[0.5]).ok_or_else(|| {
                    RuleError::NoValues {
                        rule: "median",
                        column: name.clone(),
                    }
                })?[0];
                number_scalar(median, field.data_type())?
            }
            Fill::Mode => mode(name, &arrays)?,
            Fill::Constant(v) => constant(name, v, field.data_type())?,
        };
        let value = Scalar::new(value);
        let filled = arrays
            .iter()
            .map(|array| {
                if array.null_count() == 0 {
                    return Ok(array.clone());
                }
                let present = arrow::compute::is_not_null(array)?;
                Ok(arrow::compute::kernels::zip::zip(&present, array, &value)?)
            })
            .collect::<Result<Vec<_>, RuleError>>()?;
        report.insert(name.clone(), json!({"dropped": 0, "filled": nulls}));
        pieces = replace(&pieces, index, field.data_type().clone(), filled)?;
    }
    Ok((pieces, keep, json!(report)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rules::testing::{apply, batch, both, col, ints, texts};
    use arrow::record_batch::RecordBatch;

    fn missing(b: RecordBatch, m: &Missing) -> Result<(RecordBatch, Value), RuleError> {
        both(&b, |p| {
            let (p, keep, r) = super::missing(p, m)?;
            Ok((apply(p, keep), r))
        })
    }

    #[test]
    fn missing_values_are_filled_or_dropped_per_column() {
        let b = batch(vec![
            ("a", ints(vec![Some(1), None, Some(4), Some(4)])),
            ("b", texts(vec![Some("x"), Some("y"), None, Some("y")])),
            ("c", ints(vec![None, Some(2), Some(3), None])),
        ]);
        let rule = |a: Fill, b: Fill, default| Missing {
            default,
            columns: vec![("a".into(), a), ("b".into(), b)],
        };
        let (out, r) = missing(b.clone(), &rule(Fill::Mean, Fill::Mode, Fill::Keep)).unwrap();
        assert_eq!(col(&out, "a"), ["1", "3", "4", "4"]);
        assert_eq!(col(&out, "b"), ["x", "y", "y", "y"]);
        assert_eq!(
            r,
            json!({"a": {"dropped": 0, "filled": 1}, "b": {"dropped": 0, "filled": 1}})
        );
        let (out, _) = missing(
            b.clone(),
            &rule(Fill::Median, Fill::Constant(json!("?")), Fill::Keep),
        )
        .unwrap();
        assert_eq!(col(&out, "a"), ["1", "4", "4", "4"]);
        assert_eq!(col(&out, "b"), ["x", "y", "?", "y"]);
        let (out, r) = missing(
            b.clone(),
            &rule(Fill::Constant(json!(0)), Fill::Keep, Fill::Drop),
        )
        .unwrap();
        assert_eq!(col(&out, "a"), ["0", "4"]);
        assert_eq!(col(&out, "c"), ["2", "3"]);
        assert_eq!(r["c"], json!({"dropped": 2, "filled": 0}));
        let e = missing(b.clone(), &rule(Fill::Keep, Fill::Mean, Fill::Keep)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`mean` needs a numeric column, and `b` has type Utf8"
        );
        let e = missing(
            b,
            &rule(Fill::Constant(json!("n/a")), Fill::Keep, Fill::Keep),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the constant \"n/a\" cannot fill column `a` of type Int64"
        );
    }
}
