//! `sluice serve`'s request decoding (src/serve/protocol/): OIP v2 JSON and Triton's binary
//! tensors. The server is a binary crate, so its protocol module is compiled in here by path.
//!
//! Input: the first 4 bytes (little-endian) pick the `Inference-Header-Content-Length`
//! (`u32::MAX`: none; otherwise taken modulo the body's length + 1), the rest is the body.
//! Checked beyond "no panic": a decoded request's tensors hold as many elements as their
//! shapes say, every number is finite, and every refusal is a 400. The stable, bounded
//! version of this check runs in `cargo test` (`fuzzed_request_bodies_decode_or_fail_cleanly`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// At the crate root, so that the protocol's `super::error` is this `error`.
#[allow(dead_code)]
#[path = "../../src/serve/error.rs"]
mod error;
#[allow(dead_code, unused_imports)]
#[path = "../../src/serve/protocol/mod.rs"]
mod protocol;

use protocol::{Elements, InferRequest};

fn check(data: &[u8]) {
    let (header_len, body) = match data.split_first_chunk::<4>() {
        None => (None, data),
        Some((pick, body)) => match u32::from_le_bytes(*pick) {
            u32::MAX => (None, body),
            n => (Some(n as usize % (body.len() + 1)), body),
        },
    };
    match InferRequest::parse(body, header_len) {
        Ok(request) => {
            for t in &request.inputs {
                let count: usize = t.shape.iter().product();
                let held = match &t.data {
                    Elements::U8(v) => v.len(),
                    Elements::Numbers(v) => {
                        assert!(v.iter().all(|x| x.is_finite()), "a non-finite number");
                        v.len()
                    }
                    Elements::Bytes(v) => v.len(),
                };
                assert_eq!(held, count, "input `{}`", t.name);
            }
        }
        Err(e) => assert_eq!(e.status, 400, "{e:?}"),
    }
}

fuzz_target!(|data: &[u8]| check(data));
