//! The typed field reader for `with:` blocks: a kind declares its options once as [`Field`]s (name,
//! [`Type`], description, default), and that one table drives both the [`Reader`], which reads a
//! `with:` mapping with typed getters and collects every problem at its path, and [`schema`], the
//! JSON Schema `sluice schema` gives editors for that kind's `with:`. The two cannot drift apart:
//! a getter only reads declared fields, and unknown keys are the undeclared ones.
//!
//! Messages keep the wording each kind has always used (the corpus snapshots pin them), so a few
//! types carry the phrase their messages use.

use crate::problems::{problem, unknown_option};
use serde_json::{json, Map, Value};
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::ConfigProblem;

/// One option of a `with:` block (or of a mapping nested in it).
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Type,
    /// One sentence for editors' hover text.
    pub doc: &'static str,
    /// The value an absent option takes, as JSON text; the getters return it.
    pub default: Option<&'static str>,
    /// Whether the kind refuses a `with:` without it (the kind reports that itself, in its words).
    pub required: bool,
}

impl Field {
    /// An optional field without a default.
    pub(crate) const fn new(name: &'static str, ty: Type, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            doc,
            default: None,
            required: false,
        }
    }

    pub(crate) const fn default(self, json: &'static str) -> Field {
        Field {
            default: Some(json),
            ..self
        }
    }

    pub(crate) const fn required(self) -> Field {
        Field {
            required: true,
            ..self
        }
    }

    fn default_value(&self) -> Option<Value> {
        self.default
            .map(|text| serde_json::from_str(text).expect("declared defaults are JSON"))
    }
}

/// What an option holds.
pub(crate) enum Type {
    /// A string; `expect` names it in "`key` must be {expect}, not 3".
    Text {
        non_empty: bool,
        expect: &'static str,
    },
    /// A whole number of at least `min`; `expect` replaces "a whole number of at least {min}".
    Whole {
        min: u64,
        expect: Option<&'static str>,
    },
    /// A finite number from `min` (excluded when `open_min`) to `max`.
    Number { min: f64, max: f64, open_min: bool },
    /// true or false; `expect` is how messages write that.
    Bool { expect: &'static str },
    /// One of `names`.
    Choice {
        names: &'static [&'static str],
        wording: Wording,
    },
    /// A mapping with fields of its own, read with [`Reader::section`].
    Section(&'static [Field]),
    /// A shape the kind reads with its own code; the function gives its JSON Schema.
    Custom(fn() -> Value),
}

/// How a kind words a string that is none of a choice's names.
pub(crate) enum Wording {
    /// "unknown method `x`", help "{listing}: a, b, c"; a value that is no string gets the same
    /// help when `help_on_wrong_type`.
    Noun {
        listing: &'static str,
        help_on_wrong_type: bool,
    },
    /// "unknown value `x` for `key`", help "`key` is one of a, b, c".
    ValueFor,
}

/// Reads one mapping of a `with:` block against its declared fields, collecting problems.
pub(crate) struct Reader<'a> {
    map: &'a Map<String, Value>,
    fields: &'static [Field],
    /// Where the mapping sits inside `with:`.
    path: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl<'a> Reader<'a> {
    /// `with:` of a kind called `what` (as messages name it: "`split`"), as a mapping (absent is
    /// empty; `example` shows a valid one), with every undeclared key reported.
    pub(crate) fn open(
        with: &'a Value,
        fields: &'static [Field],
        what: &str,
        example: &str,
    ) -> Result<Reader<'a>, Vec<ConfigProblem>> {
        Self::open_mode(with, fields, what, "", example)
    }

