//! Short, seeded fuzzing of the parsers that read what users write, on the stable toolchain, for
//! CI: the pipeline loader (YAML → validated pipeline, every built-in kind's `check` included),
//! the `${{ }}` template parser and `clean`'s filter expressions, through the entry points in
//! `sluice_stages::fuzzing` that the `cargo fuzz` targets in `fuzz/` use for long runs.
//!
//! Each target starts from a seed corpus (the repository's pipelines, expressions from the docs)
//! and feeds it mutated inputs (bytes flipped, inserted, deleted, repeated; dictionary tokens
//! inserted; two inputs spliced) from a fixed xorshift seed, so that a run is reproducible. An
//! input that gives a new kind of error, or none, joins the corpus: a crude stand-in for the
//! coverage feedback of libFuzzer. A run stops after `SLUICE_FUZZ_EXECS` inputs (20,000) or
//! `SLUICE_FUZZ_SECS` seconds (20), whichever comes first; `SLUICE_FUZZ_SEED` picks another
//! sequence. A panic is a finding: the test fails and prints the input.
//!
//! Stack overflows abort the process rather than unwind, so deeply nested inputs are generated
//! on purpose and run in a child process (this test binary again), whose death by a signal is
//! the finding. The fuzzing thread has the main thread's 8 MiB stack, so that what overflows
//! here overflows in `sluice` too.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The stack `sluice`'s main thread gets on Linux.
const STACK: usize = 8 << 20;

/// xorshift64*: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One mutation of `input`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, dict: &[&[u8]], corpus: &[Vec<u8>]) {
    let at = rng.below(input.len() + 1);
    match rng.below(8) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 => input.insert(at, rng.next() as u8),
        2 if !input.is_empty() => {
            let end = (at + 1 + rng.below(16)).min(input.len());
            input.drain(at.min(end)..end);
        }
        3 if !input.is_empty() => {
            // Repeat a short slice a few times: builds nesting and long runs.
            let start = rng.below(input.len());
            let end = (start + 1 + rng.below(8)).min(input.len());
            let piece = input[start..end].to_vec();
            for _ in 0..1 + rng.below(8) {
                input.splice(at..at, piece.iter().copied());
            }
        }
        4 | 5 => {
            let token = dict[rng.below(dict.len())];
            input.splice(at..at, token.iter().copied());
        }
        6 => {
            // Splice: our head, another input's tail.
            let other = &corpus[rng.below(corpus.len())];
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        _ => {
            // Replace a byte with an interesting one.
            if !input.is_empty() {
                let i = rng.below(input.len());
                input[i] = b"\0\n\t\r \"'`\\{}[]()$:-#&*!|>%@,=<9\xff\xc3"[rng.below(28)];
            }
        }
    }
}

struct Stats {
    execs: u64,
    accepted: u64,
    corpus: usize,
    elapsed: Duration,
    findings: Vec<(String, String)>,
}

