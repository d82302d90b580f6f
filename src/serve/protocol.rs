//! The Open Inference Protocol v2 (KServe, Triton) on the wire: [`InferRequest::parse`] reads a
//! request body — a JSON header, optionally followed by the raw tensor bytes of Triton's
//! binary-data extension — into typed [`Tensor`]s, and [`InferResponse::encode`] writes outputs
//! back as JSON `data` or as binary, as each requested output asks.
//!
//! Binary data: the request's `Inference-Header-Content-Length` header gives the length of the
//! JSON part; each input with a `binary_data_size` parameter takes that many bytes, in input
//! order, from what follows. Numbers are little-endian; each BYTES element is a 4-byte
//! little-endian length and then its bytes.
//!
//! Memory: a body is parsed in place. Each input's `data` is kept as the raw JSON text it came
//! as and decoded straight into one typed vector once its datatype and shape are known, never
//! through a `serde_json::Value` per element (32 bytes each, which made a 53 MB request take
//! 676 MB). A declared element count is checked against the bytes that could hold it before
//! anything is allocated for it, so no request can make the server reserve more than a small
//! multiple of its own size.

use super::error::ServeError;
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// The most dimensions a tensor's shape may have; more is a 400, read no further.
const MAX_DIMS: usize = 16;

/// A tensor element type, by its protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    const ALL: [(DataType, &'static str); 13] = [
        (DataType::Bool, "BOOL"),
        (DataType::U8, "UINT8"),
        (DataType::U16, "UINT16"),
        (DataType::U32, "UINT32"),
        (DataType::U64, "UINT64"),
        (DataType::I8, "INT8"),
        (DataType::I16, "INT16"),
        (DataType::I32, "INT32"),
        (DataType::I64, "INT64"),
        (DataType::F16, "FP16"),
        (DataType::F32, "FP32"),
        (DataType::F64, "FP64"),
        (DataType::Bytes, "BYTES"),
    ];

    pub(crate) fn parse(s: &str) -> Option<DataType> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(t, _)| *t)
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL[self as usize].1
    }

    /// Bytes per element in binary data; `None` for BYTES.
    fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

/// BYTES elements: one buffer and where each element ends, so a million short strings cost
/// two allocations rather than a million.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ByteStrings {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl ByteStrings {
    fn with_capacity(elements: usize, bytes: usize) -> ByteStrings {
        ByteStrings {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(elements),
        }
    }

    pub(crate) fn push(&mut self, element: &[u8]) {
        self.data.extend_from_slice(element);
        self.ends.push(self.data.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `i`-th element.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

impl<const N: usize> From<[&str; N]> for ByteStrings {
    fn from(items: [&str; N]) -> ByteStrings {
        let mut out = ByteStrings::default();
        items.iter().for_each(|s| out.push(s.as_bytes()));
        out
    }
}

/// A tensor's elements, decoded: UINT8 stays bytes (image pixels), other numbers become f64
/// (exact for every FP32, FP64 and 32-bit integer, and for 64-bit integers up to 2^53), and
/// every number is finite.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Elements {
    U8(Vec<u8>),
    Numbers(Vec<f64>),
    Bytes(ByteStrings),
}

impl Elements {
    fn len(&self) -> usize {
        match self {
            Elements::U8(v) => v.len(),
            Elements::Numbers(v) => v.len(),
            Elements::Bytes(v) => v.len(),
        }
    }
}

/// A decoded input tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub data: Elements,
}

/// What the client asked back for one output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requested {
    pub name: String,
    pub binary: bool,
}

/// A parsed infer request.
#[derive(Debug)]
pub(crate) struct InferRequest {
    /// The request's `id`, as the JSON text it came as (echoed back verbatim).
    pub id: Option<Box<RawValue>>,
    pub inputs: Vec<Tensor>,
    /// `None`: every output, binary when the request's `binary_data_output` parameter says so.
    pub outputs: Option<Vec<Requested>>,
    pub binary_output: bool,
}

/// Parameters stay raw JSON text until a known one is read: a huge unknown parameter costs
/// nothing but the body it came in.
type Parameters<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    parameters: Parameters<'a>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<RawOutput<'a>>>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(deserialize_with = "short_shape")]
    shape: Vec<u64>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default, borrow)]
    parameters: Parameters<'a>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    parameters: Parameters<'a>,
}

