//! The built-in `split` stage, run through the real binary: seeded determinism, stratified
//! proportions on Iris, grouped splits, an empty val split, Parquet input, and every kind of bad
//! input, which must fail with a message naming the file and leave no outputs.

mod common;
use common::*;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, BTreeSet};

/// A workspace holding a copy of the Iris data at `data/iris.csv`.
fn iris_ws() -> Ws {
    let ws = Ws::new();
    let iris = std::fs::read_to_string(repo().join("examples/data/iris.csv")).unwrap();
    ws.write("data/iris.csv", &iris);
    ws
}

/// `n` rows: `id`, a float `x`, a label `y` cycling through three classes, a group `g` of 7 rows.
fn rows_csv(n: usize) -> String {
    let mut s = String::from("id,x,y,g\n");
    for i in 0..n {
        s.push_str(&format!(
            "{i},{}.5,{},p{}\n",
            i * 3,
            ["a", "b", "c"][i % 3],
            i / 7
        ));
    }
    s
}

/// One column of a Parquet file, as text per row; also the file's column names.
fn column(ws: &Ws, rel: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let file = std::fs::File::open(ws.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let names = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut values = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let col = batch.column_by_name(name).unwrap();
        let text = arrow::compute::cast(col, &DataType::Utf8).unwrap();
        let text = text.as_string::<i32>();
        values.extend((0..text.len()).map(|i| text.value(i).to_string()));
    }
    (values, names)
}

fn values(ws: &Ws, rel: &str, name: &str) -> Vec<String> {
    column(ws, rel, name).0
}

fn counts(values: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v.clone()).or_default() += 1;
    }
    m
}

fn summary(ws: &Ws, rel: &str) -> serde_json::Value {
    serde_json::from_str(&ws.read(rel)).unwrap()
}

fn assert_no_outputs(ws: &Ws, dir: &str) {
    for name in [
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "summary.json",
    ] {
        assert!(
            !ws.exists(&format!("{dir}/{name}")),
            "{dir}/{name} was left behind"
        );
    }
}

const SEEDED: &str = r#"
params: {seed: 7}
stages:
  s:
    uses: split
    inputs: {table: data/rows.csv}
    with:
      ratios: {train: 0.6, val: 0.2, test: 0.2}
      seed: ${{ params.seed }}
"#;

