//! `canonical_json`: one spelling of a JSON value (object keys sorted, no whitespace), so that
//! text compared or hashed later does not depend on a map's iteration order. Validation uses it
//! for a stage's config text and the fingerprint for its parameters.

use serde_json::Value as Json;

/// JSON with object keys sorted, whatever the map implementation, and no whitespace.
pub(crate) fn canonical_json(v: &Json) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Json, out: &mut String) {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(it, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys() {
        let v = json!({"b": 1, "a": {"d": [1, 2], "c": null}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[1,2]},"b":1}"#);
    }
}
