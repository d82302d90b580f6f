//! `duplicates`: the first of every set of identical rows stays, the others are marked to drop;
//! rows are hashed a column at a time on every core, and equal hashes compared value by value.

use super::RuleError;
use crate::table::hash::{hash_bytes, mix};
use crate::table::{locate, Pieces};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rules::testing::{batch, both, col, ints, texts};
    use arrow::record_batch::RecordBatch;

    fn duplicates(
        b: &RecordBatch,
        keep: Option<&BooleanArray>,
    ) -> Result<(BooleanArray, Value), RuleError> {
        both(b, |p| super::duplicates(&p, keep))
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
}
