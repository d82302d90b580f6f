//! `sluice run` on temporary workspaces with `run:` stages: graph shapes, parallelism, caching
//! (skip, restore, rerun and why), targets, failure handling, timeouts, the lock file, status.
//! One crate over ~700 lines on purpose: each test crate is another ~300 MB binary to link.

mod common;

use common::*;
use std::collections::BTreeMap;

const CHAIN: &str = r#"
name: chain
params: {greeting: hello, n: 1}
stages:
  a:
    run: cat ${{ inputs.src }} > ${{ outputs.o }}; echo ${{ params.greeting }} >> ${{ outputs.o }}
    inputs: {src: data.txt}
    outputs: {o: out/a.txt}
  b:
    run: tr a-z A-Z < ${{ stages.a.outputs.o }} > ${{ outputs.o }}
    outputs: {o: out/b.txt}
  c:
    run: wc -l < ${{ stages.b.outputs.o }} | tr -d ' ' > ${{ outputs.o }}; echo n=${{ params.n }} >> ${{ outputs.o }}
    outputs: {o: out/c.txt}
"#;

fn chain() -> Ws {
    let ws = Ws::new();
    ws.write("data.txt", "abc\n").pipeline(CHAIN);
    ws
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn chain_runs_in_order_and_then_is_up_to_date() {
    let ws = chain();
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started(), ["a", "b", "c"]);
    assert_eq!(ws.read("out/b.txt"), "ABC\nHELLO\n");
    assert_eq!(ws.read("out/c.txt"), "2\nn=1\n");
    let again = ws.run(&[]);
    again.assert_ok();
    assert!(
        again.started().is_empty(),
        "nothing should run: {:?}",
        again.started()
    );
    assert_eq!(
        again.outcomes(),
        map(&[
            ("a", "up_to_date"),
            ("b", "up_to_date"),
            ("c", "up_to_date")
        ])
    );
}

#[test]
fn diamond_joins_both_branches() {
    let ws = Ws::new();
    ws.write("x.txt", "1\n").pipeline(
        r#"
stages:
  top: {run: "cat x.txt > ${{ outputs.o }}", inputs: {x: x.txt}, outputs: [o]}
  left: {run: "sed s/1/L/ ${{ stages.top.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
  right: {run: "sed s/1/R/ ${{ stages.top.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
  bottom: {run: "cat ${{ stages.left.outputs.o }} ${{ stages.right.outputs.o }} > ${{ outputs.o }}", outputs: {o: joined.txt}}
"#,
    );
    let r = ws.run(&[]);
    r.assert_ok();
    let order = r.started();
    assert_eq!(order.first().map(String::as_str), Some("top"));
    assert_eq!(order.last().map(String::as_str), Some("bottom"));
    assert_eq!(ws.read("joined.txt"), "L\nR\n");
    // Default output locations: out/<pipeline>/<stage>/<name>, pipeline named after the file.
    assert_eq!(ws.read("out/sluice/left/o"), "L\n");
}

#[test]
fn wide_fan_out_runs_every_stage() {
    let ws = Ws::new();
    let mut yaml =
        String::from("stages:\n  src: {run: 'echo seed > ${{ outputs.o }}', outputs: [o]}\n");
    for i in 0..30 {
        yaml.push_str(&format!(
            "  w{i}: {{run: 'cat ${{{{ stages.src.outputs.o }}}} > ${{{{ outputs.o }}}}; echo {i} >> ${{{{ outputs.o }}}}', outputs: [o]}}\n"
        ));
    }
    ws.pipeline(&yaml);
    let r = ws.run(&["--jobs", "4"]);
    r.assert_ok();
    assert_eq!(r.started().len(), 31);
    assert_eq!(ws.read("out/sluice/w17/o"), "seed\n17\n");
}

/// Each stage waits until the other has started: they can only both finish if they overlap.
#[test]
fn independent_stages_really_run_in_parallel() {
    let ws = Ws::new();
    let wait = |me: &str, other: &str| {
        format!(
            "touch started_{me}; i=0; while [ ! -f started_{other} ]; do i=$((i+1)); [ $i -gt 400 ] && exit 7; sleep 0.05; done; echo ok > ${{{{ outputs.o }}}}"
        )
    };
    ws.pipeline(&format!(
        "stages:\n  one: {{run: '{}', outputs: [o]}}\n  two: {{run: '{}', outputs: [o]}}\n",
        wait("one", "two"),
        wait("two", "one")
    ));
    let r = ws.run(&["--jobs", "2"]);
    r.assert_ok();
    assert_eq!(ws.read("out/sluice/one/o"), "ok\n");
    assert_eq!(ws.read("out/sluice/two/o"), "ok\n");
}

#[test]
fn input_change_reruns_the_stage_and_downstream_with_the_reason() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    ws.write("data.txt", "xyz\n");
    let status = ws.sluice(&["status"]);
    assert!(
        status.stdout.contains("input `src` (data.txt) changed"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("upstream `a` is stale"),
        "{}",
        status.stdout
    );
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started(), ["a", "b", "c"]);
    assert_eq!(ws.read("out/b.txt"), "XYZ\nHELLO\n");
}

#[test]
fn early_cutoff_keeps_downstream_up_to_date_when_outputs_are_identical() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    // Same line count, different content: b reruns, but c's input (the count) is unchanged.
    ws.write("data.txt", "xyz\n");
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started(), ["a", "b", "c"]);
    // Now change a byte that `b` maps to the same output: upper-casing erases case.
    ws.write("data.txt", "XYZ\n");
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(
        r.started(),
        ["a", "b"],
        "c must stay up to date: {:?}",
        r.outcomes()
    );
    assert_eq!(r.outcomes()["c"], "up_to_date");
}

