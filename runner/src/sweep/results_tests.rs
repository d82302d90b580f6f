use super::*;
use serde_json::json;

fn trial(n: usize, state: TrialState, metric: Option<f64>) -> TrialResult {
    TrialResult {
        trial: n,
        rank: 0,
        params: [
            ("lr".to_string(), json!(0.1 * n as f64)),
            ("act".to_string(), json!("relu")),
        ]
        .into_iter()
        .collect(),
        state,
        metric,
        metrics: metric
            .map(|m| {
                [
                    ("accuracy".to_string(), json!(m)),
                    ("f1_macro".to_string(), json!(m / 2.0)),
                    ("per_class".to_string(), json!({"a": 1})),
                ]
                .into_iter()
                .collect()
            })
            .unwrap_or_default(),
        duration_ms: Some(1500 * n as u64),
        epochs: Some(10),
        message: None,
    }
}

fn results(direction: Direction, trials: Vec<TrialResult>) -> SweepResults {
    SweepResults {
        sweep: "iris-0123abcd".into(),
        pipeline: "pipelines/iris.yaml".into(),
        pipeline_file: "/ws/pipelines/iris.yaml".into(),
        method: Method::Grid,
        metric: MetricGoal {
            stage: "evaluate".into(),
            name: "accuracy".into(),
            direction,
        },
        varied: vec!["lr".into(), "act".into()],
        interrupted: false,
        best: None,
        trials,
    }
}

fn mixed() -> Vec<TrialResult> {
    vec![
        trial(1, TrialState::Pending, None),
        trial(2, TrialState::Done, Some(0.8)),
        trial(3, TrialState::Failed, None),
        trial(4, TrialState::Done, Some(0.9)),
        trial(5, TrialState::Pruned, Some(0.99)),
        trial(6, TrialState::Done, Some(0.8)),
        trial(7, TrialState::Cancelled, None),
        trial(8, TrialState::Done, None),
        trial(9, TrialState::Done, Some(f64::NAN)),
    ]
}

fn order(r: &SweepResults) -> Vec<usize> {
    r.trials.iter().map(|t| t.trial).collect()
}

#[test]
fn rank_max_and_min() {
    let mut r = results(Direction::Max, mixed());
    r.rank();
    assert_eq!(order(&r), [4, 2, 6, 8, 9, 5, 3, 7, 1]);
    assert_eq!(r.best, Some(4));
    let ranks: Vec<usize> = r.trials.iter().map(|t| t.rank).collect();
    assert_eq!(ranks, (1..=9).collect::<Vec<_>>());

    let mut r = results(Direction::Min, mixed());
    r.rank();
    assert_eq!(order(&r), [2, 6, 4, 8, 9, 5, 3, 7, 1], "ties by number");
    assert_eq!(r.best, Some(2));

    let mut none_done = results(Direction::Max, vec![trial(1, TrialState::Failed, None)]);
    none_done.rank();
    assert_eq!(none_done.best, None);
}

#[test]
fn json_and_csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = results(Direction::Max, mixed());
    r.trials[0].message = Some("stopped, \"early\"".into());
    r.trials[1].params.insert("act".into(), json!("a,b"));
    r.rank();
    r.write(dir.path()).unwrap();
    assert_eq!(SweepResults::load(dir.path()).unwrap(), {
        // NaN has no JSON spelling: it is written as null.
        let mut r = r.clone();
        for t in &mut r.trials {
            t.metric = t.metric.filter(|m| m.is_finite());
        }
        r
    });
    let json: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        json["metric"],
        json!({"stage": "evaluate", "name": "accuracy", "direction": "max"})
    );
    assert_eq!(json["trials"][0]["state"], "done");
    assert_eq!(json["best"], 4);
    assert_eq!(json["method"], "grid");

    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "rank,trial,state,accuracy,lr,act,duration_s,epochs,f1_macro"
    );
    assert_eq!(lines[1], "1,4,done,0.9,0.4,relu,6.000,10,0.45");
    assert_eq!(lines[2], "2,2,done,0.8,0.2,\"a,b\",3.000,10,0.4");
    assert_eq!(lines[9], "9,1,pending,,0.1,relu,1.500,10,");
    assert_eq!(lines.len(), 10);
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = SweepResults::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("results.json") && e.starts_with("cannot read"),
        "{e}"
    );
    std::fs::write(dir.path().join("results.json"), "{\"sweep\": 1}").unwrap();
    let e = SweepResults::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("results.json` is not a sweep's results"), "{e}");
    let f = std::fs::File::create(dir.path().join("results.json")).unwrap();
    f.set_len(MAX_RESULTS_BYTES + 1).unwrap();
    let e = SweepResults::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("more than the 67108864"), "{e}");
}

#[test]
fn table_aligns_and_stops_at_forty_rows() {
    let mut r = results(Direction::Max, mixed());
    r.rank();
    let table = r.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "rank  trial   lr  act   accuracy  state      duration"
    );
    assert_eq!(
        lines[1],
        "   1      4  0.4  relu       0.9  done           6.0s"
    );
    assert_eq!(
        lines[9],
        "   9      1  0.1  relu         -  pending        1.5s"
    );
    assert!(
        r.summary()
            .contains("best: trial 4 with accuracy 0.9 (higher is better)"),
        "{}",
        r.summary()
    );
    assert!(
        r.summary()
            .contains("9 trials, 5 done, 1 pruned, 1 failed, 1 cancelled, 1 pending"),
        "{}",
        r.summary()
    );

    let many = results(
        Direction::Max,
        (1..=45)
            .map(|n| trial(n, TrialState::Done, Some(n as f64)))
            .collect(),
    );
    let table = many.table();
    assert_eq!(table.lines().count(), 1 + 40 + 1);
    assert!(table.ends_with("… 5 more (see results.csv)\n"), "{table}");
}

#[test]
fn numbers_read_well() {
    assert_eq!(number(0.97333333), "0.9733");
    assert_eq!(number(12.5), "12.5");
    assert_eq!(number(0.00012346), "0.0001235");
    assert_eq!(number(1.5e-7), "1.500e-7");
    assert_eq!(number(1234567.0), "1.235e6");
    assert_eq!(duration(850), "850ms");
    assert_eq!(duration(245_000), "4m05s");
}

#[test]
fn latest_is_the_last_written() {
    let root = tempfile::tempdir().unwrap();
    let ws = Workspace::open(root.path()).unwrap();
    assert_eq!(latest(&ws), None);
    let mut r = results(Direction::Max, mixed());
    for id in ["b-1", "a-2"] {
        r.sweep = id.into();
        r.write(&sweeps_dir(&ws).join(id)).unwrap();
        // Modification times are compared; make the second one later whatever the clock's grain.
        let t = std::time::SystemTime::now()
            + std::time::Duration::from_secs(if id == "a-2" { 10 } else { 0 });
        std::fs::File::options()
            .write(true)
            .open(sweeps_dir(&ws).join(id).join("results.json"))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    std::fs::create_dir_all(sweeps_dir(&ws).join("empty")).unwrap();
    assert_eq!(known(&ws), ["b-1", "a-2"]);
    assert_eq!(latest(&ws).as_deref(), Some("a-2"));
}
