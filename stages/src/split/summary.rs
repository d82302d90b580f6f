//! The `summary` output of `split`: what was asked for and what came out, as JSON.
//!
//! Sizes, fractions and (when a `label` is set) class counts per split, so that a reviewer can
//! check a split without opening the Parquet files. Maps are sorted by key, so the same split
//! always gives the same bytes.

use super::assign::Assignment;
use super::config::SplitConfig;
use super::Part;
use crate::table::hash::TextHash;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Rounds to six decimals: enough to read a fraction, few enough to read it at a glance.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub(crate) fn build(
    config: &SplitConfig,
    input: &str,
    assigned: &Assignment,
    labels: Option<&[&str]>,
    groups: Option<&[&str]>,
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
        // Counted by hash (a tree lookup per row costs string comparisons), then sorted.
        if let Some(labels) = labels {
            let mut classes: HashMap<&str, usize, TextHash> = HashMap::default();
            for &row in rows {
                *classes.entry(labels[row]).or_default() += 1;
            }
            s.insert(
                "classes".into(),
                json!(classes.into_iter().collect::<BTreeMap<_, _>>()),
            );
        }
        if let Some(groups) = groups {
            let distinct: HashSet<&str, TextHash> = rows.iter().map(|&r| groups[r]).collect();
            s.insert("groups".into(), json!(distinct.len()));
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
