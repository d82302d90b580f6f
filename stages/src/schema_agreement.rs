//! Tests that each kind's `with:` schema and its parser agree both ways: every example in the
//! schema passes `check()`; every key the schema lists is accepted and every other key refused;
//! and for a spread of probe values at each option (wrong types, range edges, each enum name),
//! the schema accepts the value exactly when the parser does with some example around it.

use serde_json::{json, Map, Value};
use sluice_runner::Stage;

/// Options whose parser rules go past what a schema says, so probing them one at a time is
/// meaningless: split's three fractions must also sum to 1, and clean's filter is an expression
/// with a grammar of its own.
const UNPROBED: &[(&str, &str)] = &[
    ("clean", "filter"),
    ("split", "ratios.train"),
    ("split", "ratios.val"),
    ("split", "ratios.test"),
];

/// A validator for the part of JSON Schema the kinds' schemas use.
fn valid(schema: &Value, v: &Value) -> bool {
    let s = match schema.as_object() {
        Some(s) => s,
        None => return schema.as_bool().unwrap_or(true),
    };
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            t => vec![t.as_str().unwrap()],
        };
        let is = |t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            other => panic!("type {other} is not handled here"),
        };
        if !types.into_iter().any(is) {
            return false;
        }
    }
    if let Some(e) = s.get("enum") {
        if !e.as_array().unwrap().contains(v) {
            return false;
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return false;
        }
    }
    if let Some(x) = v.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if num("minimum").is_some_and(|m| x < m)
            || num("maximum").is_some_and(|m| x > m)
            || num("exclusiveMinimum").is_some_and(|m| x <= m)
            || num("exclusiveMaximum").is_some_and(|m| x >= m)
        {
            return false;
        }
    }
    if let Some(text) = v.as_str() {
        let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        if (text.chars().count() as u64) < min {
            return false;
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            if !regex::Regex::new(p).unwrap().is_match(text) {
                return false;
            }
        }
    }
    if let Some(items) = v.as_array() {
        let count = items.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| count < m)
            || s.get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| count > m)
        {
            return false;
        }
        if let Some(item) = s.get("items") {
            if !items.iter().all(|i| valid(item, i)) {
                return false;
            }
        }
    }
    if let Some(map) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for (k, x) in map {
            let ok = match props.and_then(|p| p.get(k)) {
                Some(p) => valid(p, x),
                None => s.get("additionalProperties").is_none_or(|a| valid(a, x)),
            };
            if !ok {
                return false;
            }
        }
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            if !req.iter().all(|r| map.contains_key(r.as_str().unwrap())) {
                return false;
            }
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|a| valid(a, v)) {
            return false;
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        if one.iter().filter(|a| valid(a, v)).count() != 1 {
            return false;
        }
    }
    true
}

/// The schema of the option at `path`, through nested `properties`.
fn at<'a>(schema: &'a Value, path: &[String]) -> &'a Value {
    path.iter()
        .fold(schema, |s, key| &s["properties"][key.as_str()])
}

/// Every option path the schema declares, nested mappings included.
fn paths(schema: &Value, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, sub) in props {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        out.push(path.clone());
        paths(sub, &path, out);
    }
}

/// `with` with the value at `path` set to `v`, when the mapping it goes in exists.
fn with_value(with: &Value, path: &[String], v: Value) -> Option<Value> {
    let mut out = with.clone();
    let (last, parents) = path.split_last().unwrap();
    let mut slot = &mut out;
    for key in parents {
        slot = slot.get_mut(key.as_str())?;
    }
    slot.as_object_mut()?.insert(last.clone(), v);
    Some(out)
}

/// Values to try at an option: every type, the edges of its range, each of its names.
fn probes(schema: &Value) -> Vec<Value> {
    let mut out = vec![
        json!(null),
        json!(true),
        json!(false),
        json!(-1),
        json!(0),
        json!(1),
        json!(2),
        json!(0.5),
        json!(12345.5),
        json!(""),
        json!("zzz"),
        json!([]),
        json!([1]),
        json!(["zzz"]),
        json!({}),
        json!({"zzz": 1}),
    ];
    for key in ["minimum", "maximum", "exclusiveMinimum"] {
        if let Some(x) = schema.get(key).and_then(Value::as_f64) {
            out.extend([json!(x), json!(x - 0.5), json!(x + 0.5)]);
            if x >= 1.0 && x.fract() == 0.0 {
                out.extend([json!(x as u64), json!(x as u64 - 1), json!(x as u64 + 1)]);
            }
        }
    }
    for key in ["enum", "examples"] {
        if let Some(values) = schema.get(key).and_then(Value::as_array) {
            out.extend(values.iter().cloned());
        }
    }
    if let Some(d) = schema.get("default") {
        out.push(d.clone());
    }
    out
}

fn accepts(stage: &dyn Stage, with: &Value) -> bool {
    stage.check(with).is_empty()
}

/// Each kind with a schema, once per mode: a schema that is `anyOf` modes (images or tables,
/// told apart by the options written) is tested one mode at a time.
fn kinds() -> Vec<(&'static str, std::sync::Arc<dyn Stage>, Value)> {
    let registry = crate::registry();
    let mut out = Vec::new();
    for kind in registry.names() {
        let stage = registry.get(kind).unwrap().clone();
        let Some(schema) = stage.with_schema() else {
            continue;
        };
        match schema.get("anyOf").and_then(Value::as_array) {
            Some(modes) => out.extend(modes.iter().map(|m| (kind, stage.clone(), m.clone()))),
            None => out.push((kind, stage, schema)),
        }
    }
    out
}

