//! The built-in `clean` stage, run through the real binary: each rule on a small hand-made table
//! with its exact output and report, the Iris duplicate, and bad input, which must fail with a
//! message naming the file and leave no outputs.

mod common;
use common::*;

use arrow::array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::PathBuf;

/// Every column of a Parquet file as `name: v1,v2,...`, missing values as `-`.
fn table(ws: &Ws, rel: &str) -> Vec<String> {
    let file = std::fs::File::open(ws.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder.build().unwrap().map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&schema, &batches).unwrap();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let col = batch.column(i);
            let fmt =
                arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &Default::default())
                    .unwrap();
            let values: Vec<String> = (0..col.len())
                .map(|r| {
                    if col.is_null(r) {
                        "-".into()
                    } else {
                        fmt.value(r).to_string()
                    }
                })
                .collect();
            format!("{}:{}: {}", f.name(), f.data_type(), values.join(","))
        })
        .collect()
}

fn clean(csv: &str, with: &str) -> Ws {
    let ws = Ws::new();
    ws.write("data/rows.csv", csv).pipeline(&format!(
        "stages:\n  c:\n    uses: clean\n    inputs: {{table: data/rows.csv}}\n    with: {with}\n"
    ));
    ws.run(&[]).assert_ok();
    ws
}

fn report(ws: &Ws) -> serde_json::Value {
    serde_json::from_str(&ws.read("out/sluice/c/report.json")).unwrap()
}

const PEOPLE: &str = "id,age,city,income\n1,30,A,100\n2,,B,200\n3,40,,300\n4,50,A,\n1,30,A,100\n";

#[test]
fn missing_values_are_filled_per_column_and_dropped_by_default() {
    let ws = clean(
        PEOPLE,
        "{missing: {default: drop, columns: {age: mean, city: mode}}}",
    );
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet"),
        [
            "id:Int64: 1,2,3,1",
            "age:Int64: 30,38,40,30",
            "city:Utf8: A,B,A,A",
            "income:Int64: 100,200,300,100",
            // Each kept row's index in data/rows.csv: the row missing `income` is gone.
            "sluice_row:Int64: 0,1,2,4"
        ]
    );
    let r = report(&ws);
    assert_eq!(r["rows_in"], 5);
    assert_eq!(r["rows_out"], 4);
    assert_eq!(
        r["missing"],
        serde_json::json!({
            "age": {"dropped": 0, "filled": 1},
            "city": {"dropped": 0, "filled": 1},
            "id": {"dropped": 0, "filled": 0},
            "income": {"dropped": 1, "filled": 0}
        })
    );
}

#[test]
fn constants_median_and_duplicates() {
    let ws = clean(
        PEOPLE,
        "{missing: {columns: {age: median, city: {constant: unknown}, income: {constant: 0}}}, duplicates: drop}",
    );
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet"),
        [
            "id:Int64: 1,2,3,4",
            "age:Int64: 30,35,40,50",
            "city:Utf8: A,B,unknown,A",
            "income:Int64: 100,200,300,0",
            // The duplicate (row 4) is dropped; the row ids do not make it unique.
            "sluice_row:Int64: 0,1,2,3"
        ]
    );
    assert_eq!(report(&ws)["duplicates"]["dropped"], 1);
}

#[test]
fn drop_columns_cast_and_filter() {
    let ws = clean(
        PEOPLE,
        r#"{drop_columns: [income], cast: {id: string, age: float}, filter: "(age >= 35 or city == 'A') and not id == '4'"}"#,
    );
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet"),
        [
            "id:Utf8: 1,3,1",
            "age:Float64: 30.0,40.0,30.0",
            "city:Utf8: A,-,A",
            // The ids follow the rows the filter keeps.
            "sluice_row:Int64: 0,2,4"
        ]
    );
    let r = report(&ws);
    assert_eq!(r["filter"]["dropped"], 2);
    assert_eq!(
        r["cast"]["age"],
        serde_json::json!({"from": "Int64", "to": "float"})
    );
    assert_eq!(r["drop_columns"]["dropped"], serde_json::json!(["income"]));
}

#[test]
fn outliers_are_dropped_or_clipped() {
    let csv = "x,y\n1,a\n2,b\n3,c\n4,d\n100,e\n";
    let ws = clean(csv, "{outliers: {columns: [x], method: iqr, k: 1.5}}");
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet"),
        [
            "x:Int64: 1,2,3,4",
            "y:Utf8: a,b,c,d",
            "sluice_row:Int64: 0,1,2,3"
        ]
    );
    assert_eq!(
        report(&ws)["outliers"]["x"],
        serde_json::json!({"low": -1.0, "high": 7.0, "dropped": 1, "clipped": 0})
    );
    let ws = clean(csv, "{outliers: {columns: [x], action: clip}}");
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet")[0],
        "x:Int64: 1,2,3,4,7"
    );
    let ws = clean(
        csv,
        "{outliers: {columns: [x], method: zscore, threshold: 1.5}}",
    );
    assert_eq!(
        table(&ws, "out/sluice/c/table.parquet")[0],
        "x:Int64: 1,2,3,4"
    );
}

#[test]
fn iris_has_one_exact_duplicate_row() {
    let ws = Ws::new();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let iris = std::fs::read_to_string(repo.join("examples/data/iris.csv")).unwrap();
    ws.write("data/iris.csv", &iris).pipeline(
        "stages:\n  c: {uses: clean, inputs: {table: data/iris.csv}, with: {duplicates: drop}}\n",
    );
    ws.run(&[]).assert_ok();
    let r = report(&ws);
    assert_eq!(
        (r["rows_in"].as_u64(), r["rows_out"].as_u64()),
        (Some(150), Some(149))
    );
}