/// A shape of at most [`MAX_DIMS`] dimensions; a longer one fails as soon as it is seen, so a
/// shape of millions of ones costs nothing.
fn short_shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Dims;
    impl<'de> Visitor<'de> for Dims {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_DIMS} dimensions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() == MAX_DIMS {
                    return Err(de::Error::custom(format!(
                        "a shape has at most {MAX_DIMS} dimensions"
                    )));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(Dims)
}

fn flag(params: &Parameters, key: &str) -> Result<bool, ServeError> {
    let Some(raw) = params.get(key) else {
        return Ok(false);
    };
    match serde_json::from_str::<Option<bool>>(raw.get()) {
        Ok(b) => Ok(b.unwrap_or(false)),
        Err(_) => Err(ServeError::bad_request(format!(
            "parameter `{key}` must be true or false, not {}",
            shorten(raw.get())
        ))),
    }
}

/// `text`, or its first 40 characters and `…` (a hostile value may be megabytes long).
fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(40) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
    }
}

impl InferRequest {
    /// Parses a body; `header_len` is the `Inference-Header-Content-Length` header's value.
    pub(crate) fn parse(
        body: &[u8],
        header_len: Option<usize>,
    ) -> Result<InferRequest, ServeError> {
        let (json, mut binary) = match header_len {
            Some(n) if n > body.len() => {
                return Err(ServeError::bad_request(format!(
                    "`Inference-Header-Content-Length` is {n}, but the body has {} bytes",
                    body.len()
                )))
            }
            Some(n) => body.split_at(n),
            None => (body, &[][..]),
        };
        let raw: RawRequest = serde_json::from_slice(json).map_err(|e| {
            ServeError::bad_request(format!(
                "the request is not valid JSON for an infer request: {e}"
            ))
        })?;
        let mut seen = HashSet::with_capacity(raw.inputs.len());
        for input in &raw.inputs {
            if !seen.insert(input.name.as_ref()) {
                return Err(ServeError::bad_request(format!(
                    "input `{}` is given twice\nhint: send each input once; its shape's first dimension holds the rows",
                    input.name
                )));
            }
        }
        let mut inputs = Vec::with_capacity(raw.inputs.len());
        for input in raw.inputs {
            inputs.push(decode_input(input, &mut binary)?);
        }
        if !binary.is_empty() {
            return Err(ServeError::bad_request(format!(
                "{} bytes of binary data follow the inputs' `binary_data_size`s",
                binary.len()
            )));
        }
        let outputs = match raw.outputs {
            None => None,
            Some(list) => {
                let mut seen = HashSet::with_capacity(list.len());
                let mut out = Vec::with_capacity(list.len());
                for o in list {
                    if !seen.insert(o.name.clone()) {
                        return Err(ServeError::bad_request(format!(
                            "output `{}` is requested twice",
                            o.name
                        )));
                    }
                    out.push(Requested {
                        binary: flag(&o.parameters, "binary_data")?,
                        name: o.name.into_owned(),
                    });
                }
                Some(out)
            }
        };
        Ok(InferRequest {
            id: raw.id.map(RawValue::to_owned),
            inputs,
            outputs,
            binary_output: flag(&raw.parameters, "binary_data_output")?,
        })
    }
}

fn decode_input(input: RawInput, binary: &mut &[u8]) -> Result<Tensor, ServeError> {
    let name = input.name.into_owned();
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        ServeError::bad_request(format!(
            "input `{name}` has the unknown datatype `{}`",
            shorten(&input.datatype)
        ))
    })?;
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= 1 << 32)
        .ok_or_else(|| {
            ServeError::bad_request(format!(
                "input `{name}` has the shape {:?}, which is too large",
                input.shape
            ))
        })?;
    let bad = |what: String| ServeError::bad_request(format!("input `{name}`: {what}"));
    if datatype == DataType::F16 {
        return Err(bad("FP16 is not supported; send FP32 or FP64".into()));
    }
    let data = match (input.parameters.get("binary_data_size"), input.data) {
        (Some(size), None) => {
            let size = size
                .get()
                .parse::<u64>()
                .ok()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "`binary_data_size` must be a byte count, not {}",
                        shorten(size.get())
                    ))
                })?;
            if size > binary.len() {
                return Err(bad(format!(
                    "`binary_data_size` is {size}, but only {} bytes of binary data are left",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            decode_binary(datatype, count, mine).map_err(bad)?
        }
        (None, Some(data)) => decode_json(datatype, count, data).map_err(bad)?,
        (Some(_), Some(_)) => return Err(bad("has both `data` and `binary_data_size`".into())),
        (None, None) => return Err(bad("has neither `data` nor `binary_data_size`".into())),
    };
    if let Elements::Numbers(v) = &data {
        if let Some(at) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "element {at} is {}, not a finite number",
                v[at]
            )));
        }
    }
    Ok(Tensor {
        name,
        datatype,
        shape,
        data,
    })
}

