//! The cleaning rules, one function each, applied to a whole table in memory in the order
//! `drop_columns`, `cast`, `filter`, `missing`, `duplicates`, `outliers`. Each takes what the
//! previous rule left and returns the new batch (or mask) and its part of the report.
//!
//! Values are replaced with `zip`, so no rule touches a cell as text. The rules that drop rows
//! (`missing`, `duplicates`, `outliers`) only narrow a mask of the rows still in, each looking at
//! those rows alone; the caller drops them all with one `filter` at the end. Duplicate rows are
//! found by hashing each row a column at a time.

use super::config::{Action, CastType, Fill, Method, Missing, Outliers};
use super::expr::{EvalError, Expr};
use crate::quantile;
use crate::table::hash::{hash_bytes, mix};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Scalar, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
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

/// Fills, then marks the rows still missing a value in a `drop` column: the returned mask (when
/// any row goes) says which rows stay. The rows are dropped later, together with the later rules'.
pub(crate) fn missing(
    mut batch: RecordBatch,
    missing: &Missing,
) -> Result<(RecordBatch, Option<BooleanArray>, Value), RuleError> {
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
                let (floats, counts) = counted_floats("mean", name, &array, None)?;
                let parts = [quantile::Part::new(floats.values(), counts.as_ref())];
                let (_, mean) =
                    quantile::count_and_mean(&parts).ok_or_else(|| RuleError::NoValues {
                        rule: "mean",
                        column: name.clone(),
                    })?;
                number_scalar(mean, array.data_type())?
            }
            Fill::Median => {
                let (floats, counts) = counted_floats("median", name, &array, None)?;
                let parts = [quantile::Part::new(floats.values(), counts.as_ref())];
                let median =
                    quantile::quantiles(&parts, &[0.5]).ok_or_else(|| RuleError::NoValues {
                        rule: "median",
                        column: name.clone(),
                    })?[0];
                number_scalar(median, array.data_type())?
            }
            Fill::Mode => mode(name, &array)?,
            Fill::Constant(v) => constant(name, v, array.data_type())?,
        };
        let present = arrow::compute::is_not_null(&array)?;
        let filled = arrow::compute::kernels::zip::zip(&present, &array, &Scalar::new(value))?;
        report.insert(name.clone(), json!({"dropped": 0, "filled": nulls}));
        batch = replace(&batch, index, filled)?;
    }
    let mut keep = drop_masks.pop();
    if let Some(first) = &mut keep {
        for mask in &drop_masks {
            *first = arrow::compute::and(first, mask)?;
        }
    }
    Ok((batch, keep, json!(report)))
}

/// Whether row `row` is still in, under `keep` (no mask: every row is).
fn kept(keep: Option<&BooleanArray>, row: usize) -> bool {
    keep.is_none_or(|k| k.value(row))
}