    /// [`Reader::open`] for a kind whose help lists its options after `listing` ("the options
    /// are ") rather than "`kind` takes: ".
    pub(crate) fn open_listed(
        with: &'a Value,
        fields: &'static [Field],
        listing: &str,
        example: &str,
    ) -> Result<Reader<'a>, Vec<ConfigProblem>> {
        Self::checked(with, fields, example, listing, "")
    }

    /// [`Reader::open`] for one mode of a kind with several (images or tables), which words an
    /// unknown option "unknown option `x`{mode}".
    pub(crate) fn open_mode(
        with: &'a Value,
        fields: &'static [Field],
        what: &str,
        mode: &str,
        example: &str,
    ) -> Result<Reader<'a>, Vec<ConfigProblem>> {
        Self::checked(with, fields, example, &format!("{what} takes: "), mode)
    }

    /// A reader of `with`'s map that has already reported every undeclared key.
    fn checked(
        with: &'a Value,
        fields: &'static [Field],
        example: &str,
        listing: &str,
        mode: &str,
    ) -> Result<Reader<'a>, Vec<ConfigProblem>> {
        let map = crate::problems::with_map(with, example)?;
        let mut reader = Reader {
            map,
            fields,
            path: Vec::new(),
            problems: Vec::new(),
        };
        reader.unknown_keys(listing, mode);
        Ok(reader)
    }

    /// Reports every undeclared key; the help lists the declared ones after `listing`.
    pub(crate) fn unknown_keys(&mut self, listing: &str, mode: &str) {
        let names = || self.fields.iter().map(|f| f.name);
        for key in self.map.keys() {
            if !names().any(|n| n == key) {
                let help = did_you_mean(key, names()).unwrap_or_else(|| {
                    format!("{listing}{}", names().collect::<Vec<_>>().join(", "))
                });
                let problem = unknown_option(
                    &self.at(key),
                    format!("unknown option `{key}`{mode}"),
                    Some(help),
                );
                self.problems.push(problem);
            }
        }
    }

    fn field(&self, name: &str) -> &'static Field {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("`{name}` is read but not declared"))
    }

    /// The path of `key` in this mapping.
    fn at<'p>(&'p self, key: &'p str) -> Vec<&'p str> {
        let mut path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        path.push(key);
        path
    }

    /// The value written for a declared field, if any: for fields of type [`Type::Custom`].
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.field(name);
        self.map.get(name)
    }

    /// Whether the key was written at all (even with a wrong value).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A problem at `path` inside this mapping.
    pub(crate) fn report(&mut self, path: &[&str], message: String, help: Option<String>) {
        let mut full: Vec<&str> = self.path.iter().map(String::as_str).collect();
        full.extend(path);
        self.problems.push(problem(&full, message, help));
    }

    pub(crate) fn problems_mut(&mut self) -> &mut Vec<ConfigProblem> {
        &mut self.problems
    }

    /// The mapping of the [`Type::Section`] field `name`, for a reader of its own whose
    /// problems come back through [`Reader::absorb`]; `None` when it is absent or no mapping
    /// (that is recorded, with `example` as the help).
    pub(crate) fn section(&mut self, name: &str, example: &str) -> Option<Reader<'a>> {
        let listing = format!("`{}` takes: ", self.at(name).join("."));
        self.section_listed(name, example, &listing)
    }

    /// [`Reader::section`] whose help lists the options after `listing`.
    pub(crate) fn section_listed(
        &mut self,
        name: &str,
        example: &str,
        listing: &str,
    ) -> Option<Reader<'a>> {
        let Type::Section(fields) = self.field(name).ty else {
            panic!("`{name}` is no section")
        };
        self.mapping(name, fields, example, listing)
    }

    /// The mapping at field `name` read against `fields` (a [`Type::Custom`] field whose shape
    /// the kind chooses, e.g. by a `type` key), as [`Reader::section_listed`] reads a section.
    pub(crate) fn mapping(
        &mut self,
        name: &str,
        fields: &'static [Field],
        example: &str,
        listing: &str,
    ) -> Option<Reader<'a>> {
        match self.map.get(name)? {
            Value::Object(map) => {
                let mut section = self.nested(name, map, fields);
                section.unknown_keys(listing, "");
                Some(section)
            }
            v => {
                let help = Some(format!("write e.g. `{example}`"));
                self.mismatch(name, "a mapping", v, help);
                None
            }
        }
    }

    /// A reader of `map`, the value of field `name`, against `fields`, that has not looked for
    /// unknown keys yet: [`Reader::unknown_keys`] does, when the kind's order of messages says.
    pub(crate) fn nested(
        &self,
        name: &str,
        map: &'a Map<String, Value>,
        fields: &'static [Field],
    ) -> Reader<'a> {
        Reader {
            map,
            fields,
            path: self.at(name).iter().map(|s| s.to_string()).collect(),
            problems: Vec::new(),
        }
    }

    /// Takes over the problems of a section's reader.
    pub(crate) fn absorb(&mut self, section: Reader<'_>) {
        self.problems.extend(section.problems);
    }

    /// The problems found, or none.
    pub(crate) fn finish(self) -> Vec<ConfigProblem> {
        self.problems
    }

    /// The written value of field `name`, else its default; `None` when there is none. A wrong
    /// value is recorded as a problem and read as `on_wrong` says.
    fn read<T>(
        &mut self,
        name: &str,
        on_wrong: OnWrong,
        mut convert: impl FnMut(&mut Self, &Value) -> Option<T>,
    ) -> Option<T> {
        let field = self.field(name);
        if let Some(v) = self.map.get(name) {
            let value = convert(self, v);
            if value.is_some() || on_wrong == OnWrong::Nothing {
                return value;
            }
        }
        let default = field.default_value()?;
        let before = self.problems.len();
        let value = convert(self, &default);
        assert_eq!(
            self.problems.len(),
            before,
            "the default of `{name}` is valid"
        );
        value
    }

    fn mismatch(&mut self, name: &str, expect: &str, v: &Value, help: Option<String>) {
        let path = self.at(name);
        let message = format!("`{}` must be {expect}, not {v}", path.join("."));
        let problem = problem(&path, message, help);
        self.problems.push(problem);
    }

    pub(crate) fn text(&mut self, name: &str) -> Option<String> {
        let Type::Text { non_empty, expect } = self.field(name).ty else {
            panic!("`{name}` is no text field")
        };
        self.read(name, OnWrong::Default, |r, v| match v {
            Value::String(s) if !(non_empty && s.is_empty()) => Some(s.clone()),
            _ => {
                r.mismatch(name, expect, v, None);
                None
            }
        })
    }

    pub(crate) fn whole(&mut self, name: &str) -> Option<u64> {
        let Type::Whole { min, expect } = self.field(name).ty else {
            panic!("`{name}` is no whole-number field")
        };
        self.read(name, OnWrong::Default, |r, v| match v.as_u64() {
            Some(n) if n >= min => Some(n),
            _ => {
                let expect = expect.map_or_else(
                    || format!("a whole number of at least {min}"),
                    str::to_string,
                );
                r.mismatch(name, &expect, v, None);
                None
            }
        })
    }

    pub(crate) fn number(&mut self, name: &str) -> Option<f64> {
        let Type::Number { min, max, open_min } = self.field(name).ty else {
            panic!("`{name}` is no number field")
        };
        self.read(name, OnWrong::Default, |r, v| match v.as_f64() {
            Some(x) if x.is_finite() && (x > min || (!open_min && x == min)) && x <= max => Some(x),
            _ => {
                let lower = if open_min { "above" } else { "at least" };
                let upper = if max.is_finite() {
                    format!(" and at most {max}")
                } else {
                    String::new()
                };
                r.mismatch(name, &format!("a number {lower} {min}{upper}"), v, None);
                None
            }
        })
    }

    pub(crate) fn flag(&mut self, name: &str) -> Option<bool> {
        let Type::Bool { expect } = self.field(name).ty else {
            panic!("`{name}` is no true/false field")
        };
        self.read(name, OnWrong::Default, |r, v| {
            v.as_bool().or_else(|| {
                r.mismatch(name, expect, v, None);
                None
            })
        })
    }

    /// The chosen name, one of the field's declared `names`.
    pub(crate) fn choice(&mut self, name: &str) -> Option<&'static str> {
        let Type::Choice { names, ref wording } = self.field(name).ty else {
            panic!("`{name}` is no choice field")
        };
        self.read(name, OnWrong::Nothing, |r, v| {
            let owned: Vec<String> = r.at(name).iter().map(|s| s.to_string()).collect();
            let path: Vec<&str> = owned.iter().map(String::as_str).collect();
            choose(&mut r.problems, &path, v, names, wording)
        })
    }
}

