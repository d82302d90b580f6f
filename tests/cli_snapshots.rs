//! Snapshots of what users read from `sluice`: `--help` of every command, `status` (fresh, up to
//! date, stale with each kind of reason), `dag` in every format, `run`'s plain output and its
//! `--json` lines, `metrics`, `gc`, and one failed run. Each test builds a small deterministic
//! workspace, runs the real binary as a user would and compares the whole transcript (command
//! lines, exit codes, stdout and stderr) with `tests/snapshots/NAME.snap`.
//!
//! `SLUICE_BLESS=1 cargo test --test cli_snapshots` rewrites the snapshots that differ; review the
//! diff before committing it. The mechanism (masking, comparing, blessing) is shared with the
//! bad-pipeline corpus in `tests/common/snapshot.rs`; validation diagnostics are snapshotted
//! there, in over 400 cases under `tests/corpus/`, so none are repeated here.
//!
//! Masked, because they change from run to run: the temporary workspace (`[WS]`), run ids, which
//! also name log directories and hold a pid (`[RUN]`), durations (`[TIME]`, in text and as
//! `duration_ms`), and content hashes (`[HASH]`: cache keys change with the key format on purpose,
//! and `tests/lock_golden.rs` pins them). Runs use `--jobs 1` so that stages start and finish in
//! one order. Nothing else is masked, and no assertion here is a substring match.
//!
//! Not snapshotted: `watch` (its rounds follow file events; `tests/watch.rs` synchronises on its
//! events), `serve` and `setup` (they need trained models and the Python environment;
//! `tests/serve.rs`, `tests/train.rs`), the live display (only on a terminal), and `schema`
//! (read by editors rather than people; `tests/cli.rs` checks its structure).

mod common;

use common::snapshot::{self, Transcript};
use common::*;

/// Three `run:` stages in a chain, with a param and an input file.
const CHAIN: &str = r#"name: chain
params: {greeting: hello}
stages:
  a:
    run: cat ${{ inputs.src }} > ${{ outputs.o }}; echo ${{ params.greeting }} >> ${{ outputs.o }}
    inputs: {src: data.txt}
    outputs: {o: out/a.txt}
  b:
    run: tr a-z A-Z < ${{ stages.a.outputs.o }} > ${{ outputs.o }}
    outputs: {o: out/b.txt}
  c:
    run: wc -l < ${{ stages.b.outputs.o }} | tr -d ' ' > ${{ outputs.o }}
    outputs: {o: out/c.txt}
"#;

fn chain() -> Ws {
    let ws = Ws::new();
    ws.write("data.txt", "abc\n").pipeline(CHAIN);
    ws
}

/// The built-in table stages on a tiny CSV: `clean` drops the row with a missing age, `split`
/// cuts the rest in two.
const TABLES: &str = r#"name: tables
stages:
  clean:
    uses: clean
    inputs: {table: data/people.csv}
    with:
      missing: {default: drop}
  split:
    uses: split
    inputs: {table: "${{ stages.clean.outputs.table }}"}
    with: {ratios: {train: 0.5, test: 0.5}, seed: 7}
"#;

const PEOPLE: &str = "id,age,city,label
1,34,ams,yes
2,,rot,no
3,51,ams,yes
4,29,utr,no
5,42,rot,yes
6,38,ams,no
7,61,utr,yes
8,45,ams,no
";

fn tables() -> Ws {
    let ws = Ws::new();
    ws.write("data/people.csv", PEOPLE).pipeline(TABLES);
    ws
}

/// The subcommands whose `--help` is snapshotted; `every_command_has_a_help_snapshot` keeps the
/// list in step with `sluice --help`.
const COMMANDS: [&str; 11] = [
    "run", "status", "watch", "dag", "gc", "cache", "schema", "setup", "metrics", "sweep", "serve",
];

/// Subcommands of subcommands, snapshotted as `help/<command>-<subcommand>`.
const NESTED: [[&str; 2]; 4] = [
    ["sweep", "show"],
    ["sweep", "promote"],
    ["cache", "push"],
    ["cache", "pull"],
];

#[test]
fn help_of_every_command() {
    let ws = Ws::new();
    let mut failures = Vec::new();
    let top = std::iter::once(("sluice".to_string(), vec!["--help"]));
    let subs = COMMANDS.iter().map(|c| (c.to_string(), vec![*c, "--help"]));
    let nested = NESTED
        .iter()
        .map(|[c, s]| (format!("{c}-{s}"), vec![*c, *s, "--help"]));
    for (name, args) in top.chain(subs).chain(nested) {
        let mut t = Transcript::new(&ws);
        t.sluice(&args).assert_ok();
        let path = snapshot::cli_snapshot(&format!("help/{name}"));
        if let Err(e) = snapshot::compare(&path, &t.text(), snapshot::blessing()) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(SLUICE_BLESS=1 rewrites them; review the diff before committing)",
        failures.join("\n")
    );
}