#[test]
fn param_change_reruns_only_the_stages_that_use_it() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    let r = ws.run(&["--set", "n=2"]);
    r.assert_ok();
    assert_eq!(r.started(), ["c"]);
    let status = ws.sluice(&["status", "--set", "n=3"]);
    assert!(
        status.stdout.contains("param `n` changed (2 → 3)"),
        "{}",
        status.stdout
    );
    assert_eq!(ws.read("out/c.txt"), "2\nn=2\n");
}

#[test]
fn config_change_reruns_and_reverting_restores_from_cache() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    let original = ws.read("out/b.txt");
    ws.pipeline(&CHAIN.replace("tr a-z A-Z", "tr a-z a-z"));
    let status = ws.sluice(&["status"]);
    assert!(
        status.stdout.contains("config (`with`/`run`) changed"),
        "{}",
        status.stdout
    );
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started(), ["b", "c"]);
    ws.pipeline(CHAIN);
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "{:?}", r.started());
    assert_eq!(r.outcomes()["b"], "restored");
    // c's output (a line count) was the same in both variants: already in place.
    assert_eq!(r.outcomes()["c"], "up_to_date");
    assert_eq!(ws.read("out/b.txt"), original);
}

#[test]
fn deleted_output_is_restored_without_running() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    std::fs::remove_file(ws.path("out/b.txt")).unwrap();
    let status = ws.sluice(&["status"]);
    assert!(status.stdout.contains("will restore"), "{}", status.stdout);
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty());
    assert_eq!(r.outcomes()["b"], "restored");
    assert_eq!(ws.read("out/b.txt"), "ABC\nHELLO\n");
}

#[test]
fn a_modified_output_is_put_back() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    ws.write("out/c.txt", "tampered\n");
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.outcomes()["c"], "restored");
    assert_eq!(ws.read("out/c.txt"), "2\nn=1\n");
}

