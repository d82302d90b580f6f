//! The parallel CSV reader: [`read`] cuts the file into chunks at record boundaries and reads
//! them on every core. One pass checks the shape of every record (its number of fields, UTF-8),
//! infers the column types from every value, exactly as arrow-csv's `infer_schema` does over the
//! whole file, and decodes each column as the type its values have looked like so far ([`Spec`]).
//! Chunks whose columns all turn out to have been decoded as the file's types are done; the
//! others are read again and decoded under the file's schema, the way arrow-csv's `Decoder`
//! parses each value. The chunks come back as they are, one batch each (the stages work on them
//! piece by piece; [`join`] makes one batch a column at a time, so the whole table is never held
//! twice), and are read with `pread`, so the file is never held whole.
//!
//! It gives the same table as the sequential reader in `io`, or gives up ([`Outcome::Fallback`])
//! whenever anything is unusual (a malformed header or row, bytes that are not UTF-8, a value
//! that fails to decode): the sequential reader then produces the result or the error, with the
//! line number the person fixing the file needs.

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{ArrayRef, NullArray, PrimitiveArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use regex::RegexSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, LazyLock};

/// What reading a chunk at a time gave.
pub(super) enum Outcome {
    /// The file's schema and its chunks, in order, each one batch.
    Table(Arc<Schema>, Vec<RecordBatch>),
    /// Something is unusual: read the file sequentially, which reports it by line.
    Fallback,
}

/// The target size of one chunk. Large enough that per-chunk costs vanish, small enough that
/// the chunks being read at any moment take little memory.
pub(super) const CHUNK: usize = 16 << 20;

/// arrow-csv's inference patterns, in its order (`arrow_csv::reader::REGEX_SET`), for the values
/// the fast checks below do not settle.
static PATTERNS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i)^(true)$|^(false)$(?-i)",
        r"^[+-]?(\d+)$",
        r"^[+-]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$",
        r"^\d{4}-\d\d-\d\d$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[^\d\.].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,3}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,6}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,9}(?:[^\d].*)?$",
    ])
    .expect("the patterns compile")
});

const BOOLEAN: u16 = 1;
const INTEGER: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
const UTF8: u16 = 1 << 8;

