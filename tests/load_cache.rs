//! The load cache (`.sluice/loads/`): a pipeline served from it is exactly the pipeline a full
//! load gives, and anything validation read that changed (the file, `--set`, the promoted
//! params, inputs, output links, passed-through variables, plugin files, the cache file itself)
//! makes the next command load in full, with the diagnostics it always had.

mod common;

use common::{copy_dir, repo, Run, Ws, BIN};
use sluice_runner::pipeline::{Pipeline, StageKind};
use sluice_runner::{load_cached, load_fresh, load_with, LoadOptions, PromotedParams};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything in `p`, printed: `Debug` of the whole pipeline with its hash maps in key order
/// (their own order differs between two maps with the same entries).
fn shown(p: &Pipeline) -> String {
    let mut p = p.clone();
    let by_name: BTreeMap<_, _> = std::mem::take(&mut p.by_name).into_iter().collect();
    let by_base: BTreeMap<_, _> = std::mem::take(&mut p.by_base).into_iter().collect();
    format!("{p:#?}\nby_name: {by_name:?}\nby_base: {by_base:?}")
}

/// Loads `file` in full, then through the cache (a miss that stores it), then from the cache
/// alone, and checks the hit is the full load; returns the hit.
fn hit_equals_full(root: &Path, file: &str, overrides: &[(String, String)]) -> Pipeline {
    let registry = sluice_stages::registry();
    let path = root.join(file);
    let opts = LoadOptions {
        root,
        file: &path,
        display: file.to_string(),
        overrides,
        registry: &registry,
        sweep: None,
    };
    let full = load_fresh(&opts, PromotedParams::Layer)
        .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
    let stored = load_with(&opts, PromotedParams::Layer).unwrap();
    assert_eq!(shown(&stored), shown(&full), "{file}: the storing load");
    let hit = load_cached(&opts, PromotedParams::Layer)
        .unwrap_or_else(|| panic!("{file}: not served from the load cache"));
    assert_eq!(shown(&hit), shown(&full), "{file}: the cached load");
    for (a, b) in hit.stages.iter().zip(&full.stages) {
        assert_eq!(
            a.prepared.get::<()>().is_some(),
            b.prepared.get::<()>().is_some(),
            "{file}: stage `{}` prepared differently",
            a.id
        );
    }
    hit
}

#[test]
fn a_cached_load_is_the_full_load_for_every_shipped_pipeline() {
    let ws = Ws::new();
    for dir in ["pipelines", "examples"] {
        copy_dir(&repo().join(dir), &ws.path(dir));
    }
    let root = std::fs::canonicalize(ws.root()).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".promoted.yaml") {
            let p = hit_equals_full(&root, &format!("pipelines/{name}"), &[]);
            let builtins = p
                .stages
                .iter()
                .filter(|s| matches!(s.kind, StageKind::Builtin { .. }))
                .count();
            if builtins > 0 {
                // A built-in stage's typed config is made again, not left empty.
                assert!(p
                    .stages
                    .iter()
                    .filter(|s| matches!(s.kind, StageKind::Builtin { .. }))
                    .all(|s| s.prepared.get::<()>().is_none()));
            }
            n += 1;
        }
    }
    assert!(n >= 5, "{n} pipelines");
}

/// Matrix stages, a plugin, passed-through and templated env, params with `--set` and a
/// promoted file, `executor:` and `cache:` sections, a `sweep:` section, a warning, a link as
/// an input.
const RICH: &str = r#"name: rich
params: {seed: 1, lr: 0.1, width: 8, label: species}
plugins:
  feat: {command: [python3, tools/feat.py]}
executor:
  slurm: {poll: 3s, partition: gpu, sbatch_args: ["--time=10"]}
  stages:
    fit: {local: true, qos: high}
cache:
  remote: file:///tmp/nowhere
  push: false
sweep:
  params: {lr: [0.1, 0.01]}
  metric: score.acc
  direction: max
