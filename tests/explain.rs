//! The `explain` stage through the real binary and the real ONNX Runtime: split → normalize →
//! train → explain on a table generated here, in which only two of six columns decide the label
//! (one numeric, one categorical and so one-hot encoded). Those two must rank first, the
//! categorical one as one group of its indicator features, and the figures must repeat.

mod common;
use common::*;

/// A small fixed generator, so the table is the same on every machine.
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `signal` and `color` decide `label`; `n1`…`n4` are noise, drawn like `signal`.
fn table(rows: usize) -> String {
    let mut rng = Lcg(7);
    let mut csv = String::from("n1,signal,n2,color,n3,n4,label\n");
    for _ in 0..rows {
        let mut x = || rng.uniform() * 4.0 - 2.0;
        let (n1, signal, n2, n3, n4) = (x(), x(), x(), x(), x());
        let (color, shift) = match (rng.uniform() * 3.0) as u32 {
            0 => ("red", 1.5),
            1 => ("green", 0.0),
            _ => ("blue", -1.5),
        };
        let label = if signal + shift > 0.0 { "yes" } else { "no" };
        csv.push_str(&format!(
            "{n1:.4},{signal:.4},{n2:.4},{color},{n3:.4},{n4:.4},{label}\n"
        ));
    }
    csv
}

const PIPELINE: &str = r#"name: explain
stages:
  split:
    uses: split
    inputs: {table: data.csv}
    outputs: {train: out/train.parquet, val: out/val.parquet, test: out/test.parquet, summary: out/split.json}
    with: {method: stratified, label: label, ratios: {train: 0.6, val: 0.1, test: 0.3}, seed: 3}
  normalize:
    uses: normalize
    inputs:
      train: "${{ stages.split.outputs.train }}"
      val: "${{ stages.split.outputs.val }}"
      test: "${{ stages.split.outputs.test }}"
    outputs: {train: out/n/train, val: out/n/val, test: out/n/test, preprocess: out/preprocess.json}
    with: {label: label}
  train:
    uses: train
    inputs:
      train: "${{ stages.normalize.outputs.train }}"
      val: "${{ stages.normalize.outputs.val }}"
      preprocess: "${{ stages.normalize.outputs.preprocess }}"
    outputs: {model: out/model.onnx, history: out/history.json, artifacts: out/artifacts}
    with:
      model: {type: mlp, hidden: [16]}
      optimizer: {type: adamw, lr: 0.02}
      epochs: 40
      batch_size: 32
      seed: 1
      device: cpu
  explain:
    uses: explain
    inputs:
      model: "${{ stages.train.outputs.model }}"
      test: "${{ stages.normalize.outputs.test }}"
      preprocess: "${{ stages.normalize.outputs.preprocess }}"
    outputs: {importance: out/importance.json, plot: out/importance.png}
    with: {repeats: 5, seed: 11, device: cpu}
"#;