/// The set of types a column's values have looked like, as arrow-csv's `InferredDataType`
/// packs it; `UTF8` absorbs everything.
fn data_type(packed: u16) -> DataType {
    match packed {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int64,
        4 | 6 => DataType::Float64,
        b if b != 0 && (b & !0b11111000) == 0 => match b.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// `^[+-]?[0-9]+$` on ASCII bytes.
fn is_integer(b: &[u8]) -> bool {
    let digits = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// arrow-csv's decimal pattern on ASCII bytes:
/// `^[+-]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$`.
fn is_decimal(b: &[u8]) -> bool {
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let whole = digits(&mut i);
    let point = i < b.len() && b[i] == b'.';
    if point {
        i += 1;
        if whole + digits(&mut i) == 0 {
            return false;
        }
    } else if whole == 0 {
        return false;
    }
    let mut exponent = false;
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
        exponent = true;
    }
    i == b.len() && (point || exponent)
}

/// The type bit of one non-empty value, as arrow-csv's `InferredDataType::update` sets it.
fn classify(value: &str) -> u16 {
    let b = value.as_bytes();
    if b.first() == Some(&b'"') {
        return UTF8;
    }
    if b.is_ascii() {
        // Exact for ASCII; anything else goes through the patterns themselves.
        if is_integer(b) {
            return if b.len() >= 19 && value.parse::<i64>().is_err() {
                UTF8
            } else {
                INTEGER
            };
        }
        if is_decimal(b) {
            return FLOAT;
        }
        if b.eq_ignore_ascii_case(b"true") || b.eq_ignore_ascii_case(b"false") {
            return BOOLEAN;
        }
    }
    slow_classify(value)
}

fn slow_classify(value: &str) -> u16 {
    if let Some(m) = PATTERNS.matches(value).into_iter().next() {
        if m == 1 && value.len() >= 19 && value.parse::<i64>().is_err() {
            UTF8
        } else {
            1 << m
        }
    } else if matches!(value, "NaN" | "nan" | "inf" | "-inf") {
        FLOAT
    } else {
        UTF8
    }
}

/// A number written plainly, the way most numeric CSV columns are: an optional `-`, then at
/// most 15 digits, with a `.` between two of them or none; with the type bit [`classify`] gives
/// it. Anything else is `None` and goes the general way.
///
/// Exact: the digits make an integer below 2^53 and the `.` a power of ten up to 10^14, both
/// exact as `f64`, so one division rounds correctly, as arrow's parser (correctly rounded
/// too) does. Scanning once here replaces the integer check, the decimal check and the parse.
fn plain_number(b: &[u8]) -> Option<(f64, u16)> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let (mut mantissa, mut count, mut point) = (0u64, 0usize, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if count > 15 {
        return None;
    }
    let (x, bit) = match point {
        None => (mantissa as f64, INTEGER),
        // `1.` and `.5` are decimals too, but left to the general way.
        Some(i) if i == 0 || i == digits.len() - 1 => return None,
        Some(i) => (mantissa as f64 / POWERS_OF_TEN[digits.len() - 1 - i], FLOAT),
    };
    Some((if negative { -x } else { x }, bit))
}

const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A field of a chunk already checked to be UTF-8 as a whole.
///
/// Fields are cut at `,` and `\n`, ASCII bytes that never occur inside a multi-byte UTF-8
/// sequence, so every field of a valid chunk is valid; checking each again was a measurable
/// share of reading a file.
fn field_str(value: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(value).is_ok());
    // SAFETY: callers pass fields of a buffer that `std::str::from_utf8` accepted, cut at ASCII
    // bytes (see above).
    unsafe { std::str::from_utf8_unchecked(value) }
}

/// A byte range of the file holding whole records.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    start: u64,
    end: u64,
}

/// Calls `f` with the bytes of `chunk`, read into this thread's buffer: a fresh buffer per chunk
/// would have the kernel find and zero new pages for every one (a gigabyte of them per
/// gigabyte read), which cost more than reading.
fn with_chunk<T>(file: &File, chunk: Chunk, f: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out while in use, so that nothing run inside `f` can see it borrowed.
    let mut buf = BUFFER.take();
    buf.resize((chunk.end - chunk.start) as usize, 0);
    let result = match file.read_exact_at(&mut buf, chunk.start) {
        Ok(()) => f(&buf),
        Err(_) => None,
    };
    BUFFER.set(buf);
    result
}

/// What the first pass learned from one chunk.
struct Scan {
    types: Vec<u16>,
    records: usize,
    quoted: bool,
    /// The chunk's columns as decoded along the way, for a [`plain`] chunk.
    decoded: Vec<Spec>,
}

/// What [`data_type`] of a packed set of types is, for the types decoded during the first pass;
/// looked up per value, so without building a `DataType` each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Text,
    Other,
}

impl Kind {
    fn of(packed: u16) -> Kind {
        static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
            (0..=(UTF8 | (UTF8 - 1)))
                .map(|p| match data_type(p) {
                    DataType::Int64 => Kind::Int,
                    DataType::Float64 => Kind::Float,
                    DataType::Utf8 => Kind::Text,
                    _ => Kind::Other,
                })
                .collect()
        });
        KINDS
            .get(usize::from(packed))
            .copied()
            .unwrap_or(Kind::Text)
    }
}

