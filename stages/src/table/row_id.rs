//! The source row id: `clean` and `split` add a column [`ROW_ID`] holding each row's index in
//! the table they read (0 for the first data row), `normalize` carries it beside the features
//! as `rows.npy`, and `evaluate` writes it as the first column of the predictions, so that a
//! prediction joins back to its row of the raw table. A table that already has the column (one
//! that went through `clean` or `split` before) keeps its ids.

use super::{Pieces, TableError};
use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// The column's name: prefixed so that it does not meet a user's column.
pub(crate) const ROW_ID: &str = "sluice_row";

/// The schema `split` writes: `schema`, with the id column added when it has none.
pub(crate) fn with_id_field(schema: &SchemaRef) -> SchemaRef {
    if schema.index_of(ROW_ID).is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(ROW_ID, DataType::Int64, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` (rows `rows` of the source table) in the schema `out` of [`with_id_field`]: the rows'
/// numbers appended as the id column unless the batch carries ids already.
pub(crate) fn add_ids(
    batch: RecordBatch,
    rows: &[usize],
    out: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().index_of(ROW_ID).is_ok() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|&r| r as i64),
    )));
    RecordBatch::try_new(out.clone(), columns)
}

/// The ids `pieces` carry: `None` without the column, an error when a column of that name is
/// not ids (another type, or missing values).
pub(crate) fn carried(pieces: &Pieces) -> Result<Option<Vec<i64>>, TableError> {
    if pieces.schema.index_of(ROW_ID).is_err() {
        return Ok(None);
    }
    match ids(&pieces.schema, &pieces.batches) {
        Some(ids) => Ok(Some(ids)),
        None => Err(TableError::RowIdColumn {
            path: pieces.source.clone(),
        }),
    }
}

/// `pieces` without the id column, and the ids it held (`None` when it had none).
pub(crate) fn detach(pieces: Pieces) -> Result<(Pieces, Option<Vec<i64>>), TableError> {
    let Some(ids) = carried(&pieces)? else {
        return Ok((pieces, None));
    };
    let index = pieces.schema.index_of(ROW_ID).expect("ids found it");
    let fields: Vec<Arc<Field>> = (pieces.schema.fields().iter())
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, f)| f.clone())
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        pieces.schema.metadata().clone(),
    ));
    let batches = pieces
        .batches
        .into_iter()
        .map(|mut b| {
            b.remove_column(index);
            b
        })
        .collect();
    let pieces = Pieces {
        schema,
        batches,
        source: pieces.source,
    };
    Ok((pieces, Some(ids)))
}

/// `pieces` (which have no id column) with `ids`, one per row, as their last column.
pub(crate) fn attach(pieces: Pieces, ids: &[i64]) -> Result<Pieces, arrow::error::ArrowError> {
    let schema = with_id_field(&pieces.schema);
    let mut first = 0;
    let mut batches = Vec::with_capacity(pieces.batches.len());
    for b in pieces.batches {
        let n = b.num_rows();
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(ids[first..first + n].to_vec())));
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
        first += n;
    }
    Ok(Pieces {
        schema,
        batches,
        source: pieces.source,
    })
}

/// The ids of a table read in `batches`, when it has the column as `split` writes it (Int64,
/// no nulls); `None` otherwise.
pub(crate) fn ids(schema: &SchemaRef, batches: &[RecordBatch]) -> Option<Vec<i64>> {
    let index = schema.index_of(ROW_ID).ok()?;
    if schema.field(index).data_type() != &DataType::Int64 {
        return None;
    }
    let mut out = Vec::new();
    for b in batches {
        let column = b.column(index).as_primitive::<Int64Type>();
        if column.null_count() > 0 {
            return None;
        }
        out.extend_from_slice(column.values());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_added_once_and_read_back() {
        let batch =
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5, 6])) as _)])
                .unwrap();
        let out = with_id_field(&batch.schema());
        let with = add_ids(batch, &[7, 3], &out).unwrap();
        assert_eq!(ids(&out, std::slice::from_ref(&with)), Some(vec![7, 3]));
        // A table that has ids keeps them.
        assert_eq!(with_id_field(&out), out);
        let again = add_ids(with.clone(), &[0, 1], &out).unwrap();
        assert_eq!(ids(&out, &[again]), Some(vec![7, 3]));
    }

    #[test]
    fn detached_ids_attach_again_and_a_column_that_is_not_ids_is_refused() {
        let batch = |ids: Arc<dyn Array>| {
            RecordBatch::try_from_iter([
                ("x", Arc::new(Int64Array::from(vec![5, 6, 7])) as _),
                (ROW_ID, ids),
            ])
            .unwrap()
        };
        let pieces = |b: RecordBatch| Pieces {
            schema: b.schema(),
            batches: vec![b.slice(0, 1), b.slice(1, 2)],
            source: "t.csv".into(),
        };
        let (bare, got) = detach(pieces(batch(Arc::new(Int64Array::from(vec![9, 4, 2]))))).unwrap();
        assert_eq!(got, Some(vec![9, 4, 2]));
        assert_eq!(bare.schema.fields().len(), 1);
        let back = attach(bare, &[9, 4, 2]).unwrap();
        assert_eq!(ids(&back.schema, &back.batches), Some(vec![9, 4, 2]));
        let text = arrow::array::StringArray::from(vec!["a", "b", "c"]);
        assert!(matches!(
            detach(pieces(batch(Arc::new(text)))),
            Err(TableError::RowIdColumn { .. })
        ));
    }
}
