//! The built-in `normalize` stage, run through the real binary: statistics fitted on the train
//! split only, the `preprocess` artifact reproducing `features.npy` from raw rows, exact arrays
//! for one-hot, ordinal and label encodings, regression labels, and every kind of bad input.

mod common;
use common::*;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Map, Value};
use sluice_stages::preprocess::Preprocess;

/// A `.npy` file: its dtype, its shape, and its data as little-endian bytes.
struct Npy {
    descr: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Npy {
    /// A deliberately separate reader from the stage's writer: it checks what NumPy checks.
    fn read(ws: &Ws, rel: &str) -> Npy {
        let bytes = std::fs::read(ws.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{rel}: not .npy 1.0");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0, "{rel}: data not aligned to 64 bytes");
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.ends_with('\n') && header.contains("'fortran_order': False"));
        let descr = header.split("'descr': '").nth(1).unwrap()[..3].to_string();
        let shape = header.split("'shape': (").nth(1).unwrap();
        let shape = shape[..shape.find(')').unwrap()]
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        Npy {
            descr,
            shape,
            data: bytes[10 + len..].to_vec(),
        }
    }

    fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.descr, "<f4");
        self.data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn i64s(&self) -> Vec<i64> {
        assert_eq!(self.descr, "<i8");
        self.data
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// A Parquet file's rows as JSON objects: numbers for numeric columns, strings for the rest.
fn raw_rows(ws: &Ws, rel: &str) -> Vec<Map<String, Value>> {
    let file = std::fs::File::open(ws.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut rows = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut m = Map::new();
            for (field, col) in schema.fields().iter().zip(batch.columns()) {
                let v = if col.data_type().is_numeric() {
                    let c = arrow::compute::cast(col, &DataType::Float64).unwrap();
                    json!(c.as_primitive::<Float64Type>().value(row))
                } else {
                    let c = arrow::compute::cast(col, &DataType::Utf8).unwrap();
                    json!(c.as_string::<i32>().value(row))
                };
                m.insert(field.name().clone(), v);
            }
            rows.push(m);
        }
    }
    rows
}

fn numbers(rows: &[Map<String, Value>], column: &str) -> Vec<f64> {
    rows.iter().map(|r| r[column].as_f64().unwrap()).collect()
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

const IRIS: &str = r#"
stages:
  s:
    uses: split
    inputs: {table: data/iris.csv}
    with: {method: stratified, label: species, ratios: {train: 0.6, val: 0.2, test: 0.2}, seed: 3}
  n:
    uses: normalize
    inputs:
      train: ${{ stages.s.outputs.train }}
      val: ${{ stages.s.outputs.val }}
      test: ${{ stages.s.outputs.test }}
    with: {label: species}
"#;

fn iris_ws() -> Ws {
    let ws = Ws::new();
    let iris = std::fs::read_to_string(repo().join("examples/data/iris.csv")).unwrap();
    ws.write("data/iris.csv", &iris).pipeline(IRIS);
    ws.run(&[]).assert_ok();
    ws
}

fn artifact(ws: &Ws, rel: &str) -> (Value, Preprocess) {
    let text = ws.read(rel);
    (
        serde_json::from_str(&text).unwrap(),
        Preprocess::from_json(&text).unwrap(),
    )
}

#[test]
fn statistics_are_the_train_splits_own_not_the_whole_tables() {
    let ws = iris_ws();
    let (json, _) = artifact(&ws, "out/sluice/n/preprocess.json");
    assert_eq!(json["format"], 1);
    let train = raw_rows(&ws, "out/sluice/s/train.parquet");
    let whole: Vec<f64> = ws
        .read("data/iris.csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    for (i, column) in ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        .into_iter()
        .enumerate()
    {
        let fitted = &json["numeric"][i];
        assert_eq!(fitted["name"], column);
        assert_eq!(fitted["method"], "zscore");
        let (mean, std) = mean_std(&numbers(&train, column));
        let (got_mean, got_std) = (
            fitted["stats"]["mean"].as_f64().unwrap(),
            fitted["stats"]["std"].as_f64().unwrap(),
        );
        assert!(
            (got_mean - mean).abs() < 1e-12,
            "{column}: {got_mean} vs {mean}"
        );
        assert!(
            (got_std - std).abs() < 1e-12,
            "{column}: {got_std} vs {std}"
        );
        if i == 0 {
            let (whole_mean, whole_std) = mean_std(&whole);
            assert!(
                (got_mean - whole_mean).abs() > 1e-6,
                "the whole table's mean leaked"
            );
            assert!(
                (got_std - whole_std).abs() > 1e-6,
                "the whole table's std leaked"
            );
        }
    }
    assert_eq!(
        json["label"],
        json!({"column": "species", "task": "classification",
               "classes": ["setosa", "versicolor", "virginica"]})
    );
    assert_eq!(json["features"].as_array().unwrap().len(), 4);
    // The train features are standardized: mean 0 per column.
    let features = Npy::read(&ws, "out/sluice/n/train/features.npy");
    assert_eq!(features.shape, [90, 4]);
    let x = features.f32s();
    let m: f64 = x.iter().step_by(4).map(|&v| v as f64).sum::<f64>() / 90.0;
    assert!(m.abs() < 1e-5, "{m}");
}

#[test]
fn the_artifact_reproduces_the_features_from_raw_rows() {
    let ws = iris_ws();
    let (_, p) = artifact(&ws, "out/sluice/n/preprocess.json");
    for split in ["train", "val", "test"] {
        let rows = raw_rows(&ws, &format!("out/sluice/s/{split}.parquet"));
        let features = Npy::read(&ws, &format!("out/sluice/n/{split}/features.npy"));
        assert_eq!(features.shape, [rows.len(), 4]);
        let applied: Vec<f32> = rows.iter().flat_map(|r| p.apply(r).unwrap()).collect();
        // Exactly: the same float32 bits.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&applied), bits(&features.f32s()), "{split}");
        let labels = Npy::read(&ws, &format!("out/sluice/n/{split}/labels.npy"));
        let classes = p.label.classes.as_ref().unwrap();
        let expected: Vec<i64> = rows
            .iter()
            .map(|r| {
                let name = r["species"].as_str().unwrap().to_string();
                classes.iter().position(|c| *c == name).unwrap() as i64
            })
            .collect();
        assert_eq!(labels.shape, [rows.len()]);
        assert_eq!(labels.i64s(), expected, "{split}");
    }
    let again = ws.run(&[]);
    again.assert_ok();
    assert_eq!(again.outcomes()["n"], "up_to_date");
}

const TRAIN: &str = "x,city,size,y\n1,b,S,no\n3,a,M,yes\n5,b,L,no\n7,c,S,yes\n";

fn hand_made(test_csv: &str, with: &str) -> (Ws, Run) {
    let ws = Ws::new();
    ws.write("data/train.csv", TRAIN)
        .write("data/test.csv", test_csv)
        .pipeline(&format!(
            "stages:\n  n:\n    uses: normalize\n    inputs: {{train: data/train.csv, test: data/test.csv}}\n    with: {with}\n"
        ));
    let r = ws.run(&[]);
    (ws, r)
}

#[test]
fn onehot_ordinal_and_label_codes_are_laid_out_exactly() {
    let (ws, r) = hand_made(
        "x,city,size,y\n4,d,M,yes\n1,a,L,no\n",
        "{label: y, numeric: {default: minmax}, categorical: {columns: {size: ordinal}}}",
    );
    r.assert_ok();
    let (json, _) = artifact(&ws, "out/sluice/n/preprocess.json");
    assert_eq!(
        json["features"],
        json!(["x", "city=a", "city=b", "city=c", "size"])
    );
    assert_eq!(
        json["categorical"],
        json!([
            {"name": "city", "method": "onehot", "categories": ["a", "b", "c"]},
            {"name": "size", "method": "ordinal", "categories": ["L", "M", "S"]}
        ])
    );
    assert_eq!(json["numeric"][0]["stats"], json!({"min": 1.0, "max": 7.0}));
    assert_eq!(json["unknown_category"], "ignore");
    assert_eq!(json["label"]["classes"], json!(["no", "yes"]));
    assert_eq!(
        json["inputs"],
        json!([
            {"name": "x", "type": "Int64", "role": "numeric"},
            {"name": "city", "type": "Utf8", "role": "categorical"},
            {"name": "size", "type": "Utf8", "role": "categorical"},
            {"name": "y", "type": "Utf8", "role": "label"}
        ])
    );

    let third = |k: f64| (k / 6.0) as f32;
    let train = Npy::read(&ws, "out/sluice/n/train/features.npy");
    assert_eq!(train.shape, [4, 5]);
    #[rustfmt::skip]
    assert_eq!(train.f32s(), [
        0.0,        0.0, 1.0, 0.0, 2.0,
        third(2.0), 1.0, 0.0, 0.0, 1.0,
        third(4.0), 0.0, 1.0, 0.0, 0.0,
        1.0,        0.0, 0.0, 1.0, 2.0,
    ]);
    assert_eq!(
        Npy::read(&ws, "out/sluice/n/train/labels.npy").i64s(),
        [0, 1, 0, 1]
    );
    // `d` was never seen in train: with `unknown_category: ignore` it is all zeros.
    let test = Npy::read(&ws, "out/sluice/n/test/features.npy");
    assert_eq!(test.shape, [2, 5]);
    #[rustfmt::skip]
    assert_eq!(test.f32s(), [
        0.5, 0.0, 0.0, 0.0, 1.0,
        0.0, 1.0, 0.0, 0.0, 0.0,
    ]);
    assert_eq!(
        Npy::read(&ws, "out/sluice/n/test/labels.npy").i64s(),
        [1, 0]
    );
    // No val input: an empty pair of the right width.
    let val = Npy::read(&ws, "out/sluice/n/val/features.npy");
    assert_eq!((val.shape, val.data.len()), (vec![0, 5], 0));
    assert_eq!(Npy::read(&ws, "out/sluice/n/val/labels.npy").shape, [0]);
}

#[test]
fn regression_labels_are_float32_and_robust_scaling_uses_the_iqr() {
    let ws = Ws::new();
    ws.write(
        "data/train.csv",
        "a,price\n1,10.5\n2,20.25\n3,7\n4,1\n10,2\n",
    )
    .pipeline(
        "stages:\n  n: {uses: normalize, inputs: {train: data/train.csv}, with: {label: price, task: regression, numeric: {default: robust}}}\n",
    );
    ws.run(&[]).assert_ok();
    let labels = Npy::read(&ws, "out/sluice/n/train/labels.npy");
    assert_eq!(labels.f32s(), [10.5, 20.25, 7.0, 1.0, 2.0]);
    // median 3, q1 2, q3 4 (NumPy's linear interpolation).
    let features = Npy::read(&ws, "out/sluice/n/train/features.npy");
    assert_eq!(features.f32s(), [-1.0, -0.5, 0.0, 0.5, 3.5]);
    let (json, _) = artifact(&ws, "out/sluice/n/preprocess.json");
    assert_eq!(
        json["label"],
        json!({"column": "price", "task": "regression"})
    );
    assert_eq!(
        json["numeric"][0]["stats"],
        json!({"median": 3.0, "q1": 2.0, "q3": 4.0})
    );
}

/// The failure message of `stage` in a `--json` run; the failed stage left no outputs.
fn failure(ws: &Ws, r: &Run) -> String {
    assert_eq!(r.code, 1, "expected a failed run\n{}", r.stderr);
    for name in ["train", "val", "test", "preprocess.json"] {
        assert!(
            !ws.exists(&format!("out/sluice/n/{name}")),
            "{name} left behind"
        );
    }
    r.events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "n")
        .and_then(|e| common::failure_text(&e))
        .unwrap_or_else(|| panic!("no failure message:\n{}", r.stdout))
}

#[test]
fn a_label_the_train_split_never_saw_is_an_error() {
    let (ws, r) = hand_made("x,city,size,y\n4,a,M,yes\n2,a,M,maybe\n", "{label: y}");
    assert_eq!(
        failure(&ws, &r),
        "`data/test.csv` row 2: label `maybe` of the test split does not occur in the train split\n  = help: the model can only predict classes it was trained on; split with `method: stratified`"
    );
}

#[test]
fn an_unknown_category_is_an_error_when_asked() {
    let (ws, r) = hand_made(
        "x,city,size,y\n4,d,M,yes\n",
        "{label: y, unknown_category: error}",
    );
    assert_eq!(
        failure(&ws, &r),
        "`data/test.csv` row 1: column `city` has the category `d`, which the train split does not have\n  = help: `unknown_category: ignore` encodes it as all zeros (one-hot) or -1 (ordinal)"
    );
}

#[test]
fn a_numeric_method_on_a_text_column_names_the_column() {
    let (ws, r) = hand_made(TRAIN, "{label: y, numeric: {columns: {city: zscore}}}");
    assert_eq!(
        failure(&ws, &r),
        "`data/train.csv`: column `city` has type Utf8, which `zscore` cannot scale\n  = help: encode it instead: `categorical: {columns: {city: onehot}}`"
    );
}

#[test]
fn missing_values_and_unknown_columns_are_named() {
    let (ws, r) = hand_made("x,city,size,y\n4,a,,yes\n", "{label: y}");
    assert_eq!(
        failure(&ws, &r),
        "`data/test.csv` row 1: column `size` is empty\n  = help: fill it from the train split with `impute: {columns: {size: median}}` (or `mode` for text), or drop such rows with `clean`'s `missing: {size: drop}`"
    );
    let (ws, r) = hand_made(TRAIN, "{label: y, drop: [ctiy]}");
    assert_eq!(
        failure(&ws, &r),
        "`data/train.csv` has no column `ctiy`; did you mean `city`?\n  = help: its columns are `x`, `city`, `size`, `y`"
    );
}

/// Config problems are found before anything runs: exit code 2, `file:line:col`, a help line.
fn config_error(with: &str) -> String {
    let ws = Ws::new();
    ws.write("data/train.csv", TRAIN).pipeline(&format!(
        "stages:\n  n:\n    uses: normalize\n    inputs: {{train: data/train.csv}}\n    with: {with}\n"
    ));
    let r = ws.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.started().is_empty());
    assert!(!ws.exists("out"));
    r.stderr
}

#[test]
fn config_errors_point_at_the_yaml() {
    let e = config_error("{label: y, numeric: {default: zscor}, unknown_category: skip}");
    assert!(
        e.contains("unknown value `zscor` for `numeric.default`"),
        "{e}"
    );
    assert!(e.contains("did you mean `zscore`?"), "{e}");
    assert!(
        e.contains("unknown value `skip` for `unknown_category`"),
        "{e}"
    );
    assert!(e.contains("sluice.yaml:5:"), "{e}");
    let e = config_error("{task: regression}");
    assert!(e.contains("`normalize` needs a `label` column"), "{e}");
    let e = config_error("{label: y, catgorical: {}}");
    assert!(e.contains("did you mean `categorical`?"), "{e}");
}

#[test]
fn inputs_other_than_the_splits_and_an_empty_train_table_are_errors() {
    let ws = Ws::new();
    ws.write("data/train.csv", TRAIN).pipeline(
        "stages:\n  n: {uses: normalize, inputs: {train: data/train.csv, tset: data/train.csv}, with: {label: y}}\n",
    );
    // Found when the pipeline loads, at the input's line.
    let r = ws.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for needle in [
        "stage `n`: `normalize` has no input `tset`",
        "did you mean `test`? Its inputs are `train`, `val` and `test`",
        "sluice.yaml:2:",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?} in {}", r.stderr);
    }
    ws.write("data/train.csv", "x,y\n").pipeline(
        "stages:\n  n: {uses: normalize, inputs: {train: data/train.csv}, with: {label: y}}\n",
    );
    let m = failure(&ws, &ws.run(&[]));
    assert_eq!(
        m,
        "`data/train.csv`: the train split has no rows, so there is nothing to fit"
    );
}

