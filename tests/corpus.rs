//! The bad-pipeline corpus: every fixture under `tests/corpus/` is a malformed or hostile
//! pipeline that the real `sluice` binary must refuse cleanly. Each case runs in a fresh temporary
//! workspace and must exit with its declared code, never panic or die of a signal, finish within
//! the time budget, point at `file:line:col` when the error is in the YAML, and print exactly the
//! message recorded in its snapshot. `tests/corpus/README.md` describes the fixture format.
//!
//! All cases run and every failure is collected, so one `cargo test --test corpus` lists every
//! broken case at once. `SLUICE_BLESS=1` rewrites the snapshots of the cases that meet every other
//! requirement; `SLUICE_CORPUS=TEXT` runs only the cases whose name contains `TEXT`.

mod common;

use common::{snapshot, Ws, BIN};
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A case still running after this long is killed and reported as a hang. It is generous so that
/// a loaded machine cannot turn a slow case into a false hang; the budget below is the real limit.
const HANG: Duration = Duration::from_secs(10);

/// The issue's limit for one case, measured from spawn to exit on whatever build the test runs.
const BUDGET: Duration = Duration::from_secs(2);

/// Snapshot lines longer than this are cut, so that a message quoting a 20 MB source line does not
/// become a 20 MB snapshot; the cut keeps the line's length visible.
const LONG_LINE: usize = 300;

/// One fixture and what its header declares.
struct Case {
    /// `category/name`, the fixture's path under `tests/corpus/` without `.yaml`.
    name: String,
    fixture: PathBuf,
    args: Vec<String>,
    exit: i32,
    /// The file name the fixture is written under in the workspace.
    file: String,
    setups: Vec<String>,
    /// Whether the error is located in the pipeline file, so stderr must name `file:line:col`.
    /// By default, every case that exits 2 (an invalid pipeline) must be located.
    located: bool,
    /// The `line:col` stderr must name, for cases where a plausible but wrong one is the risk.
    at: Option<String>,
}

/// What one run of a case produced.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    hung: bool,
    took: Duration,
    stdout: String,
    stderr: String,
    /// The pipeline file as it was written into the workspace, for checking reported locations.
    source: Vec<u8>,
    root: PathBuf,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fixtures(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// Splits `args:` into words; single or double quotes keep spaces inside one word.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => out.extend(cur.take()),
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    out
}

/// Reads the `# key: value` lines at the top of a fixture.
fn parse(fixture: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(fixture).map_err(|e| format!("cannot read: {e}"))?;
    let name = fixture
        .strip_prefix(corpus_dir())
        .unwrap()
        .with_extension("")
        .to_string_lossy()
        .into_owned();
    let mut case = Case {
        name,
        fixture: fixture.to_path_buf(),
        args: Vec::new(),
        exit: -1,
        file: "sluice.yaml".into(),
        setups: Vec::new(),
        located: true,
        at: None,
    };
    let mut saw_args = false;
    let mut located = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            break;
        };
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "args" => {
                case.args = words(value);
                saw_args = true;
            }
            "exit" => case.exit = value.parse().map_err(|_| format!("bad `exit: {value}`"))?,
            "file" => case.file = value.to_string(),
            "setup" => case.setups = value.split_whitespace().map(String::from).collect(),
            "located" => located = Some(value != "no"),
            "at" => case.at = Some(value.to_string()),
            "why" => {}
            _ => return Err(format!("unknown header key `{key}`")),
        }
    }
    if !saw_args || case.exit < 0 {
        return Err("the header needs `# args:` and `# exit:`".into());
    }
    case.located = located.unwrap_or(case.exit == 2);
    Ok(case)
}

/// Deterministic bytes (a linear congruential generator), so that generated files are the same on
/// every run and every machine.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

const MB20: usize = 20 * 1024 * 1024;

/// A stage that is valid on its own, for generated files that need a pipeline around their problem.
const STAGE: &str =
    "stages:\n  a:\n    run: echo hi > ${{ outputs.o }}\n    outputs: {o: out/a.txt}\n";

