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
//!
//! Layout: `tensor.rs` the decoded input types, `request.rs` the request's JSON header and each
//! input's checks, `json.rs` and `binary.rs` the two ways a tensor's data arrives, `response.rs`
//! the encoder; `counting.rs` (a counting allocator) and `fuzz.rs` are the memory and fuzz tests'.

mod binary;
#[cfg(test)]
mod counting;
#[cfg(test)]
mod fuzz;
mod json;
mod request;
mod response;
mod tensor;

use super::error::ServeError;
pub(crate) use request::InferRequest;
pub(crate) use response::{InferResponse, OutTensor, OutValues};
use std::borrow::Cow;
pub(crate) use tensor::{DataType, Elements, Tensor};

/// `text`, or its first 40 characters and `…` (a hostile value may be megabytes long).
fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(40) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
    }
}
