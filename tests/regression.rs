//! Regression with default settings, through the real binary: clean → split → normalize →
//! train → evaluate on a generated linear target with noise and a large offset
//! (1,000 + 100·x₁ − 50·x₂ + 20·x₃), whose test R² must come within 5% of ordinary least squares
//! fitted in closed form on the same train split; the same for the shipped diabetes example
//! (pipelines/diabetes.yaml). Also: weight decay sparing the bias, `target_scaling: none`, the training-time
//! warnings (a growing loss, a model worse than the mean) and a continuous label under the
//! default classification task.

mod common;
use common::*;

use serde_json::Value;
use std::path::Path;

const ROWS: usize = 600;
const FEATURES: usize = 3;

/// A deterministic uniform generator in [0, 1) (splitmix64): the data must not depend on a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box–Muller.
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()
    }
}

fn linear_csv() -> String {
    let mut rng = Rng(15);
    let mut csv = String::from("x1,x2,x3,y\n");
    for _ in 0..ROWS {
        let x: Vec<f64> = (0..FEATURES).map(|_| rng.normal()).collect();
        let y = 1000.0 + 100.0 * x[0] - 50.0 * x[1] + 20.0 * x[2] + 30.0 * rng.normal();
        csv.push_str(&format!("{:.6},{:.6},{:.6},{y:.4}\n", x[0], x[1], x[2]));
    }
    csv
}

/// The pipeline of a new user: data stages, then `train` and `evaluate` with only `train_with`.
fn pipeline(ws: &Ws, train_with: &str) {
    ws.pipeline(&format!(
        r#"name: regression
stages:
  clean:
    uses: clean
    inputs: {{table: data/linear.csv}}
    outputs: {{table: out/clean.parquet, report: out/clean.json}}
    with: {{duplicates: drop}}
  split:
    uses: split
    inputs: {{table: "${{{{ stages.clean.outputs.table }}}}"}}
    outputs: {{train: out/train.parquet, val: out/val.parquet, test: out/test.parquet, summary: out/split.json}}
    with: {{ratios: {{train: 0.7, val: 0.15, test: 0.15}}, seed: 3}}
  normalize:
    uses: normalize
    inputs:
      train: "${{{{ stages.split.outputs.train }}}}"
      val: "${{{{ stages.split.outputs.val }}}}"
      test: "${{{{ stages.split.outputs.test }}}}"
    outputs: {{train: out/n/train, val: out/n/val, test: out/n/test, preprocess: out/preprocess.json}}
    with: {{label: y, task: regression}}
  train:
    uses: train
    inputs:
      train: "${{{{ stages.normalize.outputs.train }}}}"
      val: "${{{{ stages.normalize.outputs.val }}}}"
      preprocess: "${{{{ stages.normalize.outputs.preprocess }}}}"
    outputs: {{model: out/model.onnx, history: out/history.json, artifacts: out/artifacts}}
    with: {{device: cpu{train_with}}}
  evaluate:
    uses: evaluate
    inputs:
      model: "${{{{ stages.train.outputs.model }}}}"
      test: "${{{{ stages.normalize.outputs.test }}}}"
      preprocess: "${{{{ stages.normalize.outputs.preprocess }}}}"
    outputs: {{metrics: out/metrics.json, predictions: out/predictions.csv, plots: out/plots}}
    with: {{device: cpu}}
"#
    ));
}

fn linear_ws(train_with: &str) -> Ws {
    let ws = Ws::new();
    ws.write("data/linear.csv", &linear_csv());
    pipeline(&ws, train_with);
    ws
}

/// The float32 values of a `.npy` file `normalize` wrote, and its shape.
fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'<f4'"), "{}: {header}", path.display());
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    (shape, values)
}

/// Rows of [1, features...] and the targets of a normalized split.
fn design(split: &Path) -> (Vec<Vec<f64>>, Vec<f64>) {
    let (shape, x) = npy_f32(&split.join("features.npy"));
    let (_, y) = npy_f32(&split.join("labels.npy"));
    let width = shape[1];
    let rows = x
        .chunks_exact(width)
        .map(|r| std::iter::once(1.0).chain(r.iter().copied()).collect())
        .collect();
    (rows, y)
}

/// Ordinary least squares with an intercept, by the normal equations and Gauss–Jordan
/// elimination (the system is 4 × 4 and well conditioned: standardized features).
fn least_squares(rows: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let k = rows[0].len();
    let mut a = vec![vec![0.0; k + 1]; k];
    for (r, &t) in rows.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += r[i] * r[j];
            }
            a[i][k] += r[i] * t;
        }
    }
    for c in 0..k {
        let pivot = (c..k)
            .max_by(|&p, &q| a[p][c].abs().total_cmp(&a[q][c].abs()))
            .unwrap();
        a.swap(c, pivot);
        let pivot_row = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot_row[c];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    (0..k).map(|i| a[i][k] / a[i][i]).collect()
}