#[test]
fn version_bump_forces_a_rerun() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    ws.pipeline(&CHAIN.replace(
        "    outputs: {o: out/a.txt}",
        "    outputs: {o: out/a.txt}\n    version: 2",
    ));
    let r = ws.run(&["a"]);
    r.assert_ok();
    assert_eq!(r.started(), ["a"]);
    let s = ws.sluice(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(rows[0]["state"], "up_to_date");
    assert_eq!(
        rows[1]["state"], "up_to_date",
        "b's input did not change: early cutoff"
    );
}

#[test]
fn targets_run_what_they_need_and_downstream_adds_dependents() {
    let ws = chain();
    let r = ws.run(&["b"]);
    r.assert_ok();
    assert_eq!(r.started(), ["a", "b"]);
    assert!(!ws.exists("out/c.txt"));
    ws.write("data.txt", "new\n");
    let r = ws.run(&["a", "--downstream"]);
    r.assert_ok();
    assert_eq!(r.started(), ["a", "b", "c"]);
    let bad = ws.run(&["bb"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("unknown stage `bb`") && bad.stderr.contains("did you mean `b`?"),
        "{}",
        bad.stderr
    );
}

#[test]
fn force_reruns_an_up_to_date_stage() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    let r = ws.run(&["--force", "b"]);
    r.assert_ok();
    assert_eq!(r.started(), ["b"]);
    let outside = ws.run(&["a", "--force", "c"]);
    assert_eq!(outside.code, 2);
    assert!(
        outside
            .stderr
            .contains("`--force c` names a stage this run does not include"),
        "{}",
        outside.stderr
    );
    let ev = r.events();
    let started = ev.iter().find(|e| e["event"] == "stage_started").unwrap();
    assert_eq!(started["reason"], "forced");
}

