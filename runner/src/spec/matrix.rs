//! `matrix:` stages: a stage with `matrix: {lr: [0.1, 0.01], model: [logistic, mlp]}` becomes
//! one instance per combination, named `train@lr=0.1,model=logistic` (keys in the order written,
//! values as text). Expansion happens on the raw pipeline, before validation, so every later
//! step sees instances as ordinary stages; what makes them instances is kept on the stage
//! (`base`, `bindings`) for references between instances, selection by base name and display.

use super::locate::YPath;
use super::raw::{as_map, key_str, type_name, Problems, RawPipeline, RawStage};
use super::template::{self, Piece, Ref};
use serde_json::Value as Json;
use yaml_serde::Value;

/// The most instances a pipeline may expand to (all stages together).
pub const MAX_INSTANCES: usize = 100_000;

/// The binding a sweep adds to its trials' stages; not a matrix key.
pub const TRIAL_KEY: &str = "trial";

/// Reads `matrix:`: a mapping of keys to non-empty lists of scalars whose text can be part of a
/// stage name. Problems are pushed at the key or value they are about.
pub(super) fn read(v: &Value, path: &YPath, problems: &mut Problems) -> Vec<(String, Vec<Json>)> {
    let mut out = Vec::new();
    let Some(m) = as_map(v, path, "`matrix`", problems) else {
        return out;
    };
    if m.is_empty() {
        problems.push(
            path,
            "`matrix` is empty",
            Some("give each key a list of values, e.g. `matrix: {lr: [0.1, 0.01]}`".into()),
        );
    }
    for (k, val) in m {
        let Some(key) = key_str(k, path, problems) else {
            continue;
        };
        let p = path.k(&key);
        if key == TRIAL_KEY {
            problems.push(
                &p.key_of(),
                "`trial` is reserved for sweep trials and cannot be a matrix key",
                Some("rename the key".into()),
            );
            continue;
        }
        if !is_key(&key) {
            problems.push(
                &p.key_of(),
                format!("matrix key `{key}` must use only letters, digits, `_` and `-`"),
                None,
            );
            continue;
        }
        let Value::Sequence(items) = val else {
            problems.push(
                &p,
                format!(
                    "matrix key `{key}` must be a list of values, found {}",
                    type_name(val)
                ),
                Some(format!("e.g. `{key}: [0.1, 0.01]`")),
            );
            continue;
        };
        if items.is_empty() {
            problems.push(&p, format!("matrix key `{key}` has no values"), None);
            continue;
        }
        let mut values: Vec<Json> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = p.i(i);
            let j = match item {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    serde_json::to_value(item).unwrap_or(Json::Null)
                }
                other => {
                    problems.push(
                        &at,
                        format!(
                            "a matrix value must be a string, number or boolean, found {}",
                            type_name(other)
                        ),
                        None,
                    );
                    continue;
                }
            };
            let text = value_text(&j);
            if !is_name_text(&text) {
                problems.push(
                    &at,
                    format!(
                        "matrix value `{}` cannot be part of a stage name",
                        cut(&text)
                    ),
                    Some("use letters, digits, `.`, `_`, `+` and `-` (at most 64)".into()),
                );
                continue;
            }
            if texts.contains(&text) {
                problems.push(
                    &at,
                    format!("matrix value `{text}` is listed twice for `{key}`"),
                    None,
                );
                continue;
            }
            texts.push(text);
            values.push(j);
        }
        if !values.is_empty() {
            out.push((key, values));
        }
    }
    out
}

/// Replaces every stage that has a matrix by its instances, in place and in order.
pub fn expand(raw: &mut RawPipeline, problems: &mut Problems) {
    if raw.stages.iter().all(|s| s.matrix.is_empty()) {
        return;
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(raw.stages.len());
    for s in std::mem::take(&mut raw.stages) {
        if s.matrix.is_empty() {
            total += 1;
            out.push(s);
            continue;
        }
        let n = s
            .matrix
            .iter()
            .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()))
            .unwrap_or(usize::MAX);
        total = total.saturating_add(n);
        if total > MAX_INSTANCES {
            problems.push(
                &s.path.k("matrix").key_of(),
                format!(
                    "stage `{}` expands to {n} instances; a pipeline may have at most {MAX_INSTANCES} stages and instances",
                    s.name
                ),
                Some("use fewer matrix values, or a sweep (`sluice sweep`) to sample them".into()),
            );
            raw.stages = out;
            return;
        }
        for combo in combinations(&s.matrix) {
            out.push(instance(&s, combo));
        }
    }
    raw.stages = out;
}