/// `v` as one of `names`, else a problem at `path` (worded by `wording`, named by the path's
/// last key): for a choice the kind reads itself, such as a `type` that selects a mapping's
/// fields.
pub(crate) fn choose(
    problems: &mut Vec<ConfigProblem>,
    path: &[&str],
    v: &Value,
    names: &'static [&'static str],
    wording: &Wording,
) -> Option<&'static str> {
    let key = path.join(".");
    let name = path.last().copied().unwrap_or("value");
    match v.as_str() {
        Some(s) => {
            if let Some(found) = names.iter().find(|n| **n == s) {
                return Some(*found);
            }
            let listing = || choice_listing(wording, &key, names);
            let help = did_you_mean(s, names.iter().copied()).unwrap_or_else(listing);
            let message = match wording {
                Wording::Noun { .. } => format!("unknown {name} `{s}`"),
                Wording::ValueFor => format!("unknown value `{s}` for `{key}`"),
            };
            problems.push(problem(path, message, Some(help)));
            None
        }
        None => {
            let help = match wording {
                Wording::Noun {
                    help_on_wrong_type: true,
                    ..
                } => Some(choice_listing(wording, &key, names)),
                _ => None,
            };
            let message = format!("`{key}` must be one of {}, not {v}", names.join(", "));
            problems.push(problem(path, message, help));
            None
        }
    }
}

