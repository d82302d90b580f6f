//! `sluice sweep`: the command line and the results a sweep leaves behind.

mod common;

#[path = "sweeps/matrix.rs"]
mod matrix;
#[path = "sweeps/runs.rs"]
mod runs;

use common::Ws;
use serde_json::json;
use sluice_runner::sweep::results::{MetricGoal, SweepResults, TrialResult, TrialState};
use sluice_runner::sweep::spec::{Direction, Method};

/// Results as a finished sweep writes them: four trials, one pruned and one failed.
fn written(ws: &Ws, id: &str) -> SweepResults {
    let trial = |n: usize, lr: f64, act: &str, state, metric: Option<f64>| TrialResult {
        trial: n,
        rank: 0,
        params: [
            ("lr".to_string(), json!(lr)),
            ("act".to_string(), json!(act)),
        ]
        .into_iter()
        .collect(),
        state,
        metric,
        metrics: metric
            .map(|m| [("accuracy".to_string(), json!(m))].into_iter().collect())
            .unwrap_or_default(),
        duration_ms: Some(2_000 * n as u64),
        epochs: Some(20),
        message: (state == TrialState::Failed).then(|| "train: exited with 1".to_string()),
    };
    let mut r = SweepResults {
        sweep: id.to_string(),
        pipeline: "sluice.yaml".into(),
        pipeline_file: ws.path("sluice.yaml"),
        method: Method::Grid,
        metric: MetricGoal {
            stage: "evaluate".into(),
            name: "accuracy".into(),
            direction: Direction::Max,
        },
        varied: vec!["lr".into(), "act".into()],
        interrupted: false,
        best: None,
        trials: vec![
            trial(1, 0.1, "relu", TrialState::Done, Some(0.9)),
            trial(2, 0.1, "tanh", TrialState::Pruned, Some(0.5)),
            trial(3, 0.001, "relu", TrialState::Done, Some(0.9667)),
            trial(4, 0.001, "tanh", TrialState::Failed, None),
        ],
    };
    r.rank();
    r.write(&ws.path(&format!(".sluice/sweeps/{id}"))).unwrap();
    r
}

#[test]
fn show_prints_the_ranked_table_and_json() {
    let ws = Ws::new();
    let r = written(&ws, "iris-0123abcd");
    let show = ws.sluice(&["sweep", "show"]);
    show.assert_ok();
    assert_eq!(
        show.stdout,
        "sweep iris-0123abcd (sluice.yaml, grid over lr, act): 4 trials, 2 done, 1 pruned, 1 failed
best: trial 3 with accuracy 0.9667 (higher is better)

rank  trial     lr  act   accuracy  state   duration
   1      3  0.001  relu    0.9667  done        6.0s
   2      1    0.1  relu       0.9  done        2.0s
   3      2    0.1  tanh       0.5  pruned      4.0s
   4      4  0.001  tanh         -  failed      8.0s

results: .sluice/sweeps/iris-0123abcd/results.csv
plot:    .sluice/sweeps/iris-0123abcd/plot.png
"
    );
    // The plot missing from the results is drawn by `show`.
    let plot = image::open(ws.path(".sluice/sweeps/iris-0123abcd/plot.png")).unwrap();
    assert_eq!(
        (plot.width(), plot.height()),
        (2 * 400, 28 + 360),
        "one panel per param"
    );

    let by_id = ws.sluice(&["sweep", "show", "iris-0123abcd", "--json"]);
    by_id.assert_ok();
    let back: SweepResults = serde_json::from_str(&by_id.stdout).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.best, Some(3));
}

#[test]
fn show_picks_the_latest_and_names_the_known_ones() {
    let ws = Ws::new();
    let none = ws.sluice(&["sweep", "show"]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(
        none.stderr
            .contains("no sweep has results in this workspace"),
        "{}",
        none.stderr
    );

    written(&ws, "iris-00000001");
    // Written later by its modification time, whatever the clock's grain.
    written(&ws, "iris-00000002");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(ws.path(".sluice/sweeps/iris-00000002/results.json"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let latest = ws.sluice(&["sweep", "show", "--json"]);
    latest.assert_ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&latest.stdout).unwrap()["sweep"],
        "iris-00000002"
    );

    let unknown = ws.sluice(&["sweep", "show", "iris-ffffffff"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert_eq!(
        unknown.stderr,
        "error: no sweep `iris-ffffffff` in this workspace
  = help: known sweeps (latest first): iris-00000002, iris-00000001
"
    );

    std::fs::write(ws.path(".sluice/sweeps/iris-00000001/results.json"), "{").unwrap();
    let broken = ws.sluice(&["sweep", "show", "iris-00000001"]);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken
            .stderr
            .contains("results.json` is not a sweep's results"),
        "{}",
        broken.stderr
    );
}

#[test]
fn flags_are_checked_before_anything_runs() {
    let ws = Ws::new();
    let bad = ws.sluice(&["sweep", "--param", "lr"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("expected NAME=SPEC"), "{}", bad.stderr);
    let mixed = ws.sluice(&["sweep", "show", "--trials", "3"]);
    assert_eq!(mixed.code, 2, "{mixed:?}");
    let both = ws.sluice(&["sweep", "promote", "--trial", "3", "--best"]);
    assert_eq!(both.code, 2, "{both:?}");
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}