/// Keeps the first of every set of identical rows among those `keep` leaves in, and returns the
/// new mask. Each row is hashed a column at a time into a `u64`; rows with equal hashes are
/// compared value by value, so a collision cannot drop a row. Equal means what Arrow's row format
/// says: nulls equal nulls, floats are equal when their bits are.
pub(crate) fn duplicates(
    batch: &RecordBatch,
    keep: Option<&BooleanArray>,
) -> Result<(BooleanArray, Value), RuleError> {
    let n = batch.num_rows();
    if u32::try_from(n).is_err() {
        return duplicates_by_row_format(batch, keep);
    }
    let hashes = row_hashes(batch)?;
    let comparators = batch
        .columns()
        .iter()
        .map(|c| arrow::array::make_comparator(c.as_ref(), c.as_ref(), Default::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let same = |a: usize, b: usize| comparators.iter().all(|c| c(a, b).is_eq());
    // Rows still in, by eight bits of their hash: equal rows land in the same part, in row
    // order, so each part finds its own duplicates (keeping the first) on its own core. Not the
    // top bits (the hash table's tags: a part's keys would all share one, and every probe would
    // compare keys) nor the bottom ones (its bucket index).
    const PARTS: usize = 256;
    let part = |h: u64| ((h >> 32) as usize) % PARTS;
    let mut parts: Vec<Vec<u32>> = (0..PARTS)
        .map(|_| Vec::with_capacity(n / PARTS + n / PARTS / 8))
        .collect();
    for (row, &h) in hashes.iter().enumerate() {
        if kept(keep, row) {
            parts[part(h)].push(row as u32);
        }
    }
    let repeated: Vec<Vec<u32>> = parts
        .into_par_iter()
        .map(|rows| {
            // The first row of each hash, and any later distinct rows with the same hash.
            let mut first: HashMap<u64, u32, BuildHasherDefault<Prehashed>> =
                HashMap::with_capacity_and_hasher(rows.len(), Default::default());
            let mut more: HashMap<u64, Vec<u32>> = HashMap::new();
            let mut repeated = Vec::new();
            for row in rows {
                let h = hashes[row as usize];
                match first.entry(h) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(row);
                    }
                    std::collections::hash_map::Entry::Occupied(o) => {
                        let others = more.entry(h).or_default();
                        let seen = |r: u32| same(r as usize, row as usize);
                        if seen(*o.get()) || others.iter().any(|&r| seen(r)) {
                            repeated.push(row);
                        } else {
                            others.push(row);
                        }
                    }
                }
            }
            repeated
        })
        .collect();
    let mut out: Vec<bool> = (0..n).map(|row| kept(keep, row)).collect();
    let mut dropped = 0;
    for row in repeated.into_iter().flatten() {
        out[row as usize] = false;
        dropped += 1;
    }
    Ok((BooleanArray::from(out), json!({"dropped": dropped})))
}

/// [`duplicates`] for tables too long for `u32` row numbers: Arrow's row format in one set.
fn duplicates_by_row_format(
    batch: &RecordBatch,
    keep: Option<&BooleanArray>,
) -> Result<(BooleanArray, Value), RuleError> {
    let fields = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(batch.columns())?;
    let mut seen = std::collections::HashSet::with_capacity(batch.num_rows());
    let mut dropped = 0;
    let out: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let unique = kept(keep, i) && seen.insert(rows.row(i));
            dropped += usize::from(kept(keep, i) && !unique);
            Some(unique)
        })
        .collect();
    Ok((out, json!({"dropped": dropped})))
}

/// A `Hasher` for keys that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// One hash per row over every column; equal rows (in the sense of `duplicates`) hash equal.
/// Blocks of rows are hashed on every core.
fn row_hashes(batch: &RecordBatch) -> Result<Vec<u64>, RuleError> {
    const BLOCK: usize = 1 << 16;
    // Types hashed through Arrow's row format, converted a block at a time.
    let converters = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8 => Ok(None),
            t if t.is_primitive() && c.to_data().buffers().len() == 1 => Ok(None),
            t => RowConverter::new(vec![SortField::new(t.clone())]).map(Some),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut hashes = vec![0u64; batch.num_rows()];
    hashes
        .par_chunks_mut(BLOCK)
        .enumerate()
        .try_for_each(|(block, hashes)| {
            let first = block * BLOCK;
            for (column, converter) in batch.columns().iter().zip(&converters) {
                let column = column.slice(first, hashes.len());
                hash_column(&column, converter.as_ref(), hashes)?;
            }
            Ok::<(), RuleError>(())
        })?;
    Ok(hashes)
}