#[test]
fn the_same_seed_gives_the_same_split_in_every_workspace() {
    let (a, b) = (Ws::new(), Ws::new());
    for ws in [&a, &b] {
        ws.write("data/rows.csv", &rows_csv(100)).pipeline(SEEDED);
        ws.run(&[]).assert_ok();
    }
    for name in [
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "summary.json",
    ] {
        let rel = format!("out/sluice/s/{name}");
        assert_eq!(
            std::fs::read(a.path(&rel)).unwrap(),
            std::fs::read(b.path(&rel)).unwrap(),
            "{name} differs between workspaces"
        );
    }
    let train = values(&a, "out/sluice/s/train.parquet", "id");
    assert_eq!(train.len(), 60);
    assert_eq!(values(&a, "out/sluice/s/val.parquet", "id").len(), 20);
    assert_eq!(values(&a, "out/sluice/s/test.parquet", "id").len(), 20);
    // Rows keep their original order inside a split.
    let ids: Vec<usize> = train.iter().map(|s| s.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Another seed, through `--set`, deals other rows; every row still lands exactly once.
    b.run(&["--set", "seed=8"]).assert_ok();
    let other = values(&b, "out/sluice/s/train.parquet", "id");
    assert_ne!(train, other);
    let mut all: Vec<usize> = ["train", "val", "test"]
        .iter()
        .flat_map(|n| values(&b, &format!("out/sluice/s/{n}.parquet"), "id"))
        .map(|s| s.parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(summary(&b, "out/sluice/s/summary.json")["seed"], 8);
}

#[test]
fn stratified_iris_keeps_every_species_in_proportion() {
    let ws = iris_ws();
    ws.pipeline(
        r#"
stages:
  s:
    uses: split
    inputs: {table: data/iris.csv}
    with: {method: stratified, label: species, seed: 42, ratios: {train: 0.7, val: 0.15, test: 0.15}}
"#,
    );
    ws.run(&[]).assert_ok();
    // 50 per species × (0.7, 0.15, 0.15) = (35, 7.5, 7.5): the tied remainder goes to val.
    let expected = [("train", 35), ("val", 8), ("test", 7)];
    let s = summary(&ws, "out/sluice/s/summary.json");
    for (split, per_class) in expected {
        let species = values(&ws, &format!("out/sluice/s/{split}.parquet"), "species");
        let got = counts(&species);
        assert_eq!(got.len(), 3, "{split} lacks a species: {got:?}");
        for (class, n) in &got {
            assert_eq!(*n, per_class, "{split}/{class}");
            assert_eq!(s["splits"][split]["classes"][class], *n);
        }
        assert_eq!(s["splits"][split]["rows"], per_class * 3);
    }
    assert_eq!(s["rows"], 150);
    assert_eq!(s["method"], "stratified");
    assert_eq!(s["input"], "data/iris.csv");
    let (_, names) = column(&ws, "out/sluice/s/train.parquet", "species");
    assert_eq!(
        names,
        [
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "species",
            "sluice_row"
        ]
    );
}

#[test]
fn grouped_never_puts_a_group_in_two_splits() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(210)).pipeline(
        r#"
stages:
  s:
    uses: split
    inputs: {table: data/rows.csv}
    with: {method: grouped, group: g, label: y, seed: 3, ratios: {train: 0.7, val: 0.15, test: 0.15}}
"#,
    );
    ws.run(&[]).assert_ok();
    let groups: Vec<BTreeSet<String>> = ["train", "val", "test"]
        .iter()
        .map(|n| {
            values(&ws, &format!("out/sluice/s/{n}.parquet"), "g")
                .into_iter()
                .collect()
        })
        .collect();
    assert!(groups[0].is_disjoint(&groups[1]));
    assert!(groups[0].is_disjoint(&groups[2]));
    assert!(groups[1].is_disjoint(&groups[2]));
    assert_eq!(groups.iter().map(BTreeSet::len).sum::<usize>(), 30);
    let s = summary(&ws, "out/sluice/s/summary.json");
    // 30 groups of 7 rows: the targets (147, 31.5, 31.5) are met to within a group.
    for (i, (split, target)) in [("train", 147.0), ("val", 31.5), ("test", 31.5)]
        .into_iter()
        .enumerate()
    {
        let rows = s["splits"][split]["rows"].as_u64().unwrap() as f64;
        assert!((rows - target).abs() <= 7.0, "{split}: {rows}");
        assert_eq!(s["splits"][split]["groups"], groups[i].len());
        assert!(s["splits"][split]["classes"].is_object());
    }
}

#[test]
fn a_zero_val_ratio_writes_an_empty_file_with_the_schema() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(10)).pipeline(
        "stages:\n  s: {uses: split, inputs: {table: data/rows.csv}, with: {ratios: {train: 0.8, val: 0, test: 0.2}}}\n",
    );
    ws.run(&[]).assert_ok();
    let (val, names) = column(&ws, "out/sluice/s/val.parquet", "id");
    assert!(val.is_empty());
    assert_eq!(names, ["id", "x", "y", "g", "sluice_row"]);
    assert_eq!(values(&ws, "out/sluice/s/train.parquet", "id").len(), 8);
    let s = summary(&ws, "out/sluice/s/summary.json");
    assert_eq!(s["splits"]["val"]["rows"], 0);
    assert!(s["splits"]["val"]["note"]
        .as_str()
        .unwrap()
        .contains("ratio 0"));
}

#[test]
fn parquet_input_works_including_another_splits_default_outputs() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(100)).pipeline(
        r#"
stages:
  first:
    uses: split
    inputs: {table: data/rows.csv}
    with: {ratios: {train: 0.5, test: 0.5}}
  second:
    uses: split
    inputs: {table: "${{ stages.first.outputs.train }}"}
    with: {method: stratified, label: y, ratios: {train: 0.6, val: 0.2, test: 0.2}}
"#,
    );
    ws.run(&[]).assert_ok();
    let s = summary(&ws, "out/sluice/second/summary.json");
    assert_eq!(s["rows"], 50);
    assert_eq!(s["input"], "out/sluice/first/train.parquet");
    // Column types survive the round trip through Parquet.
    let file = std::fs::File::open(ws.path("out/sluice/second/test.parquet")).unwrap();
    let schema = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .schema()
        .clone();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(types, ["Int64", "Float64", "Utf8", "Utf8", "Int64"]);
    // The second split keeps the first one's row ids: they still point into data/rows.csv.
    assert_eq!(
        values(&ws, "out/sluice/second/test.parquet", "sluice_row"),
        values(&ws, "out/sluice/second/test.parquet", "id")
    );
}