/// Runs `target` on the corpus and its mutations until the budget is spent, on a thread with
/// `STACK` bytes of stack.
fn fuzz(
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    dict: &'static [&'static [u8]],
    target: impl Fn(&[u8]) -> Result<(), String> + Send + 'static,
) -> Stats {
    let execs = env_number("SLUICE_FUZZ_EXECS", 20_000);
    let secs = env_number("SLUICE_FUZZ_SECS", 20);
    let seed = env_number("SLUICE_FUZZ_SEED", 0x5eed_f00d) | 1;
    let stats = std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
        .spawn(move || {
            let mut rng = Rng(seed ^ (name.len() as u64).wrapping_mul(0x9e37_79b9));
            let mut corpus = seeds;
            let mut seen: HashSet<String> = HashSet::new();
            let mut stats = Stats {
                execs: 0,
                accepted: 0,
                corpus: 0,
                elapsed: Duration::ZERO,
                findings: Vec::new(),
            };
            let start = Instant::now();
            while stats.execs < execs && start.elapsed() < Duration::from_secs(secs) {
                let mut input = corpus[rng.below(corpus.len())].clone();
                // The seeds themselves first, then mutants of one to four steps.
                if stats.execs as usize >= corpus.len() {
                    for _ in 0..1 + rng.below(4) {
                        mutate(&mut rng, &mut input, dict, &corpus);
                    }
                    // Inputs stay under 64 KiB: the deep cases are generated separately.
                    input.truncate(64 << 10);
                } else {
                    input = corpus[stats.execs as usize].clone();
                }
                stats.execs += 1;
                match catch_unwind(AssertUnwindSafe(|| target(&input))) {
                    Ok(Ok(())) => {
                        stats.accepted += 1;
                        if corpus.len() < 4096 && seen.insert(String::from("ok")) {
                            corpus.push(input);
                        }
                    }
                    Ok(Err(message)) => {
                        // The error's first line without quoted names and numbers (positions,
                        // lines): its kind.
                        let kind: String = message
                            .lines()
                            .next()
                            .unwrap_or("")
                            .split('`')
                            .step_by(2)
                            .collect::<Vec<_>>()
                            .join("`_`")
                            .chars()
                            .filter(|c| !c.is_ascii_digit())
                            .collect();
                        if corpus.len() < 4096 && seen.insert(kind) {
                            corpus.push(input);
                        }
                    }
                    Err(payload) => {
                        let why = payload
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        stats
                            .findings
                            .push((String::from_utf8_lossy(&input).into_owned(), why));
                        if stats.findings.len() >= 5 {
                            break;
                        }
                    }
                }
            }
            stats.elapsed = start.elapsed();
            stats.corpus = corpus.len();
            stats
        })
        .unwrap()
        .join()
        .expect("the fuzzing thread ends");
    eprintln!(
        "fuzz {name}: {} execs in {:.1} s ({:.0}/s), {} accepted, corpus {}, {} findings",
        stats.execs,
        stats.elapsed.as_secs_f64(),
        stats.execs as f64 / stats.elapsed.as_secs_f64().max(1e-9),
        stats.accepted,
        stats.corpus,
        stats.findings.len()
    );
    stats
}

fn assert_no_findings(name: &str, stats: &Stats) {
    assert!(stats.execs > 0);
    if !stats.findings.is_empty() {
        let shown: Vec<String> = stats
            .findings
            .iter()
            .map(|(input, why)| format!("panicked: {why}\ninput: {input:?}"))
            .collect();
        panic!("fuzz {name} found panics:\n{}", shown.join("\n\n"));
    }
}

/// The repository's pipelines and some of the tests' shapes.
fn pipeline_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    for s in [
        "stages:\n  a: {run: 'echo ${{ params.x }} > ${{ outputs.o }}', outputs: {o: out/a.txt}, timeout: 5s}\nparams: {x: 1}\n",
        "name: p\nstages:\n  n: {uses: normalize, inputs: {train: data/train.csv}, with: {label: y, numeric: {default: zscore}}}\n  d:\n    uses: deploy\n    inputs: {model: m.onnx, preprocess: \"${{ stages.n.outputs.preprocess }}\"}\n    with: {registry: models, name: m}\n",
        "stages:\n  c:\n    uses: clean\n    inputs: {table: t.csv}\n    with: {filter: \"age >= 18 and not (city == 'X' or score < 0.5)\", missing: {default: drop}, duplicates: drop}\n  s:\n    uses: split\n    inputs: {table: \"${{ stages.c.outputs.table }}\"}\n    with: {method: stratified, label: y, ratios: {train: 0.7, val: 0.15, test: 0.15}, seed: 1}\n",
        "stages:\n  p:\n    plugin: {command: [python3, p.py]}\n    uses: my-kind\n    inputs: [a, b]\n    env: {A: '1'}\n    resources: {cpus: 2, gpus: 1}\n",
        "x: &a [1, 2]\ny: *a\nstages: {}\n",
    ] {
        seeds.push(s.as_bytes().to_vec());
    }
    seeds
}

