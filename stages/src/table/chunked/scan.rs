//! The first pass over a chunk: [`scan`] checks every record's shape, infers its columns' types
//! and, for a plain chunk, decodes each column under the type its values have looked like so far
//! ([`Spec`]), which stands when that turns out to be the file's type ([`speculated`]).

use super::fields::{field_str, plain, records_of};
use super::infer::{classify, plain_number, Kind, UTF8};
use arrow::array::builder::NullBufferBuilder;
use arrow::array::{ArrayRef, NullArray, PrimitiveArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// What the first pass learned from one chunk.
pub(super) struct Scan {
    pub(super) types: Vec<u16>,
    pub(super) records: usize,
    pub(super) quoted: bool,
    /// The chunk's columns as decoded along the way, for a [`plain`] chunk.
    pub(super) decoded: Vec<Spec>,
}

/// A column decoded during the first pass, under the type its values in the chunk have
/// looked like so far. It stands if the file's type turns out to be that type; a column whose
/// type changed after values were decoded gives up (`Gone`) and the chunk is decoded again.
pub(super) enum Spec {
    /// Only empty values so far: this many nulls.
    Empty(usize),
    Int(Vec<i64>, NullBufferBuilder),
    Float(Vec<f64>, NullBufferBuilder),
    Text(Vec<i32>, Vec<u8>, NullBufferBuilder),
    Gone,
}

impl Spec {
    /// Adds `value` (UTF-8), the column's types so far, `packed`, including it; `rows` is the
    /// chunk's expected number of records, reserved up front so that columns never regrow.
    fn push(&mut self, value: &[u8], packed: u16, rows: usize) {
        if value.is_empty() {
            match self {
                Spec::Empty(n) => *n += 1,
                Spec::Int(v, nulls) => {
                    v.push(0);
                    nulls.append_null();
                }
                Spec::Float(v, nulls) => {
                    v.push(0.0);
                    nulls.append_null();
                }
                Spec::Text(offsets, data, nulls) => {
                    offsets.push(data.len() as i32);
                    nulls.append_null();
                }
                Spec::Gone => {}
            }
            return;
        }
        let nulls_for = |n: usize| {
            let mut nulls = NullBufferBuilder::new(rows.max(n));
            nulls.append_n_nulls(n);
            nulls
        };
        fn filled<T: Clone>(n: usize, value: T, rows: usize) -> Vec<T> {
            let mut v = Vec::with_capacity(rows.max(n) + 1);
            v.resize(n, value);
            v
        }
        let text = field_str(value);
        match (Kind::of(packed), &mut *self) {
            (Kind::Int, Spec::Empty(n)) => *self = Spec::Int(filled(*n, 0, rows), nulls_for(*n)),
            (Kind::Float, Spec::Empty(n)) => {
                *self = Spec::Float(filled(*n, 0.0, rows), nulls_for(*n))
            }
            (Kind::Text, Spec::Empty(n)) => {
                *self = Spec::Text(filled(*n + 1, 0, rows), Vec::new(), nulls_for(*n))
            }
            (Kind::Int, Spec::Int(..))
            | (Kind::Float, Spec::Float(..))
            | (Kind::Text, Spec::Text(..)) => {}
            _ => {
                *self = Spec::Gone;
                return;
            }
        }
        match self {
            Spec::Int(v, nulls) => match Int64Type::parse(text) {
                Some(x) => {
                    v.push(x);
                    nulls.append_non_null();
                }
                None => *self = Spec::Gone,
            },
            Spec::Float(v, nulls) => match Float64Type::parse(text) {
                Some(x) => {
                    v.push(x);
                    nulls.append_non_null();
                }
                None => *self = Spec::Gone,
            },
            Spec::Text(offsets, data, nulls) => {
                data.extend_from_slice(value);
                match i32::try_from(data.len()) {
                    Ok(end) => {
                        offsets.push(end);
                        nulls.append_non_null();
                    }
                    Err(_) => *self = Spec::Gone,
                }
            }
            _ => {}
        }
    }

    /// The column as an array of `data_type`, when that is what it was decoded as.
    fn finish(self, data_type: &DataType) -> Option<ArrayRef> {
        let all_null = |n: usize| {
            let mut nulls = NullBufferBuilder::new(n);
            nulls.append_n_nulls(n);
            nulls.finish()
        };
        Some(match (self, data_type) {
            (Spec::Empty(n), DataType::Null) => Arc::new(NullArray::new(n)),
            (Spec::Empty(n), DataType::Int64) => Arc::new(PrimitiveArray::<Int64Type>::new(
                vec![0; n].into(),
                all_null(n),
            )),
            (Spec::Empty(n), DataType::Float64) => Arc::new(PrimitiveArray::<Float64Type>::new(
                vec![0.0; n].into(),
                all_null(n),
            )),
            (Spec::Empty(n), DataType::Utf8) => Arc::new(
                StringArray::try_new(
                    OffsetBuffer::new(vec![0i32; n + 1].into()),
                    Vec::<u8>::new().into(),
                    all_null(n),
                )
                .ok()?,
            ),
            (Spec::Int(v, mut nulls), DataType::Int64) => {
                Arc::new(PrimitiveArray::<Int64Type>::new(v.into(), nulls.finish()))
            }
            (Spec::Float(v, mut nulls), DataType::Float64) => {
                Arc::new(PrimitiveArray::<Float64Type>::new(v.into(), nulls.finish()))
            }
            (Spec::Text(offsets, data, mut nulls), DataType::Utf8) => Arc::new(
                StringArray::try_new(
                    OffsetBuffer::new(offsets.into()),
                    data.into(),
                    nulls.finish(),
                )
                .ok()?,
            ),
            _ => return None,
        })
    }
}

/// The batch decoded during the first pass, if every column was decoded as the file's type.
pub(super) fn speculated(
    decoded: Vec<Spec>,
    schema: &Arc<Schema>,
    rows: usize,
) -> Option<RecordBatch> {
    if decoded.len() != schema.fields().len() {
        return None;
    }
    let columns = decoded
        .into_iter()
        .zip(schema.fields())
        .map(|(spec, field)| spec.finish(field.data_type()))
        .collect::<Option<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .ok()
}

/// Checks every record of `bytes` and infers its columns' types; `None` when a record does not
/// have `width` fields or a value is not UTF-8. A chunk with a quote in it is only flagged
/// unless `quotes_ok`: its cuts may lie inside a quoted value.
pub(super) fn scan(bytes: &[u8], width: usize, quotes_ok: bool) -> Option<Scan> {
    let quoted = bytes.contains(&b'"');
    let mut types = vec![0u16; width];
    if quoted && !quotes_ok {
        return Some(Scan {
            types,
            records: 0,
            quoted,
            decoded: Vec::new(),
        });
    }
    std::str::from_utf8(bytes).ok()?;
    if plain(bytes) {
        let mut records = 0;
        let expected = memchr::memchr_iter(b'\n', bytes).count() + 1;
        let mut decoded: Vec<Spec> = (0..width).map(|_| Spec::Empty(0)).collect();
        records_of(bytes, width, |row| {
            records += 1;
            for ((value, packed), spec) in row.iter().zip(types.iter_mut()).zip(&mut decoded) {
                // Float columns, the common case, in one pass over the value.
                if let Spec::Float(values, nulls) = spec {
                    if let Some((x, bit)) = plain_number(value) {
                        if Kind::of(*packed | bit) == Kind::Float {
                            *packed |= bit;
                            values.push(x);
                            nulls.append_non_null();
                            continue;
                        }
                    }
                }
                if !value.is_empty() && *packed & UTF8 == 0 {
                    *packed |= classify(field_str(value));
                }
                spec.push(value, *packed, expected);
            }
            Some(())
        })?;
        return Some(Scan {
            types,
            records,
            quoted,
            decoded,
        });
    }
    let mut reader = csv_core::Reader::new();
    let mut output = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; width + 1];
    let mut input = bytes;
    let mut records = 0;
    let (mut out_len, mut ends_len) = (0, 0);
    loop {
        // An empty `input` tells the reader the data ended, flushing a last record that has no
        // terminator.
        let (result, nin, nout, nend) =
            reader.read_record(input, &mut output[out_len..], &mut ends[ends_len..]);
        input = &input[nin..];
        out_len += nout;
        ends_len += nend;
        match result {
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull => {
                let len = output.len();
                output.resize(len * 2, 0);
            }
            // More fields than the header: a malformed row.
            csv_core::ReadRecordResult::OutputEndsFull => return None,
            csv_core::ReadRecordResult::Record => {
                record(&output[..out_len], &ends[..ends_len], width, &mut types)?;
                records += 1;
                out_len = 0;
                ends_len = 0;
            }
            csv_core::ReadRecordResult::End => {
                return Some(Scan {
                    types,
                    records,
                    quoted,
                    decoded: Vec::new(),
                })
            }
        }
    }
}

/// One record's fields (`ends` are their end offsets in `fields`) into the column types.
fn record(fields: &[u8], ends: &[usize], width: usize, types: &mut [u16]) -> Option<()> {
    if ends.len() != width {
        return None;
    }
    let mut start = 0;
    for (&end, packed) in ends.iter().zip(types.iter_mut()) {
        let value = &fields[start..end];
        start = end;
        if value.is_empty() || *packed & UTF8 != 0 {
            continue;
        }
        // `csv_core` splits at ASCII bytes too.
        *packed |= classify(field_str(value));
    }
    Some(())
}
