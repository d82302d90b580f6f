//! The evaluation history `sluice metrics` reads: one JSON line per evaluation that ran, its
//! figures and, when it failed its gate, the bars it missed.

use serde_json::{json, Value};
use sluice_runner::StageContext;
use std::path::Path;

/// Where `sluice metrics --diff` finds earlier results: one JSON line per evaluation that ran,
/// under `.sluice/metrics/<pipeline>/<stage>.jsonl`.
pub fn history_path(workspace: &Path, pipeline: &str, stage: &str) -> std::path::PathBuf {
    workspace
        .join(".sluice")
        .join("metrics")
        .join(pipeline)
        .join(format!("{stage}.jsonl"))
}

/// Appends this evaluation to the history, with the bars it `missed` (a line for each) when it
/// failed its gate. Best effort: losing a line only loses a comparison or a failed figure.
pub(super) fn remember(ctx: &StageContext<'_>, metrics: &Value, missed: &[String]) {
    use std::io::Write;
    let path = history_path(&ctx.workspace, ctx.pipeline, ctx.stage);
    let mut line = json!({"key": ctx.key, "metrics": metrics});
    if !missed.is_empty() {
        line["missed"] = json!(missed);
    }
    let line = line.to_string() + "\n";
    let _ = std::fs::create_dir_all(path.parent().expect("has a parent"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        // One write of one line: appends from concurrent runs do not interleave.
        let _ = f.write_all(line.as_bytes());
    }
}