#[test]
fn every_command_has_a_help_snapshot() {
    let help = Ws::new().sluice(&["--help"]);
    help.assert_ok();
    let listed: Vec<&str> = help
        .stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(listed, COMMANDS, "{}", help.stdout);
}

#[test]
fn status_fresh_up_to_date_and_stale() {
    let ws = chain();
    let mut t = Transcript::new(&ws);
    t.sluice(&["status"]);
    t.sluice(&["status", "--json"]);
    t.sluice(&["run", "--jobs", "1", "--quiet"]).assert_ok();
    t.sluice(&["status"]);
    t.sluice(&["status", "--json"]);
    t.sluice(&["status", "--set", "greeting=hi"]);
    t.note("out/c.txt deleted");
    std::fs::remove_file(ws.path("out/c.txt")).unwrap();
    t.sluice(&["status"]);
    t.note("b's command changed");
    ws.pipeline(&CHAIN.replace("tr a-z A-Z <", "tr a-z A-Z  <"));
    t.sluice(&["status"]);
    t.sluice(&["status", "b"]);
    t.note("b's command changed and a's param set: b lists both reasons");
    t.sluice(&["status", "--set", "greeting=hi"]);
    t.sluice(&["status", "--json", "--set", "greeting=hi"]);
    t.note("data.txt edited");
    ws.write("data.txt", "abcd\n");
    t.sluice(&["status"]);
    t.check("status");
}

#[test]
fn run_plain_output() {
    let ws = chain();
    let mut t = Transcript::new(&ws);
    t.sluice(&["run", "--dry-run", "--jobs", "1"]);
    t.sluice(&["run", "--jobs", "1"]).assert_ok();
    t.sluice(&["run", "--jobs", "1"]).assert_ok();
    t.note("data.txt edited, out/c.txt deleted");
    ws.write("data.txt", "wxyz\n");
    std::fs::remove_file(ws.path("out/c.txt")).unwrap();
    t.sluice(&["run", "--dry-run", "--jobs", "1"]);
    t.sluice(&["run", "--jobs", "1"]).assert_ok();
    t.note("data.txt put back");
    ws.write("data.txt", "abc\n");
    t.sluice(&["run", "--jobs", "1", "c"]).assert_ok();
    t.sluice(&["run", "--jobs", "1", "--force", "b", "b"])
        .assert_ok();
    t.check("run_plain");
}

#[test]
fn run_json_lines() {
    let ws = chain();
    let mut t = Transcript::new(&ws);
    t.sluice(&["run", "--json", "--jobs", "1"]).assert_ok();
    t.note("out/b.txt deleted");
    std::fs::remove_file(ws.path("out/b.txt")).unwrap();
    t.sluice(&["run", "--dry-run", "--json"]).assert_ok();
    t.sluice(&["run", "--json", "--jobs", "1"]).assert_ok();
    t.check("run_json");
}

#[test]
fn gc() {
    let ws = chain();
    // Over 4 KiB, so that `a` and `b` get blobs (`c`'s small output lives in its record).
    ws.write("data.txt", &"abc\n".repeat(1100));
    let mut t = Transcript::new(&ws);
    t.sluice(&["run", "--jobs", "1", "--quiet"]).assert_ok();
    t.note("data.txt edited");
    ws.write("data.txt", &"abcd\n".repeat(1000));
    t.sluice(&["run", "--jobs", "1", "--quiet"]).assert_ok();
    t.sluice(&["gc", "--dry-run"]).assert_ok();
    t.sluice(&["gc"]).assert_ok();
    t.sluice(&["gc", "--verify"]).assert_ok();
    t.check("gc");
}

/// The built-in stages report progress (in `--json` only: the plain display shows it on a
/// terminal's live rows), and an identical output keeps the next stage up to date.
#[test]
fn builtin_table_stages() {
    let ws = tables();
    let mut t = Transcript::new(&ws);
    t.sluice(&["run", "--jobs", "1"]).assert_ok();
    t.sluice(&["status"]);
    t.sluice(&["run", "--json", "--jobs", "1", "--force", "clean"])
        .assert_ok();
    t.check("tables");
}

#[test]
fn dag_in_every_format() {
    let ws = tables();
    // A diamond of `run:` stages after the table stages, in a pipeline file that is not the
    // default, so the file argument shows in every format too.
    ws.write(
        "pipelines/graph.yaml",
        &format!(
            "{TABLES}  {}",
            r#"count:
    run: wc -l < ${{ stages.split.outputs.train }} > ${{ outputs.o }}
    outputs: {o: out/count.txt}
  sample:
    run: head -n 2 ${{ stages.split.outputs.test }} > ${{ outputs.o }}
    outputs: {o: out/sample.txt}
  report:
    run: cat ${{ stages.count.outputs.o }} ${{ stages.sample.outputs.o }} > ${{ outputs.o }}
    outputs: {o: out/report.txt}
"#
        ),
    );
    let mut t = Transcript::new(&ws);
    for format in ["text", "dot", "mermaid"] {
        t.sluice(&["dag", "pipelines/graph.yaml", "--format", format])
            .assert_ok();
    }
    t.sluice(&["dag"]).assert_ok();
    t.check("dag");
}

