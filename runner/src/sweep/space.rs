//! `trials`: a `SweepSpec` turned into numbered trials, each one assignment of the varied
//! params. A grid is the cartesian product with the first param outermost; a random sweep draws
//! from a seeded SplitMix64 generator written here, so the same spec gives the same trials on
//! every platform and every run (which is what lets a rerun resume).

use super::spec::{Dist, Method, SweepSpec};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};

/// One assignment of the varied params; `n` counts from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub n: usize,
    pub params: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trials {
    pub trials: Vec<Trial>,
    /// Random draws dropped because an earlier trial had the same assignment.
    pub duplicates: usize,
}

/// A random sweep stops drawing after this many draws per trial asked for: a space smaller than
/// `trials` would otherwise never finish.
const DRAWS_PER_TRIAL: usize = 10;

pub fn trials(spec: &SweepSpec) -> Trials {
    match spec.method {
        Method::Grid => grid(&spec.params),
        Method::Random => random(&spec.params, spec.trials.unwrap_or(0), spec.seed),
    }
}

fn grid(params: &[(String, Dist)]) -> Trials {
    // A range in a grid is refused when the spec is read; here it simply gives no trials.
    let lists: Vec<&[Json]> = params
        .iter()
        .map(|(_, d)| match d {
            Dist::Values(v) => v.as_slice(),
            _ => &[],
        })
        .collect();
    let total: usize = lists.iter().map(|l| l.len()).product();
    let mut out = Vec::with_capacity(total);
    // Mixed-radix counting, the last param turning fastest.
    let mut digits = vec![0usize; lists.len()];
    for n in 1..=total {
        let params = params
            .iter()
            .zip(&lists)
            .zip(&digits)
            .map(|(((name, _), list), &i)| (name.clone(), list[i].clone()))
            .collect();
        out.push(Trial { n, params });
        for pos in (0..digits.len()).rev() {
            digits[pos] += 1;
            if digits[pos] < lists[pos].len() {
                break;
            }
            digits[pos] = 0;
        }
    }
    Trials {
        trials: out,
        duplicates: 0,
    }
}

fn random(params: &[(String, Dist)], wanted: usize, seed: u64) -> Trials {
    let mut rng = SplitMix64(seed);
    let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(wanted);
    let mut out = Vec::with_capacity(wanted);
    let mut duplicates = 0;
    let mut draws = 0;
    while out.len() < wanted && draws < wanted.saturating_mul(DRAWS_PER_TRIAL) {
        draws += 1;
        let values: Vec<Json> = params.iter().map(|(_, d)| draw(d, &mut rng)).collect();
        if !seen.insert(key(&values)) {
            duplicates += 1;
            continue;
        }
        let params = params
            .iter()
            .zip(&values)
            .map(|((name, _), v)| (name.clone(), v.clone()))
            .collect();
        out.push(Trial {
            n: out.len() + 1,
            params,
        });
    }
    Trials {
        trials: out,
        duplicates,
    }
}

/// An assignment as bytes, one tagged value after another: equal exactly when the values are,
/// and much cheaper to hash than the JSON values themselves.
fn key(values: &[Json]) -> Vec<u8> {
    let mut k = Vec::with_capacity(values.len() * 9);
    for v in values {
        match v {
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    k.push(b'i');
                    k.extend(i.to_le_bytes());
                } else if let Some(u) = n.as_u64() {
                    k.push(b'u');
                    k.extend(u.to_le_bytes());
                } else {
                    k.push(b'f');
                    k.extend(n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
                }
            }
            Json::String(s) => {
                k.push(b's');
                k.extend((s.len() as u64).to_le_bytes());
                k.extend(s.as_bytes());
            }
            // Lists hold scalars only (`spec` refuses the rest); these spell any other value.
            other => {
                let text = other.to_string();
                k.push(b'j');
                k.extend((text.len() as u64).to_le_bytes());
                k.extend(text.as_bytes());
            }
        }
    }
    k
}

fn draw(d: &Dist, rng: &mut SplitMix64) -> Json {
    match d {
        Dist::Values(v) => v[rng.below(v.len() as u64) as usize].clone(),
        Dist::Uniform(lo, hi) => float(lo + (hi - lo) * rng.unit(), *lo, *hi),
        Dist::LogUniform(lo, hi) => {
            let (a, b) = (lo.ln(), hi.ln());
            float((a + (b - a) * rng.unit()).exp(), *lo, *hi)
        }
        Dist::Int(lo, hi) => {
            // The span fits in u64 for any pair of i64; `hi - lo + 1` overflows only for the full
            // range, where every u64 is a valid offset.
            let span = (*hi as i128 - *lo as i128 + 1) as u128;
            let offset = if span > u64::MAX as u128 {
                rng.next()
            } else {
                rng.below(span as u64)
            };
            Json::from((*lo as i128 + offset as i128) as i64)
        }
    }
}

