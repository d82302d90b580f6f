//! [`CleanConfig`]: the `with:` block of a `clean` stage, parsed once into types.
//!
//! `prepare()` parses it once, when the pipeline loads, and reports every problem with its path
//! inside `with:`; `run()` gets the parsed config and can trust the values. Column names are only
//! checked against the file when the stage runs; here they are checked against each other (a
//! dropped column cannot be used by a later rule).

use super::expr::Expr;
use crate::fence::Fence;
use crate::fields::{Field, Reader, Type, Wording};
use crate::problems::problem;
use serde_json::{json, Value};
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::ConfigProblem;

/// A target type of `cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastType {
    Int,
    Float,
    Text,
    Bool,
}

impl CastType {
    const NAMES: [&'static str; 4] = ["int", "float", "string", "bool"];

    fn parse(s: &str) -> Option<CastType> {
        match s {
            "int" => Some(CastType::Int),
            "float" => Some(CastType::Float),
            "string" => Some(CastType::Text),
            "bool" => Some(CastType::Bool),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            CastType::Int => "int",
            CastType::Float => "float",
            CastType::Text => "string",
            CastType::Bool => "bool",
        }
    }
}

/// What to do with a missing value in one column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fill {
    Keep,
    Drop,
    Mean,
    Median,
    Mode,
    /// The value as written; converted to the column's type when the stage runs.
    Constant(Value),
}

impl Fill {
    const NAMES: [&'static str; 5] = ["drop", "keep", "mean", "median", "mode"];
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Missing {
    /// For columns not named under `columns`: `Keep` or `Drop`.
    pub(crate) default: Fill,
    pub(crate) columns: Vec<(String, Fill)>,
}

/// What happens to a value outside the fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Drop,
    Clip,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outliers {
    pub(crate) columns: Vec<String>,
    pub(crate) method: Fence,
    pub(crate) action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CleanConfig {
    pub(crate) drop_columns: Vec<String>,
    pub(crate) cast: Vec<(String, CastType)>,
    /// The expression as written (for the report) and parsed.
    pub(crate) filter: Option<(String, Expr)>,
    pub(crate) missing: Option<Missing>,
    pub(crate) drop_duplicates: bool,
    pub(crate) outliers: Option<Outliers>,
}

/// The options of `clean` on tables: what the parser reads and the schema editors get.
pub(crate) const FIELDS: &[Field] = &[
    Field::new(
        "drop_columns",
        Type::Custom(column_list_schema),
        "Columns removed first, before every other rule.",
    ),
    Field::new(
        "cast",
        Type::Custom(cast_schema),
        "Columns converted to a type: COLUMN: int, float, string or bool.",
    ),
    Field::new(
        "filter",
        Type::Custom(filter_schema),
        "Keeps the rows for which the expression holds, e.g. `age >= 18 and country == \"NL\"`.",
    ),
    Field::new(
        "missing",
        Type::Section(MISSING),
        "What happens to missing values: a default for all columns and per-column fills.",
    ),
    Field::new(
        "duplicates",
        Type::Choice {
            names: &["drop", "keep"],
            wording: Wording::ValueFor,
        },
        "drop removes repeated rows, keeping the first.",
    )
    .default("\"keep\""),
    Field::new(
        "outliers",
        Type::Section(OUTLIERS),
        "Values outside fences computed per column, dropped or clipped.",
    ),
];

const MISSING: &[Field] = &[
    Field::new(
        "default",
        Type::Choice {
            names: &["drop", "keep"],
            wording: Wording::ValueFor,
        },
        "For columns not under `columns`: drop the row, or keep the missing value.",
    )
    .default("\"keep\""),
    Field::new(
        "columns",
        Type::Custom(fills_schema),
        "Per-column fills: drop, keep, mean, median, mode or `{constant: VALUE}`.",
    ),
];

const OUTLIERS: &[Field] = &[
    Field::new(
        "columns",
        Type::Custom(column_list_schema),
        "The numeric columns to check.",
    )
    .required(),
    Field::new(
        "method",
        Type::Choice {
            names: &["iqr", "zscore"],
            wording: Wording::ValueFor,
        },
        "iqr fences at [Q1 - k·IQR, Q3 + k·IQR]; zscore at mean ± threshold·sd.",
    )
    .default("\"iqr\""),
    Field::new("k", ABOVE_0, "The IQR multiple of `method: iqr`.").default("1.5"),
    Field::new(
        "threshold",
        ABOVE_0,
        "The standard deviations of `method: zscore`.",
    )
    .default("3.0"),
    Field::new(
        "action",
        Type::Choice {
            names: &["drop", "clip"],
            wording: Wording::ValueFor,
        },
        "drop removes the row; clip moves the value to the fence.",
    )
    .default("\"drop\""),
];

const ABOVE_0: Type = Type::Number {
    min: 0.0,
    max: f64::INFINITY,
    open_min: true,
};

/// Full table-mode `with:` blocks that `clean` accepts, for the schema's examples.
pub(crate) const EXAMPLES: &[&str] = &[
    r#"{"drop_columns": ["id"], "cast": {"age": "int"}, "filter": "age >= 18", "missing": {"default": "drop", "columns": {"income": "median", "city": {"constant": "unknown"}}}, "duplicates": "drop", "outliers": {"columns": ["income"], "method": "iqr", "k": 1.5, "action": "clip"}}"#,
    r#"{"outliers": {"columns": ["income"], "method": "zscore", "threshold": 3, "action": "drop"}, "missing": {}}"#,
];

fn column_list_schema() -> Value {
    json!({"type": "array", "items": {"type": "string", "minLength": 1}})
}

fn cast_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "enum": CastType::NAMES}})
}

