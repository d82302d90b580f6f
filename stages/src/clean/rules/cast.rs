//! `cast`: columns converted to another type, refusing (with the row) any value that does not
//! convert rather than leaving it empty.

use super::{replace, show, RuleError};
use crate::clean::config::CastType;
use crate::table::Pieces;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Float64Type};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn target(t: CastType) -> DataType {
    match t {
        CastType::Int => DataType::Int64,
        CastType::Float => DataType::Float64,
        CastType::Text => DataType::Utf8,
        CastType::Bool => DataType::Boolean,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rules::testing::{apply, batch, both, col, texts};
    use arrow::array::Float64Array;
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn cast(
        b: RecordBatch,
        casts: &[(String, CastType)],
    ) -> Result<(RecordBatch, Value), RuleError> {
        both(&b, |p| {
            let (p, r) = super::cast(p, casts)?;
            Ok((apply(p, None), r))
        })
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
