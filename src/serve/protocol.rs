//! The Open Inference Protocol v2 (KServe, Triton) on the wire: [`InferRequest::parse`] reads a
//! request body — a JSON header, optionally followed by the raw tensor bytes of Triton's
//! binary-data extension — into typed [`Tensor`]s, and [`InferResponse::encode`] writes outputs
//! back as JSON `data` or as binary, as each requested output asks.
//!
//! Binary data: the request's `Inference-Header-Content-Length` header gives the length of the
//! JSON part; each input with a `binary_data_size` parameter takes that many bytes, in input
//! order, from what follows. Numbers are little-endian; each BYTES element is a 4-byte
//! little-endian length and then its bytes.

use super::error::ServeError;
use serde::Deserialize;
use serde_json::{Map, Value};

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

/// A tensor's elements, decoded: UINT8 stays bytes (image pixels), other numbers become f64
/// (exact for every FP32, FP64 and 32-bit integer, and for 64-bit integers up to 2^53).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Elements {
    U8(Vec<u8>),
    Numbers(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
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
    pub id: Option<Value>,
    pub inputs: Vec<Tensor>,
    /// `None`: every output, binary when the request's `binary_data_output` parameter says so.
    pub outputs: Option<Vec<Requested>>,
    pub binary_output: bool,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
struct RawInput {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

fn flag(params: &Map<String, Value>, key: &str) -> Result<bool, ServeError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ServeError::bad_request(format!(
            "parameter `{key}` must be true or false, not {v}"
        ))),
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
            Some(list) => Some(
                list.into_iter()
                    .map(|o| {
                        Ok(Requested {
                            binary: flag(&o.parameters, "binary_data")?,
                            name: o.name,
                        })
                    })
                    .collect::<Result<Vec<_>, ServeError>>()?,
            ),
        };
        Ok(InferRequest {
            id: raw.id,
            inputs,
            outputs,
            binary_output: flag(&raw.parameters, "binary_data_output")?,
        })
    }
}

fn decode_input(input: RawInput, binary: &mut &[u8]) -> Result<Tensor, ServeError> {
    let name = input.name;
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        ServeError::bad_request(format!(
            "input `{name}` has the unknown datatype `{}`",
            input.datatype
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
    let data = match (input.parameters.get("binary_data_size"), input.data) {
        (Some(size), None) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "`binary_data_size` must be a byte count, not {size}"
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
    Ok(Tensor {
        name,
        datatype,
        shape,
        data,
    })
}

fn decode_binary(datatype: DataType, count: usize, bytes: &[u8]) -> Result<Elements, String> {
    let Some(size) = datatype.size() else {
        let mut out = Vec::with_capacity(count);
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
            out.push(tail[..len].to_vec());
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
    if bytes.len() != count * size {
        return Err(format!(
            "the shape says {count} {} elements ({} bytes), but `binary_data_size` is {}",
            datatype.name(),
            count * size,
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
        DataType::F16 => return Err("FP16 is not supported; send FP32 or FP64".into()),
        DataType::Bytes => unreachable!("BYTES has no fixed size"),
    };
    Ok(Elements::Numbers(numbers))
}

/// Flattens `data` (flat, or nested as the shape) into `out`.
fn flatten(data: Value, out: &mut Vec<Value>) {
    match data {
        Value::Array(items) => items.into_iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn decode_json(datatype: DataType, count: usize, data: Value) -> Result<Elements, String> {
    let mut flat = Vec::with_capacity(count);
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(format!(
            "the shape says {count} elements, but `data` holds {}",
            flat.len()
        ));
    }
    let wrong = |v: &Value| format!("{v} is not a {} value", datatype.name());
    match datatype {
        DataType::Bytes => flat
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.into_bytes()),
                other => Err(wrong(&other)),
            })
            .collect::<Result<_, _>>()
            .map(Elements::Bytes),
        DataType::U8 => flat
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| wrong(v))
            })
            .collect::<Result<_, _>>()
            .map(Elements::U8),
        DataType::Bool => flat
            .iter()
            .map(|v| {
                v.as_bool()
                    .map(|b| f64::from(u8::from(b)))
                    .ok_or_else(|| wrong(v))
            })
            .collect::<Result<_, _>>()
            .map(Elements::Numbers),
        DataType::F16 => Err("FP16 is not supported; send FP32 or FP64".into()),
        DataType::F32 | DataType::F64 => flat
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| wrong(v)),
                _ => Err(wrong(v)),
            })
            .map(|r| {
                // A JSON number given for FP32 is what the client would have sent as float32.
                r.map(|x| {
                    if datatype == DataType::F32 {
                        f64::from(x as f32)
                    } else {
                        x
                    }
                })
            })
            .collect::<Result<_, _>>()
            .map(Elements::Numbers),
        _ => {
            let (lo, hi) = int_range(datatype);
            flat.iter()
                .map(|v| {
                    let n = v
                        .as_i64()
                        .map(|n| n as i128)
                        .or_else(|| v.as_u64().map(i128::from))
                        .filter(|n| (lo..=hi).contains(n))
                        .ok_or_else(|| wrong(v))?;
                    Ok(n as f64)
                })
                .collect::<Result<_, _>>()
                .map(Elements::Numbers)
        }
    }
}

