//! Tests that each kind's `with:` schema and its parser agree both ways: every example in the
//! schema passes `prepare()`; every key the schema lists is accepted and every other key refused;
//! and for a spread of probe values at each option (wrong types, range edges, each enum name),
//! the schema accepts the value exactly when the parser does with some example around it.

use serde_json::{json, Map, Value};
use sluice_runner::stage::ConfigProblem;
use sluice_runner::Stage;

/// Options whose parser rules go past what a schema says, so probing them one at a time is
/// meaningless: split's three fractions must also sum to 1, clean's filter is an expression
/// with a grammar of its own, and a cnn's kernel must be odd.
const UNPROBED: &[(&str, &str)] = &[
    ("clean", "filter"),
    // Odd, which JSON Schema draft 7 can say only with `not`, which editors show poorly.
    ("train", "model.kernel"),
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

/// An option the schema declares: its path, its schema, and the schema of the mapping it sits
/// in (one branch of an `anyOf` where the mapping's options depend on its `type`).
struct Declared {
    path: Vec<String>,
    schema: Value,
    parent: Value,
}

/// Every option the schema declares, in nested mappings and in each branch of an `anyOf`.
fn declared(schema: &Value, prefix: &[String], out: &mut Vec<Declared>) {
    for branch in schema
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        declared(branch, prefix, out);
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, sub) in props {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        out.push(Declared {
            path: path.clone(),
            schema: sub.clone(),
            parent: schema.clone(),
        });
        declared(sub, &path, out);
    }
}

/// A closed mapping the schema declares: its path, its schema, and the keys that would switch
/// it to a sibling shape (another branch of the same `anyOf`).
struct Closed {
    path: Vec<String>,
    schema: Value,
    switches: Vec<String>,
}

fn closed(schema: &Value, path: &[String], switches: Vec<String>, out: &mut Vec<Closed>) {
    let keys = |b: &Value| -> Vec<String> {
        b.get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        for (i, branch) in branches.iter().enumerate() {
            let others = branches
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, b)| keys(b))
                .collect();
            closed(branch, path, others, out);
        }
    }
    if schema.get("additionalProperties") == Some(&json!(false)) {
        out.push(Closed {
            path: path.to_vec(),
            schema: schema.clone(),
            switches,
        });
    }
    for (key, sub) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut inner = path.to_vec();
        inner.push(key.clone());
        closed(sub, &inner, Vec::new(), out);
    }
}

/// The mapping at `path` in `with`, when there is one and it has the shape `schema` says.
fn mapping_at(with: &Value, path: &[String], schema: &Value) -> bool {
    path.iter()
        .try_fold(with, |v, key| v.get(key.as_str()))
        .is_some_and(|m| m.is_object() && valid(schema, m))
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

/// The problems `stage`'s `prepare` finds in `with`.
fn refusals(stage: &dyn Stage, with: &Value) -> Vec<ConfigProblem> {
    stage.prepare(with).err().unwrap_or_default()
}

fn accepts(stage: &dyn Stage, with: &Value) -> bool {
    refusals(stage, with).is_empty()
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
            "explain",
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
                refusals(&*stage, &e)
            );
        }
    }
}

#[test]
fn keys_outside_the_schema_are_refused_at_every_level() {
    let all = kinds();
    let mut names: Vec<String> = vec!["zzz".into()];
    for (_, _, schema) in &all {
        let mut options = Vec::new();
        declared(schema, &[], &mut options);
        names.extend(options.into_iter().map(|o| o.path.last().unwrap().clone()));
    }
    for (kind, stage, schema) in &all {
        let mut objects = Vec::new();
        closed(
            schema,
            &[],
            other_modes_keys(&all, kind, schema),
            &mut objects,
        );
        for object in objects {
            let examples: Vec<Value> = examples(kind, schema)
                .into_iter()
                .filter(|e| mapping_at(e, &object.path, &object.schema))
                .collect();
            assert!(
                !examples.is_empty(),
                "no example of `{kind}` has the mapping at `{}` in this shape",
                object.path.join(".")
            );
            for name in &names {
                if object.schema["properties"].get(name.as_str()).is_some()
                    || object.switches.contains(name)
                {
                    continue;
                }
                let mut path = object.path.clone();
                path.push(name.clone());
                for example in &examples {
                    let with = with_value(example, &path, json!(1)).unwrap();
                    assert!(!valid(schema, &with), "`{kind}`'s schema takes {with}");
                    let problems = refusals(&**stage, &with);
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
        let mut options = Vec::new();
        declared(&schema, &[], &mut options);
        for option in options {
            let dotted = option.path.join(".");
            if UNPROBED.contains(&(kind, dotted.as_str())) {
                continue;
            }
            assert!(
                option.schema.get("description").is_some() || option.path.len() > 1,
                "`{kind}`'s `{dotted}` has no description"
            );
            let parent_path = &option.path[..option.path.len() - 1];
            let examples: Vec<Value> = examples(kind, &schema)
                .into_iter()
                .filter(|e| mapping_at(e, parent_path, &option.parent))
                .collect();
            assert!(
                !examples.is_empty(),
                "no example of `{kind}` holds `{dotted}`'s mapping"
            );
            for probe in probes(&option.schema) {
                let withs: Vec<Value> = examples
                    .iter()
                    .map(|e| with_value(e, &option.path, probe.clone()).unwrap())
                    .collect();
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
                    refusals(&*stage, &withs[0]),
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
