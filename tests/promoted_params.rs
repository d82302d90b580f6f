//! Promoted params (`<stem>.promoted.yaml` beside a pipeline, written by `sluice sweep promote`):
//! layered over `params:` and under `--set` by every command, announced once, recorded in the
//! lock file, warned about by the run that drops them, and refused with a located error when
//! the file is malformed or names a param the pipeline does not declare.

mod common;

use common::*;

const PIPELINE: &str = "\
params: {lr: 0.1, hidden: 32, seed: 1}
stages:
  fit:
    run: echo lr=${{ params.lr }} hidden=${{ params.hidden }} > ${{ outputs.o }}
    outputs: {o: out/fit.txt}
  report:
    run: echo seed=${{ params.seed }} > ${{ outputs.o }}
    outputs: {o: out/report.txt}
";

const PROMOTED: &str = "\
# Written by `sluice sweep promote`: the params of trial 7 of sweep p-1a2b3c4d.
sweep: p-1a2b3c4d
trial: 7
params:
  hidden: 64
  lr: 0.01
";

const NOTICE: &str =
    "params from pipelines/p.promoted.yaml (trial 7 of sweep p-1a2b3c4d): hidden=64, lr=0.01";

const RECORD: &str = "\
promoted:
  sweep: p-1a2b3c4d
  trial: 7
  params:
    hidden: 64
    lr: 0.01
";

fn promoted_ws() -> Ws {
    let ws = Ws::new();
    ws.write("pipelines/p.yaml", PIPELINE)
        .write("pipelines/p.promoted.yaml", PROMOTED);
    ws
}

