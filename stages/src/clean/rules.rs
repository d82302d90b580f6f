//! The cleaning rules, one function each, applied to a whole table in memory in the order
//! `drop_columns`, `cast`, `filter`, `missing`, `duplicates`, `outliers`. Each takes the batch the
//! previous rule left and returns the new batch and its part of the report.
//!
//! Rows are selected with Arrow's `filter` kernel and values replaced with `zip`, so no rule
//! touches a cell as text; duplicate rows are found by hashing Arrow's row format.

use super::config::{Action, CastType, Fill, Method, Missing, Outliers};
use super::expr::{EvalError, Expr};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Scalar, StringArray};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
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

fn target(t: CastType) -> DataType {
    match t {
        CastType::Int => DataType::Int64,
        CastType::Float => DataType::Float64,
        CastType::Text => DataType::Utf8,
        CastType::Bool => DataType::Boolean,
    }
}

/// Replaces `batch`'s column `index` with `array`, keeping the field's name.
fn replace(batch: &RecordBatch, index: usize, array: ArrayRef) -> Result<RecordBatch, RuleError> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[index] = Field::new(fields[index].name(), array.data_type().clone(), true);
    let mut columns = batch.columns().to_vec();
    columns[index] = array;
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The text of one value, for messages.
fn show(array: &ArrayRef, row: usize) -> String {
    arrow::util::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

pub(crate) fn drop_columns(batch: &RecordBatch, names: &[String]) -> (RecordBatch, Value) {
    let schema = batch.schema();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !names.contains(schema.field(i).name()))
        .collect();
    let batch = batch.project(&keep).expect("indices come from the schema");
    (batch, json!({"dropped": names}))
}

pub(crate) fn cast(
    mut batch: RecordBatch,
    casts: &[(String, CastType)],
) -> Result<(RecordBatch, Value), RuleError> {
    let mut report = BTreeMap::new();
    for (column, to) in casts {
        let index = batch.schema().index_of(column)?;
        let array = batch.column(index).clone();
        let data_type = target(*to);
        // Arrow truncates 3.7 to 3; a cast that loses a fraction is refused instead.
        if *to == CastType::Int
            && matches!(
                array.data_type(),
                DataType::Float16 | DataType::Float32 | DataType::Float64
            )
        {
            let floats = arrow::compute::cast(&array, &DataType::Float64)?;
            let floats = floats.as_primitive::<Float64Type>();
            if let Some(row) =
                (0..floats.len()).find(|&i| floats.is_valid(i) && floats.value(i).fract() != 0.0)
            {
                return Err(RuleError::Cast {
                    row: row + 1,
                    column: column.clone(),
                    value: show(&array, row),
                    to: to.name(),
                });
            }
        }
        let lenient = CastOptions {
            safe: true,
            ..Default::default()
        };
        let cast = arrow::compute::cast_with_options(&array, &data_type, &lenient)?;
        // A value that was there and is missing after the cast did not convert.
        if cast.null_count() != array.null_count() {
            let row = (0..array.len())
                .find(|&i| array.is_valid(i) && cast.is_null(i))
                .unwrap_or(0);
            return Err(RuleError::Cast {
                row: row + 1,
                column: column.clone(),
                value: show(&array, row),
                to: to.name(),
            });
        }
        report.insert(
            column.clone(),
            json!({"from": array.data_type().to_string(), "to": to.name()}),
        );
        batch = replace(&batch, index, cast)?;
    }
    Ok((batch, json!(report)))
}

pub(crate) fn filter(
    batch: &RecordBatch,
    expression: &str,
    expr: &Expr,
) -> Result<(RecordBatch, Value), RuleError> {
    let mask = expr.eval(batch)?;
    let out = arrow::compute::filter_record_batch(batch, &mask)?;
    let dropped = batch.num_rows() - out.num_rows();
    Ok((out, json!({"expression": expression, "dropped": dropped})))
}

/// The non-missing values of a numeric column as `f64`.
fn numbers(rule: &'static str, column: &str, array: &ArrayRef) -> Result<Vec<f64>, RuleError> {
    if !array.data_type().is_numeric() {
        return Err(RuleError::NotNumeric {
            rule,
            column: column.to_string(),
            data_type: array.data_type().clone(),
        });
    }
    let floats = arrow::compute::cast(array, &DataType::Float64)?;
    Ok(floats
        .as_primitive::<Float64Type>()
        .iter()
        .flatten()
        .filter(|x| !x.is_nan())
        .collect())
}

/// The `p` quantile of sorted `values`, interpolating linearly between ranks (numpy's default).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let rank = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    values
}

/// A one-value array of `data_type` holding `x`; whole-number types get `x` rounded.
fn number_scalar(x: f64, data_type: &DataType) -> Result<ArrayRef, RuleError> {
    let x = if data_type.is_integer() { x.round() } else { x };
    Ok(arrow::compute::cast(
        &Float64Array::from(vec![x]),
        data_type,
    )?)
}