const PIPELINE_DICT: &[&[u8]] = &[
    b"${{ ",
    b" }}",
    b"stages.",
    b".outputs.",
    b"params.",
    b"inputs.",
    b"outputs.",
    b"\n  ",
    b"\n    ",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!binary ",
    b"!!str ",
    b"? ",
    b"|\n  ",
    b"'",
    b"\"",
    b"uses: ",
    b"run: ",
    b"with: ",
    b"timeout: ",
    b"99999999999999999999",
    b"h",
    b"ms",
    b"-1",
    b"1e309",
    b".nan",
    b"null",
    b"~",
    b"../",
    b"/",
    b"resources: ",
    b"depends_on: ",
    b"clean",
    b"split",
    b"normalize",
    b"train",
    b"evaluate",
    b"deploy",
    b"\xf0\x9f\x92\xa7",
];

const TEMPLATE_DICT: &[&[u8]] = &[
    b"${{",
    b"}}",
    b"${{ ",
    b" }}",
    b"$",
    b"{",
    b"}",
    b"stages.",
    b".outputs.",
    b"params.",
    b"inputs.",
    b"outputs.",
    b".",
    b" ",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
];

const FILTER_DICT: &[&[u8]] = &[
    b"(",
    b")",
    b" and ",
    b" or ",
    b"not ",
    b"==",
    b"!=",
    b"<",
    b"<=",
    b">",
    b">=",
    b"x",
    b"city",
    b"ok",
    b"n",
    b"`",
    b"'",
    b"\"",
    b"\\",
    b"1",
    b"-",
    b".",
    b"e",
    b"1e999",
    b"NaN",
    b"true",
    b"false",
    b" ",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
];

#[test]
fn fuzz_pipeline_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let stats = fuzz("pipeline_load", pipeline_seeds(), PIPELINE_DICT, move |b| {
        sluice_stages::fuzzing::pipeline(b, &root)
    });
    // The seeds are valid pipelines: a loader that rejected everything would pass unnoticed.
    assert!(stats.accepted > 0);
    assert_no_findings("pipeline_load", &stats);
}

#[test]
fn fuzz_template() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for p in pipeline_seeds() {
        let text = String::from_utf8_lossy(&p).into_owned();
        for line in text.lines().filter(|l| l.contains("${{")) {
            seeds.push(line.trim().as_bytes().to_vec());
        }
    }
    for s in [
        "out/${{ params.dataset }}-${{ params.seed }}.csv",
        "${{ stages.train.outputs.model }}",
        "python ${{ inputs.script }} > ${{ outputs.report }}",
        "$${{ not closed",
        "${{ }}",
    ] {
        seeds.push(s.as_bytes().to_vec());
    }
    let stats = fuzz("template", seeds, TEMPLATE_DICT, |b| {
        sluice_stages::fuzzing::template(&String::from_utf8_lossy(b))
    });
    assert!(stats.accepted > 0);
    assert_no_findings("template", &stats);
}