stages:
  clean:
    uses: clean
    inputs: {table: data/linked.csv}
    outputs: {table: out/clean.parquet, report: out/clean.json}
    with:
      missing: {columns: {sepal_length: mean}}
  feat:
    uses: feat
    inputs: {t: "${{ stages.clean.outputs.table }}"}
    outputs: {f: out/feat.json}
    with: {width: "${{ params.width }}"}
  fit:
    matrix: {seed: [1, 2], depth: [3, 4]}
    run: echo ${{ matrix.seed }} ${{ matrix.depth }} ${{ params.lr }} $HOME_X > ${{ outputs.o }}
    inputs: {f: "${{ stages.feat.outputs.f }}"}
    outputs: {o: "out/fit-${{ matrix.seed }}-${{ matrix.depth }}.txt"}
    env: {HOME_X: , LR: "${{ params.lr }}"}
    timeout: 5m
    resources: {cpus: 2, memory: 1G}
  score:
    needs: [fit]
    run: "echo 0.5 > ${{ outputs.metrics }}"
    outputs: {metrics: out/score.json}
"#;

#[test]
fn a_cached_load_is_the_full_load_for_a_pipeline_using_every_section() {
    let ws = Ws::new();
    ws.write(
        "data/iris.csv",
        &std::fs::read_to_string(repo().join("examples/data/iris.csv")).unwrap(),
    )
    .write("tools/feat.py", "print()\n")
    .write("sluice.yaml", RICH)
    .write(
        "sluice.promoted.yaml",
        "sweep: rich-1a2b3c4d\ntrial: 2\nparams:\n  lr: 0.01\n",
    );
    std::os::unix::fs::symlink("iris.csv", ws.path("data/linked.csv")).unwrap();
    std::env::set_var("HOME_X", "some value");
    let root = std::fs::canonicalize(ws.root()).unwrap();
    let set = [("width".to_string(), "16".to_string())];
    let p = hit_equals_full(&root, "sluice.yaml", &set);
    assert_eq!(p.stages.len(), 7);
    assert!(!p.warnings.is_empty(), "the `mean` fill warns");
    assert!(p.promoted.is_some());
    assert!(p.sweep.is_some());
    assert_eq!(p.params["width"], 16);
    assert_eq!(
        p.stage("fit@seed=1,depth=3").unwrap().env["HOME_X"],
        "some value"
    );
}

/// `sluice ARGS` with the load cache's debug lines on stderr.
fn logged(ws: &Ws, args: &[&str]) -> Run {
    let out = ws
        .command(args)
        .env("RUST_LOG", "sluice_runner::validate=debug")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn hit(r: &Run) -> bool {
    r.stderr.contains("load cache: hit")
}

/// `sluice run --json`, asserting the pipeline came from the load cache.
fn run_hit(ws: &Ws, args: &[&str]) -> Run {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let r = logged(ws, &all);
    assert!(hit(&r), "not a load cache hit:\n{}", r.stderr);
    r
}

const TWO: &str = "params: {n: 1}
stages:
  a:
    run: echo ${{ params.n }} > ${{ outputs.o }}
    outputs: {o: out/a.txt}
";

#[test]
fn an_unchanged_pipeline_is_served_and_an_edited_one_is_not() {
    let ws = Ws::new();
    ws.pipeline(TWO);
    ws.run(&[]).assert_ok();
    let again = run_hit(&ws, &[]);
    again.assert_ok();
    assert!(again.started().is_empty());
    ws.pipeline(&format!(
        "{TWO}  b:\n    run: echo b > ${{{{ outputs.o }}}}\n    outputs: {{o: out/b.txt}}\n"
    ));
    let edited = logged(&ws, &["run", "--json"]);
    edited.assert_ok();
    assert!(!hit(&edited));
    assert_eq!(edited.started(), ["b"]);
    run_hit(&ws, &[]).assert_ok();
}

#[test]
fn a_rebuilt_binary_does_not_reuse_the_loads_of_the_one_before() {
    let ws = Ws::new();
    ws.pipeline(TWO);
    ws.run(&[]).assert_ok();
    run_hit(&ws, &[]).assert_ok();
    // Another file with the same bytes, as a rebuild leaves at the same path: a new inode and
    // mtime. It may validate differently, so it must load the pipeline afresh.
    let dir = tempfile::tempdir().unwrap();
    let rebuilt = dir.path().join("sluice");
    std::fs::copy(BIN, &rebuilt).unwrap();
    let run = |bin: &Path| {
        let out = std::process::Command::new(bin)
            .args(["run", "--json"])
            .current_dir(ws.root())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "sluice_runner::validate=debug")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).contains("load cache: hit")
    };
    assert!(
        !run(&rebuilt),
        "the rebuilt binary used the old binary's load"
    );
    assert!(run(&rebuilt), "the rebuilt binary's own load is reused");
    assert!(
        !run(Path::new(BIN)),
        "the old binary used the rebuilt one's load"
    );
}