#[test]
fn each_split_row_carries_its_row_number_in_the_input_table() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(60)).pipeline(
        "stages:\n  s: {uses: split, inputs: {table: data/rows.csv}, with: {method: stratified, label: y, seed: 5, ratios: {train: 0.6, val: 0.2, test: 0.2}}}\n",
    );
    ws.run(&[]).assert_ok();
    let mut seen = Vec::new();
    for part in ["train", "val", "test"] {
        let rel = format!("out/sluice/s/{part}.parquet");
        // `id` is the row's number in rows.csv, so the id column must repeat it.
        let ids = values(&ws, &rel, "sluice_row");
        assert_eq!(ids, values(&ws, &rel, "id"), "{part}");
        seen.extend(ids.into_iter().map(|i| i.parse::<usize>().unwrap()));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
}

fn failing(csv: &str, with: &str) -> (Ws, String) {
    let ws = Ws::new();
    ws.write("data/rows.csv", csv).pipeline(&format!(
        "stages:\n  s: {{uses: split, inputs: {{table: data/rows.csv}}, with: {with}}}\n"
    ));
    let r = ws.run(&[]);
    let message = r.failure("s");
    assert_no_outputs(&ws, "out/sluice/s");
    (ws, message)
}

#[test]
fn a_malformed_csv_row_is_named_by_file_and_line() {
    let mut csv = rows_csv(8);
    csv.push_str("8,1.5\n");
    let (_, m) = failing(&csv, "{ratios: {train: 0.5, test: 0.5}}");
    assert_eq!(m, "`data/rows.csv` line 10: expected 4 fields, found 2");
}

#[test]
fn an_unknown_column_lists_the_columns_there_are() {
    let (_, m) = failing(
        &rows_csv(30),
        "{method: stratified, label: Y, ratios: {train: 0.5, test: 0.5}}",
    );
    assert_eq!(
        m,
        "`data/rows.csv` has no column `Y`\n  = help: its columns are `id`, `x`, `y`, `g`"
    );
    let (_, m) = failing(
        &rows_csv(30),
        "{method: grouped, group: gg, ratios: {train: 0.5, test: 0.5}}",
    );
    assert!(m.contains("has no column `gg`; did you mean `g`?"), "{m}");
}

/// The terminal shows a stage's hint once, under its message, as diagnostics show their help;
/// `--json` carries it in its own field, apart from the message.
#[test]
fn a_failed_stage_shows_its_hint_once_as_help() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(3)).pipeline(
        "stages:\n  s: {uses: split, inputs: {table: data/rows.csv}, with: {ratios: {train: 0.8, val: 0.1, test: 0.1}}}\n",
    );
    let r = ws.sluice(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let message = "`data/rows.csv`: the val split is empty: 3 rows × 0.1 rounds to 0";
    let help = "  = help: use more data or a larger ratio";
    assert!(
        r.stderr.contains(&format!(
            "FAILED s: {message}\n{help}\n  last lines of its log:"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.matches("use more data").count(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains("hint:"), "{}", r.stderr);

    let r = ws.run(&[]);
    let event = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "s")
        .unwrap();
    assert_eq!(event["message"], message);
    assert_eq!(event["hint"], "use more data or a larger ratio");
}

#[test]
fn an_empty_split_is_an_error() {
    let (_, m) = failing(&rows_csv(3), "{ratios: {train: 0.8, val: 0.1, test: 0.1}}");
    assert_eq!(
        m,
        "`data/rows.csv`: the val split is empty: 3 rows × 0.1 rounds to 0\n  = help: use more data or a larger ratio"
    );
    let (_, m) = failing("id,x\n", "{ratios: {train: 0.5, test: 0.5}}");
    assert_eq!(
        m,
        "`data/rows.csv`: nothing to split: the table has no rows"
    );
}

#[test]
fn a_class_too_small_to_stratify_is_named() {
    let csv = "id,y\n1,a\n2,a\n3,a\n4,b\n5,b\n6,a\n";
    let (_, m) = failing(
        csv,
        "{method: stratified, label: y, ratios: {train: 0.6, val: 0.2, test: 0.2}}",
    );
    assert!(
        m.starts_with("`data/rows.csv`: class `b` of column `y` has 2 row(s), too few to stratify into 3 splits"),
        "{m}"
    );
}

#[test]
fn other_file_types_are_refused() {
    let ws = Ws::new();
    ws.write("data/rows.tsv", "id\tx\n1\t2\n").pipeline(
        "stages:\n  s: {uses: split, inputs: {table: data/rows.tsv}, with: {ratios: {train: 0.5, test: 0.5}}}\n",
    );
    let m = ws.run(&[]).failure("s");
    assert!(
        m.starts_with("`data/rows.tsv` is neither a CSV nor a Parquet file"),
        "{m}"
    );
}

#[test]
fn a_failed_rerun_leaves_nothing_of_the_previous_outputs() {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(20)).pipeline(
        "stages:\n  s: {uses: split, inputs: {table: data/rows.csv}, with: {ratios: {train: 0.5, test: 0.5}}}\n",
    );
    ws.run(&[]).assert_ok();
    assert!(ws.exists("out/sluice/s/train.parquet"));
    ws.write("data/rows.csv", "id,x\n1,2\n3\n");
    let m = ws.run(&[]).failure("s");
    assert_eq!(m, "`data/rows.csv` line 3: expected 2 fields, found 1");
    assert_no_outputs(&ws, "out/sluice/s");
}

/// Config problems are found before anything runs: exit code 2, `file:line:col`, a help line.
fn config_error(with: &str) -> String {
    let ws = Ws::new();
    ws.write("data/rows.csv", &rows_csv(10)).pipeline(&format!(
        "stages:\n  s:\n    uses: split\n    inputs: {{table: data/rows.csv}}\n    with: {with}\n"
    ));
    let r = ws.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.started().is_empty());
    assert!(!ws.exists("out"));
    r.stderr
}

