//! The cleaning rules, one function each, applied in the order `drop_columns`, `cast`, `filter`,
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

use super::config::{Action, CastType, Fill, Method, Missing, Outliers};
use super::expr::{EvalError, Expr};
use crate::quantile;
use crate::table::hash::{hash_bytes, mix};
use crate::table::{locate, Pieces};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Scalar, StringArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
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

pub(crate) fn drop_columns(pieces: &Pieces, names: &[String]) -> (Pieces, Value) {
    let schema = &pieces.schema;
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !names.contains(schema.field(i).name()))
        .collect();
    let project = "indices come from the schema";
    let pieces = Pieces {
        schema: Arc::new(schema.project(&keep).expect(project)),
        batches: pieces
            .batches
            .iter()
            .map(|b| b.project(&keep).expect(project))
            .collect(),
        source: pieces.source.clone(),
    };
    (pieces, json!({"dropped": names}))
}

pub(crate) fn cast(
    mut pieces: Pieces,
    casts: &[(String, CastType)],
) -> Result<(Pieces, Value), RuleError> {
    let mut report = BTreeMap::new();
    let starts = pieces.starts();
    for (column, to) in casts {
        let index = pieces.schema.index_of(column)?;
        let from = pieces.schema.field(index).data_type().clone();
        let data_type = target(*to);
        let arrays = pieces
            .batches
            .iter()
            .zip(&starts)
            .map(|(batch, &first)| {
                cast_piece(batch.column(index), column, *to, &data_type).map_err(|e| match e {
                    RuleError::Cast {
                        row,
                        column,
                        value,
                        to,
                    } => RuleError::Cast {
                        row: row + first,
                        column,
                        value,
                        to,
                    },
                    e => e,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        report.insert(
            column.clone(),
            json!({"from": from.to_string(), "to": to.name()}),
        );
        pieces = replace(&pieces, index, data_type, arrays)?;
    }
    Ok((pieces, json!(report)))
}

/// One piece of a cast column; rows in its errors are rows of the piece.
fn cast_piece(
    array: &ArrayRef,
    column: &str,
    to: CastType,
    data_type: &DataType,
) -> Result<ArrayRef, RuleError> {
    let refuse = |row: usize| RuleError::Cast {
        row: row + 1,
        column: column.to_string(),
        value: show(array, row),
        to: to.name(),
    };
    // Arrow truncates 3.7 to 3; a cast that loses a fraction is refused instead.
    if to == CastType::Int
        && matches!(
            array.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        )
    {
        let floats = arrow::compute::cast(array, &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        if let Some(row) =
            (0..floats.len()).find(|&i| floats.is_valid(i) && floats.value(i).fract() != 0.0)
        {
            return Err(refuse(row));
        }
    }
    let lenient = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = arrow::compute::cast_with_options(array, data_type, &lenient)?;
    // A value that was there and is missing after the cast did not convert.
    if cast.null_count() != array.null_count() {
        let row = (0..array.len())
            .find(|&i| array.is_valid(i) && cast.is_null(i))
            .unwrap_or(0);
        return Err(refuse(row));
    }
    Ok(cast)
}

pub(crate) fn filter(
    pieces: &Pieces,
    expression: &str,
    expr: &Expr,
) -> Result<(Pieces, Value), RuleError> {
    let batches = pieces
        .batches
        .par_iter()
        .map(|batch| {
            Ok(arrow::compute::filter_record_batch(
                batch,
                &expr.eval(batch)?,
            )?)
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
    let out = Pieces {
        schema: pieces.schema.clone(),
        batches,
        source: pieces.source.clone(),
    };
    let dropped = pieces.rows() - out.rows();
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

/// Whether row `row` is still in, under `keep` (no mask: every row is).
fn kept(keep: Option<&BooleanArray>, row: usize) -> bool {
    keep.is_none_or(|k| k.value(row))
}

/// Keeps the first of every set of identical rows among those `keep` leaves in, and returns the
/// new mask. Each row is hashed a column at a time into a `u64`; rows with equal hashes are
/// compared value by value, so a collision cannot drop a row. Equal means what Arrow's row format
/// says: nulls equal nulls, floats are equal when their bits are.
pub(crate) fn duplicates(
    pieces: &Pieces,
    keep: Option<&BooleanArray>,
) -> Result<(BooleanArray, Value), RuleError> {
    let n = pieces.rows();
    if u32::try_from(n).is_err() {
        return duplicates_by_row_format(pieces, keep);
    }
    // A column type that only Arrow's comparators compare fails here, not while comparing.
    if let Some(batch) = pieces.batches.first() {
        for array in batch.columns() {
            if !simple(array.data_type()) {
                let _comparable = arrow::array::make_comparator(
                    array.as_ref(),
                    array.as_ref(),
                    Default::default(),
                )?;
            }
        }
    }
    let blocks = hashed_blocks(pieces, keep)?;
    let starts = pieces.starts();
    let same = |a: usize, b: usize| {
        let ((x, i), (y, j)) = (locate(&starts, a), locate(&starts, b));
        let (x, y) = (&pieces.batches[x], &pieces.batches[y]);
        x.columns()
            .iter()
            .zip(y.columns())
            .all(|(x, y)| same_value(x.as_ref(), i, y.as_ref(), j))
    };
    // Each part holds equal rows in row order (every block's share of it, blocks in order), so
    // each part finds its own duplicates (keeping the first) on its own core.
    let repeated: Vec<Vec<u32>> = (0..PARTS)
        .into_par_iter()
        .map(|part| {
            let len = blocks.iter().map(|b| b.part(part).0.len()).sum();
            // The first row of each hash, and any later distinct rows with the same hash.
            let mut first: HashMap<u64, u32, BuildHasherDefault<Prehashed>> =
                HashMap::with_capacity_and_hasher(len, Default::default());
            let mut more: HashMap<u64, Vec<u32>> = HashMap::new();
            let mut repeated = Vec::new();
            for block in &blocks {
                let (hashes, rows) = block.part(part);
                for (&h, &row) in hashes.iter().zip(rows) {
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
            }
            repeated
        })
        .collect();
    let mut out = BooleanBufferBuilder::new(n);
    match keep {
        Some(keep) => out.append_buffer(keep.values()),
        None => out.append_n(n, true),
    }
    let mut dropped = 0;
    for row in repeated.into_iter().flatten() {
        out.set_bit(row as usize, false);
        dropped += 1;
    }
    Ok((
        BooleanArray::new(out.finish(), None),
        json!({"dropped": dropped}),
    ))
}

/// The parts [`duplicates`] splits rows into, by eight bits of their hash. Not the top bits (the
/// hash table's tags: a part's keys would all share one, and every probe would compare keys) nor
/// the bottom ones (its bucket index).
const PARTS: usize = 256;

fn part_of(hash: u64) -> usize {
    ((hash >> 32) as usize) % PARTS
}

/// The hashes of a block of rows still in, with their rows (numbers in the whole table), sorted
/// by part: the rows of part `p` are `bounds[p]..bounds[p + 1]`, in row order. Each part then
/// reads its rows' hashes in sequence, not scattered over one array of the whole table's.
struct Block {
    hashes: Vec<u64>,
    rows: Vec<u32>,
    bounds: Vec<u32>,
}

impl Block {
    fn part(&self, part: usize) -> (&[u64], &[u32]) {
        let range = self.bounds[part] as usize..self.bounds[part + 1] as usize;
        (&self.hashes[range.clone()], &self.rows[range])
    }
}

/// Every row `keep` leaves in, hashed over every column (equal rows, in the sense of
/// `duplicates`, hash equal) a block at a time on every core, and sorted by part within its
/// block.
fn hashed_blocks(pieces: &Pieces, keep: Option<&BooleanArray>) -> Result<Vec<Block>, RuleError> {
    const BLOCK: usize = 1 << 16;
    // Types hashed through Arrow's row format, converted a block at a time.
    let converters = pieces
        .schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if simple(t) => Ok(None),
            t => RowConverter::new(vec![SortField::new(t.clone())]).map(Some),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Each block: its piece, its first row there and in the whole table, and its length.
    let mut spans = Vec::new();
    for (batch, start) in pieces.batches.iter().zip(pieces.starts()) {
        for first in (0..batch.num_rows()).step_by(BLOCK) {
            spans.push((
                batch,
                first,
                start + first,
                BLOCK.min(batch.num_rows() - first),
            ));
        }
    }
    spans
        .into_par_iter()
        .map(|(batch, first, row, len)| {
            let mut hashes = vec![0u64; len];
            for (column, converter) in batch.columns().iter().zip(&converters) {
                let column = column.slice(first, len);
                hash_column(&column, converter.as_ref(), &mut hashes)?;
            }
            let kept = |i: usize| kept(keep, row + i);
            let mut bounds = vec![0u32; PARTS + 1];
            for (i, &h) in hashes.iter().enumerate() {
                if kept(i) {
                    bounds[part_of(h) + 1] += 1;
                }
            }
            for p in 0..PARTS {
                bounds[p + 1] += bounds[p];
            }
            let total = bounds[PARTS] as usize;
            let (mut sorted, mut rows) = (vec![0u64; total], vec![0u32; total]);
            let mut next = bounds.clone();
            for (i, &h) in hashes.iter().enumerate() {
                if kept(i) {
                    let slot = &mut next[part_of(h)];
                    sorted[*slot as usize] = h;
                    rows[*slot as usize] = (row + i) as u32;
                    *slot += 1;
                }
            }
            Ok(Block {
                hashes: sorted,
                rows,
                bounds,
            })
        })
        .collect()
}

/// Types whose values [`hash_column`] and [`same_value`] read directly; the others go through
/// Arrow's row format and comparators.
fn simple(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8
    ) || data_type.is_primitive()
}

/// Whether value `i` of `a` and value `j` of `b` (two pieces of one column) are equal as
/// [`duplicates`] means it, which is also what [`hash_column`] hashes: nulls equal nulls,
/// numbers are equal when their bytes are.
fn same_value(a: &dyn Array, i: usize, b: &dyn Array, j: usize) -> bool {
    match (a.is_valid(i), b.is_valid(j)) {
        (false, false) => return true,
        (true, true) => {}
        _ => return false,
    }
    match a.data_type() {
        DataType::Float64 => {
            let (x, y) = (
                a.as_primitive::<Float64Type>(),
                b.as_primitive::<Float64Type>(),
            );
            x.value(i).to_bits() == y.value(j).to_bits()
        }
        DataType::Int64 => {
            a.as_primitive::<Int64Type>().value(i) == b.as_primitive::<Int64Type>().value(j)
        }
        DataType::Boolean => a.as_boolean().value(i) == b.as_boolean().value(j),
        DataType::Utf8 => a.as_string::<i32>().value(i) == b.as_string::<i32>().value(j),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i) == b.as_string::<i64>().value(j),
        // Checked to be comparable before any comparison (see `duplicates`).
        _ => arrow::array::make_comparator(a, b, Default::default())
            .is_ok_and(|compare| compare(i, j).is_eq()),
    }
}

/// [`duplicates`] for tables too long for `u32` row numbers: Arrow's row format in one set.
fn duplicates_by_row_format(
    pieces: &Pieces,
    keep: Option<&BooleanArray>,
) -> Result<(BooleanArray, Value), RuleError> {
    let fields = pieces
        .schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let converted = pieces
        .batches
        .iter()
        .map(|b| converter.convert_columns(b.columns()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::with_capacity(pieces.rows());
    let mut dropped = 0;
    let out: BooleanArray = converted
        .iter()
        .flat_map(|rows| (0..rows.num_rows()).map(move |i| rows.row(i)))
        .enumerate()
        .map(|(i, row)| {
            let unique = kept(keep, i) && seen.insert(row);
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
    mut pieces: Pieces,
    keep: Option<BooleanArray>,
    rule: &Outliers,
) -> Result<(Pieces, Option<BooleanArray>, Value), RuleError> {
    let mut report = BTreeMap::new();
    let mut keep = keep;
    let mut clipped = Vec::new();
    let columns = rule
        .columns
        .iter()
        .map(|column| Ok((column, pieces.schema.index_of(column)?)))
        .collect::<Result<Vec<_>, RuleError>>()?;
    let before = keep.clone();
    let rows = pieces.rows();
    // Every column's fences and counts, on every core.
    let found = columns
        .par_iter()
        .map(|&(column, index)| {
            let arrays = column_pieces(&pieces, index);
            let counted = counted_floats("outliers", column, &arrays, before.as_ref())?;
            let Some((low, high)) = fences(rule.method, &parts(&counted)) else {
                return Ok((column, index, arrays, None));
            };
            // Missing values and NaN count as inside: other rules handle them.
            let mut inside = BooleanBufferBuilder::new(rows);
            for (floats, _) in &counted {
                let values = floats.values();
                let mut piece = BooleanBuffer::collect_bool(values.len(), |i| {
                    let x = values[i];
                    x.is_nan() || (low..=high).contains(&x)
                });
                if let Some(nulls) = floats.nulls() {
                    piece = &piece | &!nulls.inner();
                }
                inside.append_buffer(&piece);
            }
            let inside = inside.finish();
            let outside = match &before {
                Some(before) => (before.values() & &!&inside).count_set_bits(),
                None => inside.len() - inside.count_set_bits(),
            };
            let inside = BooleanArray::new(inside, None);
            Ok((column, index, arrays, Some((low, high, inside, outside))))
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
    for (column, index, arrays, fenced) in found {
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
                    let arrays = arrays
                        .iter()
                        .map(|a| clip(a, low, high))
                        .collect::<Result<Vec<_>, _>>()?;
                    clipped.push((index, arrays));
                }
            }
        }
        report.insert(column.clone(), entry);
    }
    for (index, arrays) in clipped {
        let data_type = pieces.schema.field(index).data_type().clone();
        pieces = replace(&pieces, index, data_type, arrays)?;
    }
    Ok((pieces, keep, json!(report)))
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

    /// `b` as one piece, and cut into pieces of at most two rows with an empty one among them.
    fn cuts(b: &RecordBatch) -> [Pieces; 2] {
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
    fn both<T: PartialEq + std::fmt::Debug>(
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
    fn apply(p: Pieces, keep: Option<BooleanArray>) -> RecordBatch {
        let b = arrow::compute::concat_batches(&p.schema, &p.batches).unwrap();
        match keep {
            Some(k) => arrow::compute::filter_record_batch(&b, &k).unwrap(),
            None => b,
        }
    }

    fn missing(b: RecordBatch, m: &Missing) -> Result<(RecordBatch, Value), RuleError> {
        both(&b, |p| {
            let (p, keep, r) = super::missing(p, m)?;
            Ok((apply(p, keep), r))
        })
    }

    fn outliers(b: RecordBatch, o: &Outliers) -> Result<(RecordBatch, Value), RuleError> {
        outliers_after(b, None, o).map(|(b, _, r)| (b, r))
    }

    /// Also the rows the mask keeps.
    fn outliers_after(
        b: RecordBatch,
        keep: Option<BooleanArray>,
        o: &Outliers,
    ) -> Result<(RecordBatch, usize, Value), RuleError> {
        both(&b, |p| {
            let (p, keep, r) = super::outliers(p, keep.clone(), o)?;
            let kept = keep.as_ref().map_or(p.rows(), |k| k.true_count());
            Ok((apply(p, keep), kept, r))
        })
    }

    fn duplicates(
        b: &RecordBatch,
        keep: Option<&BooleanArray>,
    ) -> Result<(BooleanArray, Value), RuleError> {
        both(b, |p| super::duplicates(&p, keep))
    }

    fn cast(
        b: RecordBatch,
        casts: &[(String, CastType)],
    ) -> Result<(RecordBatch, Value), RuleError> {
        both(&b, |p| {
            let (p, r) = super::cast(p, casts)?;
            Ok((apply(p, None), r))
        })
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
        let out = arrow::compute::filter_record_batch(&b, &keep).unwrap();
        assert_eq!(col(&out, "b"), ["x", "y", "-"]);
        assert_eq!(r, json!({"dropped": 2}));
        // Only the rows still in count: the first `x` is gone, so the last one stays.
        let mask = BooleanArray::from(vec![false, true, true, true, true]);
        let (keep, r) = duplicates(&b, Some(&mask)).unwrap();
        let out = arrow::compute::filter_record_batch(&b, &keep).unwrap();
        assert_eq!(col(&out, "b"), ["y", "-", "x"]);
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
        let (_, kept, r) = outliers_after(b, Some(mask), &iqr(Action::Drop)).unwrap();
        assert_eq!(
            r,
            json!({"x": {"low": -0.5, "high": 5.5, "dropped": 0, "clipped": 0}})
        );
        assert_eq!(kept, 5);
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