#[test]
fn another_set_or_a_promoted_file_reloads() {
    let ws = Ws::new();
    ws.pipeline(TWO);
    ws.run(&["--set", "n=2"]).assert_ok();
    assert_eq!(ws.read("out/a.txt"), "2\n");
    run_hit(&ws, &["--set", "n=2"]);
    let r = logged(&ws, &["run", "--json", "--set", "n=3"]);
    assert!(!hit(&r));
    assert_eq!(r.started(), ["a"]);
    assert_eq!(ws.read("out/a.txt"), "3\n");
    ws.run(&[]).assert_ok();
    run_hit(&ws, &[]);
    ws.write(
        "sluice.promoted.yaml",
        "sweep: s-1a2b3c4d\ntrial: 1\nparams:\n  n: 7\n",
    );
    let r = logged(&ws, &["run", "--json"]);
    r.assert_ok();
    assert!(!hit(&r));
    assert_eq!(ws.read("out/a.txt"), "7\n");
}

/// Runs `args` twice: from a cache written by a successful load before `change`, and with no
/// cache at all. Both must say the same.
fn same_with_and_without_cache(ws: &Ws, args: &[&str], change: impl FnOnce(&Ws)) -> Run {
    ws.sluice(args).assert_ok();
    assert!(hit(&logged(ws, args)), "the cache was not written");
    change(ws);
    let cached = ws.sluice(args);
    std::fs::remove_dir_all(ws.path(".sluice/loads")).unwrap();
    let fresh = ws.sluice(args);
    assert_eq!(
        (cached.code, &cached.stderr),
        (fresh.code, &fresh.stderr),
        "with a cache vs without"
    );
    cached
}

