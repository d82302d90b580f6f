//! The command line itself: version, schema, every shipped pipeline, and the quickstart
//! example end to end. Help texts and `dag` in every format are snapshotted whole in
//! `tests/cli_snapshots.rs`; the substring checks left here are on output that varies from run to
//! run (durations in the run summary, the interleaving of a stage's stdout and stderr in its log,
//! timestamps in log lines).

mod common;

use common::*;
use std::os::fd::FromRawFd;

/// The help texts are snapshotted whole in `tests/cli_snapshots.rs`; the version is not there, as
/// it changes with every release.
#[test]
fn version_and_an_unknown_command() {
    let ws = Ws::new();
    let v = ws.sluice(&["--version"]);
    assert_eq!(
        v.stdout.trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = ws.sluice(&["frobnicate"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn schema_is_json_schema_that_describes_the_stage_keys() {
    let ws = Ws::new();
    let s = ws.sluice(&["schema"]);
    s.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(
        v["properties"]["sweep"]["required"],
        serde_json::json!(["params", "metric"])
    );
    let stage = &v["properties"]["stages"]["additionalProperties"]["properties"];
    for key in [
        "uses",
        "run",
        "inputs",
        "outputs",
        "with",
        "needs",
        "resources",
        "timeout",
        "env",
        "version",
        "matrix",
    ] {
        assert!(stage.get(key).is_some(), "schema lacks stage key {key}");
    }
    // Each built-in kind's `with:` gets its own schema, chosen by `uses:`.
    let by_kind = v["properties"]["stages"]["additionalProperties"]["allOf"]
        .as_array()
        .unwrap();
    let kinds: Vec<&str> = by_kind
        .iter()
        .map(|k| k["if"]["properties"]["uses"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "clean",
            "deploy",
            "evaluate",
            "explain",
            "normalize",
            "split",
            "train"
        ]
    );
    let split = &by_kind[5]["then"]["properties"]["with"];
    assert_eq!(split["required"], serde_json::json!(["ratios"]));
    let method = &split["properties"]["method"];
    assert_eq!(method["default"], "random");
    assert_eq!(
        method["anyOf"][0]["enum"],
        serde_json::json!(["random", "stratified", "grouped"])
    );
    // A value may also be a `${{ }}` expression, resolved before the kind sees it.
    let seed = &split["properties"]["seed"]["anyOf"];
    assert_eq!(seed[0]["type"], "integer");
    assert_eq!(seed[1]["pattern"], r"^\s*\$\{\{.*\}\}\s*$");
    let train = &split["properties"]["ratios"]["anyOf"][0]["properties"]["train"]["anyOf"];
    assert_eq!(train[0]["exclusiveMinimum"], 0);
}

#[test]
fn every_shipped_pipeline_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let out = std::process::Command::new(BIN)
            .args(["-C", repo().to_str().unwrap(), "dag"])
            .arg(path.strip_prefix(repo()).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(n > 0);
}

#[test]
fn quickstart_runs_end_to_end_and_then_is_up_to_date() {
    let ws = Ws::new();
    for dir in ["pipelines", "examples"] {
        copy_dir(&repo().join(dir), &ws.path(dir));
    }
    let r = ws.sluice(&["run", "pipelines/quickstart.yaml"]);
    r.assert_ok();
    assert!(r.stderr.contains("ok: 4 ran, 0 up to date"), "{}", r.stderr);
    let report = ws.read("out/quickstart/report.md");
    assert!(
        report.contains("| setosa | 50 | 1.46 ± 0.17 | 0.25 ± 0.10 |"),
        "{report}"
    );
    let again = ws.sluice(&["run", "pipelines/quickstart.yaml"]);
    again.assert_ok();
    assert!(
        again.stderr.contains("ok: 0 ran, 4 up to date"),
        "{}",
        again.stderr
    );
    assert!(ws.exists("pipelines/quickstart.lock"));
}

#[test]
fn logs_go_to_a_file_per_stage_and_run() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  talk: {run: 'echo to-stdout; echo to-stderr >&2; echo > ${{ outputs.o }}', outputs: [o]}\n");
    ws.run(&[]).assert_ok();
    let runs: Vec<_> = std::fs::read_dir(ws.path(".sluice/logs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let log = std::fs::read_to_string(runs[0].as_ref().unwrap().path().join("talk.log")).unwrap();
    assert!(
        log.starts_with("[sluice] running `talk` (never run)\n"),
        "the header is the file's first line: {log}"
    );
    assert!(
        log.contains("to-stdout\n") && log.contains("to-stderr\n"),
        "{log}"
    );
}

/// The log file of `stage` in the only run so far, if it was made.
fn only_run_log(ws: &Ws, stage: &str) -> Option<String> {
    let run = std::fs::read_dir(ws.path(".sluice/logs"))
        .ok()?
        .next()?
        .unwrap()
        .path();
    std::fs::read_to_string(run.join(format!("{stage}.log"))).ok()
}

#[test]
fn a_silent_successful_stage_leaves_no_log() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  quiet: {run: 'echo > ${{ outputs.o }}', outputs: [o]}\n  loud: {run: 'echo hi; echo > ${{ outputs.o }}', outputs: [o]}\n",
    );
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(only_run_log(&ws, "quiet"), None);
    let loud = only_run_log(&ws, "loud").expect("a stage that printed has its log");
    assert_eq!(loud, "[sluice] running `loud` (never run)\nhi\n");
    // The event still names where the log would be, for both.
    let started: Vec<_> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "stage_started")
        .collect();
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|e| e["log"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{}.log", e["stage"].as_str().unwrap()))));
}

#[test]
fn a_failing_silent_stage_has_its_log() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  s: {run: 'exit 3', outputs: [o]}\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1);
    let log = only_run_log(&ws, "s").expect("a failed stage always has its log");
    assert_eq!(
        log,
        "[sluice] running `s` (never run)\n[sluice] failed: exited with code 3\n"
    );
}

#[test]
fn scratch_is_empty_for_each_stage_and_gone_after_the_run() {
    let ws = Ws::new();
    // One worker runs all three, `z`, `a`, `b`: they get the same directory in turn, and `b`
    // must not see what `a` left in it. `a` finds it as `z` left it, unchanged for a while (so
    // the worker remembers it empty, and `b` must see `a`'s changes all the same).
    ws.pipeline(
        r#"
stages:
  z: {run: 'sleep 0.05; echo > ${{ outputs.o }}', outputs: [o]}
  a:
    inputs: {after: "${{ stages.z.outputs.o }}"}
    run: 'test -d "$SLUICE_SCRATCH" && ls -A "$SLUICE_SCRATCH" > ${{ outputs.seen }}; mkdir "$SLUICE_SCRATCH/d"; echo x > "$SLUICE_SCRATCH/d/f"; echo x > "$SLUICE_SCRATCH/.hidden"; echo "$SLUICE_SCRATCH" > ${{ outputs.dir }}'
    outputs: [seen, dir]
  b:
    run: 'test -d "$SLUICE_SCRATCH" && ls -A "$SLUICE_SCRATCH" > ${{ outputs.seen }}; echo "$SLUICE_SCRATCH" > ${{ outputs.dir }}'
    inputs: {after: "${{ stages.a.outputs.seen }}"}
    outputs: [seen, dir]
"#,
    );
    ws.run(&["--jobs", "1"]).assert_ok();
    assert_eq!(ws.read("out/sluice/a/seen"), "");
    assert_eq!(
        ws.read("out/sluice/b/seen"),
        "",
        "b saw what a left in scratch"
    );
    let dir = ws.read("out/sluice/b/dir");
    assert!(dir.contains("/.sluice/tmp/"), "{dir}");
    assert_eq!(
        ws.read("out/sluice/a/dir"),
        dir,
        "the worker's directory is reused"
    );
    let tmp: Vec<_> = std::fs::read_dir(ws.path(".sluice/tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "scratch outlived the run: {tmp:?}");
}

#[test]
fn json_log_format_and_quiet() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  a: {run: 'echo > ${{ outputs.o }}', outputs: [o]}\n");
    let q = ws.sluice(&["-q", "run"]);
    q.assert_ok();
    assert_eq!(q.stderr, "", "quiet and successful prints nothing");
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    let v = ws.sluice(&["-v", "--log-format", "json", "run"]);
    v.assert_ok();
    let logs: Vec<serde_json::Value> = v
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "DEBUG" && l["fields"]["message"] == "decided"),
        "{}",
        v.stderr
    );
    // RUST_LOG overrides -v.
    let r = ws
        .command(&["--log-format", "json", "run", "--force", "a"])
        .env("RUST_LOG", "sluice_runner=info")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stderr);
    assert!(
        text.contains("run starting") && !text.contains("\"decided\""),
        "{text}"
    );
}