/// Mixes each value of `column` into the hash of its row.
fn hash_column(
    column: &ArrayRef,
    converter: Option<&RowConverter>,
    hashes: &mut [u64],
) -> Result<(), RuleError> {
    const NULL: u64 = 0x6E75_6C6C_6E75_6C6C;
    // The null buffer once, not a dynamic `is_valid` call per value.
    let nulls = column.nulls().cloned();
    let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
    if let Some(converter) = converter {
        let rows = converter.convert_columns(std::slice::from_ref(column))?;
        for (i, h) in hashes.iter_mut().enumerate() {
            *h = mix(*h, hash_bytes(rows.row(i).as_ref()));
        }
        return Ok(());
    }
    match column.data_type() {
        DataType::Boolean => {
            let b = column.as_boolean();
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = mix(
                    *h,
                    if valid(i) {
                        u64::from(b.value(i))
                    } else {
                        NULL
                    },
                );
            }
        }
        DataType::Utf8 => hash_texts(column.as_string::<i32>(), valid, NULL, hashes),
        DataType::LargeUtf8 => hash_texts(column.as_string::<i64>(), valid, NULL, hashes),
        t => {
            let data = column.to_data();
            let width = t.primitive_width().expect("primitive types have a width");
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
            let values = bytes.chunks_exact(width);
            if width == 8 {
                // Float64 and Int64, nearly every numeric column: the bytes are the value.
                for (i, (h, v)) in hashes.iter_mut().zip(values).enumerate() {
                    let x = u64::from_le_bytes(v.try_into().expect("8 bytes"));
                    *h = mix(*h, if valid(i) { x } else { NULL });
                }
            } else {
                for (i, (h, v)) in hashes.iter_mut().zip(values).enumerate() {
                    let x = if !valid(i) {
                        NULL
                    } else if width < 8 {
                        let mut w = [0u8; 8];
                        w[..width].copy_from_slice(v);
                        u64::from_le_bytes(w)
                    } else {
                        hash_bytes(v)
                    };
                    *h = mix(*h, x);
                }
            }
        }
    }
    Ok(())
}

/// Mixes each text of `t` (or `null` where it has none) into the hash of its row.
fn hash_texts<O: arrow::array::OffsetSizeTrait>(
    t: &arrow::array::GenericStringArray<O>,
    valid: impl Fn(usize) -> bool,
    null: u64,
    hashes: &mut [u64],
) {
    for (i, h) in hashes.iter_mut().enumerate() {
        let x = if valid(i) {
            hash_bytes(t.value(i).as_bytes())
        } else {
            null
        };
        *h = mix(*h, x);
    }
}

