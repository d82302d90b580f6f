//! [`InferResponse::encode`]: the outputs a request asks for, written as JSON `data` or, for
//! those asked for as binary, as Triton's binary data after the JSON header.

use super::request::InferRequest;
use super::tensor::DataType;
use super::{shorten, ServeError};
use serde_json::value::RawValue;
use std::sync::Arc;

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
}