fn int_range(t: DataType) -> (i128, i128) {
    match t {
        DataType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::I64 => (i64::MIN.into(), i64::MAX.into()),
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
    Bytes(Vec<String>),
}

impl OutValues {
    fn datatype(&self) -> DataType {
        match self {
            OutValues::F32(_) => DataType::F32,
            OutValues::F64(_) => DataType::F64,
            OutValues::Bytes(_) => DataType::Bytes,
        }
    }

    fn json(&self) -> Value {
        match self {
            OutValues::F32(v) => v.iter().map(|&x| Value::from(f64::from(x))).collect(),
            OutValues::F64(v) => v.iter().map(|&x| Value::from(x)).collect(),
            OutValues::Bytes(v) => v.iter().map(|s| Value::from(s.as_str())).collect(),
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
            OutValues::Bytes(v) => v.iter().for_each(|s| {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }
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
    pub id: Option<Value>,
    pub outputs: Vec<OutTensor>,
}

impl InferResponse<'_> {
    /// Encodes the outputs `request` asks for, in its order (all of them, in model order,
    /// when it names none). An output it names that the model lacks is an error.
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
                                r.name,
                                names.join(", ")
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut binary = Vec::new();
        let mut outputs = Vec::with_capacity(picked.len());
        for (o, as_binary) in picked {
            let mut entry = Map::new();
            entry.insert("name".into(), o.name.into());
            entry.insert("datatype".into(), o.values.datatype().name().into());
            entry.insert("shape".into(), o.shape.clone().into());
            if as_binary {
                let start = binary.len();
                o.values.append_binary(&mut binary);
                let mut params = Map::new();
                params.insert("binary_data_size".into(), (binary.len() - start).into());
                entry.insert("parameters".into(), params.into());
            } else {
                entry.insert("data".into(), o.values.json());
            }
            outputs.push(Value::Object(entry));
        }
        let mut head = Map::new();
        head.insert("model_name".into(), self.model.into());
        head.insert("model_version".into(), self.version.to_string().into());
        if let Some(id) = self.id {
            head.insert("id".into(), id);
        }
        head.insert("outputs".into(), outputs.into());
        let mut body = serde_json::to_vec(&Value::Object(head)).expect("JSON values serialize");
        let header_len = (!binary.is_empty()).then_some(body.len());
        body.extend_from_slice(&binary);
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
        assert_eq!(
            r.inputs[1].data,
            Elements::Bytes(vec![b"x".to_vec(), b"yz".to_vec()])
        );

        let head = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}},
            {"name":"b","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}],
            "parameters":{"binary_data_output":true}}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f64.to_le_bytes());
        body.extend_from_slice(&2f64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 0, 0, b'x', 2, 0, 0, 0, b'y', b'z']);
        let r = InferRequest::parse(&body, Some(head.len())).unwrap();
        assert_eq!(r.inputs[0].data, Elements::Numbers(vec![1.5, 2.0]));
        assert_eq!(
            r.inputs[1].data,
            Elements::Bytes(vec![b"x".to_vec(), b"yz".to_vec()])
        );
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
                    values: OutValues::Bytes(vec!["ab".into()]),
                },
            ],
        };
        let e = response.encode(&request).unwrap();
        let n = e.header_len.unwrap();
        let head: Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(head["outputs"].as_array().unwrap().len(), 1);
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 6);
        assert_eq!(head["model_version"], "3");
        assert_eq!(&e.body[n..], &[2, 0, 0, 0, b'a', b'b']);
    }
}
