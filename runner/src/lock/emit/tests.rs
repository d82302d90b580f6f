use super::*;
use crate::fingerprint::Fingerprint;
use crate::lock::{LockPromoted, LOCK_VERSION};

/// Texts YAML must quote, or reads as another type, or that sit at an edge of `plain`'s rules,
/// next to ones it writes plain.
const TRICKY: &[&str] = &[
    "",
    "1",
    "01",
    "0x1f",
    "0xg",
    "0b101",
    "0b12",
    "0o7",
    "1e5",
    "1E5",
    "1.5",
    ".5",
    "-1",
    "+1",
    "true",
    "True",
    "TRUE",
    "tRUE",
    "yes",
    "No",
    "null",
    "~",
    "Null",
    "inf",
    ".inf",
    "-.inf",
    "nan",
    ".NaN",
    "infinity",
    "Infinity",
    "a b",
    "a: b",
    "a:b",
    "a #b",
    "#a",
    "a#b",
    "'q'",
    "\"q\"",
    "[x]",
    "{x}",
    "a,b",
    "- a",
    "-a",
    "---",
    "...",
    "a\nb",
    "a\n",
    "\u{e9}",
    "\u{fc}/x",
    "_x",
    "/abs/path",
    "out/s0.txt",
    "s0",
    "1a",
    "12e4",
    "e",
    "E",
    "0",
    "-",
    ".",
    "a.b-c_d/e",
    "y",
    "n",
    "on",
    "off",
    "0e0",
    "123e",
    "eee",
    "1_000",
    "1/2",
    "@a",
    "!a",
    "&a",
    "*a",
    "%a",
    "`a",
    "|a",
    ">a",
    "?a",
    "a?",
    "a:",
    ":a",
    "a\tb",
    " a",
    "a ",
    "x1",
    "v1.2",
    "2",
    "0.1.2",
    "models/model.onnx",
    "data/clean.csv",
    "in/shared.txt",
];

fn wp(s: String) -> WorkPath {
    serde_json::from_value(serde_json::Value::String(s)).unwrap()
}

/// A small xorshift generator: the same cases on every run, no dependency.
struct Rng(u64, bool);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// Mostly ordinary names and paths, sometimes a tricky text or a random one from an
    /// alphabet of YAML's special characters, sometimes a long one.
    fn text(&mut self) -> String {
        if !self.1 {
            return format!(
                "{}{}",
                ["s", "out/s", "in/w", "t_"][self.below(4)],
                self.below(10_000)
            );
        }
        match self.below(10) {
            0..=4 => format!(
                "{}{}",
                ["s", "out/s", "in/w", "t_", "a.b/"][self.below(5)],
                self.below(10_000)
            ),
            5 | 6 => TRICKY[self.below(TRICKY.len())].to_string(),
            7 => {
                const ALPHABET: &[u8] = b"aeExob019._/-: #'\"!&*[]{},?|>%@`~";
                (0..1 + self.below(6))
                    .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
                    .collect()
            }
            8 => "x".repeat(120 + self.below(20)),
            _ => "ab".repeat(1 + self.below(4)),
        }
    }
    fn hash(&mut self) -> ContentHash {
        match self.below(if self.1 { 20 } else { 2000 }) {
            // Digests whose hex has only digits, or only digits and `e`: they read as numbers.
            0 => ContentHash([0x11; 32]),
            1 => ContentHash([0x1e; 32]),
            2 => ContentHash([0x0b; 32]),
            _ => ContentHash(std::array::from_fn(|_| self.next() as u8)),
        }
    }
    fn map<V>(&mut self, most: usize, mut value: impl FnMut(&mut Self) -> V) -> Vec<(String, V)> {
        (0..self.below(most + 1))
            .map(|_| (self.text(), value(self)))
            .collect()
    }
}

