//! What the data stages' row hash costs: the hand hash `stages/src/table/hash.rs` held before,
//! `foldhash` (what it holds now) and `rustc-hash`, on the work it does per row: mixing a row's
//! values into its hash one column at a time (duplicate rows: 8-byte numbers, short texts, a row
//! of several fields) and looking up category texts in a map.
//!
//! `cargo run --release -p sluice-stages --example hash_cost` prints, for each workload and
//! hash, the median of 9 runs in nanoseconds per row, in two rounds. `Fold` below is what
//! `table/hash.rs` does.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::time::Instant;

/// The hand hash `table/hash.rs` held before foldhash, verbatim.
mod hand {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    #[inline]
    pub fn mix(h: u64, x: u64) -> u64 {
        let m = u128::from(h ^ x) * u128::from(K);
        ((m >> 64) as u64) ^ (m as u64)
    }

    #[inline]
    pub fn hash_bytes(bytes: &[u8]) -> u64 {
        let mut h = bytes.len() as u64;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = mix(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        mix(h, u64::from_le_bytes(tail))
    }

    #[derive(Default)]
    pub struct TextHasher(u64);

    impl std::hash::Hasher for TextHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0 = mix(self.0, hash_bytes(bytes));
        }
    }
}

/// One way to do the two things the stages need: fold a value into a running row hash, and
/// hash a byte string on its own.
trait RowHash {
    const NAME: &'static str;
    fn mix(h: u64, x: u64) -> u64;
    fn bytes(b: &[u8]) -> u64;
}

struct Hand;
impl RowHash for Hand {
    const NAME: &'static str = "hand (before)";
    #[inline]
    fn mix(h: u64, x: u64) -> u64 {
        hand::mix(h, x)
    }
    #[inline]
    fn bytes(b: &[u8]) -> u64 {
        hand::hash_bytes(b)
    }
}

struct Fold;
impl RowHash for Fold {
    const NAME: &'static str = "foldhash 0.2 (now)";
    #[inline]
    fn mix(h: u64, x: u64) -> u64 {
        foldhash::fast::FixedState::with_seed(h).hash_one(x)
    }
    #[inline]
    fn bytes(b: &[u8]) -> u64 {
        let mut s = foldhash::fast::FixedState::with_seed(0).build_hasher();
        s.write(b);
        s.finish()
    }
}

struct Fx;
impl RowHash for Fx {
    const NAME: &'static str = "rustc-hash 2.1";
    #[inline]
    fn mix(h: u64, x: u64) -> u64 {
        let mut s = rustc_hash::FxHasher::with_seed(h as usize);
        s.write_u64(x);
        s.finish()
    }
    #[inline]
    fn bytes(b: &[u8]) -> u64 {
        let mut s = rustc_hash::FxHasher::default();
        s.write(b);
        s.finish()
    }
}

const ROWS: usize = 1_000_000;
const RUNS: usize = 9;

/// A small deterministic generator, so every hash sees the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Data {
    ints: Vec<u64>,
    floats: Vec<u64>,
    /// Texts of 10 to 30 bytes, like names, cities, product codes.
    texts: Vec<String>,
    /// Category values: 1,000 distinct texts, each 8 to 20 bytes.
    categories: Vec<String>,
}

fn data() -> Data {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let word = |rng: &mut Rng, len: usize| -> String {
        (0..len)
            .map(|_| (b'a' + (rng.next() % 26) as u8) as char)
            .collect()
    };
    let ints = (0..ROWS).map(|_| rng.next() % 1_000_000).collect();
    let floats = (0..ROWS)
        .map(|_| ((rng.next() % 100_000) as f64 / 7.0).to_bits())
        .collect();
    let texts = (0..ROWS)
        .map(|_| {
            let len = 10 + (rng.next() % 21) as usize;
            word(&mut rng, len)
        })
        .collect();
    let distinct: Vec<String> = (0..1000)
        .map(|i| {
            let len = 8 + (rng.next() % 13) as usize;
            format!("{}{i}", word(&mut rng, len - 3))
        })
        .collect();
    let categories = (0..ROWS)
        .map(|_| distinct[(rng.next() % 1000) as usize].clone())
        .collect();
    Data {
        ints,
        floats,
        texts,
        categories,
    }
}

/// Median nanoseconds per row of `f` over [`RUNS`] runs.
fn median_ns(mut f: impl FnMut() -> u64) -> f64 {
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_nanos() as f64 / ROWS as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

/// The row hashes of `clean`'s duplicate check, column by column as it computes them.
fn rows<H: RowHash>(d: &Data, hashes: &mut [u64], columns: &[&str]) -> u64 {
    hashes.fill(0);
    for &c in columns {
        match c {
            "int" => {
                for (h, &x) in hashes.iter_mut().zip(&d.ints) {
                    *h = H::mix(*h, x);
                }
            }
            "float" => {
                for (h, &x) in hashes.iter_mut().zip(&d.floats) {
                    *h = H::mix(*h, x);
                }
            }
            "text" => {
                for (h, t) in hashes.iter_mut().zip(&d.texts) {
                    *h = H::mix(*h, H::bytes(t.as_bytes()));
                }
            }
            "category" => {
                for (h, t) in hashes.iter_mut().zip(&d.categories) {
                    *h = H::mix(*h, H::bytes(t.as_bytes()));
                }
            }
            _ => unreachable!(),
        }
    }
    hashes.iter().fold(0, |a, &h| a ^ h)
}

/// Codes for category texts through a map with hasher `S` (what `Lookup` does past its first
/// few texts).
fn lookup<S: BuildHasher + Default>(d: &Data) -> u64 {
    let mut index: HashMap<&str, u32, S> = HashMap::default();
    let mut sum = 0u64;
    for t in &d.categories {
        let next = index.len() as u32;
        sum += u64::from(*index.entry(t.as_str()).or_insert(next));
    }
    sum
}

/// One measured piece of work over the data set.
type Workload = fn(&Data) -> u64;

fn report_rows<H: RowHash>(d: &Data, hashes: &mut [u64]) {
    let workloads: [(&str, &[&str]); 4] = [
        ("8-byte int", &["int"]),
        ("text 10-30 B", &["text"]),
        ("category text 8-20 B", &["category"]),
        (
            "row: int, float, text, category",
            &["int", "float", "text", "category"],
        ),
    ];
    for (name, columns) in workloads {
        let ns = median_ns(|| rows::<H>(d, hashes, columns));
        println!("{:<22} {:<34} {:>7.2} ns/row", H::NAME, name, ns);
    }
}

fn main() {
    let d = data();
    let mut hashes = vec![0u64; ROWS];
    println!("median of {RUNS} runs over {ROWS} rows");
    // Twice, so that a run order effect (a warming CPU, another process) shows as a difference
    // between rounds rather than between hashes.
    for round in 1..=2 {
        println!("round {round}");
        report_rows::<Hand>(&d, &mut hashes);
        report_rows::<Fold>(&d, &mut hashes);
        report_rows::<Fx>(&d, &mut hashes);
        let maps: [(&str, Workload); 3] = [
            (Hand::NAME, lookup::<BuildHasherDefault<hand::TextHasher>>),
            (Fold::NAME, lookup::<foldhash::fast::FixedState>),
            (Fx::NAME, lookup::<rustc_hash::FxBuildHasher>),
        ];
        for (name, f) in maps {
            let ns = median_ns(|| f(&d));
            println!(
                "{:<22} {:<34} {:>7.2} ns/row",
                name, "category map lookup", ns
            );
        }
    }
}