fn filter_schema() -> Value {
    json!({"type": "string", "examples": ["age >= 18 and country == \"NL\""]})
}

fn fills_schema() -> Value {
    let constant = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["constant"],
        "properties": {"constant": {"type": ["string", "number", "boolean"]}},
    });
    json!({
        "type": "object",
        "additionalProperties": {"anyOf": [{"type": "string", "enum": Fill::NAMES}, constant]},
    })
}

/// `value` as a mapping, or a problem at `path`.
fn mapping<'a>(
    value: &'a Value,
    path: &[&str],
    example: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<&'a serde_json::Map<String, Value>> {
    match value {
        Value::Object(m) => Some(m),
        v => {
            problems.push(problem(
                path,
                format!("`{}` must be a mapping, not {v}", path.join(".")),
                Some(format!("write e.g. `{example}`")),
            ));
            None
        }
    }
}

/// A list of column names at `path`.
fn columns(value: &Value, path: &[&str], problems: &mut Vec<ConfigProblem>) -> Vec<String> {
    let items = match value {
        Value::Array(items) => items,
        v => {
            problems.push(problem(
                path,
                format!(
                    "`{}` must be a list of column names, not {v}",
                    path.join(".")
                ),
                Some(format!("write e.g. `{}: [id, notes]`", path.join("."))),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            v => {
                let index = i.to_string();
                let mut at = path.to_vec();
                at.push(&index);
                problems.push(problem(
                    &at,
                    format!("expected a column name, not {v}"),
                    None,
                ));
            }
        }
    }
    out
}

/// A keyword value at `path` among `names`.
fn word<'a>(
    value: &'a Value,
    path: &[&str],
    names: &[&str],
    problems: &mut Vec<ConfigProblem>,
) -> Option<&'a str> {
    let key = path.join(".");
    match value {
        Value::String(s) if names.contains(&s.as_str()) => Some(s),
        Value::String(s) => {
            let help = did_you_mean(s, names.iter().copied())
                .unwrap_or_else(|| format!("`{key}` is one of {}", names.join(", ")));
            problems.push(problem(
                path,
                format!("unknown value `{s}` for `{key}`"),
                Some(help),
            ));
            None
        }
        v => {
            problems.push(problem(
                path,
                format!("`{key}` must be one of {}, not {v}", names.join(", ")),
                None,
            ));
            None
        }
    }
}

