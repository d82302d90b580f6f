//! [`InferRequest::parse`]: the request's JSON header, read in place with each input's `data`
//! left as raw JSON text, then each input checked (datatype, shape, element count) and its data
//! decoded from JSON (`json.rs`) or from the binary data after the header (`binary.rs`).

use super::binary::decode_binary;
use super::json::decode_json;
use super::tensor::{DataType, Elements, Tensor};
use super::{shorten, ServeError};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// The most dimensions a tensor's shape may have; more is a 400, read no further.
const MAX_DIMS: usize = 16;
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
    // NaN is a missing value, which the bundle fills from the artifact or refuses.
    if let Elements::Numbers(v) = &data {
        if let Some(at) = v.iter().position(|x| x.is_infinite()) {
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

#[cfg(test)]
mod tests {
    use super::super::counting;
    use super::*;

    #[test]
    fn a_null_in_a_float_tensor_is_a_missing_value() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[null,2]}]}"#;
        let r = InferRequest::parse(json, None).unwrap();
        let Elements::Numbers(v) = &r.inputs[0].data else {
            panic!("numbers")
        };
        assert!(v[0].is_nan() && v[1] == 2.0, "{v:?}");
        for datatype in ["INT64", "BYTES", "BOOL"] {
            let json = format!(
                r#"{{"inputs":[{{"name":"a","shape":[1],"datatype":"{datatype}","data":[null]}}]}}"#
            );
            let e = InferRequest::parse(json.as_bytes(), None).unwrap_err();
            assert!(
                e.message.contains("null is not a"),
                "{datatype}: {}",
                e.message
            );
        }
    }

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
}
