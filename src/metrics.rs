//! `sluice metrics [PIPELINE] [--json] [--diff]`: the latest figures of every `evaluate` stage,
//! read from their `metrics` outputs; `--diff` puts each next to the previous different
//! evaluation, which the stage appends to `.sluice/metrics/<pipeline>/<stage>.jsonl`. A stage
//! that failed its `require:` gate keeps no `metrics` output, so its figures are the history's
//! last line, shown with the bars they missed.

use serde_json::{json, Map, Value};
use sluice_runner::{Pipeline, StageKind};

/// One evaluate stage's figures: `None` when it has not run yet.
struct Entry {
    stage: String,
    file: String,
    current: Option<Map<String, Value>>,
    /// The bars the current figures missed; empty unless the last evaluation failed its gate.
    missed: Vec<String>,
    previous: Option<Map<String, Value>>,
}

/// The last evaluation in the history, when it failed its gate: its figures and missed bars.
fn failed_last(history: &str) -> Option<(Map<String, Value>, Vec<String>)> {
    let last: Value = history
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())?;
    let missed: Vec<String> = last["missed"]
        .as_array()?
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    Some((last["metrics"].as_object()?.clone(), missed))
}

fn entries(pipeline: &Pipeline) -> Vec<Entry> {
    let mut out = Vec::new();
    for stage in &pipeline.stages {
        if !matches!(&stage.kind, StageKind::Builtin { name, .. } if name == "evaluate") {
            continue;
        }
        let Some(output) = stage.outputs.iter().find(|o| o.name == "metrics") else {
            continue;
        };
        let history =
            sluice_stages::evaluate::history_path(&pipeline.root, &pipeline.name, &stage.id.0);
        let history = std::fs::read_to_string(history).unwrap_or_default();
        let mut missed = Vec::new();
        // The output is the last passing evaluation (run or restored); only without it is a
        // failed one the latest.
        let current = match std::fs::read_to_string(output.path.to_abs(&pipeline.root)) {
            Ok(t) => serde_json::from_str::<Value>(&t)
                .ok()
                .and_then(|v| v["metrics"].as_object().cloned()),
            Err(_) => failed_last(&history).map(|(m, why)| {
                missed = why;
                m
            }),
        };
        let previous = history
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["metrics"].as_object().cloned())
            .find(|m| Some(m) != current.as_ref());
        out.push(Entry {
            stage: stage.id.0.clone(),
            file: output.path.to_string(),
            current,
            missed,
            previous,
        });
    }
    out
}

/// Prints the figures; `Ok(false)` when the pipeline has no evaluate stage.
pub fn print(pipeline: &Pipeline, as_json: bool, diff: bool) -> bool {
    let entries = entries(pipeline);
    if as_json {
        let mut doc = Map::new();
        for e in &entries {
            let mut v = json!({
                "file": e.file,
                "metrics": e.current,
                "failed_gate": !e.missed.is_empty(),
                "missed": e.missed,
            });
            if diff {
                v["previous"] = json!(e.previous);
            }
            doc.insert(e.stage.clone(), v);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(doc)).expect("json")
        );
        return !entries.is_empty();
    }
    for e in &entries {
        println!("{} ({})", e.stage, e.file);
        let Some(current) = &e.current else {
            println!(
                "  not evaluated yet: run `sluice run {}`",
                pipeline.display_file
            );
            continue;
        };
        if !e.missed.is_empty() {
            println!(
                "  failed its gate, so `{}` was not written: {}",
                e.file,
                e.missed.join("; ")
            );
        }
        let width = current.keys().map(String::len).max().unwrap_or(6);
        for (name, value) in current {
            let v = value.as_f64().unwrap_or(f64::NAN);
            let was = e
                .previous
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(Value::as_f64);
            match (diff, was) {
                (true, Some(w)) if w != v => {
                    println!("  {name:<width$}  {v:>10.4}  was {w:.4} ({:+.4})", v - w)
                }
                (true, Some(_)) => println!("  {name:<width$}  {v:>10.4}  unchanged"),
                (true, None) => println!("  {name:<width$}  {v:>10.4}  (no earlier evaluation)"),
                (false, _) => println!("  {name:<width$}  {v:>10.4}"),
            }
        }
    }
    !entries.is_empty()
}