impl CleanConfig {
    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(crate) fn parse(with: &Value) -> Result<CleanConfig, Vec<ConfigProblem>> {
        let mut r =
            Reader::open_listed(with, FIELDS, "the options are ", "with: {duplicates: drop}")?;

        let drop_columns = r
            .get("drop_columns")
            .map(|v| columns(v, &["drop_columns"], r.problems_mut()))
            .unwrap_or_default();

        let mut cast = Vec::new();
        let cast_value = r.get("cast");
        if let Some(m) =
            cast_value.and_then(|v| mapping(v, &["cast"], "cast: {age: int}", r.problems_mut()))
        {
            for (column, v) in m {
                if let Some(t) = word(v, &["cast", column], &CastType::NAMES, r.problems_mut()) {
                    cast.push((column.clone(), CastType::parse(t).expect("a known name")));
                }
            }
        }

        let filter = match r.get("filter") {
            None => None,
            Some(Value::String(s)) => match Expr::parse(s) {
                Ok(e) => Some((s.clone(), e)),
                Err(e) => {
                    r.report(
                        &["filter"],
                        format!("`filter`: {e}"),
                        Some("write comparisons like `age >= 18 and country == \"NL\"`".into()),
                    );
                    None
                }
            },
            Some(v) => {
                r.report(
                    &["filter"],
                    format!("`filter` must be an expression in quotes, not {v}"),
                    Some("write e.g. `filter: \"age >= 18\"`".into()),
                );
                None
            }
        };

        let missing = parse_missing(&mut r);
        let drop_duplicates = r.choice("duplicates") == Some("drop");
        let outliers = parse_outliers(&mut r);
        let mut problems = r.finish();

        // A column removed by `drop_columns` cannot be used by a rule that runs after it.
        let mut used: Vec<(&str, &str)> = Vec::new();
        used.extend(cast.iter().map(|(c, _)| ("cast", c.as_str())));
        if let Some((_, e)) = &filter {
            used.extend(e.columns().into_iter().map(|c| ("filter", c)));
        }
        if let Some(m) = &missing {
            used.extend(m.columns.iter().map(|(c, _)| ("missing", c.as_str())));
        }
        if let Some(o) = &outliers {
            used.extend(o.columns.iter().map(|c| ("outliers", c.as_str())));
        }
        for (rule, column) in used {
            if drop_columns.iter().any(|d| d == column) {
                problems.push(problem(
                    &[rule],
                    format!("`{rule}` uses column `{column}`, which `drop_columns` removes"),
                    Some("`drop_columns` runs first; remove the column from one of them".into()),
                ));
            }
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CleanConfig {
            drop_columns,
            cast,
            filter,
            missing,
            drop_duplicates,
            outliers,
        })
    }
}

fn parse_missing(r: &mut Reader<'_>) -> Option<Missing> {
    let example = "missing: {default: drop, columns: {age: median}}";
    let mut s = r.section_listed("missing", example, "the options are ")?;
    let default = match s.choice("default") {
        Some("drop") => Fill::Drop,
        _ => Fill::Keep,
    };
    let mut columns = Vec::new();
    let columns_value = s.get("columns");
    let problems = s.problems_mut();
    if let Some(m) =
        columns_value.and_then(|v| mapping(v, &["missing", "columns"], example, problems))
    {
        for (column, v) in m {
            let path = ["missing", "columns", column.as_str()];
            let fill = match v {
                Value::Object(c) if c.len() == 1 && c.contains_key("constant") => {
                    match &c["constant"] {
                        v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
                            Some(Fill::Constant(v.clone()))
                        }
                        v => {
                            problems.push(problem(
                                &path,
                                format!("`constant` must be a number, text or true/false, not {v}"),
                                None,
                            ));
                            None
                        }
                    }
                }
                Value::Object(_) => {
                    problems.push(problem(
                        &path,
                        format!("a fill rule written as a mapping must be `{{constant: VALUE}}`, not {v}"),
                        Some("write e.g. `{constant: 0}`".into()),
                    ));
                    None
                }
                v => word(v, &path, &Fill::NAMES, problems).map(|w| match w {
                    "drop" => Fill::Drop,
                    "keep" => Fill::Keep,
                    "mean" => Fill::Mean,
                    "median" => Fill::Median,
                    _ => Fill::Mode,
                }),
            };
            if let Some(fill) = fill {
                columns.push((column.clone(), fill));
            }
        }
    }
    r.absorb(s);
    Some(Missing { default, columns })
}