#[test]
fn ratios_that_do_not_sum_to_one_are_a_config_error() {
    let e = config_error("{ratios: {train: 0.7, val: 0.2, test: 0.2}}");
    assert!(
        e.contains("stage `s`: the ratios sum to 1.1, not 1") && e.contains("sluice.yaml:5:20"),
        "{e}"
    );
}

#[test]
fn unknown_options_and_methods_get_suggestions() {
    let e = config_error("{ratios: {train: 0.5, test: 0.5}, method: stratifid, lable: y}");
    assert!(e.contains("unknown method `stratifid`"), "{e}");
    assert!(e.contains("did you mean `stratified`?"), "{e}");
    assert!(e.contains("unknown option `lable`"), "{e}");
    assert!(e.contains("did you mean `label`?"), "{e}");
    assert!(e.contains("sluice.yaml:5:"), "{e}");
}

#[test]
fn each_method_demands_its_column() {
    let e = config_error("{ratios: {train: 0.5, test: 0.5}, method: stratified}");
    assert!(
        e.contains("`method: stratified` needs a `label` column"),
        "{e}"
    );
    let e = config_error("{ratios: {train: 0.5, test: 0.5}, method: grouped}");
    assert!(
        e.contains("`method: grouped` needs a `group` column"),
        "{e}"
    );
    let e = config_error("{ratios: {train: 0.5, test: 0.5}, seed: 1.5}");
    assert!(e.contains("`seed` must be a whole number"), "{e}");
}

#[test]
fn the_iris_pipeline_runs_and_is_then_up_to_date() {
    let ws = iris_ws();
    let yaml = std::fs::read_to_string(repo().join("pipelines/iris.yaml"))
        .unwrap()
        .replace("examples/data/iris.csv", "data/iris.csv");
    ws.write("pipelines/iris.yaml", &yaml);
    // Up to normalize: tests/train.rs runs the training stage.
    ws.run(&["pipelines/iris.yaml", "normalize"]).assert_ok();
    let s = summary(&ws, "out/iris/split.json");
    assert_eq!(s["seed"], 42);
    // clean dropped the one duplicate row: 149 rows, 35 + 35 + 34 in train.
    let report = summary(&ws, "out/iris/clean.json");
    assert_eq!(report["rows_out"], 149);
    assert_eq!(s["splits"]["train"]["rows"], 104);
    // normalize: four z-scored features, three classes, one `.npy` pair per split.
    let preprocess = summary(&ws, "out/iris/preprocess.json");
    assert_eq!(preprocess["features"].as_array().unwrap().len(), 4);
    assert_eq!(preprocess["label"]["classes"].as_array().unwrap().len(), 3);
    for split in ["train", "val", "test"] {
        for file in ["features.npy", "labels.npy"] {
            assert!(ws.exists(&format!("out/iris/normalized/{split}/{file}")));
        }
    }
    let again = ws.run(&["pipelines/iris.yaml", "normalize"]);
    again.assert_ok();
    assert_eq!(again.outcomes()["clean"], "up_to_date");
    assert_eq!(again.outcomes()["split"], "up_to_date");
    assert_eq!(again.outcomes()["normalize"], "up_to_date");
}