#[test]
fn dry_run_reports_the_plan_and_runs_nothing() {
    let ws = chain();
    let plan = ws.sluice(&["run", "--dry-run"]);
    plan.assert_ok();
    assert!(
        plan.stdout.contains("a      would run      never run"),
        "{}",
        plan.stdout
    );
    assert!(!ws.exists("out/a.txt"));
    assert!(!ws.exists("sluice.lock"));
    ws.run(&[]).assert_ok();
    std::fs::remove_file(ws.path("out/a.txt")).unwrap();
    let plan = ws.sluice(&["run", "-n", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(rows[0]["stage"], "a");
    assert_eq!(rows[0]["state"], "restore");
    assert_eq!(rows[1]["state"], "up_to_date");
    assert!(!ws.exists("out/a.txt"), "a dry run restores nothing");
}

const FAILING: &str = r#"
stages:
  ok1: {run: "echo 1 > ${{ outputs.o }}", outputs: [o]}
  bad: {run: "echo partial > ${{ outputs.o }}; echo boom >&2; exit 3", outputs: [o], needs: [ok1]}
  after_bad: {run: "cat ${{ stages.bad.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
  slow_sibling:
    run: "i=0; while [ ! -f release ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 8; sleep 0.05; done; echo s > ${{ outputs.o }}"
    outputs: [o]
    needs: [ok1]
  independent: {run: "echo i > ${{ outputs.o }}", outputs: [o], needs: [slow_sibling]}
"#;

#[test]
fn fail_fast_stops_new_work_and_reports_the_log_tail() {
    let ws = Ws::new();
    ws.pipeline(FAILING);
    let r = ws.run(&["--jobs", "2"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let o = r.outcomes();
    assert_eq!(o["bad"], "failed");
    assert_eq!(o["after_bad"], "skipped");
    // Nothing creates `release`: the sibling runs until the failure cancels it (or gives up
    // after a minute, failing this test), so `independent` can never become ready first.
    assert_eq!(o["slow_sibling"], "cancelled");
    assert_eq!(o["independent"], "skipped");
    assert!(
        !ws.exists("out/sluice/bad/o"),
        "a failed stage's partial output is removed"
    );
    let failed = r.finished("bad");
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .contains("exited with code 3"));
    assert!(failed["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "boom"));
    // The human display shows the same.
    let human = ws.sluice(&["run"]);
    assert_eq!(human.code, 1);
    assert!(
        human.stderr.contains("FAILED bad: exited with code 3"),
        "{}",
        human.stderr
    );
    assert!(human.stderr.contains("| boom"), "{}", human.stderr);
}

#[test]
fn keep_going_runs_everything_not_downstream_of_the_failure() {
    let ws = Ws::new();
    ws.pipeline(FAILING);
    let mut run = Streaming::new(ws.spawn(&["run", "--json", "--keep-going", "--jobs", "2"]));
    // The sibling finishes only once the failure has been reported: keep-going must not cancel it.
    assert!(
        run.wait_for_event(LONG, |e| e["event"] == "stage_finished"
            && e["stage"] == "bad")
            .is_some(),
        "bad never finished"
    );
    ws.write("release", "");
    let r = run.finish(LONG);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let o = r.outcomes();
    assert_eq!(o["bad"], "failed");
    assert_eq!(o["after_bad"], "skipped");
    assert_eq!(o["slow_sibling"], "ran");
    assert_eq!(o["independent"], "ran");
    assert_eq!(ws.read("out/sluice/independent/o"), "i\n");
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  hang:
    run: "(sleep 60; echo late > grandchild.txt) & echo $! > bg.pid; sleep 60; echo x > ${{ outputs.o }}"
    outputs: [o]
    timeout: 500ms
"#,
    );
    let r = ws.run(&["--kill-grace", "1"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.outcomes()["hang"], "timed_out");
    let pid: i32 = ws.read("bg.pid").trim().parse().unwrap();
    // The background grandchild was in the stage's process group: it must be gone.
    let gone = wait_for(
        std::time::Duration::from_secs(10),
        || unsafe { libc::kill(pid, 0) } != 0,
    );
    assert!(gone, "grandchild {pid} survived the timeout");
    assert!(!ws.exists("out/sluice/hang/o"));
}

#[test]
fn missing_declared_output_fails_the_stage() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  lazy: {run: 'true', outputs: {model: out/model.bin}}\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1);
    let ev = r.events();
    let f = ev.iter().find(|e| e["event"] == "stage_finished").unwrap();
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("did not write its output `model` (`out/model.bin`)"),
        "{f}"
    );
    assert!(!ws.exists("sluice.lock") || !ws.read("sluice.lock").contains("lazy"));
}

#[test]
fn stages_get_a_clean_environment_and_declared_env_is_part_of_the_key() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  show:
    run: "env | sort > ${{ outputs.o }}"
    outputs: [o]
    env: {MODE: fast, PASSED: ~}
"#,
    );
    let out = ws
        .command(&["run", "--json"])
        .env("SECRET_TOKEN", "s3cr3t")
        .env("PASSED", "yes")
        .output()
        .unwrap();
    assert!(out.status.success());
    let env = ws.read("out/sluice/show/o");
    assert!(env.contains("MODE=fast\n"));
    assert!(env.contains("PASSED=yes\n"));
    assert!(env.contains("SLUICE_STAGE=show\n"));
    assert!(
        env.contains("CUDA_VISIBLE_DEVICES=\n"),
        "stages without GPUs see none"
    );
    assert!(
        !env.contains("SECRET_TOKEN"),
        "undeclared variables must not leak:\n{env}"
    );
    // A different value of a declared variable is a different key.
    let out = ws
        .command(&["status"])
        .env("PASSED", "no")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("env `PASSED` changed"), "{text}");
    let lock = ws.read("sluice.lock");
    assert!(
        !lock.contains("yes"),
        "env values are hashed in the lock file, not written out"
    );
}