/// R² as `evaluate` computes it: 1 − SSE / total sum of squares about the test mean.
fn r2(rows: &[Vec<f64>], y: &[f64], beta: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let (mut se, mut tot) = (0.0, 0.0);
    for (r, &t) in rows.iter().zip(y) {
        let p: f64 = r.iter().zip(beta).map(|(a, b)| a * b).sum();
        se += (t - p) * (t - p);
        tot += (t - mean) * (t - mean);
    }
    1.0 - se / tot
}

/// The test R² of least squares fitted on the train split of `ws`'s last run.
fn reference_r2(ws: &Ws) -> f64 {
    let (train_x, train_y) = design(&ws.path("out/n/train"));
    let (test_x, test_y) = design(&ws.path("out/n/test"));
    r2(&test_x, &test_y, &least_squares(&train_x, &train_y))
}

fn sluice_r2(ws: &Ws) -> f64 {
    ws.json("out/metrics.json")["metrics"]["r2"]
        .as_f64()
        .expect("metrics.json has r2")
}

fn warnings(h: &Value) -> Vec<String> {
    h["warnings"]
        .as_array()
        .expect("history.json has warnings")
        .iter()
        .map(|w| w["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_default_linear_regression_matches_least_squares() {
    let ws = linear_ws("");
    ws.run(&[]).assert_ok();
    let (sluice, reference) = (sluice_r2(&ws), reference_r2(&ws));
    eprintln!("linear: sluice test R² {sluice:.4}, least squares {reference:.4}");
    assert!(
        reference > 0.9,
        "the generated data should be nearly linear: {reference}"
    );
    assert!(
        sluice >= 0.95 * reference,
        "sluice R² {sluice} is not within 5% of least squares {reference}"
    );
    let h = ws.json("out/history.json");
    let scaling = &h["target_scaling"];
    assert_eq!(scaling["method"], "standard", "{h}");
    let mean = scaling["mean"].as_f64().unwrap();
    assert!((mean - 1000.0).abs() < 20.0, "train mean {mean}");
    // val_rmse is in target units (the noise has sd 30), not standardized ones.
    let rmse = h["epochs"].as_array().unwrap().last().unwrap()["val_rmse"]
        .as_f64()
        .unwrap();
    assert!((20.0..45.0).contains(&rmse), "val_rmse {rmse}: {h}");
    assert!(warnings(&h).is_empty(), "{h}");
    // The predictions evaluate wrote are in target units too.
    let predictions = ws.read("out/predictions.csv");
    let header: Vec<&str> = predictions.lines().next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|c| c.contains("predict"))
        .unwrap_or_else(|| panic!("no prediction column in {header:?}"));
    let first: f64 = predictions
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(column)
        .unwrap()
        .parse()
        .unwrap();
    assert!((500.0..1500.0).contains(&first), "prediction {first}");
}

#[test]
fn a_default_mlp_regression_matches_least_squares() {
    let ws = linear_ws(", model: mlp");
    ws.run(&[]).assert_ok();
    let h = ws.json("out/history.json");
    assert!(warnings(&h).is_empty(), "{h}");
    let (sluice, reference) = (sluice_r2(&ws), reference_r2(&ws));
    eprintln!("mlp: sluice test R² {sluice:.4}, least squares {reference:.4}");
    assert!(
        sluice >= 0.95 * reference,
        "sluice R² {sluice} is not within 5% of least squares {reference}"
    );
}

#[test]
fn unscaled_targets_with_too_few_steps_warn_that_the_mean_does_better() {
    // Raw targets near 1,000 and one tiny step: the model predicts about 0.
    let ws = linear_ws(", target_scaling: none, epochs: 1, optimizer: {type: sgd, lr: 0.000001}");
    let run = ws.run(&[]);
    run.assert_ok();
    let h = ws.json("out/history.json");
    assert_eq!(h["target_scaling"], Value::Null, "{h}");
    assert_eq!(warnings(&h), ["worse_than_baseline"], "{h}");
    assert!(
        run.stdout.contains("always predicting the train mean"),
        "the warning is not in the log"
    );
}

#[test]
fn a_learning_rate_that_grows_the_loss_is_called_out() {
    // Full-batch gradient descent far past the stable step size: the loss grows every epoch.
    let ws = linear_ws(", epochs: 6, batch_size: 100000, optimizer: {type: sgd, lr: 1.8}");
    let run = ws.run(&[]);
    run.assert_ok();
    let h = ws.json("out/history.json");
    assert!(warnings(&h).contains(&"loss_growing".to_string()), "{h}");
    assert!(
        run.stdout.contains("may be too high"),
        "the warning is not in the log"
    );
}

#[test]
fn a_continuous_label_under_the_default_task_says_to_set_regression() {
    let ws = linear_ws("");
    let yaml = ws
        .read("sluice.yaml")
        .replace("label: y, task: regression", "label: y");
    ws.pipeline(&yaml);
    let run = ws.run(&[]);
    let failure = run.failure("normalize");
    assert!(failure.contains("looks continuous"), "{failure}");
    assert!(failure.contains("set `task: regression`"), "{failure}");
}

fn mean_prediction(ws: &Ws) -> f64 {
    let predictions = ws.read("out/predictions.csv");
    let header: Vec<&str> = predictions.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|c| c.contains("predict")).unwrap();
    let values: Vec<f64> = predictions
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(column).unwrap().parse().unwrap())
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn strong_weight_decay_shrinks_the_weights_and_not_the_bias() {
    // Raw targets: the slopes (100, −50, 20) are held near 1 / weight_decay = 1 by the decay, so
    // little of the signal is left (R² 0.0003; 0.937 with weight_decay 0), while the undecayed
    // bias still climbs to the mean.
    let ws = linear_ws(
        ", target_scaling: none, epochs: 300, optimizer: {type: adamw, lr: 0.9, weight_decay: 1.0}",
    );
    ws.run(&[]).assert_ok();
    let r2 = sluice_r2(&ws);
    assert!(r2 < 0.5, "R² {r2}: the weights were not decayed");
    assert!(
        !warnings(&ws.json("out/history.json")).contains(&"loss_growing".to_string()),
        "the wobble of a converged loss is not growth"
    );
    let mean = mean_prediction(&ws);
    assert!((900.0..1100.0).contains(&mean), "mean prediction {mean}");
}

