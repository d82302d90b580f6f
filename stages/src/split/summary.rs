//! The `summary` output of `split`: what was asked for and what came out, as JSON.
//!
//! Sizes, fractions and (when a `label` is set) class counts per split, so that a reviewer can
//! check a split without opening the Parquet files. Maps are sorted by key, so the same split
//! always gives the same bytes.

use super::assign::Assignment;
use super::config::SplitConfig;
use super::Part;
use crate::table::Coded;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Rounds to six decimals: enough to read a fraction, few enough to read it at a glance.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub(crate) fn build(
    config: &SplitConfig,
    input: &str,
    assigned: &Assignment,
    labels: Option<&Coded>,
    groups: Option<&Coded>,
) -> Value {
    let total: usize = Part::ALL.iter().map(|&p| assigned.rows(p).len()).sum();
    let mut splits = Map::new();
    for part in Part::ALL {
        let rows = assigned.rows(part);
        let mut s = Map::new();
        s.insert("rows".into(), json!(rows.len()));
        s.insert(
            "fraction".into(),
            json!(round6(rows.len() as f64 / total.max(1) as f64)),
        );
        // Counted by code, then named: classes absent from the split are not listed.
        if let Some(labels) = labels {
            let mut counts = vec![0usize; labels.names.len()];
            for &row in rows {
                counts[labels.codes[row] as usize] += 1;
            }
            let classes: BTreeMap<&str, usize> = labels
                .names
                .iter()
                .map(String::as_str)
                .zip(counts)
                .filter(|&(_, n)| n > 0)
                .collect();
            s.insert("classes".into(), json!(classes));
        }
        if let Some(groups) = groups {
            let mut seen = vec![false; groups.names.len()];
            for &row in rows {
                seen[groups.codes[row] as usize] = true;
            }
            s.insert("groups".into(), json!(seen.iter().filter(|&&s| s).count()));
        }
        if rows.is_empty() {
            s.insert(
                "note".into(),
                json!("ratio 0: the file holds the schema and no rows"),
            );
        }
        splits.insert(part.name().into(), Value::Object(s));
    }
    let mut out = Map::new();
    out.insert("input".into(), json!(input));
    out.insert("rows".into(), json!(total));
    out.insert("method".into(), json!(config.method.name()));
    out.insert("seed".into(), json!(config.seed));
    out.insert(
        "ratios".into(),
        json!(Part::ALL
            .iter()
            .map(|&p| (p.name(), config.ratios.get(p)))
            .collect::<BTreeMap<_, _>>()),
    );
    if let Some(label) = &config.label {
        out.insert("label".into(), json!(label));
    }
    if let Some(group) = &config.group {
        out.insert("group".into(), json!(group));
    }
    out.insert("splits".into(), Value::Object(splits));
    Value::Object(out)
}