/// The most frequent value of `array` as a one-value array; ties go to the smallest value.
fn mode(column: &str, array: &ArrayRef) -> Result<ArrayRef, RuleError> {
    let converter = RowConverter::new(vec![SortField::new(array.data_type().clone())])?;
    let rows = converter.convert_columns(std::slice::from_ref(array))?;
    let mut counts: HashMap<arrow::row::Row<'_>, (usize, usize)> = HashMap::new();
    for i in (0..array.len()).filter(|&i| array.is_valid(i)) {
        counts.entry(rows.row(i)).or_insert((0, i)).0 += 1;
    }
    let best = counts
        .iter()
        .max_by(|(ra, (ca, _)), (rb, (cb, _))| ca.cmp(cb).then_with(|| rb.cmp(ra)))
        .map(|(_, &(_, first))| first)
        .ok_or_else(|| RuleError::NoValues {
            rule: "mode",
            column: column.to_string(),
        })?;
    Ok(array.slice(best, 1))
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

pub(crate) fn missing(
    mut batch: RecordBatch,
    missing: &Missing,
) -> Result<(RecordBatch, Value), RuleError> {
    let schema = batch.schema();
    let mut report = BTreeMap::new();
    // Fills first, on every row, then one pass drops the rows still missing a `drop` column:
    // a row missing two such columns counts under both.
    let mut drop_masks: Vec<BooleanArray> = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let fill = missing
            .columns
            .iter()
            .find(|(c, _)| c == name)
            .map_or(&missing.default, |(_, f)| f);
        let array = batch.column(index).clone();
        let nulls = array.null_count();
        let value = match fill {
            Fill::Keep => continue,
            Fill::Drop => {
                report.insert(name.clone(), json!({"dropped": nulls, "filled": 0}));
                if nulls > 0 {
                    drop_masks.push(arrow::compute::is_not_null(&array)?);
                }
                continue;
            }
            _ if nulls == 0 => {
                report.insert(name.clone(), json!({"dropped": 0, "filled": 0}));
                continue;
            }
            Fill::Mean => {
                let values = numbers("mean", name, &array)?;
                if values.is_empty() {
                    return Err(RuleError::NoValues {
                        rule: "mean",
                        column: name.clone(),
                    });
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                number_scalar(mean, array.data_type())?
            }
            Fill::Median => {
                let values = sorted(numbers("median", name, &array)?);
                if values.is_empty() {
                    return Err(RuleError::NoValues {
                        rule: "median",
                        column: name.clone(),
                    });
                }
                number_scalar(quantile(&values, 0.5), array.data_type())?
            }
            Fill::Mode => mode(name, &array)?,
            Fill::Constant(v) => constant(name, v, array.data_type())?,
        };
        let present = arrow::compute::is_not_null(&array)?;
        let filled = arrow::compute::kernels::zip::zip(&present, &array, &Scalar::new(value))?;
        report.insert(name.clone(), json!({"dropped": 0, "filled": nulls}));
        batch = replace(&batch, index, filled)?;
    }
    if let Some(first) = drop_masks.pop() {
        let mut keep = first;
        for mask in &drop_masks {
            keep = arrow::compute::and(&keep, mask)?;
        }
        batch = arrow::compute::filter_record_batch(&batch, &keep)?;
    }
    Ok((batch, json!(report)))
}

/// Keeps the first of every set of identical rows. Rows are compared through Arrow's row
/// format, one byte string per row, so no value is turned into text.
pub(crate) fn duplicates(batch: &RecordBatch) -> Result<(RecordBatch, Value), RuleError> {
    let fields = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(batch.columns())?;
    let mut seen = HashSet::with_capacity(batch.num_rows());
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(seen.insert(rows.row(i))))
        .collect();
    let dropped = batch.num_rows() - seen.len();
    let out = if dropped == 0 {
        batch.clone()
    } else {
        arrow::compute::filter_record_batch(batch, &keep)?
    };
    Ok((out, json!({"dropped": dropped})))
}

/// The fences outside which a value is an outlier, from the column's non-missing values.
fn fences(method: Method, values: Vec<f64>) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    match method {
        Method::Iqr { k } => {
            let values = sorted(values);
            let (q1, q3) = (quantile(&values, 0.25), quantile(&values, 0.75));
            Some((q1 - k * (q3 - q1), q3 + k * (q3 - q1)))
        }
        Method::Zscore { threshold } => {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let sd = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            Some((mean - threshold * sd, mean + threshold * sd))
        }
    }
}