fn parse_outliers(r: &mut Reader<'_>) -> Option<Outliers> {
    let example = "outliers: {columns: [income], method: iqr, k: 1.5, action: drop}";
    let mut s = r.section_listed("outliers", example, "the options are ")?;
    let cols = match s.get("columns") {
        Some(v) => columns(v, &["outliers", "columns"], s.problems_mut()),
        None => {
            s.report(
                &[],
                "`outliers` needs `columns`, the numeric columns to check".into(),
                Some(format!("write e.g. `{example}`")),
            );
            Vec::new()
        }
    };
    let method = Fence::read(&mut s);
    let action = match s.choice("action") {
        Some("clip") => Action::Clip,
        _ => Action::Drop,
    };
    r.absorb(s);
    Some(Outliers {
        columns: cols,
        method,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(with: Value) -> Vec<String> {
        CleanConfig::parse(&with)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{}: {}", p.path.join("."), p.message))
            .collect()
    }

    #[test]
    fn a_full_config_parses() {
        let c = CleanConfig::parse(&json!({
            "drop_columns": ["notes"],
            "cast": {"age": "int"},
            "filter": "age >= 18",
            "missing": {"default": "drop", "columns": {"age": "median", "city": {"constant": "?"}}},
            "duplicates": "drop",
            "outliers": {"columns": ["income"], "method": "zscore", "threshold": 2.5, "action": "clip"}
        }))
        .unwrap();
        assert_eq!(c.drop_columns, ["notes"]);
        assert_eq!(c.cast, [("age".to_string(), CastType::Int)]);
        assert_eq!(c.filter.as_ref().unwrap().0, "age >= 18");
        let m = c.missing.unwrap();
        assert_eq!(m.default, Fill::Drop);
        assert_eq!(m.columns[1], ("city".into(), Fill::Constant(json!("?"))));
        assert!(c.drop_duplicates);
        let o = c.outliers.unwrap();
        assert_eq!(o.method, Fence::Zscore { threshold: 2.5 });
        assert_eq!(o.action, Action::Clip);
    }

    #[test]
    fn an_empty_config_changes_nothing() {
        let c = CleanConfig::parse(&Value::Null).unwrap();
        assert!(c.drop_columns.is_empty() && c.cast.is_empty() && !c.drop_duplicates);
        assert!(c.filter.is_none() && c.missing.is_none() && c.outliers.is_none());
        let o = CleanConfig::parse(&json!({"outliers": {"columns": ["x"]}}))
            .unwrap()
            .outliers
            .unwrap();
        assert_eq!((o.method, o.action), (Fence::Iqr { k: 1.5 }, Action::Drop));
    }

    #[test]
    fn every_problem_is_reported() {
        assert_eq!(
            messages(json!({
                "dupes": "drop",
                "cast": {"a": "integer"},
                "filter": "a =",
                "missing": {"default": "fill", "columns": {"b": "avg", "c": {"value": 1}}},
                "duplicates": true,
                "outliers": {"method": "iqr", "threshold": 2, "k": -1, "action": "cut"}
            })),
            [
                "dupes: unknown option `dupes`",
                "cast.a: unknown value `integer` for `cast.a`",
                "filter: `filter`: `=` is not an operator; write `==` at position 3",
                "missing.default: unknown value `fill` for `missing.default`",
                "missing.columns.b: unknown value `avg` for `missing.columns.b`",
                "missing.columns.c: a fill rule written as a mapping must be `{constant: VALUE}`, not {\"value\":1}",
                "duplicates: `duplicates` must be one of drop, keep, not true",
                "outliers: `outliers` needs `columns`, the numeric columns to check",
                "outliers.threshold: `threshold` applies to `method: zscore`; `iqr` takes `k`",
                "outliers.k: `outliers.k` must be a number above 0, not -1",
                "outliers.action: unknown value `cut` for `outliers.action`",
            ]
        );
    }

    #[test]
    fn suggestions_and_dropped_columns() {
        let p =
            CleanConfig::parse(&json!({"duplicate": "drop", "cast": {"a": "flaot"}})).unwrap_err();
        assert_eq!(p[0].help.as_deref(), Some("did you mean `duplicates`?"));
        assert_eq!(p[1].help.as_deref(), Some("did you mean `float`?"));
        assert_eq!(
            messages(json!({"drop_columns": ["a"], "filter": "a > 1"})),
            ["filter: `filter` uses column `a`, which `drop_columns` removes"]
        );
    }
}