/// An error caused by an OS error prints the OS error once: the engine's error names it as its
/// source instead of repeating it in its own message.
#[test]
fn an_os_error_is_printed_once() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  a: {run: 'true'}\n");
    // The run lock cannot be opened when a directory stands in its place.
    std::fs::create_dir_all(ws.path(".sluice/run.lock")).unwrap();
    let r = ws.sluice(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let os = std::io::Error::from_raw_os_error(libc::EISDIR).to_string();
    assert!(
        r.stderr
            .contains(&format!("error: cannot take the workspace lock: {os}\n")),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.matches(&os).count(), 1, "{}", r.stderr);
}

#[test]
fn a_closed_stdout_ends_printing_commands_quietly() {
    // `sluice status --json | head -1`: the reader is gone before sluice prints. A pipe whose
    // read end is closed makes every write fail, so this does not depend on timing.
    let ws = Ws::new();
    ws.pipeline("stages:\n  a:\n    run: echo hi > ${{ outputs.o }}\n    outputs: [o]\n");
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills two fresh descriptors; the read end is closed at once and the write
    // end is handed to the child and owned by its `Stdio`.
    let write = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::os::fd::OwnedFd::from_raw_fd(fds[1])
    };
    for args in [&["status", "--json"][..], &["dag"][..], &["schema"][..]] {
        let out = ws
            .command(args)
            .stdout(std::process::Stdio::from(write.try_clone().unwrap()))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
    }
}