#[test]
fn gpu_stages_get_their_own_devices() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  g1: {run: "echo $CUDA_VISIBLE_DEVICES > ${{ outputs.o }}", outputs: [o], resources: {gpus: 1}}
  g2: {run: "echo $CUDA_VISIBLE_DEVICES > ${{ outputs.o }}", outputs: [o], resources: {gpus: 1}}
  both: {run: "echo $CUDA_VISIBLE_DEVICES > ${{ outputs.o }}", outputs: [o], resources: {gpus: 2}, needs: [g1, g2]}
"#,
    );
    ws.run(&["--gpus", "2"]).assert_ok();
    let mut got = vec![ws.read("out/sluice/g1/o"), ws.read("out/sluice/g2/o")];
    got.sort();
    assert_eq!(got, ["0\n", "1\n"]);
    assert_eq!(ws.read("out/sluice/both/o"), "0,1\n");
    // Up to date needs no GPU; only running does.
    let cached = ws.run(&["--gpus", "0"]);
    cached.assert_ok();
    assert_eq!(cached.outcomes()["both"], "up_to_date");
    std::fs::remove_file(ws.path("out/sluice/g1/o")).unwrap();
    let restored = ws.run(&["g1", "--gpus", "0"]);
    restored.assert_ok();
    assert_eq!(restored.outcomes()["g1"], "restored");
    let none = ws.run(&["g1", "--gpus", "0", "--force", "g1"]);
    assert_eq!(none.code, 1);
    let f = none.finished("g1");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("needs 1 GPU but 0 are available"),
        "{f}"
    );
    // Device identifiers are handed out as CUDA_VISIBLE_DEVICES named them (UUIDs too).
    let out = ws
        .command(&[
            "run", "--json", "--force", "g1", "--force", "g2", "--force", "both",
        ])
        .env("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.read("out/sluice/both/o"), "GPU-aaaa,GPU-bbbb\n");
}

#[test]
fn directory_outputs_are_cached_and_restored() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  many:
    run: "mkdir -p ${{ outputs.d }}/sub && echo 1 > ${{ outputs.d }}/a && echo 2 > ${{ outputs.d }}/sub/b && ln -s a ${{ outputs.d }}/link"
    outputs: {d: out/dir}
  use:
    run: "cat ${{ stages.many.outputs.d }}/sub/b > ${{ outputs.o }}"
    outputs: [o]
"#,
    );
    ws.run(&[]).assert_ok();
    std::fs::remove_dir_all(ws.path("out/dir")).unwrap();
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.outcomes()["many"], "restored");
    assert_eq!(ws.read("out/dir/sub/b"), "2\n");
    assert_eq!(
        std::fs::read_link(ws.path("out/dir/link"))
            .unwrap()
            .to_str(),
        Some("a")
    );
    assert_eq!(r.outcomes()["use"], "up_to_date");
}

