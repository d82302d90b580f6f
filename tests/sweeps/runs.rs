//! `sluice sweep` end to end with `run:` and plugin stages: what runs once and what per trial,
//! isolation, parallel trials, pruning, results, promotion, and resuming after Ctrl-C.

use super::common::*;
use serde_json::Value;

/// `prep` uses no varied param (once per sweep); `fit` and `score` do (once per trial); each
/// run of a stage appends a line to `counts/<stage>` outside every output, so runs can be
/// counted. `score.py` writes `metrics.json` with a value peaking at lr=0.01, width=16.
const SWEEP: &str = r#"
params: {seed: 1, lr: 0.1, width: 8}
sweep:
  params:
    lr: [0.1, 0.01, 0.001]
    width: [8, 16]
  metric: score.value
  skip: [publish]
stages:
  prep:
    run: echo prepared-${{ params.seed }} > ${{ outputs.o }} && echo x >> counts/prep
    outputs: [o]
  fit:
    run: (cat ${{ stages.prep.outputs.o }}; echo lr=${{ params.lr }} width=${{ params.width }}) > ${{ outputs.model }} && echo x >> counts/fit
    outputs: {model: out/model.txt}
  score:
    run: python3 score.py ${{ params.lr }} ${{ params.width }} ${{ stages.fit.outputs.model }} ${{ outputs.metrics }}
    outputs: {metrics: out/metrics.json}
  publish:
    run: cp ${{ stages.fit.outputs.model }} ${{ outputs.o }} && echo x >> counts/publish
    outputs: {o: published/model.txt}
"#;

const SCORE: &str = r#"
import json, sys
lr, width, model, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
json.dump({"value": width / (1 + abs(lr - 0.01) * 100), "model": open(model).read()}, open(out, "w"))
"#;

fn sweep_ws() -> Ws {
    let ws = Ws::new();
    ws.write("score.py", SCORE)
        .write("counts/.keep", "")
        .pipeline(SWEEP);
    ws
}

