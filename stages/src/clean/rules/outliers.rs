//! `outliers`: values outside fences (IQR or z-score) of each named column, from the rows still in,
//! marked to drop or clipped to the fences.

use super::{column_pieces, counted_floats, parts, replace, RuleError};
use crate::clean::config::{Action, Outliers};
use crate::table::Pieces;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Float64Type};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
            let Some((low, high)) = rule.method.bounds(&parts(&counted)) else {
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
    use crate::clean::rules::testing::{apply, batch, both, col, ints};
    use crate::fence::Fence;
    use arrow::record_batch::RecordBatch;

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

    #[test]
    fn outliers_are_dropped_or_clipped_at_the_fences() {
        let b = batch(vec![(
            "x",
            ints(vec![Some(1), Some(2), Some(3), Some(4), Some(100), None]),
        )]);
        let iqr = |action| Outliers {
            columns: vec!["x".into()],
            method: Fence::Iqr { k: 1.5 },
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
            method: Fence::Zscore { threshold: 1.0 },
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
}