/// An infinite value in a numeric column used to serialize as `null` in the artifact, whose
/// read-back then panicked inside the worker: with two workers the run never ended. It is a
/// clear error naming the row and column now, and the run ends (the timeout guards the hang).
#[test]
fn an_infinite_value_names_its_row_and_column_and_the_run_ends() {
    for (value, shown) in [("inf", "inf"), ("-inf", "-inf")] {
        let ws = Ws::new();
        ws.write(
            "data/train.csv",
            &format!("x,city,size,y\n1,b,S,no\n3,a,M,yes\n{value},b,L,no\n7,c,S,yes\n"),
        )
        .pipeline(
            "stages:\n  n: {uses: normalize, inputs: {train: data/train.csv}, with: {label: y}}\n  other: {run: 'true'}\n",
        );
        let r = wait_child(
            ws.spawn(&["run", "--json", "--jobs", "2", "--keep-going"]),
            LONG,
        );
        assert_eq!(
            failure(&ws, &r),
            format!("`data/train.csv` row 3: column `x` holds `{shown}`\n  = help: a model cannot be fed infinite values; remove those rows or replace the values before `normalize`")
        );
        assert_eq!(r.outcomes()["other"], "ran", "{}", r.stdout);
    }
}

#[test]
fn fills_are_fitted_on_the_train_split_only_and_applied_to_every_split() {
    // The test rows' values would move the median (to 4) and the mode (to `b`) if they counted.
    let ws = Ws::new();
    ws.write("data/train.csv", "x,c,y\n1,a,no\n2,a,yes\n,b,no\n4,,yes\n10,b,no\n")
        .write(
            "data/test.csv",
            "x,c,y\n,b,yes\n1000,b,no\n1000,b,yes\n1000,,no\n",
        )
        .pipeline(
            "stages:\n  n:\n    uses: normalize\n    inputs: {train: data/train.csv, test: data/test.csv}\n    with: {label: y, numeric: {default: robust}, impute: {default: median}}\n",
        );
    ws.run(&[]).assert_ok();
    let (json, p) = artifact(&ws, "out/sluice/n/preprocess.json");
    let present = |csv: &str| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .filter_map(|l| l.split(',').next().unwrap().parse().ok())
            .collect()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        (v[(n - 1) / 2] + v[n / 2]) / 2.0
    };
    let train_median = median(present(&ws.read("data/train.csv")));
    let mut all = present(&ws.read("data/train.csv"));
    all.extend(present(&ws.read("data/test.csv")));
    assert_ne!(
        train_median,
        median(all),
        "the data must tell the two apart"
    );
    assert_eq!(
        json["numeric"][0]["fill"],
        json!({"method": "median", "value": train_median})
    );
    // A text column's default fill is the train split's mode; ties go to the smallest.
    assert_eq!(
        json["categorical"][0]["fill"],
        json!({"method": "mode", "value": "a"})
    );
    // The robust scaling is fitted on the filled train column, 1 2 3 4 10: median 3, IQR 2.
    assert_eq!(json["numeric"][0]["stats"]["median"], json!(3.0));
    assert_eq!(json["numeric"][0]["stats"]["q1"], json!(2.0));
    // Every split's missing values become the recorded fills, as `apply` fills raw rows.
    let rows: Vec<Map<String, Value>> = ws
        .read("data/test.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let mut m = Map::new();
            m.insert(
                "x".into(),
                f[0].parse::<f64>().map_or(Value::Null, |x| json!(x)),
            );
            m.insert(
                "c".into(),
                if f[1].is_empty() {
                    Value::Null
                } else {
                    json!(f[1])
                },
            );
            m
        })
        .collect();
    let applied: Vec<f32> = rows.iter().flat_map(|r| p.apply(r).unwrap()).collect();
    let features = Npy::read(&ws, "out/sluice/n/test/features.npy");
    assert_eq!(features.f32s(), applied);
    // Row 1 (x missing) is the median, scaled to 0; row 4 (c missing) is `a`.
    assert_eq!(applied[..3], [0.0, 0.0, 1.0]);
    assert_eq!(applied[9..], [498.5, 1.0, 0.0]);
    let mut empty = Map::new();
    empty.insert("x".into(), Value::Null);
    assert_eq!(p.apply(&empty).unwrap(), [0.0, 1.0, 0.0]);
}