#[test]
fn a_corrupt_cache_entry_is_dropped_and_the_stage_reruns() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    // Corrupt every output the cache holds (small ones live in their record, as text), then
    // lose the output so a restore is needed.
    let log = ws.read(".sluice/cache/records.log");
    assert!(log.contains(r#""text":"abc\nhello\n""#), "{log}");
    ws.write(
        ".sluice/cache/records.log",
        &log.replace(r#""text":""#, r#""text":"garbage"#),
    );
    std::fs::remove_file(ws.path("out/a.txt")).unwrap();
    let r = ws.run(&["a"]);
    r.assert_ok();
    assert_eq!(r.started(), ["a"]);
    let warn = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning about the cache");
    assert!(
        warn["message"]
            .as_str()
            .unwrap()
            .contains("corrupt cache entry"),
        "{warn}"
    );
    assert_eq!(ws.read("out/a.txt"), "abc\nhello\n");
}

#[test]
fn an_input_edited_while_its_stage_runs_is_not_cached() {
    let ws = Ws::new();
    ws.write("in.txt", "v1\n").pipeline(
        r#"
stages:
  s:
    run: "cat in.txt > ${{ outputs.o }}; touch running; while [ ! -f edited ]; do sleep 0.05; done"
    inputs: {i: in.txt}
    outputs: [o]
"#,
    );
    let child = ws.spawn(&["run", "--json"]);
    assert!(wait_for(LONG, || ws.exists("running")));
    std::fs::write(ws.path("in.txt"), "v2 edited mid-run\n").unwrap();
    std::fs::write(ws.path("edited"), "").unwrap();
    let r = wait_child(child, LONG);
    r.assert_ok();
    let warn = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning");
    assert!(
        warn["message"]
            .as_str()
            .unwrap()
            .contains("changed while the stage ran"),
        "{warn}"
    );
    // Nothing recorded: the next run runs it again, with the new content.
    let again = ws.run(&[]);
    again.assert_ok();
    assert_eq!(again.started(), ["s"]);
    assert_eq!(ws.read("out/sluice/s/o"), "v2 edited mid-run\n");
}

#[test]
fn lock_file_records_keys_inputs_and_outputs() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    let lock: yaml_serde::Value = yaml_serde::from_str(&ws.read("sluice.lock")).unwrap();
    let a = &lock["stages"]["a"];
    assert_eq!(a["inputs"]["src"]["path"], "data.txt");
    assert_eq!(a["params"]["greeting"], "hello");
    assert_eq!(a["produced"]["o"]["path"], "out/a.txt");
    let out_hash = a["produced"]["o"]["hash"].as_str().unwrap();
    assert_eq!(
        out_hash,
        blake3_hex(&std::fs::read(ws.path("out/a.txt")).unwrap())
    );
    assert_eq!(a["key"].as_str().unwrap().len(), 64);
    // A renamed pipeline file gets its own lock beside it.
    std::fs::copy(ws.path("sluice.yaml"), ws.path("other.yaml")).unwrap();
    ws.run(&["other.yaml"]).assert_ok();
    assert!(ws.exists("other.lock"));
}

/// BLAKE3 of the bytes, through the engine's own hash type (a plain wrapper of the `blake3` crate).
fn blake3_hex(bytes: &[u8]) -> String {
    sluice_runner::hash::ContentHash::of(bytes).hex()
}

#[test]
fn status_json_lists_every_stage_with_state_and_reason() {
    let ws = chain();
    let s = ws.sluice(&["status", "--json"]);
    s.assert_ok();
    let rows: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[0]["state"], "stale");
    assert_eq!(rows[0]["reason"], "never run");
    assert_eq!(rows[1]["reason"], "upstream `a` is stale");
    ws.run(&[]).assert_ok();
    let s = ws.sluice(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["state"] == "up_to_date"));
}

#[test]
fn gc_removes_entries_no_lock_file_refers_to() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    ws.run(&["--set", "n=5"]).assert_ok();
    // Records are the lines of the cache's record log (`gc` rewrites it with the kept ones).
    let count = |ws: &Ws| ws.read(".sluice/cache/records.log").lines().count();
    assert_eq!(count(&ws), 4, "a, b, c and the n=5 variant of c");
    let dry = ws.sluice(&["gc", "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout.contains("would remove 1 cache entry"),
        "{}",
        dry.stdout
    );
    assert_eq!(count(&ws), 4);
    let gc = ws.sluice(&["gc"]);
    gc.assert_ok();
    assert!(gc.stdout.contains("removed 1 cache entry"), "{}", gc.stdout);
    assert_eq!(count(&ws), 3);
    // What the lock refers to (the last run, n=5) still restores; the n=1 variant is gone.
    std::fs::remove_file(ws.path("out/c.txt")).unwrap();
    let r = ws.run(&["--set", "n=5"]);
    r.assert_ok();
    assert_eq!(r.outcomes()["c"], "restored");
    let r = ws.run(&[]);
    assert_eq!(r.outcomes()["c"], "ran");
}