/// A column decoded during the first pass, under the type its values in the chunk have
/// looked like so far. It stands if the file's type turns out to be that type; a column whose
/// type changed after values were decoded gives up (`Gone`) and the chunk is decoded again.
enum Spec {
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
fn speculated(decoded: Vec<Spec>, schema: &Arc<Schema>, rows: usize) -> Option<RecordBatch> {
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
fn scan(bytes: &[u8], width: usize, quotes_ok: bool) -> Option<Scan> {
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

/// Whether `bytes` can be split at every `,` and `\n`: no quotes, no carriage returns.
fn plain(bytes: &[u8]) -> bool {
    memchr::memchr2(b'"', b'\r', bytes).is_none()
}

/// Calls `each` with the fields of every record of a [`plain`] chunk, the way `csv_core` splits
/// it: records end at `\n`, the last may lack one, empty lines are skipped. `None` when a record
/// does not have `width` fields, or when `each` says so.
fn records_of<'a>(
    bytes: &'a [u8],
    width: usize,
    mut each: impl FnMut(&[&'a [u8]]) -> Option<()>,
) -> Option<()> {
    let mut row: Vec<&[u8]> = Vec::with_capacity(width);
    let mut start = 0;
    let mut line_start = 0;
    for end in Delimiters::new(bytes) {
        if bytes[end] == b'\n' && end == line_start {
            start = end + 1;
            line_start = start;
            continue;
        }
        if row.len() == width {
            return None;
        }
        row.push(&bytes[start..end]);
        start = end + 1;
        if bytes[end] == b'\n' {
            if row.len() != width {
                return None;
            }
            each(&row)?;
            row.clear();
            line_start = start;
        }
    }
    if start < bytes.len() {
        if row.len() == width {
            return None;
        }
        row.push(&bytes[start..]);
        if row.len() != width {
            return None;
        }
        each(&row)?;
    } else if !row.is_empty() {
        // The last record ended with a delimiter and no newline: its last field is empty.
        row.push(&bytes[start..]);
        if row.len() != width {
            return None;
        }
        each(&row)?;
    }
    Some(())
}

/// The offsets of every `,` and `\n` in a chunk, in order. Found 64 bytes at a time as a bit
/// mask: fields are short, and searching from one delimiter to the next (`memchr2_iter`) spent
/// more on starting each search than on searching, four times as long over this benchmark's
/// CSV.
struct Delimiters<'a> {
    bytes: &'a [u8],
    /// Where the next block starts.
    next: usize,
    /// Where the block of `mask` starts, and its delimiters not yet returned.
    base: usize,
    mask: u64,
}

impl<'a> Delimiters<'a> {
    fn new(bytes: &'a [u8]) -> Delimiters<'a> {
        Delimiters {
            bytes,
            next: 0,
            base: 0,
            mask: 0,
        }
    }
}

impl Iterator for Delimiters<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            if self.next >= self.bytes.len() {
                return None;
            }
            let end = (self.next + 64).min(self.bytes.len());
            self.base = self.next;
            self.mask = delimiter_mask(&self.bytes[self.next..end]);
            self.next = end;
        }
        let offset = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + offset)
    }
}

/// Bit `i` set where `block[i]` (at most 64 bytes) is `,` or `\n`.
fn delimiter_mask(block: &[u8]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Ok(block) = <&[u8; 64]>::try_from(block) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut mask = 0u64;
        for (k, lane) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is enabled (see `cfg`), and `lane` holds the 16 bytes read.
            let bits = unsafe {
                let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
                let comma = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
                let newline = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8));
                _mm_movemask_epi8(_mm_or_si128(comma, newline))
            };
            mask |= u64::from(bits as u16) << (16 * k);
        }
        return mask;
    }
    block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b',' || b == b'\n')
        .fold(0, |mask, (i, _)| mask | 1 << i)
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

