//! Stable, bounded fuzzing of request decoding (`fuzzed_request_bodies_decode_or_fail_cleanly`),
//! with a seeded generator of nearly valid requests and a mutator.

use super::counting;
use super::{Elements, InferRequest};

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
        head.push_str(",\"outputs\":[{\"name\":\"class\",\"parameters\":{\"binary_data\":true}}]");
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
                        // NaN is a missing value, for the bundle to fill or refuse.
                        assert!(v.iter().all(|x| !x.is_infinite()), "{}", shown());
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