/// What a getter returns for a wrong value, as each kind has always read it: a wrong number or
/// flag reads as its default (later checks then see what they would without it); a wrong choice
/// reads as none, so that checks about the choice stay quiet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnWrong {
    Default,
    Nothing,
}

fn choice_listing(wording: &Wording, key: &str, names: &[&str]) -> String {
    match wording {
        Wording::Noun { listing, .. } => format!("{listing}: {}", names.join(", ")),
        Wording::ValueFor => format!("`{key}` is one of {}", names.join(", ")),
    }
}

/// The JSON Schema of a mapping with `fields`; `examples` are whole valid mappings, as JSON text.
/// An absent or empty `with:` is an empty mapping; a nested mapping must be written as one.
pub(crate) fn schema(fields: &[Field], examples: &[&str]) -> Value {
    let mut schema = object_schema(fields);
    if schema.get("required").is_none() {
        schema["type"] = json!(["object", "null"]);
    }
    if !examples.is_empty() {
        let examples: Vec<Value> = examples
            .iter()
            .map(|e| serde_json::from_str(e).expect("declared examples are JSON"))
            .collect();
        schema["examples"] = json!(examples);
    }
    schema
}

/// The schema of a mapping with `fields`.
pub(crate) fn object_schema(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.to_string(), field_schema(f)))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn field_schema(field: &Field) -> Value {
    let mut s = match &field.ty {
        Type::Text { non_empty, .. } => {
            let mut s = json!({"type": "string"});
            if *non_empty {
                s["minLength"] = json!(1);
            }
            s
        }
        Type::Whole { min, .. } => json!({"type": "integer", "minimum": min}),
        Type::Number { min, max, open_min } => {
            let mut s = json!({"type": "number"});
            s[if *open_min {
                "exclusiveMinimum"
            } else {
                "minimum"
            }] = json!(min);
            if max.is_finite() {
                s["maximum"] = json!(max);
            }
            s
        }
        Type::Bool { .. } => json!({"type": "boolean"}),
        Type::Choice { names, .. } => json!({"type": "string", "enum": names}),
        Type::Section(fields) => object_schema(fields),
        Type::Custom(schema) => schema(),
    };
    s["description"] = json!(field.doc);
    if let Some(default) = field.default_value() {
        s["default"] = default;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &[Field] = &[Field::new(
        "k",
        Type::Number {
            min: 0.0,
            max: f64::INFINITY,
            open_min: true,
        },
        "A factor.",
    )
    .default("1.5")];

    const FIELDS: &[Field] = &[
        Field::new(
            "seed",
            Type::Whole {
                min: 0,
                expect: None,
            },
            "A seed.",
        )
        .default("7"),
        Field::new(
            "mode",
            Type::Choice {
                names: &["fast", "slow"],
                wording: Wording::ValueFor,
            },
            "How.",
        ),
        Field::new("inner", Type::Section(INNER), "Nested."),
        Field::new(
            "name",
            Type::Text {
                non_empty: true,
                expect: "a name",
            },
            "Who.",
        )
        .required(),
    ];

    fn read(with: Value) -> (Option<u64>, Option<&'static str>, Option<f64>, Vec<String>) {
        let mut r = Reader::open(&with, FIELDS, "`demo`", "with: {}").unwrap();
        let seed = r.whole("seed");
        let mode = r.choice("mode");
        let k = r.section("inner", "inner: {k: 2}").map(|mut s| {
            let k = s.number("k");
            r.absorb(s);
            k
        });
        let problems = r
            .finish()
            .into_iter()
            .map(|p| format!("{}: {}", p.path.join("."), p.message))
            .collect();
        (seed, mode, k.flatten(), problems)
    }

    #[test]
    fn absent_options_read_as_their_defaults() {
        assert_eq!(read(json!({"name": "a"})), (Some(7), None, None, vec![]));
        assert_eq!(
            read(json!({"inner": {}, "mode": "slow"})),
            (Some(7), Some("slow"), Some(1.5), vec![])
        );
    }

    #[test]
    fn wrong_values_are_reported_at_their_path_in_order() {
        let (seed, mode, k, problems) =
            read(json!({"seed": -1, "mode": "fsat", "inner": {"k": 0, "j": 1}, "nmae": "x"}));
        // A wrong number reads as its default, a wrong choice as none.
        assert_eq!((seed, mode, k), (Some(7), None, Some(1.5)));
        assert_eq!(
            problems,
            [
                "nmae: unknown option `nmae`",
                "seed: `seed` must be a whole number of at least 0, not -1",
                "mode: unknown value `fsat` for `mode`",
                "inner.j: unknown option `j`",
                "inner.k: `inner.k` must be a number above 0, not 0",
            ]
        );
    }

    #[test]
    fn unknown_options_get_a_suggestion_or_the_list() {
        let with = json!({"nmae": 1, "zzz": 2});
        let problems = Reader::open(&with, FIELDS, "`demo`", "").unwrap().finish();
        let helps: Vec<_> = problems.iter().map(|p| p.help.clone().unwrap()).collect();
        assert_eq!(
            helps,
            [
                "did you mean `name`?",
                "`demo` takes: seed, mode, inner, name"
            ]
        );
        assert!(problems.iter().all(|p| p.at_key));
    }

    #[test]
    fn the_schema_says_what_the_reader_reads() {
        let s = schema(FIELDS, &[r#"{"name": "a"}"#]);
        assert_eq!(s["type"], "object");
        assert_eq!(s["required"], json!(["name"]));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["seed"],
            json!({"type": "integer", "minimum": 0, "default": 7, "description": "A seed."})
        );
        assert_eq!(s["properties"]["mode"]["enum"], json!(["fast", "slow"]));
        assert_eq!(s["properties"]["name"]["minLength"], 1);
        let k = &s["properties"]["inner"]["properties"]["k"];
        assert_eq!(
            (k["exclusiveMinimum"].clone(), k["default"].clone()),
            (json!(0.0), json!(1.5))
        );
        assert_eq!(s["properties"]["inner"]["type"], "object");
        assert_eq!(s["examples"], json!([{"name": "a"}]));
        // Without a required option, an absent `with:` (null) is an empty one.
        assert_eq!(schema(INNER, &[])["type"], json!(["object", "null"]));
    }
}