/// The failure message of stage `c`; the run must leave no outputs.
fn failing(csv: &str, with: &str) -> String {
    let ws = Ws::new();
    ws.write("data/rows.csv", csv).pipeline(&format!(
        "stages:\n  c: {{uses: clean, inputs: {{table: data/rows.csv}}, with: {with}}}\n"
    ));
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "expected a failed run\n{}", r.stderr);
    assert!(!ws.exists("out/sluice/c/table.parquet") && !ws.exists("out/sluice/c/report.json"));
    r.events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "c")
        .and_then(|e| common::failure_text(&e))
        .unwrap()
}

#[test]
fn bad_input_names_the_file_row_and_column() {
    assert_eq!(
        failing("a,b\n1,2\n3\n", "{duplicates: drop}"),
        "`data/rows.csv` line 3: expected 2 fields, found 1"
    );
    assert_eq!(
        failing(PEOPLE, "{cast: {agg: int}}"),
        "`data/rows.csv` has no column `agg`; did you mean `age`?\n  = help: its columns are `id`, `age`, `city`, `income`"
    );
    assert_eq!(
        failing(PEOPLE, "{cast: {city: int}}"),
        "`data/rows.csv` row 1: column `city` value `A` cannot be cast to int"
    );
    assert_eq!(
        failing(PEOPLE, "{missing: {columns: {city: mean}}}"),
        "`data/rows.csv`: `mean` needs a numeric column, and `city` has type Utf8"
    );
    assert_eq!(
        failing(PEOPLE, "{filter: \"city > 3\"}"),
        "`data/rows.csv`: the filter compares column `city` of type Utf8 with a number"
    );
    assert_eq!(
        failing("x,sluice_row\n1,a\n", "{}"),
        "`data/rows.csv`: column `sluice_row` holds sluice's source row ids, which are whole numbers (Int64) with none missing\n  = help: rename your column `sluice_row`: the name is reserved"
    );
}

#[test]
fn row_ids_from_an_earlier_clean_are_kept() {
    let ws = Ws::new();
    ws.write("data/rows.csv", PEOPLE).pipeline(
        "stages:\n  a: {uses: clean, inputs: {table: data/rows.csv}, with: {filter: \"not id == 2\"}}\n  b: {uses: clean, inputs: {table: \"${{ stages.a.outputs.table }}\"}, with: {duplicates: drop}}\n",
    );
    ws.run(&[]).assert_ok();
    // Rows 0, 2, 3 and 4 pass `a`; row 4 repeats row 0, so `b` keeps 0, 2 and 3 of the raw file.
    assert_eq!(
        table(&ws, "out/sluice/b/table.parquet").last().unwrap(),
        "sluice_row:Int64: 0,2,3"
    );
}

#[test]
fn config_errors_point_at_the_yaml() {
    let ws = Ws::new();
    ws.write("data/rows.csv", PEOPLE).pipeline(
        "stages:\n  c:\n    uses: clean\n    inputs: {table: data/rows.csv}\n    with: {duplicate: drop, filter: \"age >> 3\"}\n",
    );
    let r = ws.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!ws.exists("out"));
    let e = r.stderr;
    assert!(
        e.contains("unknown option `duplicate`") && e.contains("did you mean `duplicates`?"),
        "{e}"
    );
    assert!(e.contains("`filter`: expected a number, a quoted string, `true` or `false`, found `>` at position 6"), "{e}");
    // An unknown option is pointed at by its key (column 12), a bad value by the value (37).
    assert!(e.contains("sluice.yaml:5:12"), "{e}");
    assert!(e.contains("sluice.yaml:5:37"), "{e}");
}

#[test]
fn rules_fitted_on_every_row_warn_at_the_rule_and_the_run_succeeds() {
    let ws = Ws::new();
    ws.write("data/rows.csv", PEOPLE).pipeline(
        "stages:\n  c:\n    uses: clean\n    inputs: {table: data/rows.csv}\n    with:\n      missing: {default: drop, columns: {age: median, city: {constant: X}}}\n",
    );
    let warning = "stage `c`: the `median` fill of `age` is computed on every row, test rows included, so the test split leaks into training\n  --> sluice.yaml:6:47\n  |\n6 |       missing: {default: drop, columns: {age: median, city: {constant: X}}}\n  |                                               ^\n  = help: fill it from the train split instead: remove it here and give the `normalize` stage `impute: {columns: {age: median}}`; `drop` and `{constant: VALUE}` fit nothing and may stay";
    // `--json`: one warning event, before the run starts; the run still succeeds.
    let r = ws.run(&[]);
    r.assert_ok();
    let warnings: Vec<_> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "warning")
        .collect();
    assert_eq!(
        warnings,
        [serde_json::json!({"event": "warning", "message": warning})]
    );
    // In a terminal, and for `status`, once on stderr.
    for args in [&["run"][..], &["status"]] {
        let r = ws.sluice(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.matches("leaks into training").count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&format!("warning: {warning}")),
            "{args:?}: {}",
            r.stderr
        );
    }

    // Rules that fit nothing say nothing.
    ws.pipeline(
        "stages:\n  c:\n    uses: clean\n    inputs: {table: data/rows.csv}\n    with:\n      missing: {default: drop, columns: {city: {constant: X}}}\n      duplicates: drop\n      filter: \"income < 250\"\n",
    );
    let r = ws.sluice(&["status"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}