/// `metrics` reads the `metrics` outputs of `evaluate` stages and the history beside the cache.
/// Both are written here as the stage writes them (`docs/evaluate.md`): running `evaluate` needs a
/// trained model and ONNX Runtime, and `tests/evaluate.rs` checks that it writes them.
#[test]
fn metrics() {
    let ws = Ws::new();
    for input in ["models/net.onnx", "models/preprocess.json", "data/test.csv"] {
        ws.write(input, "");
    }
    ws.pipeline(
        r#"name: scores
stages:
  evaluate:
    uses: evaluate
    inputs: {model: models/net.onnx, test: data/test.csv, preprocess: models/preprocess.json}
    outputs: {metrics: out/metrics.json, predictions: out/predictions.csv}
  holdout:
    uses: evaluate
    inputs: {model: models/net.onnx, test: data/test.csv, preprocess: models/preprocess.json}
    outputs: {metrics: out/holdout.json, predictions: out/holdout.csv}
"#,
    );
    let mut t = Transcript::new(&ws);
    t.sluice(&["metrics"]).assert_ok();
    t.note("evaluate ran twice: out/metrics.json and its history written");
    ws.write(
        "out/metrics.json",
        r#"{"task": "classification", "rows": 30, "provider": "CPUExecutionProvider", "metrics": {"accuracy": 0.9333, "f1_macro": 0.9312, "log_loss": 0.2101}}"#,
    );
    ws.write(
        ".sluice/metrics/scores/evaluate.jsonl",
        concat!(
            r#"{"metrics": {"accuracy": 0.9, "f1_macro": 0.9312, "log_loss": 0.25}}"#,
            "\n",
            r#"{"metrics": {"accuracy": 0.9333, "f1_macro": 0.9312, "log_loss": 0.2101}}"#,
            "\n"
        ),
    );
    t.sluice(&["metrics"]).assert_ok();
    t.sluice(&["metrics", "--diff"]).assert_ok();
    t.sluice(&["metrics", "--json"]).assert_ok();
    t.sluice(&["metrics", "--json", "--diff"]).assert_ok();
    t.note("a pipeline without an evaluate stage");
    ws.write("data.txt", "abc\n").pipeline(CHAIN);
    t.sluice(&["metrics"]);
    t.check("metrics");
}

/// The only snapshot of a failed run, plain and `--json`: how a stage failure is rendered is
/// being reworked, and one file is quick to re-bless.
#[test]
fn a_failed_run() {
    let ws = Ws::new();
    ws.pipeline(
        r#"name: failing
stages:
  first:
    run: echo fine > ${{ outputs.o }}
    outputs: {o: out/first.txt}
  bad:
    run: cat ${{ stages.first.outputs.o }} >&2; echo boom >&2; exit 3
    outputs: {o: out/bad.txt}
  after:
    run: cp ${{ stages.bad.outputs.o }} ${{ outputs.o }}
    outputs: {o: out/after.txt}
"#,
    );
    let mut t = Transcript::new(&ws);
    assert_eq!(t.sluice(&["run", "--jobs", "1"]).code, 1);
    assert_eq!(t.sluice(&["run", "--json", "--jobs", "1"]).code, 1);
    t.check("failed_run");
}

/// The diff a mismatch prints (shared with the corpus): changes in order with two lines of
/// context, removed before added, long unchanged runs elided.
#[test]
fn a_mismatch_prints_a_readable_diff() {
    let want = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
    let got = "1\n2\n3\n4\nfive\n6\n7\n8\n9\nten\n";
    assert_eq!(
        snapshot::diff(want, got),
        concat!(
            "      ...\n",
            "        3\n",
            "        4\n",
            "      - 5\n",
            "      + five\n",
            "        6\n",
            "        7\n",
            "        8\n",
            "        9\n",
            "      + ten\n",
        )
    );
    assert_eq!(
        snapshot::diff("a\n", "a"),
        "      (the same lines: they differ in line endings or the final newline)\n"
    );
    // Past the table's limit the middle is shown whole, removed then added.
    let (many_a, many_b) = ("a\n".repeat(3000), "b\n".repeat(3000));
    let d = snapshot::diff(&many_a, &many_b);
    assert!(d.starts_with("      - a\n") && d.ends_with("      ... (5600 more lines)\n"));
}