#[test]
fn a_numeric_fill_on_a_text_column_names_the_column() {
    let (ws, r) = hand_made(
        "x,city,size,y\n4,a,M,yes\n",
        "{label: y, impute: {columns: {city: median}}}",
    );
    assert_eq!(
        failure(&ws, &r),
        "`data/train.csv`: column `city` has type Utf8, which `median` cannot fill\n  = help: fill text columns with their most frequent value: `impute: {columns: {city: mode}}`"
    );
}

#[test]
fn clipping_fences_are_fitted_on_the_train_split_only() {
    // Train quartiles 2 and 4: fences at [-1, 7]. The test rows' 1000s would widen them.
    let ws = Ws::new();
    ws.write("data/train.csv", "x,y\n1,a\n2,b\n3,a\n4,b\n100,a\n")
        .write("data/test.csv", "x,y\n1000,a\n1000,b\n-5,a\n5,b\n")
        .pipeline(
            "stages:\n  n:\n    uses: normalize\n    inputs: {train: data/train.csv, test: data/test.csv}\n    with: {label: y, numeric: {default: none}, clip: {columns: [x], method: iqr, k: 1.5}}\n",
        );
    ws.run(&[]).assert_ok();
    let (json, p) = artifact(&ws, "out/sluice/n/preprocess.json");
    assert_eq!(
        json["numeric"][0]["clip"],
        json!({"method": "iqr", "k": 1.5, "low": -1.0, "high": 7.0})
    );
    assert_eq!(
        Npy::read(&ws, "out/sluice/n/train/features.npy").f32s(),
        [1.0, 2.0, 3.0, 4.0, 7.0]
    );
    assert_eq!(
        Npy::read(&ws, "out/sluice/n/test/features.npy").f32s(),
        [7.0, 7.0, -1.0, 5.0]
    );
    let mut row = Map::new();
    row.insert("x".into(), json!(-1e9));
    assert_eq!(p.apply(&row).unwrap(), [-1.0]);
}