fn decode_binary(datatype: DataType, count: usize, bytes: &[u8]) -> Result<Elements, String> {
    let Some(size) = datatype.size() else {
        // Each element takes at least its 4-byte length: a larger count cannot be right, and
        // is refused before anything is reserved for it.
        if count > bytes.len() / 4 {
            return Err(format!(
                "the shape says {count} BYTES elements, but `binary_data_size` is {}, which holds at most {}",
                bytes.len(),
                bytes.len() / 4
            ));
        }
        let mut out = ByteStrings::with_capacity(count, bytes.len() - 4 * count);
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err("a BYTES element's 4-byte length is cut short".into());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Err(format!(
                    "a BYTES element says it has {len} bytes, but {} are left",
                    tail.len()
                ));
            }
            out.push(&tail[..len]);
            rest = &tail[len..];
        }
        if out.len() != count {
            return Err(format!(
                "the shape says {count} elements, but the binary data holds {}",
                out.len()
            ));
        }
        return Ok(Elements::Bytes(out));
    };
    let wanted = count.saturating_mul(size);
    if bytes.len() != wanted {
        return Err(format!(
            "the shape says {count} {} elements ({wanted} bytes), but `binary_data_size` is {}",
            datatype.name(),
            bytes.len()
        ));
    }
    fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks are N long"))
    }
    let numbers: Vec<f64> = match datatype {
        DataType::U8 => return Ok(Elements::U8(bytes.to_vec())),
        DataType::Bool => bytes.iter().map(|&b| f64::from(u8::from(b != 0))).collect(),
        DataType::I8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        DataType::U16 => le::<2>(bytes)
            .map(|b| f64::from(u16::from_le_bytes(b)))
            .collect(),
        DataType::I16 => le::<2>(bytes)
            .map(|b| f64::from(i16::from_le_bytes(b)))
            .collect(),
        DataType::U32 => le::<4>(bytes)
            .map(|b| f64::from(u32::from_le_bytes(b)))
            .collect(),
        DataType::I32 => le::<4>(bytes)
            .map(|b| f64::from(i32::from_le_bytes(b)))
            .collect(),
        DataType::U64 => le::<8>(bytes)
            .map(|b| u64::from_le_bytes(b) as f64)
            .collect(),
        DataType::I64 => le::<8>(bytes)
            .map(|b| i64::from_le_bytes(b) as f64)
            .collect(),
        DataType::F32 => le::<4>(bytes)
            .map(|b| f64::from(f32::from_le_bytes(b)))
            .collect(),
        DataType::F64 => le::<8>(bytes).map(f64::from_le_bytes).collect(),
        DataType::F16 | DataType::Bytes => unreachable!("refused or handled above"),
    };
    Ok(Elements::Numbers(numbers))
}