/// Every combination of the matrix's values, the first key outermost.
fn combinations(matrix: &[(String, Vec<Json>)]) -> Vec<Vec<(String, Json)>> {
    let mut combos: Vec<Vec<(String, Json)>> = vec![Vec::new()];
    for (k, values) in matrix {
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for c in &combos {
            for v in values {
                let mut c = c.clone();
                c.push((k.clone(), v.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    combos
}

fn instance(s: &RawStage, bindings: Vec<(String, Json)>) -> RawStage {
    // The instance keeps `matrix` (not expanded again): problems with a value taken from it
    // point at the value.
    let mut i = s.clone();
    i.name = instance_name(&s.base, &bindings);
    i.logical = i.name.clone();
    i.outputs = s
        .outputs
        .iter()
        .map(|(n, p)| (n.clone(), p.as_ref().map(|p| with_bindings(p, &bindings))))
        .collect();
    i.bindings = bindings;
    i
}

/// `base@k=v,k2=v2`; just `base` without bindings.
pub fn instance_name(base: &str, bindings: &[(String, Json)]) -> String {
    if bindings.is_empty() {
        return base.to_string();
    }
    let mut name = String::with_capacity(base.len() + 16 * bindings.len());
    name.push_str(base);
    for (i, (k, v)) in bindings.iter().enumerate() {
        name.push(if i == 0 { '@' } else { ',' });
        name.push_str(k);
        name.push('=');
        name.push_str(&value_text(v));
    }
    name
}

/// `${{ matrix.K }}` in an output path, replaced by the instance's value: output paths take no
/// other expressions, and these are what keep instances' outputs apart.
fn with_bindings(path: &str, bindings: &[(String, Json)]) -> String {
    if !path.contains("${{") {
        return path.to_string();
    }
    let Ok(pieces) = template::parse(path) else {
        return path.to_string();
    };
    let mut out = String::new();
    for p in &pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(Ref::Matrix(k)) => match bindings.iter().find(|(b, _)| b == k) {
                Some((_, v)) => out.push_str(&value_text(v)),
                // Left for validation to report, at the output.
                None => return path.to_string(),
            },
            Piece::Expr(_) => return path.to_string(),
        }
    }
    out
}

/// A binding's value as it appears in names and text: strings as they are, numbers and
/// booleans as JSON writes them.
pub fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `a` and `b` agree on every key both have.
pub fn agree(a: &[(String, Json)], b: &[(String, Json)]) -> bool {
    a.iter()
        .all(|(k, v)| b.iter().find(|(k2, _)| k2 == k).is_none_or(|(_, w)| w == v))
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_name_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

fn cut(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_written_order() {
        let b = vec![
            ("lr".to_string(), json!(0.1)),
            ("model".into(), json!("mlp")),
        ];
        assert_eq!(instance_name("train", &b), "train@lr=0.1,model=mlp");
        assert_eq!(instance_name("train", &[]), "train");
    }

    #[test]
    fn combinations_put_the_first_key_outermost() {
        let m = vec![
            ("a".to_string(), vec![json!(1), json!(2)]),
            ("b".to_string(), vec![json!("x"), json!("y")]),
        ];
        let names: Vec<String> = combinations(&m)
            .iter()
            .map(|c| instance_name("s", c))
            .collect();
        assert_eq!(names, ["s@a=1,b=x", "s@a=1,b=y", "s@a=2,b=x", "s@a=2,b=y"]);
    }

    #[test]
    fn output_paths_take_matrix_values() {
        let b = vec![("lr".to_string(), json!(0.01))];
        assert_eq!(
            with_bindings("out/m-${{ matrix.lr }}.onnx", &b),
            "out/m-0.01.onnx"
        );
        assert_eq!(
            with_bindings("out/${{ matrix.x }}", &b),
            "out/${{ matrix.x }}"
        );
    }

    #[test]
    fn agreement_is_on_shared_keys() {
        let a = vec![("lr".to_string(), json!(0.1))];
        let b = vec![("lr".to_string(), json!(0.1)), ("m".into(), json!("x"))];
        let c = vec![("lr".to_string(), json!(0.2))];
        assert!(agree(&a, &b) && agree(&b, &a) && !agree(&a, &c) && agree(&a, &[]));
    }
}