/// The header's names and the byte offset where the data starts; `None` when the header is
/// unusual in any way (the sequential reader then reports it).
fn header(file: &File, size: u64) -> Option<(Vec<String>, u64)> {
    let want = size.min(1 << 20) as usize;
    let mut prefix = vec![0u8; want];
    file.read_exact_at(&mut prefix, 0).ok()?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(prefix.as_slice());
    let names: Vec<String> = reader.headers().ok()?.iter().map(String::from).collect();
    let start = reader.position().byte();
    // The header must have ended inside the prefix, with its terminator.
    if (start as usize >= prefix.len() && (want as u64) < size) || names.is_empty() {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    if !names.iter().all(|n| seen.insert(n.as_str())) {
        return None;
    }
    Some((names, start))
}

/// Cuts `[start, size)` after a newline near every multiple of `chunk` bytes. Exact for files
/// without quotes; [`exact_cuts`] handles the others.
fn newline_cuts(file: &File, start: u64, size: u64, chunk: usize) -> Option<Vec<Chunk>> {
    let mut cuts = vec![start];
    let mut at = start + chunk as u64;
    let mut window = vec![0u8; 1 << 16];
    while at < size {
        let len = ((size - at) as usize).min(window.len());
        file.read_exact_at(&mut window[..len], at).ok()?;
        match window[..len].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let cut = at + i as u64 + 1;
                cuts.push(cut);
                at = cut + chunk as u64;
            }
            None => at += len as u64,
        }
    }
    Some(chunks(cuts, size))
}

fn chunks(mut cuts: Vec<u64>, size: u64) -> Vec<Chunk> {
    if cuts.last() != Some(&size) {
        cuts.push(size);
    }
    cuts.windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| Chunk {
            start: w[0],
            end: w[1],
        })
        .collect()
}

/// Cuts at record boundaries found by tokenizing the whole file in order: for files with
/// quoted fields, where a newline may lie inside a value.
fn exact_cuts(file: &File, start: u64, size: u64, chunk: usize) -> Option<Vec<Chunk>> {
    let mut reader = csv_core::Reader::new();
    let mut cuts = vec![start];
    let mut buf = vec![0u8; 1 << 20];
    let mut output = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; 1 << 12];
    let mut pos = start;
    let mut next = start + chunk as u64;
    while pos < size {
        let len = ((size - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..len], pos).ok()?;
        let mut input = &buf[..len];
        while !input.is_empty() {
            let (result, nin, _, _) = reader.read_record(input, &mut output, &mut ends);
            input = &input[nin..];
            pos += nin as u64;
            match result {
                csv_core::ReadRecordResult::Record if pos >= next => {
                    cuts.push(pos);
                    next = pos + chunk as u64;
                }
                csv_core::ReadRecordResult::End => return None,
                _ => {}
            }
        }
    }
    Some(chunks(cuts, size))
}

/// Reads the CSV file `file` of `size` bytes a chunk of about `chunk` bytes at a time.
pub(super) fn read(file: &File, size: u64, chunk: usize) -> Outcome {
    match try_read(file, size, chunk) {
        Some((schema, batches)) => Outcome::Table(schema, batches),
        None => Outcome::Fallback,
    }
}

