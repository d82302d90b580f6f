//! The remote cache (issue 19) through the real binary, against real servers: nginx with WebDAV
//! PUT and moto (an S3 emulator), started by `tests/remote/start.sh` (CI's `.ci/run` does), and
//! `file://` directories. A test that needs a server that is not up prints
//! `SKIPPED: remote test NAME (REASON)` and passes; the `file://` ones always run. Each test
//! uses a remote prefix of its own, and damages or inspects the remote's objects behind sluice's
//! back (curl, plain files), never through sluice.

mod common;

#[path = "remote_cache/commands.rs"]
mod commands;
#[path = "remote_cache/failures.rs"]
mod failures;
#[path = "remote_cache/restore.rs"]
mod restore;
#[path = "remote_cache/secrets.rs"]
mod secrets;
#[path = "remote_cache/settings.rs"]
mod settings;

use common::remote::*;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

/// Built-in data stages (clean → split) on the Iris CSV, and `run:` stages: a file, an
/// executable file (its mode must survive the remote, which keeps no modes) and a directory.
const PIPELINE: &str = r#"name: remote
stages:
  clean:
    uses: clean
    inputs: {table: data/iris.csv}
    outputs: {table: out/clean.parquet, report: out/clean.json}
    with: {duplicates: drop}
  split:
    uses: split
    inputs: {table: "${{ stages.clean.outputs.table }}"}
    outputs: {train: out/train.parquet, val: out/val.parquet, test: out/test.parquet, summary: out/split.json}
    with: {method: stratified, label: species, ratios: {train: 0.7, val: 0.15, test: 0.15}, seed: 42}
  count:
    run: wc -l < ${{ inputs.src }} > ${{ outputs.n }}
    inputs: {src: data/iris.csv}
    outputs: {n: out/count.txt}
  tool:
    run: printf '#!/bin/sh\necho %s rows\n' "$(cat ${{ inputs.n }})" > ${{ outputs.t }} && chmod +x ${{ outputs.t }}
    inputs: {n: "${{ stages.count.outputs.n }}"}
    outputs: {t: out/tool.sh}
  tree:
    run: mkdir -p ${{ outputs.d }}/sub && cp ${{ inputs.t }} ${{ outputs.d }}/sub/tool.sh && echo leaf > ${{ outputs.d }}/leaf.txt
    inputs: {t: "${{ stages.tool.outputs.t }}"}
    outputs: {d: out/tree}
"#;

const STAGES: [&str; 5] = ["clean", "count", "split", "tool", "tree"];

/// Opens a remote of `backend` for the test, or prints the SKIPPED line and returns from it.
macro_rules! remote_or_skip {
    ($backend:expr, $test:expr) => {
        match Remote::open($backend, $test) {
            Ok(remote) => remote,
            Err(why) => {
                println!("SKIPPED: remote test {}/{} ({why})", $test, $backend.name());
                return;
            }
        }
    };
}
pub(crate) use remote_or_skip;

/// A workspace holding what a repository would: the pipeline (`yaml`) and its data.
fn sources(yaml: &str) -> Ws {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/iris.csv");
    std::fs::create_dir_all(ws.path("data")).unwrap();
    std::fs::rename(ws.path("examples/data/iris.csv"), ws.path("data/iris.csv")).unwrap();
    ws.pipeline(yaml);
    ws
}

/// A fresh clone of `ws`: its sources (pipeline and data) and `extra` files, nothing else: no
/// `.sluice/` (so an empty local cache), no outputs.
fn clone_of(ws: &Ws, extra: &[&str]) -> Ws {
    let clone = Ws::new();
    for rel in ["sluice.yaml", "data/iris.csv"].iter().chain(extra) {
        std::fs::create_dir_all(clone.path(rel).parent().unwrap()).unwrap();
        std::fs::copy(ws.path(rel), clone.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
    clone
}

/// Every file under `out/`: its bytes and whether it is executable.
fn outputs(ws: &Ws) -> BTreeMap<String, (Vec<u8>, bool)> {
    files_under(&ws.path("out"))
        .into_iter()
        .map(|rel| {
            let path = ws.path("out").join(&rel);
            let exec = std::fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0;
            (rel, (std::fs::read(&path).unwrap(), exec))
        })
        .collect()
}

fn assert_same_outputs(a: &Ws, b: &Ws) {
    let (a, b) = (outputs(a), outputs(b));
    assert!(!a.is_empty());
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "output files differ"
    );
    for (rel, (bytes, exec)) in &a {
        let (other, other_exec) = &b[rel];
        assert!(bytes == other, "out/{rel}: the bytes differ");
        assert_eq!(exec, other_exec, "out/{rel}: the executable bit differs");
    }
    assert!(
        a["tool.sh"].1 && a["tree/sub/tool.sh"].1,
        "fixture: tool.sh is executable"
    );
}

/// The run's warning events, each as `stage S: MESSAGE` when it names a stage.
fn warnings(r: &Run) -> Vec<String> {
    r.events()
        .into_iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            match e["stage"].as_str() {
                Some(stage) => format!("stage {stage}: {message}"),
                None => message.to_string(),
            }
        })
        .collect()
}

/// The run's warnings about the remote cache.
fn remote_warnings(r: &Run) -> Vec<String> {
    warnings(r)
        .into_iter()
        .filter(|w| w.contains("remote"))
        .collect()
}

/// Asserts that the run restored every stage and ran none.
fn assert_restored_all(r: &Run) {
    r.assert_ok();
    assert!(
        r.started().is_empty(),
        "stages ran: {:?}\n{}",
        r.started(),
        r.stdout
    );
    let outcomes = r.outcomes();
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        STAGES.iter().collect::<Vec<_>>()
    );
    for (stage, outcome) in &outcomes {
        assert_eq!(outcome, "restored", "stage {stage}\n{}", r.stdout);
    }
}

/// Asserts that the run executed every stage.
fn assert_ran_all(r: &Run) {
    let mut started = r.started();
    started.sort();
    assert_eq!(started, STAGES, "{}\n{}", r.stdout, r.stderr);
}

/// The `run_finished` event.
fn run_finished(r: &Run) -> serde_json::Value {
    r.events()
        .into_iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished event:\n{}", r.stdout))
}

/// The stage records on the remote.
fn records(remote: &Remote) -> Vec<String> {
    remote
        .list()
        .into_iter()
        .filter(|k| k.starts_with("stages/") && k.ends_with(".json"))
        .collect()
}

/// Where the content `bytes` lives in a cache, local or remote: `objects/ab/cdef…`.
fn object_key(bytes: &[u8]) -> String {
    let hex = sluice_runner::hash::ContentHash::of(bytes).hex();
    format!("objects/{}/{}", &hex[..2], &hex[2..])
}

/// A port on which nothing listens (bound, then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Every file under the workspace (outputs, `.sluice/`, logs, lock) that contains `needle`.
fn files_containing(ws: &Ws, needle: &str) -> Vec<String> {
    files_under(ws.root())
        .into_iter()
        .filter(|rel| {
            std::fs::read(ws.path(rel))
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}