#[test]
fn the_two_columns_that_carry_signal_rank_first() {
    let ws = Ws::new();
    ws.write("data.csv", &table(800));
    ws.pipeline(PIPELINE);
    ws.run(&[]).assert_ok();

    let report = ws.json("out/importance.json");
    assert_eq!(report["method"], "permutation");
    assert_eq!(report["task"], "classification");
    assert_eq!(report["metric"], "accuracy");
    assert_eq!(report["repeats"], 5);
    let rows = report["rows"].as_u64().unwrap();
    assert!((230..=250).contains(&rows), "30% of 800 rows: {rows}");
    let baseline = report["baseline"].as_f64().unwrap();
    assert!(baseline > 0.9, "the model did not learn: {report}");

    // Every raw column once, by its table name; `color` is its three one-hot features together.
    let features = report["features"].as_array().unwrap();
    let names: Vec<&str> = features
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["color", "n1", "n2", "n3", "n4", "signal"]);
    let color = features.iter().find(|f| f["name"] == "color").unwrap();
    assert_eq!(color["columns"].as_array().unwrap().len(), 3, "{color}");

    let mut top = names[..2].to_vec();
    top.sort();
    assert_eq!(top, ["color", "signal"], "{report:#}");
    let mean = |f: &serde_json::Value| f["mean"].as_f64().unwrap();
    for f in &features[2..] {
        assert!(
            mean(f) < 0.05 && mean(f) < mean(&features[1]) - 0.1,
            "a noise column matters: {f}"
        );
    }
    for f in features {
        assert_eq!(f["drops"].as_array().unwrap().len(), 5, "{f}");
        assert!(f["std"].as_f64().unwrap() >= 0.0);
        // Per class: the drop in each class's recall.
        let per = f["per_class"].as_object().unwrap();
        assert_eq!(per.keys().collect::<Vec<_>>(), ["no", "yes"], "{f}");
    }
    assert!(report["baseline_recall"]["yes"].as_f64().is_some());

    let png = std::fs::read(ws.path("out/importance.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000);

    // Seeded: explaining again gives the same figures.
    let again = ws.run(&["--force", "explain"]);
    again.assert_ok();
    assert_eq!(again.outcomes()["explain"], "ran");
    assert_eq!(ws.json("out/importance.json"), report);
}

#[test]
fn explain_names_a_preprocess_artifact_that_does_not_match_the_features() {
    let ws = Ws::new();
    ws.write("data.csv", &table(200));
    ws.pipeline(PIPELINE);
    ws.run(&[]).assert_ok();
    // An artifact that describes one column fewer than the test split holds.
    let mut p = ws.json("out/preprocess.json");
    let numeric = p["numeric"].as_array_mut().unwrap();
    numeric.pop();
    p["features"].as_array_mut().unwrap().remove(4);
    ws.write("other.json", &p.to_string());
    let pipeline = PIPELINE.replace(
        r#"preprocess: "${{ stages.normalize.outputs.preprocess }}"
    outputs: {importance"#,
        "preprocess: other.json\n    outputs: {importance",
    );
    ws.pipeline(&pipeline);
    let failed = ws.run(&["explain"]);
    let text = failed.failure("explain");
    assert!(
        text.contains("`other.json` describes 7 features, but the test split has 8"),
        "{text}"
    );
}

/// `y = 3·a − 2·b + noise`: a linear regression model, and R² as the metric.
fn regression_table(rows: usize) -> String {
    let mut rng = Lcg(19);
    let mut csv = String::from("n1,n2,a,n3,b,n4,y\n");
    for _ in 0..rows {
        let mut x = || rng.uniform() * 2.0 - 1.0;
        let (n1, n2, a, n3, b, n4, noise) = (x(), x(), x(), x(), x(), x(), x());
        let y = 3.0 * a - 2.0 * b + 0.2 * noise;
        csv.push_str(&format!(
            "{n1:.4},{n2:.4},{a:.4},{n3:.4},{b:.4},{n4:.4},{y:.4}\n"
        ));
    }
    csv
}

#[test]
fn regression_ranks_by_the_drop_in_r2() {
    let ws = Ws::new();
    ws.write("data.csv", &regression_table(600));
    let pipeline = PIPELINE
        .replace("method: stratified, label: label, ", "")
        .replace("with: {label: label}", "with: {label: y, task: regression}")
        .replace(
            "model: {type: mlp, hidden: [16]}\n      optimizer: {type: adamw, lr: 0.02}",
            "model: linear\n      optimizer: {type: adamw, lr: 0.05, weight_decay: 0}",
        );
    ws.pipeline(&pipeline);
    ws.run(&[]).assert_ok();

    let report = ws.json("out/importance.json");
    assert_eq!(report["task"], "regression");
    assert_eq!(report["metric"], "r2");
    assert!(report["baseline"].as_f64().unwrap() > 0.9, "{report:#}");
    let features = report["features"].as_array().unwrap();
    let names: Vec<&str> = features
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    // `a` weighs more than `b`, and neither per-class figures nor recall exist for a regression.
    assert_eq!(names[..2], ["a", "b"], "{report:#}");
    for f in features {
        assert!(f.get("per_class").is_none(), "{f}");
    }
    assert!(report.get("baseline_recall").is_none());
    for f in &features[2..] {
        assert!(f["mean"].as_f64().unwrap().abs() < 0.05, "{f}");
    }
}
