//! `sluice metrics [PIPELINE] [--json] [--diff]`: the latest figures of every `evaluate` stage,
//! read from their `metrics` outputs; `--diff` puts each next to the previous different
//! evaluation, which the stage appends to `.sluice/metrics/<pipeline>/<stage>.jsonl`.

use serde_json::{json, Map, Value};
use sluice_runner::{Pipeline, StageKind};

/// One evaluate stage's figures: `None` when it has not run yet.
struct Entry {
    stage: String,
    file: String,
    current: Option<Map<String, Value>>,
    previous: Option<Map<String, Value>>,
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
        let current = std::fs::read_to_string(output.path.to_abs(&pipeline.root))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["metrics"].as_object().cloned());
        let history =
            sluice_stages::evaluate::history_path(&pipeline.root, &pipeline.name, &stage.id.0);
        let previous = std::fs::read_to_string(history).ok().and_then(|text| {
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["metrics"].as_object().cloned())
                .find(|m| Some(m) != current.as_ref())
        });
        out.push(Entry {
            stage: stage.id.0.clone(),
            file: output.path.to_string(),
            current,
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
            let mut v = json!({"file": e.file, "metrics": e.current});
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
