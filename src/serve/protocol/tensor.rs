//! The decoded input types: [`Tensor`], its [`DataType`] and its [`Elements`], BYTES elements
//! kept as one buffer ([`ByteStrings`]).

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
    pub(super) fn size(self) -> Option<usize> {
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
    pub(super) fn with_capacity(elements: usize, bytes: usize) -> ByteStrings {
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
    pub(super) fn len(&self) -> usize {
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