#[test]
fn a_removed_input_is_reported_as_without_a_cache() {
    let ws = Ws::new();
    ws.write("data/in.txt", "x\n").pipeline(
        "stages:\n  a:\n    run: cat ${{ inputs.i }} > ${{ outputs.o }}\n    inputs: {i: data/in.txt}\n    outputs: {o: out/a.txt}\n",
    );
    let r = same_with_and_without_cache(&ws, &["status"], |ws| {
        std::fs::remove_file(ws.path("data/in.txt")).unwrap();
    });
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("input `i` of stage `a` (`data/in.txt`) does not exist"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_output_directory_become_an_escaping_link_is_refused() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    ws.pipeline("stages:\n  a:\n    run: echo > ${{ outputs.o }}\n    outputs: {o: out/a/x.txt}\n");
    let r = same_with_and_without_cache(&ws, &["status"], |ws| {
        std::fs::create_dir_all(ws.path("out")).unwrap();
        let _ = std::fs::remove_dir_all(ws.path("out/a"));
        std::os::unix::fs::symlink(outside.path(), ws.path("out/a")).unwrap();
    });
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("resolves outside the workspace through a symbolic link"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_passed_through_variable_that_changes_reruns_the_stage() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  a:\n    run: echo \"$GREETING\" > ${{ outputs.o }}\n    outputs: {o: out/a.txt}\n    env: {GREETING: }\n");
    let run = |value: &str| {
        let out = ws
            .command(&["run", "--json"])
            .env("GREETING", value)
            .env("RUST_LOG", "sluice_runner::validate=debug")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run("hello");
    assert_eq!(ws.read("out/a.txt"), "hello\n");
    assert!(run("hello").contains("load cache: hit"));
    let changed = run("goodbye");
    assert!(!changed.contains("load cache: hit"), "{changed}");
    assert_eq!(ws.read("out/a.txt"), "goodbye\n");
}

#[test]
fn a_removed_plugin_file_loads_as_without_a_cache() {
    let ws = Ws::new();
    ws.write("tools/p.py", "print('{}')\n").pipeline(
        "plugins:\n  p: {command: [python3, tools/p.py]}\nstages:\n  a:\n    uses: p\n    outputs: {o: out/a.txt}\n",
    );
    let root = std::fs::canonicalize(ws.root()).unwrap();
    let cached = hit_equals_full(&root, "sluice.yaml", &[]);
    let files = |p: &Pipeline| match &p.stages[0].kind {
        StageKind::Plugin { files, .. } => files.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(files(&cached), 1, "the script is keyed");
    std::fs::remove_file(ws.path("tools/p.py")).unwrap();
    let registry = sluice_stages::registry();
    let path = root.join("sluice.yaml");
    let opts = LoadOptions {
        root: &root,
        file: &path,
        display: "sluice.yaml".into(),
        overrides: &[],
        registry: &registry,
        sweep: None,
    };
    assert!(load_cached(&opts, PromotedParams::Layer).is_none());
    let now = load_with(&opts, PromotedParams::Layer).unwrap();
    assert_eq!(files(&now), 0);
    assert_eq!(
        shown(&now),
        shown(&load_fresh(&opts, PromotedParams::Layer).unwrap())
    );
}

#[test]
fn a_garbage_or_truncated_cache_file_is_a_miss() {
    let ws = Ws::new();
    ws.pipeline(TWO);
    ws.run(&[]).assert_ok();
    let dir = ws.path(".sluice/loads");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("a stored load")
        .unwrap()
        .path();
    let whole = std::fs::read(&file).unwrap();
    for broken in [
        whole[..whole.len() / 2].to_vec(),
        whole[..whole.len() - 3].to_vec(),
        b"\xff\x00garbage\n\n".to_vec(),
        // Well-formed, but not what this code writes: an index past the stages.
        String::from_utf8(whole.clone())
            .unwrap()
            .replace("\"idx\":0", "\"idx\":7")
            .into_bytes(),
        Vec::new(),
    ] {
        assert_ne!(broken, whole);
        std::fs::write(&file, &broken).unwrap();
        let r = logged(&ws, &["run", "--json"]);
        r.assert_ok();
        assert!(!hit(&r), "{}", r.stderr);
        assert!(r.started().is_empty());
        // The miss rewrote it whole.
        assert_eq!(std::fs::read(&file).unwrap(), whole);
    }
}

#[test]
fn a_built_in_stage_served_from_the_cache_runs_with_its_config() {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/iris.csv").pipeline(
        "stages:\n  split:\n    uses: split\n    inputs: {table: examples/data/iris.csv}\n    outputs: {train: out/train.parquet, val: out/val.parquet, test: out/test.parquet, summary: out/split.json}\n    with: {method: stratified, label: species, ratios: {train: 0.6, val: 0.2, test: 0.2}, seed: 3}\n",
    );
    ws.sluice(&["dag"]).assert_ok();
    let r = run_hit(&ws, &[]);
    r.assert_ok();
    assert_eq!(r.started(), ["split"]);
    assert!(ws.exists("out/test.parquet"));
}