#[test]
fn after_split_the_fill_is_the_train_rows_median() {
    // 60 rows, every fifth one without `x`; the values grow fast, so which rows are in train
    // moves the median a lot.
    let mut csv = String::from("x,y\n");
    for i in 0..60 {
        let x = if i % 5 == 0 {
            String::new()
        } else {
            (i * i).to_string()
        };
        csv.push_str(&format!("{x},{}\n", ["a", "b"][i % 2]));
    }
    let ws = Ws::new();
    ws.write("data/rows.csv", &csv).pipeline(
        "stages:\n  s:\n    uses: split\n    inputs: {table: data/rows.csv}\n    with: {ratios: {train: 0.6, val: 0.2, test: 0.2}, seed: 7}\n  n:\n    uses: normalize\n    inputs:\n      train: ${{ stages.s.outputs.train }}\n      test: ${{ stages.s.outputs.test }}\n    with: {label: y, impute: {default: median}}\n",
    );
    ws.run(&[]).assert_ok();
    let present = |rel: &str| -> Vec<f64> {
        let file = std::fs::File::open(ws.path(rel)).unwrap();
        let mut out = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let x = batch.column(batch.schema().index_of("x").unwrap());
            let x = arrow::compute::cast(x, &DataType::Float64).unwrap();
            out.extend(x.as_primitive::<Float64Type>().iter().flatten());
        }
        out
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        (v[(n - 1) / 2] + v[n / 2]) / 2.0
    };
    let train = median(present("out/sluice/s/train.parquet"));
    let mut all = present("out/sluice/s/train.parquet");
    all.extend(present("out/sluice/s/test.parquet"));
    assert_ne!(train, median(all), "the split must tell the two apart");
    let (json, _) = artifact(&ws, "out/sluice/n/preprocess.json");
    assert_eq!(
        json["numeric"][0]["fill"],
        json!({"method": "median", "value": train})
    );
}