#[test]
fn fuzz_filter_expr() {
    let seeds: Vec<Vec<u8>> = [
        "age >= 18 and not (city == 'X' or score < 0.5)",
        "x >= 1.5 and city == \"NL\"",
        "not (ok == true) or n != 2",
        "`x` < -3e2",
        "city == 'a b' and (x > 0 or x <= 0)",
        "day >= '2024-01-01'",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let stats = fuzz("filter_expr", seeds, FILTER_DICT, |b| {
        sluice_stages::fuzzing::filter_expr(&String::from_utf8_lossy(b))
    });
    assert!(stats.accepted > 0);
    assert_no_findings("filter_expr", &stats);
}

/// The deep cases: `(target, name, input)`.
fn deep_cases(depth: usize) -> Vec<(&'static str, String, Vec<u8>)> {
    let d = depth;
    let pipeline = |body: String| {
        format!("params:\n  p: {body}\nstages:\n  a: {{run: 'true'}}\n").into_bytes()
    };
    vec![
        (
            "filter_expr",
            format!("parentheses-{d}"),
            format!("{}x == 1{}", "(".repeat(d), ")".repeat(d)).into_bytes(),
        ),
        (
            "filter_expr",
            format!("not-{d}"),
            format!("{}x == 1", "not ".repeat(d)).into_bytes(),
        ),
        (
            "filter_expr",
            format!("and-chain-{d}"),
            format!("{}x == 1", "x == 1 and ".repeat(d)).into_bytes(),
        ),
        (
            "pipeline_load",
            format!("flow-sequences-{d}"),
            pipeline(format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        ),
        (
            "pipeline_load",
            format!("flow-mappings-{d}"),
            pipeline(format!("{}1{}", "{a: ".repeat(d), "}".repeat(d))),
        ),
        (
            "pipeline_load",
            format!("block-sequences-{d}"),
            format!(
                "params:\n  p:\n{}\nstages:\n  a: {{run: 'true'}}\n",
                (0..d.min(2000))
                    .map(|i| format!("{}- ", " ".repeat(4 + 2 * i)))
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "1"
            )
            .into_bytes(),
        ),
        (
            "template",
            format!("expressions-{d}"),
            "${{ params.p }}".repeat(d).into_bytes(),
        ),
    ]
}

fn run_target(target: &str, input: &[u8], root: &Path) -> Result<(), String> {
    match target {
        "filter_expr" => sluice_stages::fuzzing::filter_expr(&String::from_utf8_lossy(input)),
        "template" => sluice_stages::fuzzing::template(&String::from_utf8_lossy(input)),
        "pipeline_load" => sluice_stages::fuzzing::pipeline(input, root),
        other => panic!("unknown target {other}"),
    }
}

/// How deep the generated inputs go. YAML flow collections stop at 10,000 levels: libyaml's
/// scanner is quadratic in their depth (100,000 levels take minutes in a debug build).
const DEEP_DEPTHS: [usize; 4] = [100, 1_000, 10_000, 100_000];
const DEEP_YAML: usize = 10_000;

fn all_deep_cases() -> Vec<(&'static str, String, Vec<u8>)> {
    DEEP_DEPTHS
        .iter()
        .flat_map(|&d| deep_cases(d))
        .filter(|(target, name, _)| {
            let depth: usize = name.rsplit('-').next().unwrap().parse().unwrap();
            *target != "pipeline_load" || depth <= DEEP_YAML
        })
        .collect()
}

/// In the child process: runs the case named by `SLUICE_FUZZ_DEEP` and returns (exits 0) unless
/// it panics or overflows the stack. A no-op in a normal test run.
#[test]
fn deep_case_child() {
    let Ok(name) = std::env::var("SLUICE_FUZZ_DEEP") else {
        return;
    };
    let (target, _, input) = all_deep_cases()
        .into_iter()
        .find(|(_, n, _)| *n == name)
        .expect("a known case");
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let result = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || run_target(target, &input, &root).map_err(|e| e.len()))
        .unwrap()
        .join();
    assert!(result.is_ok(), "{name} panicked");
}

/// Runs each deep case of `target` in its own child process, so that one stack overflow (which
/// aborts) is reported by name instead of taking the whole test binary down; fails naming every
/// case that crashed.
fn deep(target: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut crashed = Vec::new();
    for (t, name, _) in all_deep_cases() {
        if t != target {
            continue;
        }
        let out = std::process::Command::new(&exe)
            .args([
                "deep_case_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SLUICE_FUZZ_DEEP", &name)
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .find(|l| l.contains("overflow") || l.contains("panicked"))
                .unwrap_or("")
                .to_string();
            crashed.push(format!("{name}: {} {why}", out.status));
        }
    }
    assert!(crashed.is_empty(), "crashed:\n{}", crashed.join("\n"));
}

/// Nested flow sequences and mappings and block sequences, to 10,000 levels: an error (YAML's
/// recursion limit), never an overflow.
#[test]
fn deeply_nested_pipelines_do_not_crash() {
    deep("pipeline_load");
}

#[test]
fn long_templates_do_not_crash() {
    deep("template");
}

/// Parentheses, `not`s and `and` chains 10,000 deep: the parser refuses nesting beyond its
/// depth limit, and an `and` chain of any length is evaluated without deep recursion.
#[test]
fn deeply_nested_filter_expressions_do_not_crash() {
    deep("filter_expr");
}