/// The fences outside which a value is an outlier, from the values that count of one column.
fn fences(method: Method, parts: &[quantile::Part<'_>]) -> Option<(f64, f64)> {
    match method {
        Method::Iqr { k } => {
            let q = quantile::quantiles(parts, &[0.25, 0.75])?;
            let (q1, q3) = (q[0], q[1]);
            Some((q1 - k * (q3 - q1), q3 + k * (q3 - q1)))
        }
        Method::Zscore { threshold } => {
            let (n, mean) = quantile::count_and_mean(parts)?;
            let mut squares = 0.0;
            quantile::each(parts, |x| squares += (x - mean).powi(2));
            let sd = (squares / n as f64).sqrt();
            Some((mean - threshold * sd, mean + threshold * sd))
        }
    }
}

/// Marks the rows outside any column's fences (`drop`, in the returned mask) or clips them.
/// Fences and counts come from the rows `keep` leaves in, the table the earlier rules left.
pub(crate) fn outliers(
    mut batch: RecordBatch,
    keep: Option<BooleanArray>,
    rule: &Outliers,
) -> Result<(RecordBatch, Option<BooleanArray>, Value), RuleError> {
    let mut report = BTreeMap::new();
    let mut keep = keep;
    let mut clipped = Vec::new();
    let columns = rule
        .columns
        .iter()
        .map(|column| Ok((column, batch.schema().index_of(column)?)))
        .collect::<Result<Vec<_>, RuleError>>()?;
    let before = keep.clone();
    // Every column's fences and counts, on every core.
    let found = columns
        .par_iter()
        .map(|&(column, index)| {
            let array = batch.column(index).clone();
            let (floats, counts) = counted_floats("outliers", column, &array, before.as_ref())?;
            let parts = [quantile::Part::new(floats.values(), counts.as_ref())];
            let Some((low, high)) = fences(rule.method, &parts) else {
                return Ok((column, index, array, None));
            };
            // Missing values and NaN count as inside: other rules handle them.
            let values = floats.values();
            let mut inside = BooleanBuffer::collect_bool(values.len(), |i| {
                let x = values[i];
                x.is_nan() || (low..=high).contains(&x)
            });
            if let Some(nulls) = floats.nulls() {
                inside = &inside | &!nulls.inner();
            }
            let outside = match &before {
                Some(before) => (before.values() & &!&inside).count_set_bits(),
                None => inside.len() - inside.count_set_bits(),
            };
            let inside = BooleanArray::new(inside, None);
            Ok((column, index, array, Some((low, high, inside, outside))))
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
    for (column, index, array, fenced) in found {
        let Some((low, high, inside, outside)) = fenced else {
            report.insert(column.clone(), json!({"dropped": 0, "clipped": 0}));
            continue;
        };
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
    Ok((batch, keep, json!(report)))
}

/// A numeric column as `f64`, and which of its rows count: those with a value, of the rows
/// `keep` leaves in (all rows without a mask). NaN never counts (see [`quantile::each`]).
fn counted_floats(
    rule: &'static str,
    column: &str,
    array: &ArrayRef,
    keep: Option<&BooleanArray>,
) -> Result<(Float64Array, Option<BooleanBuffer>), RuleError> {
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
    let counts = match (floats.nulls().filter(|n| n.null_count() > 0), keep) {
        (None, None) => None,
        (Some(nulls), None) => Some(nulls.inner().clone()),
        (None, Some(keep)) => Some(keep.values().clone()),
        (Some(nulls), Some(keep)) => Some(nulls.inner() & keep.values()),
    };
    Ok((floats, counts))
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

    /// A rule's batch with the rows its mask drops dropped.
    fn apply(b: RecordBatch, keep: Option<BooleanArray>) -> RecordBatch {
        match keep {
            Some(k) => arrow::compute::filter_record_batch(&b, &k).unwrap(),
            None => b,
        }
    }

    fn missing(b: RecordBatch, m: &Missing) -> Result<(RecordBatch, Value), RuleError> {
        let (b, keep, r) = super::missing(b, m)?;
        Ok((apply(b, keep), r))
    }

    fn outliers(b: RecordBatch, o: &Outliers) -> Result<(RecordBatch, Value), RuleError> {
        let (b, keep, r) = super::outliers(b, None, o)?;
        Ok((apply(b, keep), r))
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
        let (keep, r) = duplicates(&b, None).unwrap();
        let out = apply(b.clone(), Some(keep));
        assert_eq!(col(&out, "b"), ["x", "y", "-"]);
        assert_eq!(r, json!({"dropped": 2}));
        // Only the rows still in count: the first `x` is gone, so the last one stays.
        let mask = BooleanArray::from(vec![false, true, true, true, true]);
        let (keep, r) = duplicates(&b, Some(&mask)).unwrap();
        assert_eq!(col(&apply(b, Some(keep)), "b"), ["y", "-", "x"]);
        assert_eq!(r, json!({"dropped": 1}));
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
        let (out, _) = outliers(b.clone(), &z).unwrap();
        assert_eq!(col(&out, "x"), ["1", "2", "3", "4", "-"]);
        // Fences and counts come from the rows still in.
        let mask = BooleanArray::from(vec![true, true, true, true, false, true]);
        let (_, keep, r) = super::outliers(b, Some(mask), &iqr(Action::Drop)).unwrap();
        assert_eq!(
            r,
            json!({"x": {"low": -0.5, "high": 5.5, "dropped": 0, "clipped": 0}})
        );
        assert_eq!(keep.unwrap().true_count(), 5);
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