/// An entry whose texts are all ordinary (most of them), or one with tricky texts among them.
fn entry(rng: &mut Rng) -> LockEntry {
    rng.1 = rng.chance(40);
    let stamp = |r: &mut Rng| InputStamp {
        path: wp(r.text()),
        hash: r.hash(),
    };
    let rare = |r: &mut Rng, percent| if r.chance(percent) { 2 } else { 0 };
    let (n_impl, n_params, n_env, n_facts) =
        (rare(rng, 20), rare(rng, 10), rare(rng, 10), rare(rng, 10));
    LockEntry {
        key: rng.hash(),
        fingerprint: Fingerprint {
            kind: if rng.chance(80) {
                "run".into()
            } else {
                rng.text()
            },
            implementation: rng.map(n_impl, Rng::hash).into_iter().collect(),
            version: rng.chance(20).then(|| rng.text()),
            config: rng.hash(),
            params: rng
                .map(n_params, |r| serde_json::json!(r.text()))
                .into_iter()
                .collect(),
            inputs: rng.map(3, stamp).into_iter().collect(),
            outputs: rng.map(2, |r| wp(r.text())).into_iter().collect(),
            env: rng.map(n_env, Rng::hash).into_iter().collect(),
            facts: rng.map(n_facts, Rng::text).into_iter().collect(),
        },
        output_hashes: rng
            .map(2, |r| LockedOutput {
                path: wp(r.text()),
                hash: r.hash(),
            })
            .into_iter()
            .collect(),
    }
}

#[test]
fn generated_locks_are_written_exactly_as_yaml_serde_writes_them() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01, false);
    let (mut fast, mut slow) = (0, 0);
    for case in 0..400 {
        let mut lock = LockFile {
            version: LOCK_VERSION,
            pipeline: if rng.chance(90) {
                "bench".into()
            } else {
                rng.text()
            },
            promoted: rng.chance(3).then(|| LockPromoted {
                sweep: "s".into(),
                trial: 3,
                params: [("lr".to_string(), serde_json::json!(0.1))].into(),
            }),
            stages: BTreeMap::new(),
        };
        for _ in 0..rng.below(12) {
            let e = entry(&mut rng);
            let name = rng.text();
            let mut scratch = String::new();
            if write_entry(&mut scratch, &name, &e).is_some() {
                fast += 1;
            } else {
                slow += 1;
            }
            lock.stages.insert(name, e);
        }
        let ours = to_yaml(&lock).unwrap();
        let theirs = yaml_serde::to_string(&lock).unwrap();
        assert!(
            ours == theirs,
            "case {case} differs:\n--- ours\n{ours}\n--- yaml_serde\n{theirs}"
        );
        // What is written reads back as the lock it came from.
        assert_eq!(yaml_serde::from_str::<LockFile>(&ours).unwrap(), lock);
    }
    // Both writers were exercised, the direct one for most entries.
    assert!(fast > 300 && slow > 300, "fast {fast}, slow {slow}");
}

#[test]
fn an_ordinary_entry_takes_the_direct_writer() {
    let mut rng = Rng(7, false);
    let mut e = entry(&mut rng);
    e.fingerprint.kind = "run".into();
    e.fingerprint.params.clear();
    e.fingerprint.facts = [("os".to_string(), "linux".to_string())].into();
    e.fingerprint.inputs = [(
        "i0".to_string(),
        InputStamp {
            path: wp("in/shared.txt".into()),
            hash: ContentHash::of(b"x"),
        },
    )]
    .into_iter()
    .collect();
    e.fingerprint.outputs = [("o".to_string(), wp("out/s0.txt".into()))]
        .into_iter()
        .collect();
    e.fingerprint.implementation.clear();
    e.fingerprint.env.clear();
    e.fingerprint.version = None;
    e.key = ContentHash::of(b"key");
    e.fingerprint.config = ContentHash::of(b"config");
    e.output_hashes = [(
        "o".to_string(),
        LockedOutput {
            path: wp("out/s0.txt".into()),
            hash: ContentHash::of(b"out"),
        },
    )]
    .into_iter()
    .collect();
    let mut direct = String::new();
    assert!(write_entry(&mut direct, "s0", &e).is_some());
    assert_eq!(Some(direct), entry_by_yaml_serde("s0", &e).unwrap());
}

#[test]
fn plain_agrees_with_yaml_serde_on_every_tricky_text() {
    for s in TRICKY {
        if plain(s) {
            let written = yaml_serde::to_string(
                &[(s.to_string(), s.to_string())]
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap();
            assert_eq!(written, format!("{s}: {s}\n"), "{s:?} is not written plain");
        }
    }
}