fn count(ws: &Ws, stage: &str) -> usize {
    std::fs::read_to_string(ws.path(&format!("counts/{stage}")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The sweep's id and results.json, from `sluice sweep --json`'s last line.
fn finished(r: &Run) -> Value {
    r.events()
        .into_iter()
        .find(|e| e["event"] == "sweep_finished")
        .unwrap_or_else(|| panic!("no sweep_finished\n{}\n{}", r.stdout, r.stderr))
}

#[test]
fn upstream_runs_once_trials_are_isolated_and_ranked() {
    let ws = sweep_ws();
    let r = ws.sluice(&["sweep", "--json", "-j", "2"]);
    r.assert_ok();
    // `prep` once for six trials; `fit` once per trial.
    assert_eq!(count(&ws, "prep"), 1);
    assert_eq!(count(&ws, "fit"), 6);
    assert_eq!(count(&ws, "publish"), 0, "a sweep publishes nothing");
    let res = finished(&r);
    let id = res["sweep"].as_str().unwrap().to_string();
    let trials = res["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    // Best first: lr=0.01, width=16.
    assert_eq!(
        trials[0]["params"],
        serde_json::json!({"lr": 0.01, "width": 16})
    );
    assert_eq!(trials[0]["rank"], 1);
    assert_eq!(res["best"], trials[0]["trial"]);
    // Every trial wrote the same declared path, each into its own directory, and read its own
    // trial's model: no trial saw another's files.
    for t in trials {
        assert_eq!(t["state"], "done", "{t}");
        let n = t["trial"].as_u64().unwrap();
        let m = ws.json(&format!(".sluice/sweeps/{id}/trials/{n}/out/metrics.json"));
        let p = &t["params"];
        assert_eq!(
            m["model"].as_str().unwrap(),
            format!("prepared-1\nlr={} width={}\n", p["lr"], p["width"])
        );
        assert_eq!(m["value"], t["metric"]);
    }
    // The workspace's outputs and lock file are untouched until promotion.
    assert!(!ws.exists("out") && !ws.exists("sluice.lock") && !ws.exists("published"));
    // The results files, and `show` printing them again.
    let dir = format!(".sluice/sweeps/{id}");
    let csv = ws.read(&format!("{dir}/results.csv"));
    assert!(csv.starts_with("rank,trial,state,value,lr,width"), "{csv}");
    assert_eq!(csv.lines().count(), 7);
    assert!(
        ws.path(&format!("{dir}/plot.png"))
            .metadata()
            .unwrap()
            .len()
            > 1000
    );
    let show = ws.sluice(&["sweep", "show"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(
        show.stdout.contains(&format!("sweep {id}")),
        "{}",
        show.stdout
    );

    // The same sweep again: every trial from the sweep's lock file, nothing runs.
    let again = ws.sluice(&["sweep", "--json"]);
    again.assert_ok();
    assert_eq!((count(&ws, "prep"), count(&ws, "fit")), (1, 6));
    assert!(again.started().is_empty(), "{:?}", again.started());
}

#[test]
fn promotion_restores_from_the_cache_and_runs_only_what_sweeps_leave_out() {
    let ws = sweep_ws();
    ws.sluice(&["sweep", "-j", "2"]).assert_ok();
    let r = ws.sluice(&["sweep", "promote", "--json"]);
    r.assert_ok();
    let o = r.outcomes();
    assert_eq!(o["prep"], "restored");
    assert_eq!(o["fit"], "restored");
    assert_eq!(o["score"], "restored");
    assert_eq!(o["publish"], "ran");
    assert_eq!((count(&ws, "fit"), count(&ws, "publish")), (6, 1));
    assert_eq!(
        ws.read("published/model.txt"),
        "prepared-1\nlr=0.01 width=16\n"
    );
    // The promoted params are kept beside the pipeline and recorded in the lock file.
    let promoted = ws.read("sluice.promoted.yaml");
    assert!(
        promoted.contains("lr: 0.01") && promoted.contains("width: 16"),
        "{promoted}"
    );
    assert!(ws.read("sluice.lock").contains("promoted:"));
    // A plain run now keeps them, and says so.
    let plain = ws.run(&[]);
    plain.assert_ok();
    assert!(plain.started().is_empty(), "{:?}", plain.started());
    assert!(
        plain.stdout.contains("params from sluice.promoted.yaml"),
        "{}",
        plain.stdout
    );
    // Another trial: restored from the cache too.
    let other = ws.sluice(&["sweep", "promote", "--trial", "1", "--json"]);
    other.assert_ok();
    assert_eq!(other.outcomes()["fit"], "restored");
    assert_eq!(
        ws.read("published/model.txt"),
        "prepared-1\nlr=0.1 width=8\n"
    );
    // Only done trials can be promoted.
    let bad = ws.sluice(&["sweep", "promote", "--trial", "99"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("no trial 99"), "{}", bad.stderr);
}

/// `sh meet.sh A B`: marks A as started, then waits (at most 10 s) until B has started too;
/// exits 1 when B never does. Two trials that meet ran at the same time.
const MEET: &str =
    "touch started-$1\nfor i in $(seq 100); do [ -e started-$2 ] && exit 0; sleep 0.1; done\nexit 1\n";

#[test]
fn trials_run_in_parallel_within_jobs() {
    // Each trial's `fit` waits (bounded) until the other trial's has started: run one after
    // the other, the first would give up and fail.
    let ws = Ws::new();
    ws.write("meet.sh", MEET);
    ws.pipeline(
        r#"
params: {n: 1}
sweep: {params: {n: [1, 2]}, metric: fit.v}
stages:
  fit:
    run: |
      sh meet.sh ${{ params.n }} $((3 - ${{ params.n }})) && echo '{"v": ${{ params.n }}}' > ${{ outputs.m }}
    outputs: {m: out/m.json}
"#,
    );
    ws.sluice(&["sweep", "-j", "2"]).assert_ok();
    // One job: the same sweep (resumed, nothing cached) fails its first trial.
    let ws1 = Ws::new();
    ws1.write("meet.sh", MEET).pipeline(&ws.read("sluice.yaml"));
    let serial = ws1.sluice(&["sweep", "-j", "1", "--json"]);
    assert_eq!(serial.code, 1, "{}", serial.stderr);
}

#[test]
fn each_trial_asking_for_a_gpu_gets_its_own() {
    // Two GPU slots (named, not probed: the scheduler hands out identifiers), two trials that
    // meet while both run: each sees a different device in CUDA_VISIBLE_DEVICES.
    let ws = Ws::new();
    ws.write("meet.sh", MEET);
    ws.pipeline(
        r#"
params: {n: 1}
sweep: {params: {n: [1, 2]}, metric: fit.v}
stages:
  fit:
    resources: {gpus: 1}
    run: |
      sh meet.sh ${{ params.n }} $((3 - ${{ params.n }})) && echo "{\"v\": ${{ params.n }}, \"gpu\": \"$CUDA_VISIBLE_DEVICES\"}" > ${{ outputs.m }}
    outputs: {m: out/m.json}
"#,
    );
    let r = ws.sluice(&["sweep", "-j", "2", "--gpus", "2", "--json"]);
    r.assert_ok();
    let id = finished(&r)["sweep"].as_str().unwrap().to_string();
    let gpu =
        |n: u32| ws.json(&format!(".sluice/sweeps/{id}/trials/{n}/out/m.json"))["gpu"].clone();
    let mut got = vec![gpu(1), gpu(2)];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [serde_json::json!("0"), serde_json::json!("1")]);
}

/// A plugin that trains for `epochs` epochs, reporting `val_loss` each epoch through the stage
/// protocol. `bad` trials report a high loss; they first wait until two good trials have
/// written their end markers, so that the median rule has completed trials to compare with.
const TRAINER: &str = r#"
import json, os, sys, time
req = json.loads(sys.stdin.readline())
lr = float(req["with"]["lr"])
bad = lr > 0.5
for epoch in range(1, 41):
    if bad and epoch == 2:
        for _ in range(300):
            if len([f for f in os.listdir("marks") if f.startswith("done")]) >= 2:
                break
            time.sleep(0.05)
    loss = (5.0 if bad else 1.0 / epoch) + lr
    print(json.dumps({"type": "metric", "name": "val_loss", "value": loss, "step": epoch}), flush=True)
    if bad:
        time.sleep(0.1)
with open(req["outputs"]["model"], "w") as f:
    f.write(f"lr={lr}\n")
open(f"marks/done-{lr}", "w").close()
with open("counts/train", "a") as f:
    f.write("x\n")
print(json.dumps({"type": "result", "status": "ok"}), flush=True)
"#;

#[test]
fn median_pruning_stops_a_bad_trial_without_failing_the_sweep() {
    let ws = Ws::new();
    ws.write("train.py", TRAINER)
        .write("score.py", "import json,sys\njson.dump({'value': float(open(sys.argv[1]).read().split('=')[1])}, open(sys.argv[2], 'w'))\n")
        .write("marks/.keep", "")
        .write("counts/.keep", "");
    ws.pipeline(
        r#"
params: {lr: 0.1}
plugins:
  trainer: {command: [python3, train.py]}
sweep:
  params: {lr: [0.1, 0.2, 0.9]}
  metric: score.value
  direction: min
  prune: {rule: median, metric: val_loss, min_trials: 2, warmup_epochs: 1}
stages:
  train:
    uses: trainer
    with: {lr: "${{ params.lr }}"}
    outputs: [model]
  score:
    run: python3 score.py ${{ stages.train.outputs.model }} ${{ outputs.metrics }}
    outputs: {metrics: out/metrics.json}
"#,
    );
    let r = ws.sluice(&["sweep", "-j", "3", "--json"]);
    r.assert_ok();
    let res = finished(&r);
    let by_lr = |lr: f64| {
        res["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["params"]["lr"] == lr)
            .unwrap()
            .clone()
    };
    let bad = by_lr(0.9);
    assert_eq!(bad["state"], "pruned", "{res}");
    assert!(bad["message"].as_str().unwrap().contains("median"), "{bad}");
    assert!(bad["epochs"].as_u64().unwrap() < 40, "{bad}");
    assert_eq!(by_lr(0.1)["state"], "done");
    assert_eq!(by_lr(0.1)["epochs"], 40);
    assert_eq!(by_lr(0.1)["rank"], 1);
    assert_eq!(count(&ws, "train"), 2, "the pruned trial never finished");
    let o = r.outcomes();
    let n = bad["trial"].as_u64().unwrap();
    assert_eq!(o[&format!("train@trial={n}")], "pruned");
    assert_eq!(o[&format!("score@trial={n}")], "skipped");
    // Resuming keeps the verdict: the pruned trial does not run again.
    let again = ws.sluice(&["sweep", "--json"]);
    again.assert_ok();
    assert!(again.started().is_empty(), "{:?}", again.started());
    assert_eq!(
        finished(&again)["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "pruned")
            .count(),
        1
    );
}

#[test]
fn an_interrupted_sweep_resumes_from_where_it_stopped() {
    let ws = Ws::new();
    ws.write("counts/.keep", "").write("slow", "");
    ws.pipeline(
        r#"
params: {n: 1}
sweep: {params: {n: [1, 2, 3, 4]}, metric: work.v}
stages:
  work:
    run: |
      if [ ${{ params.n }} -ge 3 ] && [ -e slow ]; then sleep 30; fi
      echo x >> counts/work
      echo '{"v": ${{ params.n }}}' > ${{ outputs.m }}
    outputs: {m: out/m.json}
"#,
    );
    let mut s = Streaming::new(ws.spawn(&["sweep", "-j", "4", "--json"]));
    // Two quick trials finish; the two slow ones are running.
    let mut done = 0;
    s.wait_for_event(LONG, |e| {
        if e["event"] == "trial_finished" {
            done += 1;
        }
        done == 2
    })
    .expect("two trials finish");
    send_signal(s.child(), libc::SIGINT);
    let r = s.finish(LONG);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert_eq!(count(&ws, "work"), 2);
    let res = finished(&r);
    assert_eq!(res["interrupted"], true);
    let states: Vec<&str> = res["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "done").count(),
        2,
        "{states:?}"
    );
    // Rerunning resumes: the finished trials are not run again.
    std::fs::remove_file(ws.path("slow")).unwrap();
    let again = ws.sluice(&["sweep", "--json"]);
    again.assert_ok();
    assert_eq!(count(&ws, "work"), 4);
    let mut started = again.started();
    started.sort();
    assert_eq!(started, ["work@trial=3", "work@trial=4"]);
}

#[test]
fn a_matrix_inside_a_sweep_pairs_within_each_trial() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
params: {lr: 0.1}
sweep: {params: {lr: [0.1, 0.2]}, metric: best.v}
stages:
  fit:
    matrix: {model: [a, b]}
    run: echo "${{ matrix.model }} ${{ params.lr }}" > ${{ outputs.o }}
    outputs: [o]
  best:
    run: |
      cat ${{ stages.fit.outputs.o[*] }} > ${{ outputs.seen }}; echo '{"v": ${{ params.lr }}}' > ${{ outputs.m }}
    outputs: {m: out/m.json, seen: out/seen.txt}
"#,
    );
    let r = ws.sluice(&["sweep", "-j", "2", "--json"]);
    r.assert_ok();
    let o = r.outcomes();
    assert!(o.contains_key("fit@model=b,trial=2"), "{o:?}");
    let id = finished(&r)["sweep"].as_str().unwrap().to_string();
    for (n, lr) in [(1, "0.1"), (2, "0.2")] {
        assert_eq!(
            ws.read(&format!(".sluice/sweeps/{id}/trials/{n}/out/seen.txt")),
            format!("a {lr}\nb {lr}\n")
        );
    }
}