#[test]
fn weight_decay_leaves_the_bias_alone() {
    // Raw targets near 1,000 and large Adam steps: the output bias can climb to the mean within
    // the default 20 epochs, unless the default weight decay (0.01) pulls it back each step,
    // which held it near lr / (lr · 0.01) = 100.
    let ws = linear_ws(", target_scaling: none, optimizer: {type: adamw, lr: 10}");
    ws.run(&[]).assert_ok();
    let mean = mean_prediction(&ws);
    assert!((900.0..1100.0).contains(&mean), "mean prediction {mean}");
}

#[test]
fn the_diabetes_example_matches_least_squares() {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/diabetes.csv")
        .copy_from_repo("pipelines/diabetes.yaml");
    ws.run(&["pipelines/diabetes.yaml"]).assert_ok();
    let (train_x, train_y) = design(&ws.path("out/diabetes/normalized/train"));
    let (test_x, test_y) = design(&ws.path("out/diabetes/normalized/test"));
    let reference = r2(&test_x, &test_y, &least_squares(&train_x, &train_y));
    let sluice = ws.json("out/diabetes/metrics.json")["metrics"]["r2"]
        .as_f64()
        .unwrap();
    eprintln!("diabetes: sluice test R² {sluice:.4}, least squares {reference:.4}");
    assert!(
        sluice >= 0.95 * reference,
        "sluice R² {sluice} is not within 5% of least squares {reference}"
    );
    served_in_target_units(&ws);
}

/// `sluice serve` answers the deployed diabetes model's first raw test row with what `evaluate`
/// predicted for it: in target units, not standardized ones.
fn served_in_target_units(ws: &Ws) {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::io::{BufRead, BufReader, Read, Write};

    let file = std::fs::File::open(ws.path("out/diabetes/test.parquet")).unwrap();
    let batch = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let inputs: Vec<Value> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        // The label and split's source-row id are not model inputs.
        .filter(|(f, _)| f.name() != "progression" && f.name() != "sluice_row")
        .map(|(f, c)| {
            let c = arrow::compute::cast(c, &DataType::Float64).unwrap();
            let v = c.as_primitive::<Float64Type>().value(0);
            serde_json::json!({"name": f.name(), "shape": [1], "datatype": "FP64", "data": [v]})
        })
        .collect();
    let body = serde_json::json!({ "inputs": inputs }).to_string();

    let mut child = ws
        .command(&["serve", "models", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on http://").map(str::to_string))
        .expect("the server says where it listens");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v2/models/diabetes/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let answer: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {raw}"));
    let served = answer["outputs"][0]["data"][0].as_f64().unwrap();
    let predictions = ws.read("out/diabetes/predictions.csv");
    let header: Vec<&str> = predictions.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|c| c.contains("predict")).unwrap();
    let evaluated: f64 = predictions
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(column)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (served - evaluated).abs() < 1e-3 * evaluated.abs(),
        "served {served}, evaluated {evaluated}: {answer}"
    );
    assert!((25.0..346.0).contains(&served), "served {served}");
}