/// Six significant digits: readable in tables and instance names, and the same text whatever
/// the last bits of `ln`/`exp` were on this platform. Kept inside the range it was drawn from.
fn float(x: f64, lo: f64, hi: f64) -> Json {
    let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    Json::from(rounded.clamp(lo, hi))
}

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and fully specified, so its sequence is the
/// same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `[0, 1)`, from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `[0, n)` for `n > 0`, without modulo bias (Lemire's method with rejection).
    fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = self.next() as u128 * n as u128;
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::spec::{Direction, MetricRef};

    fn spec(
        method: Method,
        params: Vec<(&str, Dist)>,
        trials: Option<usize>,
        seed: u64,
    ) -> SweepSpec {
        SweepSpec {
            method,
            params: params
                .into_iter()
                .map(|(n, d)| (n.to_string(), d))
                .collect(),
            trials,
            seed,
            metric: MetricRef {
                stage: "evaluate".into(),
                name: "accuracy".into(),
            },
            direction: Direction::Max,
            prune: None,
            skip: Vec::new(),
        }
    }

    fn values(v: &[Json]) -> Dist {
        Dist::Values(v.to_vec())
    }

    #[test]
    fn grid_first_param_outermost() {
        let s = spec(
            Method::Grid,
            vec![
                ("lr", values(&[0.1.into(), 0.01.into()])),
                ("hidden", values(&[8.into(), 16.into(), 32.into()])),
            ],
            None,
            0,
        );
        let t = trials(&s);
        let got: Vec<(usize, String)> = t
            .trials
            .iter()
            .map(|t| (t.n, format!("{}/{}", t.params["lr"], t.params["hidden"])))
            .collect();
        let want: Vec<(usize, String)> =
            ["0.1/8", "0.1/16", "0.1/32", "0.01/8", "0.01/16", "0.01/32"]
                .iter()
                .enumerate()
                .map(|(i, s)| (i + 1, s.to_string()))
                .collect();
        assert_eq!(got, want);
        assert_eq!(t.duplicates, 0);
    }

    fn mixed(seed: u64, n: usize) -> SweepSpec {
        spec(
            Method::Random,
            vec![
                ("act", values(&["relu".into(), "tanh".into()])),
                ("dropout", Dist::Uniform(0.0, 0.5)),
                ("wd", Dist::LogUniform(1e-5, 1e-2)),
                ("layers", Dist::Int(1, 4)),
            ],
            Some(n),
            seed,
        )
    }

    #[test]
    fn random_is_deterministic_and_follows_the_seed() {
        let a = trials(&mixed(1, 50));
        assert_eq!(a, trials(&mixed(1, 50)));
        assert_ne!(a.trials, trials(&mixed(2, 50)).trials);
        assert_eq!(a.trials.len(), 50);
        for (i, t) in a.trials.iter().enumerate() {
            assert_eq!(t.n, i + 1);
            let d = t.params["dropout"].as_f64().unwrap();
            assert!((0.0..=0.5).contains(&d), "{d}");
            let wd = t.params["wd"].as_f64().unwrap();
            assert!((1e-5..=1e-2).contains(&wd), "{wd}");
            // Six significant digits, printed back exactly.
            assert_eq!(format!("{wd:.5e}").parse::<f64>().unwrap(), wd);
            let layers = t.params["layers"].as_i64().unwrap();
            assert!((1..=4).contains(&layers));
        }
        // Every choice and every int shows up in 50 draws.
        for v in 1..=4 {
            assert!(a.trials.iter().any(|t| t.params["layers"] == v));
        }
        // A fixed first draw pins the generator across platforms and releases.
        let first = &trials(&mixed(0, 1)).trials[0].params;
        assert_eq!(
            serde_json::to_string(first).unwrap(),
            FIRST_DRAW_SEED_0,
            "the random sequence changed: old sweeps would no longer resume"
        );
    }

    const FIRST_DRAW_SEED_0: &str =
        r#"{"act":"tanh","dropout":0.215764,"layers":4,"wd":0.0000120033}"#;

    #[test]
    fn duplicates_dropped_and_counted() {
        let s = spec(
            Method::Random,
            vec![("a", values(&[1.into(), 2.into()])), ("b", Dist::Int(0, 1))],
            Some(10),
            5,
        );
        let t = trials(&s);
        // Four distinct assignments exist; drawing stops after 10 draws per trial asked for.
        assert_eq!(t.trials.len(), 4);
        assert_eq!(t.duplicates, 100 - 4);
        let distinct: HashSet<String> = t
            .trials
            .iter()
            .map(|t| serde_json::to_string(&t.params).unwrap())
            .collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn full_int_range_and_many_trials() {
        let s = spec(
            Method::Random,
            vec![("x", Dist::Int(i64::MIN, i64::MAX))],
            Some(100_000),
            9,
        );
        let t = trials(&s);
        assert_eq!(t.trials.len(), 100_000);
        assert_eq!(t.duplicates, 0);
    }
}