/// The options of the other modes of `kind`: writing one switches modes, so it is no unknown
/// option of this one.
fn other_modes_keys(
    all: &[(&str, std::sync::Arc<dyn Stage>, Value)],
    kind: &str,
    schema: &Value,
) -> Vec<String> {
    all.iter()
        .filter(|(k, _, s)| *k == kind && s != schema)
        .flat_map(|(_, _, s)| s["properties"].as_object().unwrap().keys().cloned())
        .collect()
}

fn examples(kind: &str, schema: &Value) -> Vec<Value> {
    let examples = schema["examples"].as_array().cloned().unwrap_or_default();
    assert!(!examples.is_empty(), "`{kind}`'s schema has no examples");
    examples
}

#[test]
fn the_kinds_that_declare_a_schema() {
    let names: Vec<&str> = kinds().iter().map(|(k, _, _)| *k).collect();
    assert_eq!(
        names,
        [
            "clean",
            "clean",
            "deploy",
            "evaluate",
            "normalize",
            "normalize",
            "split",
            "train"
        ]
    );
}

#[test]
fn every_example_is_valid_and_accepted() {
    for (kind, stage, schema) in kinds() {
        for e in examples(kind, &schema) {
            assert!(
                valid(&schema, &e),
                "`{kind}`'s schema refuses its example {e}"
            );
            assert!(
                accepts(&*stage, &e),
                "`{kind}` refuses its schema's example {e}: {:?}",
                stage.check(&e)
            );
        }
    }
}

#[test]
fn keys_outside_the_schema_are_refused_at_every_level() {
    let all = kinds();
    let mut names: Vec<String> = vec!["zzz".into()];
    for (_, _, schema) in &all {
        let mut p = Vec::new();
        paths(schema, &[], &mut p);
        names.extend(p.into_iter().map(|p| p.last().unwrap().clone()));
    }
    for (kind, stage, schema) in &all {
        let mut objects: Vec<Vec<String>> = vec![vec![]];
        paths(schema, &[], &mut objects);
        let switches = other_modes_keys(&all, kind, schema);
        for example in examples(kind, schema) {
            for parent in &objects {
                let sub = at(schema, parent);
                if sub.get("additionalProperties") != Some(&json!(false)) {
                    continue;
                }
                for name in &names {
                    if sub["properties"].get(name.as_str()).is_some()
                        || (parent.is_empty() && switches.contains(name))
                    {
                        continue;
                    }
                    let mut path = parent.clone();
                    path.push(name.clone());
                    let Some(with) = with_value(&example, &path, json!(1)) else {
                        continue;
                    };
                    assert!(!valid(schema, &with), "`{kind}`'s schema takes {with}");
                    let problems = stage.check(&with);
                    assert!(
                        // A nested mapping's keys may be names (a split, a metric) rather
                        // than options: the caret then points at the value.
                        problems
                            .iter()
                            .any(|p| p.path == path && (p.at_key || path.len() > 1)),
                        "`{kind}` does not refuse `{}` in {with}: {problems:?}",
                        path.join(".")
                    );
                }
            }
        }
    }
}

#[test]
fn schema_and_parser_accept_the_same_values() {
    for (kind, stage, schema) in kinds() {
        let examples = examples(kind, &schema);
        let mut options = Vec::new();
        paths(&schema, &[], &mut options);
        for path in options {
            let dotted = path.join(".");
            if UNPROBED.contains(&(kind, dotted.as_str())) {
                continue;
            }
            let sub = at(&schema, &path);
            assert!(
                sub.get("description").is_some() || path.len() > 1,
                "`{kind}`'s `{dotted}` has no description"
            );
            for probe in probes(sub) {
                let withs: Vec<Value> = examples
                    .iter()
                    .filter_map(|e| with_value(e, &path, probe.clone()))
                    .collect();
                assert!(
                    !withs.is_empty(),
                    "no example of `{kind}` holds `{dotted}`'s mapping"
                );
                let by_schema = valid(&schema, &withs[0]);
                assert!(
                    withs.iter().all(|w| valid(&schema, w) == by_schema),
                    "the examples disagree on `{dotted}: {probe}`"
                );
                let by_parser = withs.iter().any(|w| accepts(&*stage, w));
                assert_eq!(
                    by_schema,
                    by_parser,
                    "`{kind}` `{dotted}: {probe}`: the schema {} it, the parser {} it ({:?})",
                    if by_schema { "accepts" } else { "refuses" },
                    if by_parser { "accepts" } else { "refuses" },
                    stage.check(&withs[0]),
                );
            }
        }
    }
}

#[test]
fn required_options_are_required_by_both() {
    for (kind, stage, schema) in kinds() {
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for e in examples(kind, &schema) {
            for key in &required {
                let mut without: Map<String, Value> = e.as_object().unwrap().clone();
                without.remove(key.as_str().unwrap());
                let without = Value::Object(without);
                assert!(!valid(&schema, &without));
                assert!(!accepts(&*stage, &without), "`{kind}` takes {without}");
            }
        }
    }
}
