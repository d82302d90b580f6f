//! The second pass, for chunks the first pass did not decode as the file's types: [`decode`]
//! parses each value under the file's schema the way arrow-csv's `Decoder` does, directly for a
//! plain chunk of integers, floats and text ([`decode_plain`]).

use super::fields::{field_str, plain, records_of};
use arrow::array::builder::NullBufferBuilder;
use arrow::array::{ArrayRef, NullArray, PrimitiveArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// Decodes one chunk of `records` records into one batch.
pub(super) fn decode(bytes: &[u8], schema: Arc<Schema>, records: usize) -> Option<RecordBatch> {
    let simple = schema.fields().iter().all(|f| {
        matches!(
            f.data_type(),
            DataType::Int64 | DataType::Float64 | DataType::Utf8 | DataType::Null
        )
    });
    if simple && plain(bytes) {
        return decode_plain(bytes, schema, records);
    }
    let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(records.max(1))
        .build_decoder();
    let mut input = bytes;
    let mut batches = Vec::new();
    // As arrow-csv's own `BufReader` drives it; an empty `input` ends the data.
    loop {
        loop {
            let n = decoder.decode(input).ok()?;
            input = &input[n..];
            if n == 0 || decoder.capacity() == 0 {
                break;
            }
        }
        match decoder.flush().ok()? {
            Some(batch) => batches.push(batch),
            None => break,
        }
    }
    match batches.len() {
        1 => batches.pop(),
        _ => arrow::compute::concat_batches(&schema, &batches).ok(),
    }
}

/// One column being decoded by [`decode_plain`].
enum Builder {
    Int(Vec<i64>, NullBufferBuilder),
    Float(Vec<f64>, NullBufferBuilder),
    Text(Vec<i32>, Vec<u8>, NullBufferBuilder),
    Null,
}

/// [`decode`] for a [`plain`] chunk whose columns are all integers, floats, text or empty:
/// each value parsed as arrow-csv parses it (empty is null, numbers through arrow's `Parser`),
/// without arrow-csv's copy of every record.
fn decode_plain(bytes: &[u8], schema: Arc<Schema>, records: usize) -> Option<RecordBatch> {
    // Read again from the file, so checked again: the file may have changed since the scan.
    std::str::from_utf8(bytes).ok()?;
    let mut builders: Vec<Builder> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Int64 => {
                Builder::Int(Vec::with_capacity(records), NullBufferBuilder::new(records))
            }
            DataType::Float64 => {
                Builder::Float(Vec::with_capacity(records), NullBufferBuilder::new(records))
            }
            DataType::Utf8 => {
                let mut offsets = Vec::with_capacity(records + 1);
                offsets.push(0);
                Builder::Text(offsets, Vec::new(), NullBufferBuilder::new(records))
            }
            _ => Builder::Null,
        })
        .collect();
    let mut rows = 0;
    records_of(bytes, schema.fields().len(), |row| {
        rows += 1;
        for (value, builder) in row.iter().zip(builders.iter_mut()) {
            let text = || Some(field_str(value));
            match builder {
                Builder::Int(values, nulls) => {
                    if value.is_empty() {
                        values.push(0);
                        nulls.append_null();
                    } else {
                        values.push(Int64Type::parse(text()?)?);
                        nulls.append_non_null();
                    }
                }
                Builder::Float(values, nulls) => {
                    if value.is_empty() {
                        values.push(0.0);
                        nulls.append_null();
                    } else {
                        values.push(Float64Type::parse(text()?)?);
                        nulls.append_non_null();
                    }
                }
                Builder::Text(offsets, data, nulls) => {
                    data.extend_from_slice(value);
                    offsets.push(i32::try_from(data.len()).ok()?);
                    if value.is_empty() {
                        nulls.append_null();
                    } else {
                        nulls.append_non_null();
                    }
                }
                Builder::Null => {}
            }
        }
        Some(())
    })?;
    let columns = builders
        .into_iter()
        .map(|b| -> Option<ArrayRef> {
            Some(match b {
                Builder::Int(values, mut nulls) => Arc::new(PrimitiveArray::<Int64Type>::new(
                    values.into(),
                    nulls.finish(),
                )),
                Builder::Float(values, mut nulls) => Arc::new(PrimitiveArray::<Float64Type>::new(
                    values.into(),
                    nulls.finish(),
                )),
                Builder::Text(offsets, data, mut nulls) => Arc::new(
                    StringArray::try_new(
                        OffsetBuffer::new(offsets.into()),
                        data.into(),
                        nulls.finish(),
                    )
                    .ok()?,
                ),
                Builder::Null => Arc::new(NullArray::new(rows)),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .ok()
}