#[test]
fn a_second_run_in_the_same_workspace_waits_or_refuses() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  s: {run: 'touch running; while [ ! -f release ]; do sleep 0.05; done; echo > ${{ outputs.o }}', outputs: [o]}\n");
    let first = ws.spawn(&["run", "--json"]);
    assert!(wait_for(LONG, || ws.exists("running")));
    let refused = ws.run(&["--no-wait"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("another sluice run holds this workspace"),
        "{}",
        refused.stderr
    );
    let mut waiting = ws.spawn(&["run", "--json"]);
    let stdout = waiting.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    // Release the first run only once the second has said it is waiting.
    let said_waiting = rx
        .iter()
        .take_while(|_| true)
        .find(|l| l.contains("waiting for it to finish"));
    assert!(said_waiting.is_some());
    std::fs::write(ws.path("release"), "").unwrap();
    wait_child(first, LONG).assert_ok();
    let r = wait_child(waiting, LONG);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = reader.join().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"stage_finished\"") && l.contains("up_to_date")),
        "{lines:?}"
    );
}

#[test]
fn the_hash_memo_is_persisted_and_not_fooled_by_a_preserved_mtime() {
    let ws = chain();
    ws.run(&[]).assert_ok();
    let memo = std::fs::read(ws.path(".sluice/hashes.bin")).unwrap();
    assert!(memo.starts_with(b"sluice-memo\0"), "{memo:?}");
    // Same size, same mtime, different bytes: the inode's ctime still moves, so it is seen.
    std::fs::copy(ws.path("data.txt"), ws.path("ref.txt")).unwrap();
    std::fs::write(ws.path("data.txt"), "xyz\n").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-r", "ref.txt", "data.txt"])
        .current_dir(ws.root())
        .status()
        .unwrap();
    assert!(touched.success());
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started().first().map(String::as_str), Some("a"));
    assert_eq!(ws.read("out/b.txt"), "XYZ\nHELLO\n");
}

#[test]
fn an_input_directory_waits_for_the_outputs_inside_it() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  report: {run: "ls ${{ inputs.results }} > ${{ outputs.o }}", inputs: {results: results}, outputs: {o: report.txt}}
  one: {run: "sleep 0.3; echo 1 > ${{ outputs.o }}", outputs: {o: results/one.txt}}
  two: {run: "echo 2 > ${{ outputs.o }}", outputs: {o: results/two.txt}}
"#,
    );
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started().last().map(String::as_str), Some("report"));
    assert_eq!(ws.read("report.txt"), "one.txt\ntwo.txt\n");
    let dag = ws.sluice(&["dag"]);
    assert!(
        dag.stdout.contains("report [run] ← one, two"),
        "{}",
        dag.stdout
    );
}

/// A stage that takes both CPU slots runs alone. Each stage marks itself running, waits, then
/// looks for the other's mark: any overlap shorter than the wait is seen by one of them.
#[test]
fn cpu_slots_keep_a_wide_stage_alone() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  big:
    run: "touch big_running; sleep 0.5; [ -f small_running ] && exit 9; rm big_running; echo > ${{ outputs.o }}"
    outputs: [o]
    resources: {cpus: 2}
  small: {run: "touch small_running; sleep 0.5; [ -f big_running ] && exit 9; rm small_running; echo > ${{ outputs.o }}", outputs: [o]}
"#,
    );
    ws.run(&["--jobs", "2"]).assert_ok();
}

/// A stage's processes start with SIGPIPE at its default, as a shell's would (sluice itself, as
/// every Rust program, ignores it): `yes | head -n 1` ends `yes` quietly instead of filling the
/// log with write errors.
#[test]
fn a_stage_process_dies_quietly_of_a_closed_pipe() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  s:
    run: "yes | head -n 1 > ${{ outputs.o }}; echo finished >&2; exit 3"
    outputs: [o]
"#,
    );
    let r = ws.run(&[]);
    let tail = r.finished("s")["log_tail"].to_string();
    assert!(tail.contains("finished"), "{tail}");
    assert!(!tail.contains("Broken pipe"), "{tail}");
}
