//! Entry points for fuzzing: the parsers that read text a user (or anyone who can write a
//! pipeline file) controls, each run the way sluice runs it, with its errors rendered as the user
//! would see them. The `fuzz/` crate (`cargo fuzz`, long runs) and `tests/fuzz.rs` (short,
//! seeded runs in CI) call these; nothing else does.
//!
//! Each returns `Err(message)` for input sluice rejects, which is the expected outcome for most
//! fuzz inputs; what a fuzzer looks for is a panic, a stack overflow or a hang instead.

use crate::clean::expr::Expr;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use sluice_runner::{LoadOptions, StageRegistry};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Loads `yaml` as the pipeline file `sluice.yaml` of the workspace `root` (canonical, and
/// writable: the file is written there), with every built-in stage kind registered, as
/// `sluice run` loads it; an invalid pipeline's error is rendered with its source lines.
pub fn pipeline(yaml: &[u8], root: &Path) -> Result<(), String> {
    static REGISTRY: OnceLock<StageRegistry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(crate::registry);
    let file = root.join("sluice.yaml");
    std::fs::write(&file, yaml).map_err(|e| format!("cannot write the input: {e}"))?;
    sluice_runner::load(&LoadOptions {
        root,
        file: &file,
        display: "sluice.yaml".into(),
        overrides: &[],
        registry,
        sweep: None,
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Parses a string that may hold `${{ }}` expressions, as every string of a pipeline is parsed.
pub fn template(text: &str) -> Result<(), String> {
    sluice_runner::spec::template::parse(text).map(|_| ())
}

/// Parses a `clean` `filter:` expression and, when it parses, evaluates it on a small table with
/// a number column `x`, a text column `city`, a boolean `ok` and an integer `n` (so that column
/// look-up and type checks run too).
pub fn filter_expr(text: &str) -> Result<(), String> {
    let expr = Expr::parse(text).map_err(|e| format!("`filter`: {e}"))?;
    let _ = expr.columns();
    static TABLE: OnceLock<RecordBatch> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "x",
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-3.0)])),
            ),
            (
                "city",
                Arc::new(StringArray::from(vec![Some("NL"), Some("a b"), None])),
            ),
            ("ok", Arc::new(BooleanArray::from(vec![true, false, true]))),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ];
        RecordBatch::try_from_iter(columns).expect("columns of one length")
    });
    expr.eval(table).map(|_| ()).map_err(|e| e.to_string())
}