/// The messages of the run's `event` events (`notice`, `warning`).
fn messages(run: &Run, event: &str) -> Vec<String> {
    run.events()
        .into_iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn promoted_params_reach_the_stages_are_announced_and_recorded() {
    let ws = promoted_ws();
    let run = ws.run(&["pipelines/p.yaml"]);
    run.assert_ok();
    assert_eq!(ws.read("out/fit.txt"), "lr=0.01 hidden=64\n");
    // A param the promotion does not name keeps the pipeline's value.
    assert_eq!(ws.read("out/report.txt"), "seed=1\n");
    assert_eq!(messages(&run, "notice"), [NOTICE]);
    assert!(messages(&run, "warning").is_empty(), "{}", run.stdout);
    let lock = ws.read("pipelines/p.lock");
    assert!(
        lock.contains(&format!("pipeline: p\n{RECORD}stages:\n")),
        "{lock}"
    );

    // Commands that show no run events say it on stderr, once.
    let status = ws.sluice(&["status", "pipelines/p.yaml"]);
    status.assert_ok();
    assert_eq!(
        status.stderr.matches("params from").count(),
        1,
        "{}",
        status.stderr
    );
    assert!(
        status.stderr.contains(&format!("note: {NOTICE}\n")),
        "{}",
        status.stderr
    );
    let plain = ws.sluice(&["run", "pipelines/p.yaml"]);
    plain.assert_ok();
    assert_eq!(plain.stderr.matches(NOTICE).count(), 1, "{}", plain.stderr);
    assert!(
        plain.stderr.contains(&format!("note: {NOTICE}")),
        "{}",
        plain.stderr
    );
}

#[test]
fn set_wins_over_a_promoted_param_and_the_notice_says_so() {
    let ws = promoted_ws();
    let run = ws.run(&["pipelines/p.yaml", "--set", "lr=0.5"]);
    run.assert_ok();
    assert_eq!(ws.read("out/fit.txt"), "lr=0.5 hidden=64\n");
    assert_eq!(
        messages(&run, "notice"),
        ["params from pipelines/p.promoted.yaml (trial 7 of sweep p-1a2b3c4d): hidden=64, `--set` overrides `lr`"]
    );
    // The record is of the promotion, which is still in place; `--set` is explicit and per run.
    assert!(ws.read("pipelines/p.lock").contains(RECORD));
}

#[test]
fn deleting_the_promoted_file_warns_once_with_old_and_new_values() {
    let ws = promoted_ws();
    ws.run(&["pipelines/p.yaml"]).assert_ok();
    std::fs::remove_file(ws.path("pipelines/p.promoted.yaml")).unwrap();

    let reverted = ws.run(&["pipelines/p.yaml"]);
    reverted.assert_ok();
    assert_eq!(ws.read("out/fit.txt"), "lr=0.1 hidden=32\n");
    assert!(messages(&reverted, "notice").is_empty());
    let warnings = messages(&reverted, "warning");
    assert_eq!(
        warnings,
        [
            "params promoted from trial 7 of sweep p-1a2b3c4d are no longer used \
          (pipelines/p.promoted.yaml is gone): hidden 64 -> 32, lr 0.01 -> 0.1\n  \
          = help: to keep the promoted params, run `sluice sweep promote p-1a2b3c4d --trial 7`; \
          this run's lock file no longer records the promotion"
        ]
    );
    assert!(!ws.read("pipelines/p.lock").contains("promoted"));

    // Said by the run that reverts, not by every run after it.
    let again = ws.run(&["pipelines/p.yaml"]);
    again.assert_ok();
    assert!(messages(&again, "warning").is_empty(), "{}", again.stdout);
    assert!(again.started().is_empty());
}

#[test]
fn a_reverted_promotion_whose_values_are_kept_by_set_is_not_warned_about() {
    let ws = promoted_ws();
    ws.run(&["pipelines/p.yaml"]).assert_ok();
    std::fs::remove_file(ws.path("pipelines/p.promoted.yaml")).unwrap();
    let run = ws.run(&["pipelines/p.yaml", "--set", "lr=0.01", "--set", "hidden=64"]);
    run.assert_ok();
    assert!(messages(&run, "warning").is_empty(), "{}", run.stdout);
    // Same params, same keys: nothing to run, and the record is dropped all the same.
    assert!(run.started().is_empty(), "{:?}", run.started());
    assert!(!ws.read("pipelines/p.lock").contains("promoted"));
}

#[test]
fn an_undeclared_promoted_param_is_refused_at_its_place_in_the_file() {
    let ws = promoted_ws();
    ws.write(
        "pipelines/p.promoted.yaml",
        "sweep: p-1a2b3c4d\ntrial: 7\nparams:\n  hiden: 64\n  lr: 0.01\n",
    );
    for args in [
        &["run", "pipelines/p.yaml"][..],
        &["status", "pipelines/p.yaml"],
    ] {
        let run = ws.sluice(args);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(
            run.stderr,
            "error: promoted param `hiden` is not declared under `params:` in pipelines/p.yaml\n  \
             --> pipelines/p.promoted.yaml:4:3\n  |\n4 |   hiden: 64\n  |   ^\n  \
             = help: did you mean `hidden`? the pipeline has changed since this trial was \
             promoted: fix the name, or delete pipelines/p.promoted.yaml and promote again\n\n\
             error: pipelines/p.promoted.yaml has 1 problem; nothing was run\n"
        );
    }
    assert!(!ws.exists("out/fit.txt"));
}

#[test]
fn a_malformed_promoted_file_is_refused_with_its_location() {
    let ws = promoted_ws();
    ws.write(
        "pipelines/p.promoted.yaml",
        "sweep: p-1a2b3c4d\ntrial: seven\nparams: [lr]\n",
    );
    let run = ws.run(&["pipelines/p.yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("`trial` must be a trial number"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--> pipelines/p.promoted.yaml:2:8"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`params` must be a mapping"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--> pipelines/p.promoted.yaml:3:9"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .ends_with("error: pipelines/p.promoted.yaml has 2 problems; nothing was run\n"),
        "{}",
        run.stderr
    );

    ws.write(
        "pipelines/p.promoted.yaml",
        "sweep: p\ntrial: 1\nparams: {lr: [\n",
    );
    let run = ws.run(&["pipelines/p.yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("invalid YAML"), "{}", run.stderr);
    assert!(
        run.stderr.contains("--> pipelines/p.promoted.yaml:"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/fit.txt"));
}

#[test]
fn a_pipeline_problem_is_reported_before_the_promoted_file_s() {
    // The promoted file is checked against the pipeline's params: a broken pipeline comes first.
    let ws = promoted_ws();
    ws.write(
        "pipelines/p.promoted.yaml",
        "sweep: p\ntrial: 1\nparams: {nope: 1}\n",
    )
    .write(
        "pipelines/p.yaml",
        &PIPELINE.replace("outputs: {o: out/report.txt}", "outptus: {}"),
    );
    let run = ws.run(&["pipelines/p.yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("error: pipelines/p.yaml has"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("nope"), "{}", run.stderr);
}