/// Ten anchored lists, each holding nine aliases of the one before: 9^9 strings if expanded.
fn bomb() -> String {
    let mut text = String::from("  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let prev = format!("*a{}", level - 1);
        writeln!(
            text,
            "  a{level}: &a{level} [{}]",
            [prev.as_str(); 9].join(", ")
        )
        .unwrap();
    }
    text
}

fn symlink(target: &str, link: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Runs the named setup in the workspace after the fixture was written there as `file`. Setups
/// make what cannot or should not be committed: huge, binary or deeply nested files, symbolic
/// links, and the input files a case needs so that only its own problem is reported.
fn setup(name: &str, ws: &Ws, file: &str) -> Result<(), String> {
    let path = ws.path(file);
    let fixture = std::fs::read(&path).unwrap();
    let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();
    match name {
        // An input table for the data stages, so that a missing input is not what gets reported.
        "data" => {
            ws.write("data.csv", "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n");
        }
        "images" => {
            std::fs::create_dir_all(ws.path("pics/cat")).unwrap();
            ws.write("pics/cat/1.png", "not really a png");
        }
        "empty" => write(b""),
        "whitespace" => write(b"   \n\n\t\n  \n"),
        "binary" => write(&noise(4096, 7)),
        "nul" => {
            let mut bytes = fixture;
            bytes.extend_from_slice(b"  b:\n    run: \"x\0y\"\n");
            write(&bytes);
        }
        "latin1" => {
            let mut bytes = fixture;
            bytes.extend_from_slice(b"    description: caf\xe9\n");
            write(&bytes);
        }
        "utf16" => {
            let mut bytes = vec![0xff, 0xfe];
            for u in String::from_utf8(fixture).unwrap().encode_utf16() {
                bytes.extend_from_slice(&u.to_le_bytes());
            }
            write(&bytes);
        }
        "bom" => {
            let mut bytes = b"\xef\xbb\xbf".to_vec();
            bytes.extend_from_slice(&fixture);
            write(&bytes);
        }
        "crlf" => {
            let text = String::from_utf8(fixture).unwrap();
            write(text.replace('\n', "\r\n").as_bytes());
        }
        // 20 MB of valid params, then a typo on the very last line.
        "huge_lines" => {
            let mut text = String::with_capacity(MB20 + 4096);
            text.push_str("params:\n");
            let mut i = 0;
            while text.len() < MB20 {
                writeln!(text, "  p{i:07}: {i}").unwrap();
                i += 1;
            }
            text.push_str(STAGE);
            text.push_str("    timout: 5s\n");
            write(text.as_bytes());
        }
        // One 20 MB line that holds the error.
        "huge_line" => {
            let mut text = String::from(STAGE);
            text.push_str("  b:\n    run: echo ");
            text.push_str(&"x".repeat(MB20));
            text.push_str(" ${{ params.nope }}\n");
            write(text.as_bytes());
        }
        // 20 MB of binary noise after a valid header.
        "huge_binary" => {
            let mut bytes = STAGE.as_bytes().to_vec();
            bytes.extend_from_slice(&noise(MB20, 11));
            write(&bytes);
        }
        // The "billion laughs": nine levels of nine aliases each, 9^9 nodes if expanded.
        "alias_bomb" => {
            let text = format!("params:\n{}{STAGE}", bomb());
            write(text.as_bytes());
        }
        // The same bomb, referenced from a stage so that it would be expanded into a `with:`.
        "alias_bomb_with" => {
            let text = format!("x-bomb:\n{}{STAGE}    with: {{bomb: *a9}}\n", bomb());
            write(text.as_bytes());
        }
        "deep_flow" => {
            let n = 10_000;
            let text = format!("params:\n  x: {}{}\n{STAGE}", "[".repeat(n), "]".repeat(n));
            write(text.as_bytes());
        }
        "deep_flow_map" => {
            let n = 10_000;
            let text = format!(
                "params:\n  x: {}1{}\n{STAGE}",
                "{a: ".repeat(n),
                "}".repeat(n)
            );
            write(text.as_bytes());
        }
        // Block sequences nest on one line (`- - - 1`): indenting 10,000 levels would take 50 MB.
        "deep_block" => {
            let text = format!("params:\n  x:\n    {}1\n{STAGE}", "- ".repeat(10_000));
            write(text.as_bytes());
        }
        "deep_with" => {
            let n = 10_000;
            let text = format!(
                "{STAGE}    with: {{x: {}{}}}\n",
                "[".repeat(n),
                "]".repeat(n)
            );
            write(text.as_bytes());
        }
        "deep_filter" => {
            let n = 10_000;
            let filter = format!("{}a > 1{}", "(".repeat(n), ")".repeat(n));
            let text =
                String::from_utf8(fixture).unwrap() + &format!("      filter: \"{filter}\"\n");
            write(text.as_bytes());
        }
        "deep_not" => {
            let filter = format!("{}a > 1", "not ".repeat(10_000));
            let text =
                String::from_utf8(fixture).unwrap() + &format!("      filter: \"{filter}\"\n");
            write(text.as_bytes());
        }
        "long_filter" => {
            let terms = vec!["a > 1"; 20_000].join(" and ");
            let text =
                String::from_utf8(fixture).unwrap() + &format!("      filter: \"{terms} and\"\n");
            write(text.as_bytes());
        }
        "many_errors" => {
            let mut text = String::from("stages:\n");
            for i in 0..5_000 {
                writeln!(text, "  s{i}:\n    run: echo ${{{{ params.p{i} }}}}").unwrap();
            }
            write(text.as_bytes());
        }
        "many_stages_cycle" => {
            let n = 2_000;
            let mut text = String::from("stages:\n");
            for i in 0..n {
                let next = (i + 1) % n;
                writeln!(text, "  s{i}:\n    run: \"true\"\n    needs: [s{next}]").unwrap();
            }
            write(text.as_bytes());
        }
        // Lock files beside the pipeline that sluice did not write.
        "lock_binary" => std::fs::write(ws.path("sluice.lock"), noise(4096, 5)).unwrap(),
        "lock_bad_entry" => {
            ws.write(
                "sluice.lock",
                "version: 1\npipeline: sluice\nstages:\n  a: [1, 2]\n",
            );
        }
        "lock_alias_bomb" => {
            let text = format!(
                "version: 1\npipeline: sluice\nx:\n{}stages:\n  a: *a9\n",
                bomb()
            );
            ws.write("sluice.lock", &text);
        }
        // Promoted params files (`sluice sweep promote`) beside the pipeline `sluice.yaml`.
        "promoted_typo" => {
            ws.write(
                "sluice.promoted.yaml",
                "sweep: s-1a2b3c4d\ntrial: 3\nparams:\n  lrr: 0.1\n  seed: 2\n",
            );
        }
        "promoted_shape" => {
            ws.write(
                "sluice.promoted.yaml",
                "sweep: [s]\ntrial: -1\nparams: [lr]\ntrail: 3\n",
            );
        }
        "promoted_binary" => {
            std::fs::write(ws.path("sluice.promoted.yaml"), noise(4096, 13)).unwrap()
        }
        "promoted_alias_bomb" => {
            let text = format!("sweep: s\ntrial: 1\nx:\n{}params: *a9\n", bomb());
            ws.write("sluice.promoted.yaml", &text);
        }
        "promoted_huge" => {
            let text = format!(
                "sweep: s\ntrial: 1\nparams: {{}}\n#{}\n",
                "x".repeat(2 << 20)
            );
            ws.write("sluice.promoted.yaml", &text);
        }
        "promoted_dir" => std::fs::create_dir_all(ws.path("sluice.promoted.yaml")).unwrap(),
        "pipeline_dir" => {
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir_all(&path).unwrap();
        }
        // `escape` leads out of the workspace into its parent directory.
        "escape_dir" => symlink("..", &ws.path("escape")),
        // Relative to the link's own directory `out/`: two levels up is outside the workspace.
        "escape_file" => symlink("../../outside.txt", &ws.path("out/model.txt")),
        "escape_nested" => symlink("../..", &ws.path("out/deep")),
        "link_loop" => {
            symlink("loop_b", &ws.path("loop_a"));
            symlink("loop_a", &ws.path("loop_b"));
        }
        // An input directory with two links back to itself: a walk that follows links visits
        // 2^40 paths before the kernel's limit on nested links stops it.
        "looping_dir" => {
            ws.write("data/a.txt", "a\n");
            symlink(".", &ws.path("data/self"));
            symlink(".", &ws.path("data/again"));
        }
        "dangling_input" => symlink("missing-target.csv", &ws.path("data.csv")),
        "sluice_link" => {
            std::fs::create_dir_all(ws.path(".sluice")).unwrap();
            symlink(".sluice", &ws.path("state"));
        }
        "binary_csv" => {
            std::fs::write(ws.path("data.csv"), noise(4096, 3)).unwrap();
        }
        "empty_csv" => {
            ws.write("data.csv", "");
        }
        other => return Err(format!("unknown setup `{other}`")),
    }
    Ok(())
}

fn run(case: &Case) -> Result<Outcome, String> {
    let ws = Ws::new();
    let fixture = std::fs::read(&case.fixture).unwrap();
    let path = ws.path(&case.file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, &fixture).unwrap();
    for name in &case.setups {
        setup(name, &ws, &case.file)?;
    }
    let source = std::fs::read(&path).unwrap_or_default();
    // Output goes to files outside the workspace: a pipe could fill up and block a case that
    // prints a lot, which would then look like a hang.
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let start = Instant::now();
    let mut child = ws
        .command(&case.args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > HANG {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    Ok(Outcome {
        code: status.code(),
        signal: status.signal(),
        hung,
        took,
        stdout: read(&out_path),
        stderr: read(&err_path),
        source,
        root: ws.root().to_path_buf(),
    })
}

/// Whether `stderr` names `file:LINE:COL` with a line and column that exist in `source`.
fn located(stderr: &str, file: &str, source: &[u8]) -> Result<(), String> {
    let source = String::from_utf8_lossy(source);
    let lines: Vec<&str> = source.split('\n').collect();
    let pattern = regex::Regex::new(&format!(r"{}:(\d+):(\d+)", regex::escape(file))).unwrap();
    let mut found = false;
    for cap in pattern.captures_iter(stderr) {
        found = true;
        let (line, col): (usize, usize) = (cap[1].parse().unwrap(), cap[2].parse().unwrap());
        let Some(text) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
            return Err(format!(
                "names {file}:{line}:{col}, but the file has {} lines",
                lines.len()
            ));
        };
        if col == 0 || col > text.chars().count() + 1 {
            return Err(format!(
                "names {file}:{line}:{col}, but line {line} has {} characters",
                text.chars().count()
            ));
        }
    }
    if found {
        Ok(())
    } else {
        Err(format!("does not name `{file}:LINE:COL`"))
    }
}

/// The snapshot text of an outcome: exit status and output, with what changes from run to run
/// (the temporary workspace, run ids, durations, thread ids) masked.
fn snapshot(o: &Outcome) -> String {
    let status = match (o.code, o.signal) {
        (Some(code), _) => format!("exit: {code}"),
        (None, sig) => format!("signal: {}", sig.unwrap_or(-1)),
    };
    let mut text = String::new();
    snapshot::push_outcome(&mut text, &status, &o.stdout, &o.stderr);
    // The default `--jobs` is the number of CPUs.
    let text = snapshot::mask(&text, &[&o.root], &[(r"\d+ job\(s\)", "[N] job(s)")]);
    text.lines()
        .map(|line| {
            if line.len() > LONG_LINE {
                let cut = line
                    .char_indices()
                    .nth(LONG_LINE / 2)
                    .map_or(line.len(), |(i, _)| i);
                format!("{}[… {} bytes in all]\n", &line[..cut], line.len())
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// Checks one case; returns its problems (empty when it passes) and the time it took.
fn check(case: &Case, bless: bool) -> (Vec<String>, Duration) {
    let o = match run(case) {
        Ok(o) => o,
        Err(e) => return (vec![e], Duration::ZERO),
    };
    let mut problems = Vec::new();
    if o.hung {
        problems.push(format!(
            "still running after {} s, so killed (a hang, or far over the budget)",
            HANG.as_secs()
        ));
    } else if let Some(sig) = o.signal {
        problems.push(format!("died of signal {sig}"));
    }
    if o.code == Some(101) || o.stderr.contains("panicked") {
        problems.push("panicked".into());
    }
    if !o.hung && o.code != Some(case.exit) {
        problems.push(format!(
            "exit {}, expected {}",
            o.code.map_or("none".into(), |c| c.to_string()),
            case.exit
        ));
    }
    if o.took > BUDGET {
        problems.push(format!(
            "took {:.2} s, over the {} s budget",
            o.took.as_secs_f64(),
            BUDGET.as_secs()
        ));
    }
    if case.located {
        if let Err(e) = located(&o.stderr, &case.file, &o.source) {
            problems.push(format!("stderr {e}"));
        }
    }
    if let Some(at) = &case.at {
        if !o.stderr.contains(&format!("{}:{at}", case.file)) {
            problems.push(format!("stderr does not name `{}:{at}`", case.file));
        }
    }
    let got = snapshot(&o);
    let snap = case.fixture.with_extension("snap");
    // A case that fails any other requirement is never recorded: a panic is not an expectation.
    if let Err(e) = snapshot::compare(&snap, &got, bless && problems.is_empty()) {
        problems.push(e);
    }
    (problems, o.took)
}

#[test]
fn bad_pipeline_corpus() {
    let mut paths = Vec::new();
    fixtures(&corpus_dir(), &mut paths);
    paths.sort();
    let filter = std::env::var("SLUICE_CORPUS").unwrap_or_default();
    let bless = snapshot::blessing();
    let mut failures: Vec<(String, Vec<String>)> = Vec::new();
    let mut cases = Vec::new();
    for path in &paths {
        match parse(path) {
            Ok(case) if case.name.contains(&filter) => cases.push(case),
            Ok(_) => {}
            Err(e) => failures.push((path.display().to_string(), vec![e])),
        }
    }
    if filter.is_empty() {
        assert!(
            cases.len() >= 150,
            "the corpus has only {} cases",
            cases.len()
        );
    }
    // Cases run a few at a time: each is one short process, and the machine may be shared.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let (problems, took) = check(case, bless);
                results
                    .lock()
                    .unwrap()
                    .push((case.name.clone(), problems, took));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    // The slowest cases, for the log: the budget is the issue's, and a loaded machine shows here
    // first.
    let mut by_time: Vec<_> = results.iter().map(|r| (r.2, r.0.as_str())).collect();
    by_time.sort_by(|a, b| b.cmp(a));
    let slowest: Vec<String> = by_time
        .iter()
        .take(8)
        .map(|(took, name)| format!("{name} {:.2} s", took.as_secs_f64()))
        .collect();
    eprintln!(
        "corpus: {} cases; slowest: {}",
        results.len(),
        slowest.join(", ")
    );
    failures.extend(
        results
            .into_iter()
            .filter(|r| !r.1.is_empty())
            .map(|(name, problems, _)| (name, problems)),
    );
    let mut report = String::new();
    for (name, problems) in &failures {
        writeln!(report, "{name}:").unwrap();
        for p in problems {
            writeln!(report, "    {p}").unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the corpus's cases failed (SLUICE_BLESS=1 rewrites the snapshots of cases that \
         meet every other requirement):\n{report}",
        failures.len()
    );
}