pub(crate) fn outliers(
    mut batch: RecordBatch,
    rule: &Outliers,
) -> Result<(RecordBatch, Value), RuleError> {
    let mut report = BTreeMap::new();
    // Every column's fences come from the same table, the one the earlier rules left.
    let mut keep: Option<BooleanArray> = None;
    let mut clipped = Vec::new();
    for column in &rule.columns {
        let index = batch.schema().index_of(column)?;
        let array = batch.column(index).clone();
        let Some((low, high)) = fences(rule.method, numbers("outliers", column, &array)?) else {
            report.insert(column.clone(), json!({"dropped": 0, "clipped": 0}));
            continue;
        };
        let floats = arrow::compute::cast(&array, &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        let inside: BooleanArray = floats
            .iter()
            .map(|x| Some(x.is_none_or(|x| x.is_nan() || (low..=high).contains(&x))))
            .collect();
        let outside = inside.len() - inside.true_count();
        let mut entry = json!({"low": low, "high": high, "dropped": 0, "clipped": 0});
        match rule.action {
            Action::Drop => {
                entry["dropped"] = json!(outside);
                keep = Some(match keep {
                    None => inside,
                    Some(k) => arrow::compute::and(&k, &inside)?,
                });
            }
            Action::Clip => {
                entry["clipped"] = json!(outside);
                if outside > 0 {
                    clipped.push((index, clip(&array, low, high)?));
                }
            }
        }
        report.insert(column.clone(), entry);
    }
    for (index, array) in clipped {
        batch = replace(&batch, index, array)?;
    }
    if let Some(keep) = keep {
        batch = arrow::compute::filter_record_batch(&batch, &keep)?;
    }
    Ok((batch, json!(report)))
}

/// `array` with values below `low` set to `low` and above `high` to `high`; whole-number columns
/// are clipped to the whole numbers inside the fences, so they keep their type.
fn clip(array: &ArrayRef, low: f64, high: f64) -> Result<ArrayRef, RuleError> {
    let data_type = array.data_type();
    if data_type.is_integer() {
        let ints = arrow::compute::cast(array, &DataType::Int64)?;
        let (lo, hi) = (low.ceil() as i64, high.floor() as i64);
        let clipped: arrow::array::Int64Array = ints
            .as_primitive::<arrow::datatypes::Int64Type>()
            .unary(|x| x.clamp(lo, hi));
        Ok(arrow::compute::cast(&clipped, data_type)?)
    } else {
        let floats = arrow::compute::cast(array, &DataType::Float64)?;
        let clipped: Float64Array = floats.as_primitive::<Float64Type>().unary(|x| {
            if x.is_nan() {
                x
            } else {
                x.clamp(low, high)
            }
        });
        Ok(arrow::compute::cast(&clipped, data_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::config::Fill;
    use arrow::array::Int64Array;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn ints(v: Vec<Option<i64>>) -> ArrayRef {
        Arc::new(Int64Array::from(v))
    }

    fn texts(v: Vec<Option<&str>>) -> ArrayRef {
        Arc::new(StringArray::from(v))
    }

    fn col(b: &RecordBatch, name: &str) -> Vec<String> {
        let a = b.column_by_name(name).unwrap();
        (0..a.len())
            .map(|i| if a.is_null(i) { "-".into() } else { show(a, i) })
            .collect()
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

    #[test]
    fn duplicates_keep_the_first_occurrence() {
        let b = batch(vec![
            ("a", ints(vec![Some(1), Some(1), None, None, Some(1)])),
            (
                "b",
                texts(vec![Some("x"), Some("y"), None, None, Some("x")]),
            ),
        ]);
        let (out, r) = duplicates(&b).unwrap();
        assert_eq!(col(&out, "b"), ["x", "y", "-"]);
        assert_eq!(r, json!({"dropped": 2}));
    }

    #[test]
    fn outliers_are_dropped_or_clipped_at_the_fences() {
        let b = batch(vec![(
            "x",
            ints(vec![Some(1), Some(2), Some(3), Some(4), Some(100), None]),
        )]);
        let iqr = |action| Outliers {
            columns: vec!["x".into()],
            method: Method::Iqr { k: 1.5 },
            action,
        };
        // Q1 = 2, Q3 = 4, IQR = 2: fences -1 and 7.
        let (out, r) = outliers(b.clone(), &iqr(Action::Drop)).unwrap();
        assert_eq!(col(&out, "x"), ["1", "2", "3", "4", "-"]);
        assert_eq!(
            r,
            json!({"x": {"low": -1.0, "high": 7.0, "dropped": 1, "clipped": 0}})
        );
        let (out, r) = outliers(b.clone(), &iqr(Action::Clip)).unwrap();
        assert_eq!(col(&out, "x"), ["1", "2", "3", "4", "7", "-"]);
        assert_eq!(r["x"]["clipped"], 1);
        let z = Outliers {
            columns: vec!["x".into()],
            method: Method::Zscore { threshold: 1.0 },
            action: Action::Drop,
        };
        let (out, _) = outliers(b, &z).unwrap();
        assert_eq!(col(&out, "x"), ["1", "2", "3", "4", "-"]);
    }

    #[test]
    fn casts_refuse_values_that_do_not_convert() {
        let b = batch(vec![("a", texts(vec![Some("1"), None, Some("x")]))]);
        let e = cast(b, &[("a".into(), CastType::Int)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "row 3: column `a` value `x` cannot be cast to int"
        );
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.5]));
        let e = cast(
            batch(vec![("f", f.clone())]),
            &[("f".into(), CastType::Int)],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "row 2: column `f` value `2.5` cannot be cast to int"
        );
        let (out, r) = cast(batch(vec![("f", f)]), &[("f".into(), CastType::Text)]).unwrap();
        assert_eq!(col(&out, "f"), ["1.0", "2.5"]);
        assert_eq!(r, json!({"f": {"from": "Float64", "to": "string"}}));
    }
}