fn try_read(file: &File, size: u64, chunk: usize) -> Option<(Arc<Schema>, Vec<RecordBatch>)> {
    let (names, start) = header(file, size)?;
    let width = names.len();
    let scan_all = |chunks: &[Chunk], quotes_ok: bool| -> Option<Vec<Scan>> {
        chunks
            .par_iter()
            .map(|&c| with_chunk(file, c, |bytes| scan(bytes, width, quotes_ok)))
            .collect()
    };
    let mut cuts = newline_cuts(file, start, size, chunk)?;
    let mut quotes_ok = cuts.len() == 1;
    let mut scans = scan_all(&cuts, quotes_ok)?;
    if scans.iter().any(|s| s.quoted) && !quotes_ok {
        cuts = exact_cuts(file, start, size, chunk)?;
        quotes_ok = true;
        scans = scan_all(&cuts, quotes_ok)?;
    }
    let mut packed = vec![0u16; width];
    for s in &scans {
        for (p, t) in packed.iter_mut().zip(&s.types) {
            *p |= t;
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&packed)
        .map(|(name, &p)| Field::new(name, data_type(p), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    // Chunks whose first pass decoded every column as the file's type are done; the others
    // are read and decoded again.
    let decoded: Vec<RecordBatch> = cuts
        .into_par_iter()
        .zip(scans)
        .map(|(c, s)| match speculated(s.decoded, &schema, s.records) {
            Some(batch) => Some(batch),
            None => with_chunk(file, c, |bytes| decode(bytes, schema.clone(), s.records)),
        })
        .collect::<Option<Vec<_>>>()?;
    Some((schema, decoded))
}

/// Decodes one chunk of `records` records into one batch.
fn decode(bytes: &[u8], schema: Arc<Schema>, records: usize) -> Option<RecordBatch> {
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

/// The chunks' batches as one, joined a column at a time so that each column's pieces are freed
/// as soon as it is joined.
#[cfg(test)]
pub(super) fn join(schema: Arc<Schema>, batches: Vec<RecordBatch>) -> RecordBatch {
    if batches.len() == 1 {
        return batches.into_iter().next().expect("one batch");
    }
    if batches.is_empty() {
        return RecordBatch::new_empty(schema);
    }
    let mut pieces: Vec<Vec<ArrayRef>> =
        vec![Vec::with_capacity(batches.len()); schema.fields().len()];
    for batch in batches {
        for (i, column) in batch.columns().iter().enumerate() {
            pieces[i].push(column.clone());
        }
    }
    let columns: Vec<ArrayRef> = pieces
        .into_iter()
        .map(|p| {
            let refs: Vec<&dyn arrow::array::Array> = p.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&refs).expect("pieces of one column have one type")
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_every_comma_and_newline() {
        let mut bytes: Vec<u8> = (0..300u32)
            .map(|i| match i % 7 {
                0 => b',',
                3 if i % 2 == 0 => b'\n',
                _ => b'a' + (i % 26) as u8,
            })
            .collect();
        bytes.extend_from_slice("é,\n".as_bytes());
        for len in [0, 1, 63, 64, 65, 128, 200, bytes.len()] {
            let want: Vec<usize> = memchr::memchr2_iter(b',', b'\n', &bytes[..len]).collect();
            assert_eq!(
                Delimiters::new(&bytes[..len]).collect::<Vec<_>>(),
                want,
                "{len}"
            );
        }
    }

    #[test]
    fn kinds_agree_with_data_types() {
        for packed in 0..=(UTF8 | (UTF8 - 1)) {
            let want = match data_type(packed) {
                DataType::Int64 => Kind::Int,
                DataType::Float64 => Kind::Float,
                DataType::Utf8 => Kind::Text,
                _ => Kind::Other,
            };
            assert_eq!(Kind::of(packed), want, "{packed:#b}");
        }
        assert_eq!(Kind::of(UTF8 | INTEGER), Kind::Text);
        assert_eq!(Kind::of(INTEGER | FLOAT), Kind::Float);
    }

    #[test]
    fn plain_numbers_are_what_arrow_parses_and_classifies() {
        let mut samples: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "12.5",
            "0.1",
            "0.3",
            "-50.1234",
            "007",
            "1.",
            ".5",
            "-",
            ".",
            "1.2.3",
            "+1",
            "1e5",
            "12a",
            "",
            "-.5",
            "123456789012345",
            "1234567890123456",
            "12345678.9012345",
            "1234567890.12345",
            "0.000000000000001",
            "999999999999999",
            "9999999999999.99",
            "4503599627370497",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Random decimals like the benchmark's: 1 to 15 digits, the point anywhere inside.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let digits = 1 + (seed % 15) as usize;
            let mut s: String = (0..digits)
                .map(|i| char::from(b'0' + ((seed >> (4 + 3 * i)) % 10) as u8))
                .collect();
            let point = (seed >> 60) as usize % (digits + 1);
            if point > 0 && point < digits {
                s.insert(point, '.');
            }
            if seed & 1 == 1 {
                s.insert(0, '-');
            }
            samples.push(s);
        }
        let mut fast = 0;
        for s in &samples {
            if let Some((x, bit)) = plain_number(s.as_bytes()) {
                fast += 1;
                let want = Float64Type::parse(s).unwrap();
                assert_eq!(x.to_bits(), want.to_bits(), "{s:?}");
                assert_eq!(bit, classify(s), "{s:?}");
            }
        }
        assert!(fast > 15_000, "{fast}");
        for s in [
            "1.",
            ".5",
            "+1",
            "1e5",
            "1234567890123456",
            "-",
            "",
            "1.2.3",
        ] {
            assert_eq!(plain_number(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn fast_checks_agree_with_the_patterns() {
        let samples = [
            "1",
            "-1",
            "+1",
            "12a",
            "1.",
            ".5",
            ".",
            "-.5e3",
            "1e5",
            "1E+5",
            "1e",
            "e5",
            "1.5e-",
            "+",
            "-",
            "1.2.3",
            "true",
            "FALSE",
            "True",
            "tru",
            "0x1",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "00000000000000000001",
            "1 ",
            " 1",
            "NaN",
            "inf",
            "-inf",
            "nan",
            "2024-01-02",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05.123",
            "2024-01-02T03:04:05.123456",
            "abc",
            "\"x",
            "1,5",
        ];
        for s in samples {
            assert_eq!(classify(s), slow_classify(s), "{s:?}");
        }
    }

    /// Whether the chunked reader gave a table (which must be the sequential reader's) rather
    /// than falling back.
    fn both(content: &[u8], chunk: usize) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, content).unwrap();
        let file = File::open(&p).unwrap();
        let sequential = super::super::io::read_csv_sequential(&p, "t.csv");
        match read(&file, content.len() as u64, chunk) {
            Outcome::Table(schema, batches) => {
                let batch = join(schema, batches);
                assert_eq!(
                    Some(&batch),
                    sequential.as_ref().ok(),
                    "{content:?} {chunk}"
                );
                true
            }
            Outcome::Fallback => false,
        }
    }

    #[test]
    fn chunked_reads_give_the_sequential_table() {
        let good: &[&[u8]] = &[
            b"a,b,c\n1,x,2\n2,y,3.5\n",
            b"a,b,c\n1,x,2\n2,y,3.5",
            b"a,b\r\n1,2\r\n\r\n3,4\r\n",
            b"a,b\n1,\"x\ny\"\n2,\"a,b\"\n3,\"\"\"q\"\n4,z\n",
            b"a,b\n,\n,\n",
            b"a,b\n",
            b"a,b",
            b"a,b\ntrue,2024-01-02\nFALSE,2024-01-03 04:05:06\n",
            b"a,b\n1,NaN\n2,inf\n,3\n4.5,x\n",
            b"a,b\n1,\n\n2,3\n\n",
            b"a,b\n\n1,",
            b"a\n1\n\n2\n",
            b"a,b\n1,x\n2.5,\n,3\n",
            b"a,b\n,\n1,\n-0,\n",
            b"a,b\n-0,1\n1.5,2\n",
            b"n,t\n-1,\xc3\xa9t\xc3\xa9\n+2,\n",
        ];
        for s in good {
            for chunk in [1, 2, 3, 5, 8, 1 << 20] {
                assert!(both(s, chunk), "fell back on {s:?} {chunk}");
            }
        }
        let bad: &[&[u8]] = &[
            b"a,b\n1,2\n3\n",
            b"a,b\n1,2\n3,4,5\n",
            b"a,b\n1,\xff\n",
            b"a,b\n1,2,\n",
            b"a,b\n1\n",
            b"a,a\n1,2\n",
            b"",
        ];
        for s in bad {
            for chunk in [1, 2, 3, 5, 8, 1 << 20] {
                assert!(!both(s, chunk), "no fallback on {s:?} {chunk}");
            }
        }
        let mut big = String::from("x,y,z\n");
        for i in 0..2000 {
            big.push_str(&format!("{i},{}.25,c{}\n", i % 7, i % 3));
        }
        big.push_str("1e3,,late\n");
        for chunk in [64, 1000, 4096] {
            assert!(both(big.as_bytes(), chunk));
        }
    }
}