/// Decodes `data` (flat, or nested as the shape) straight into typed elements.
fn decode_json(datatype: DataType, count: usize, data: &RawValue) -> Result<Elements, String> {
    let text = data.get();
    // Every element takes at least one byte of JSON text: a larger count cannot be right, and
    // is refused before anything is reserved for it.
    if count > text.len() {
        return Err(format!(
            "the shape says {count} elements, but `data` is {} bytes of JSON, too short to hold them",
            text.len()
        ));
    }
    let mut sink = match datatype {
        DataType::U8 => Elements::U8(Vec::with_capacity(count)),
        DataType::Bytes => Elements::Bytes(ByteStrings::with_capacity(count, 0)),
        _ => Elements::Numbers(Vec::with_capacity(count)),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Leaves {
        datatype,
        count,
        sink: &mut sink,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    if sink.len() != count {
        return Err(format!(
            "the shape says {count} elements, but `data` holds {}",
            sink.len()
        ));
    }
    Ok(sink)
}

/// Walks nested JSON arrays and appends each leaf to `sink` as `datatype` says; more leaves
/// than `count` stop the walk.
struct Leaves<'s> {
    datatype: DataType,
    count: usize,
    sink: &'s mut Elements,
}

impl Leaves<'_> {
    fn wrong<E: de::Error>(&self, shown: impl fmt::Display) -> E {
        E::custom(format!("{shown} is not a {} value", self.datatype.name()))
    }

    fn room<E: de::Error>(&self) -> Result<(), E> {
        if self.sink.len() >= self.count {
            return Err(E::custom(format!(
                "the shape says {} elements, but `data` holds more",
                self.count
            )));
        }
        Ok(())
    }

    fn number<E: de::Error>(&mut self, x: f64) -> Result<(), E> {
        self.room()?;
        match self.sink {
            Elements::Numbers(v) => v.push(x),
            _ => unreachable!("numbers go to a numbers sink"),
        }
        Ok(())
    }

    fn integer<E: de::Error>(&mut self, n: i128) -> Result<(), E> {
        self.room()?;
        let (lo, hi) = int_range(self.datatype);
        if !(lo..=hi).contains(&n) {
            return Err(self.wrong(n));
        }
        match self.sink {
            Elements::U8(v) => v.push(n as u8),
            Elements::Numbers(v) => v.push(n as f64),
            Elements::Bytes(_) => unreachable!("integers are never BYTES"),
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} values, in arrays", self.datatype.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (datatype, count) = (self.datatype, self.count);
        while seq
            .next_element_seed(Leaves {
                datatype,
                count,
                sink: &mut *self.sink,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, b: bool) -> Result<(), E> {
        match self.datatype {
            DataType::Bool => self.number(f64::from(u8::from(b))),
            _ => Err(self.wrong(b)),
        }
    }

    fn visit_u64<E: de::Error>(mut self, n: u64) -> Result<(), E> {
        match self.datatype {
            DataType::F32 | DataType::F64 => self.visit_f64(n as f64),
            DataType::Bool | DataType::Bytes => Err(self.wrong(n)),
            _ => self.integer(i128::from(n)),
        }
    }

    fn visit_i64<E: de::Error>(mut self, n: i64) -> Result<(), E> {
        match self.datatype {
            DataType::F32 | DataType::F64 => self.visit_f64(n as f64),
            DataType::Bool | DataType::Bytes => Err(self.wrong(n)),
            _ => self.integer(i128::from(n)),
        }
    }

    fn visit_f64<E: de::Error>(mut self, x: f64) -> Result<(), E> {
        match self.datatype {
            // A JSON number given for FP32 is what the client would have sent as float32.
            DataType::F32 => {
                let cast = x as f32;
                if cast.is_finite() {
                    self.number(f64::from(cast))
                } else {
                    let shown = serde_json::Value::from(x);
                    Err(E::custom(format!("{shown} is out of the range of FP32")))
                }
            }
            DataType::F64 => self.number(x),
            _ => Err(self.wrong(serde_json::Value::from(x))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match self.datatype {
            DataType::Bytes => {
                self.room()?;
                match self.sink {
                    Elements::Bytes(v) => v.push(s.as_bytes()),
                    _ => unreachable!("strings go to a BYTES sink"),
                }
                Ok(())
            }
            _ => Err(self.wrong(serde_json::Value::from(shorten(s)))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.wrong("null"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Consumed so that the error is this one, not a parse error after it.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.wrong("an object"))
    }
}

fn int_range(t: DataType) -> (i128, i128) {
    match t {
        DataType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::I64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::U8 => (0, u8::MAX.into()),
        DataType::U16 => (0, u16::MAX.into()),
        DataType::U32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    }
}

/// An output tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// BYTES picked from a few names: `names[index[i]]` is element `i` (class names, shared by
    /// every row instead of copied into each).
    Picked {
        names: Arc<[String]>,
        index: Vec<u32>,
    },
}

impl OutValues {
    fn datatype(&self) -> DataType {
        match self {
            OutValues::F32(_) => DataType::F32,
            OutValues::F64(_) => DataType::F64,
            OutValues::Picked { .. } => DataType::Bytes,
        }
    }

    /// Appends the values as a JSON array. Every value is finite (the caller checked), so none
    /// becomes `null`.
    fn append_json(&self, out: &mut Vec<u8>) {
        fn list<T>(out: &mut Vec<u8>, items: &[T], mut one: impl FnMut(&mut Vec<u8>, &T)) {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                one(out, x);
            }
            out.push(b']');
        }
        match self {
            OutValues::F32(v) => list(out, v, |o, x| json(o, &f64::from(*x))),
            OutValues::F64(v) => list(out, v, json),
            OutValues::Picked { names, index } => {
                // Each name's JSON text once, then copied per element.
                let texts: Vec<Vec<u8>> = names
                    .iter()
                    .map(|n| serde_json::to_vec(n).expect("strings serialize"))
                    .collect();
                list(out, index, |o, &i| o.extend_from_slice(&texts[i as usize]));
            }
        }
    }

    /// The length of the binary form.
    fn binary_len(&self) -> usize {
        match self {
            OutValues::F32(v) => v.len() * 4,
            OutValues::F64(v) => v.len() * 8,
            OutValues::Picked { names, index } => {
                index.iter().map(|&i| 4 + names[i as usize].len()).sum()
            }
        }
    }

    fn append_binary(&self, out: &mut Vec<u8>) {
        match self {
            OutValues::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            OutValues::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            OutValues::Picked { names, index } => index.iter().for_each(|&i| {
                let s = &names[i as usize];
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }
}

/// Appends `v` as JSON.
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
}

/// An output tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutTensor {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub values: OutValues,
}

/// A response body and, when it carries binary data, the length of its JSON part.
pub(crate) struct Encoded {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

pub(crate) struct InferResponse<'a> {
    pub model: &'a str,
    pub version: u64,
    pub id: Option<&'a RawValue>,
    pub outputs: Vec<OutTensor>,
}

impl InferResponse<'_> {
    /// Encodes the outputs `request` asks for, in its order (all of them, in model order,
    /// when it names none). An output it names that the model lacks is an error.
    ///
    /// The JSON is written straight into the body (no `serde_json::Value` per element), and
    /// binary data is appended after it in one buffer sized up front.
    pub(crate) fn encode(self, request: &InferRequest) -> Result<Encoded, ServeError> {
        let picked: Vec<(&OutTensor, bool)> = match &request.outputs {
            None => self
                .outputs
                .iter()
                .map(|o| (o, request.binary_output))
                .collect(),
            Some(list) => list
                .iter()
                .map(|r| {
                    self.outputs
                        .iter()
                        .find(|o| o.name == r.name)
                        .map(|o| (o, r.binary || request.binary_output))
                        .ok_or_else(|| {
                            let names: Vec<&str> = self.outputs.iter().map(|o| o.name).collect();
                            ServeError::bad_request(format!(
                                "the model has no output `{}`; it has: {}",
                                shorten(&r.name),
                                names.join(", ")
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let binary_len: usize = picked
            .iter()
            .filter(|(_, b)| *b)
            .map(|(o, _)| o.values.binary_len())
            .sum();
        let mut body = Vec::new();
        body.extend_from_slice(b"{\"model_name\":");
        json(&mut body, &self.model);
        body.extend_from_slice(b",\"model_version\":");
        json(&mut body, &self.version.to_string());
        if let Some(id) = self.id {
            body.extend_from_slice(b",\"id\":");
            body.extend_from_slice(id.get().as_bytes());
        }
        body.extend_from_slice(b",\"outputs\":[");
        for (i, (o, as_binary)) in picked.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"name\":");
            json(&mut body, &o.name);
            body.extend_from_slice(b",\"datatype\":");
            json(&mut body, &o.values.datatype().name());
            body.extend_from_slice(b",\"shape\":");
            json(&mut body, &o.shape);
            if *as_binary {
                body.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
                json(&mut body, &o.values.binary_len());
                body.push(b'}');
            } else {
                body.extend_from_slice(b",\"data\":");
                o.values.append_json(&mut body);
            }
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        let header_len = (binary_len > 0).then_some(body.len());
        body.reserve_exact(binary_len);
        for (o, _) in picked.iter().filter(|(_, b)| *b) {
            o.values.append_binary(&mut body);
        }
        Ok(Encoded { body, header_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_binary_inputs_decode_alike() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","data":[1.5,2]},
            {"name":"b","shape":[2,1],"datatype":"BYTES","data":[["x"],["yz"]]}]}"#;
        let r = InferRequest::parse(json, None).unwrap();
        assert_eq!(r.inputs[0].data, Elements::Numbers(vec![1.5, 2.0]));
        assert_eq!(r.inputs[1].data, Elements::Bytes(["x", "yz"].into()));

        let head = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}},
            {"name":"b","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}],
            "parameters":{"binary_data_output":true}}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f64.to_le_bytes());
        body.extend_from_slice(&2f64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 0, 0, b'x', 2, 0, 0, 0, b'y', b'z']);
        let r = InferRequest::parse(&body, Some(head.len())).unwrap();
        assert_eq!(r.inputs[0].data, Elements::Numbers(vec![1.5, 2.0]));
        assert_eq!(r.inputs[1].data, Elements::Bytes(["x", "yz"].into()));
        assert!(r.binary_output);
    }

    #[test]
    fn malformed_inputs_are_bad_requests() {
        let cases: [(&[u8], Option<usize>); 7] = [
            (br#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP64","data":[1,2]}]}"#, None),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP64","data":["x"]}]}"#, None),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FLOAT","data":[1]}]}"#, None),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"UINT8","data":[256]}]}"#, None),
            (br#"{"inputs":[{"name":"a","shape":[1],"datat"#, None),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#, None),
            (br#"{"inputs":[]}"#, Some(99)),
        ];
        for (body, len) in cases {
            let e = InferRequest::parse(body, len).unwrap_err();
            assert_eq!(e.status, 400, "{e:?}");
        }
        let huge = br#"{"inputs":[{"name":"a","shape":[4294967296,4294967296],"datatype":"FP64","data":[]}]}"#;
        assert_eq!(InferRequest::parse(huge, None).unwrap_err().status, 400);
    }

    #[test]
    fn binary_outputs_follow_the_json_header() {
        let request = InferRequest::parse(
            br#"{"inputs":[],"outputs":[{"name":"class","parameters":{"binary_data":true}}]}"#,
            None,
        )
        .unwrap();
        let response = InferResponse {
            model: "m",
            version: 3,
            id: None,
            outputs: vec![
                OutTensor {
                    name: "probabilities",
                    shape: vec![1, 1],
                    values: OutValues::F64(vec![1.0]),
                },
                OutTensor {
                    name: "class",
                    shape: vec![1],
                    values: OutValues::Picked {
                        names: vec!["ab".to_string()].into(),
                        index: vec![0],
                    },
                },
            ],
        };
        let e = response.encode(&request).unwrap();
        let n = e.header_len.unwrap();
        let head: serde_json::Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(head["outputs"].as_array().unwrap().len(), 1);
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 6);
        assert_eq!(head["model_version"], "3");
        assert_eq!(&e.body[n..], &[2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn huge_declared_counts_are_refused_before_allocating() {
        // Each body is about 100 bytes and declares 2^32 elements; decoding must refuse it
        // without reserving room for them.
        // `true`: binary data (`AAAA...`) follows the JSON.
        let bodies: [(&[u8], bool, &str); 4] = [
            (
                br#"{"inputs":[{"name":"a","shape":[4294967296],"datatype":"BYTES","data":["x"]}]}"#,
                false,
                "too short to hold them",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[65536,65536],"datatype":"FP64","data":[1]}]}"#,
                false,
                "too short to hold them",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[4294967296],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}AAAA"#,
                true,
                "holds at most 1",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[4294967296],"datatype":"FP64","parameters":{"binary_data_size":8}}]}AAAAAAAA"#,
                true,
                "34359738368 bytes",
            ),
        ];
        for (body, binary, message) in bodies {
            let json = body.len() - body.iter().rev().take_while(|&&b| b == b'A').count();
            let header_len = binary.then_some(json);
            let (result, peak) = counting::peak(|| InferRequest::parse(body, header_len));
            let e = result.unwrap_err();
            assert_eq!(e.status, 400, "{e:?}");
            assert!(e.message.contains("input `a`"), "{}", e.message);
            assert!(e.message.contains(message), "{}", e.message);
            assert!(
                peak < 64 * 1024,
                "decoding a {} byte body took {peak} bytes",
                body.len()
            );
        }
    }

    #[test]
    fn non_finite_numbers_and_repeated_inputs_are_bad_requests() {
        let e = InferRequest::parse(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e40]}]}"#,
            None,
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("input `x`: 1e+40 is out of the range of FP32"),
            "{}",
            e.message
        );
        let head = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.0f64.to_le_bytes());
        body.extend_from_slice(&f64::INFINITY.to_le_bytes());
        let e = InferRequest::parse(&body, Some(head.len())).unwrap_err();
        assert!(
            e.message
                .contains("input `x`: element 1 is inf, not a finite number"),
            "{}",
            e.message
        );
        let e = InferRequest::parse(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1]},
                {"name":"x","shape":[1],"datatype":"FP64","data":[2]}]}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("input `x` is given twice"),
            "{}",
            e.message
        );
    }

    #[test]
    fn decoded_requests_stay_within_a_small_multiple_of_the_body() {
        let n = 100_000;
        let data: Vec<String> = (0..n).map(|i| format!("{}.5", i % 10)).collect();
        let body = format!(
            r#"{{"inputs":[{{"name":"a","shape":[{n}],"datatype":"FP64","data":[{}]}},
                {{"name":"b","shape":[{n}],"datatype":"BYTES","data":[{}]}}]}}"#,
            data.join(","),
            vec!["\"ab\""; n].join(",")
        );
        let (r, peak) = counting::peak(|| InferRequest::parse(body.as_bytes(), None).unwrap());
        assert_eq!(r.inputs[0].data.len(), n);
        assert_eq!(r.inputs[1].data.len(), n);
        assert!(
            peak <= 4 * body.len(),
            "a {} byte body took {peak} bytes",
            body.len()
        );
    }

    /// Counts the bytes allocated and not yet freed on each thread, so a test can measure what
    /// one call allocates at its peak.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        struct Counting;

        #[global_allocator]
        static COUNTING: Counting = Counting;

        fn add(n: isize) {
            // `try_with`: allocations while a thread's locals are torn down go uncounted.
            let _ = LIVE.try_with(|live| {
                let now = live.get() + n;
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
        }

        // SAFETY: every call goes to `System` unchanged; only sizes are counted.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                System.alloc(layout)
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                System.alloc_zeroed(layout)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                System.dealloc(ptr, layout)
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as isize - layout.size() as isize);
                System.realloc(ptr, layout, new_size)
            }
        }

        /// `f`'s result and the most bytes it had allocated at once on this thread.
        pub(super) fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
            let start = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(start));
            let r = f();
            let peak = PEAK.with(Cell::get) - start;
            (r, peak.max(0) as usize)
        }
    }

    /// A small seeded generator (xorshift64*), so a failing fuzz case can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const TYPES: [&str; 15] = [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
        "FP32", "FP64", "BYTES", "FLOAT", "",
    ];
    const LEAVES: [&str; 16] = [
        "0",
        "1",
        "-1",
        "255",
        "256",
        "1.5",
        "1e40",
        "-1e308",
        "1e400",
        "18446744073709551616",
        "true",
        "null",
        "\"a\"",
        "\"\\u00e9\"",
        "{}",
        "{\"k\":[1]}",
    ];
    const DIMS: [u64; 8] = [0, 1, 2, 3, 4, 65536, 4294967296, u64::MAX];

    /// A request that is often nearly valid: random names, datatypes, shapes, and JSON or
    /// binary data that may or may not fit them.
    fn generated(rng: &mut Rng) -> (Vec<u8>, Option<usize>) {
        let mut head = String::from("{\"inputs\":[");
        let mut binary = Vec::new();
        for i in 0..rng.below(4) {
            if i > 0 {
                head.push(',');
            }
            let dims: Vec<String> = (0..rng.below(4))
                .map(|_| rng.pick(&DIMS).to_string())
                .collect();
            head.push_str(&format!(
                "{{\"name\":\"{}\",\"datatype\":\"{}\",\"shape\":[{}]",
                rng.pick(&["a", "b", "c"]),
                rng.pick(&TYPES),
                dims.join(",")
            ));
            if rng.below(3) == 0 {
                let size = rng.below(40);
                let declared = if rng.below(4) == 0 {
                    rng.below(64)
                } else {
                    size
                };
                head.push_str(&format!(
                    ",\"parameters\":{{\"binary_data_size\":{declared}}}"
                ));
                binary.extend((0..size).map(|_| rng.next() as u8));
            } else {
                let mut data = String::from("[");
                for j in 0..rng.below(9) {
                    if j > 0 {
                        data.push(',');
                    }
                    if rng.below(4) == 0 {
                        data.push_str(&format!("[{}]", rng.pick(&LEAVES)));
                    } else {
                        data.push_str(rng.pick(&LEAVES));
                    }
                }
                data.push(']');
                head.push_str(&format!(",\"data\":{data}"));
            }
            head.push('}');
        }
        head.push(']');
        if rng.below(4) == 0 {
            head.push_str(
                ",\"outputs\":[{\"name\":\"class\",\"parameters\":{\"binary_data\":true}}]",
            );
        }
        if rng.below(4) == 0 {
            head.push_str(",\"id\":\"x\",\"parameters\":{\"binary_data_output\":1}");
        }
        head.push('}');
        let header_len = (!binary.is_empty()).then_some(head.len());
        let mut body = head.into_bytes();
        body.extend_from_slice(&binary);
        (body, header_len)
    }

    /// `body` with a few random edits: bytes flipped, JSON tokens inserted, ranges cut or
    /// repeated.
    fn mutated(rng: &mut Rng, mut body: Vec<u8>) -> Vec<u8> {
        const TOKENS: [&[u8]; 10] = [
            b"[",
            b"]",
            b"{",
            b"}",
            b"\"",
            b",",
            b"4294967296",
            b"-1",
            b"1e400",
            b"[[[[[[[[",
        ];
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(body.len() + 1);
            match rng.below(4) {
                0 if at < body.len() => body[at] ^= 1 << rng.below(8),
                1 => {
                    let t = rng.pick(&TOKENS);
                    body.splice(at..at, t.iter().copied());
                }
                2 => {
                    let end = (at + rng.below(16)).min(body.len());
                    body.drain(at..end);
                }
                _ => {
                    let end = (at + rng.below(32)).min(body.len());
                    let copy = body[at..end].to_vec();
                    body.splice(at..at, copy);
                }
            }
        }
        body
    }

    /// Stable, bounded fuzzing of request decoding: generated and mutated bodies (seeded, at
    /// most 100,000 or 5 s unless `SLUICE_FUZZ_EXECS` / `SLUICE_FUZZ_SECS` say otherwise) must decode into tensors whose element counts match their shapes, or
    /// fail with a 400, never panic, and never allocate more than a small multiple of the body.
    /// `cargo fuzz run serve_request` (fuzz/fuzz_targets/serve_request.rs) runs the same check
    /// unbounded.
    #[test]
    fn fuzzed_request_bodies_decode_or_fail_cleanly() {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default)
        };
        let seed = var("SLUICE_FUZZ_SEED", 0x5eed_5eed);
        let execs = var("SLUICE_FUZZ_EXECS", 100_000);
        let limit = std::time::Duration::from_secs(var("SLUICE_FUZZ_SECS", 5));
        let mut rng = Rng(seed);
        let started = std::time::Instant::now();
        let (mut runs, mut decoded) = (0, 0);
        while runs < execs && started.elapsed() < limit {
            let (body, header_len) = generated(&mut rng);
            let (body, header_len) = if rng.below(2) == 0 {
                let header_len = header_len.map(|n| {
                    if rng.below(4) == 0 {
                        rng.below(body.len() + 8)
                    } else {
                        n
                    }
                });
                (mutated(&mut rng, body), header_len)
            } else {
                (body, header_len)
            };
            runs += 1;
            let (result, peak) = counting::peak(|| InferRequest::parse(&body, header_len));
            let shown = || {
                format!(
                    "{:?} (header {header_len:?})",
                    String::from_utf8_lossy(&body)
                )
            };
            assert!(
                peak <= 16 * body.len() + 64 * 1024,
                "{peak} bytes for {}",
                shown()
            );
            match result {
                Ok(r) => {
                    decoded += 1;
                    for t in &r.inputs {
                        assert_eq!(
                            t.data.len(),
                            t.shape.iter().product::<usize>(),
                            "{}",
                            shown()
                        );
                        if let Elements::Numbers(v) = &t.data {
                            assert!(v.iter().all(|x| x.is_finite()), "{}", shown());
                        }
                    }
                }
                Err(e) => assert_eq!(e.status, 400, "{e:?} for {}", shown()),
            }
        }
        eprintln!("fuzzed request decoding: {runs} bodies, {decoded} decoded, seed {seed:#x}");
        assert!(
            runs >= execs.min(1000),
            "only {runs} bodies in the time allowed"
        );
        assert!(
            decoded > 0,
            "no generated body decoded: the generator is broken"
        );
    }
}
