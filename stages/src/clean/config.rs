//! [`CleanConfig`]: the `with:` block of a `clean` stage, parsed once into types.
//!
//! The same parser serves `check()`, which reports every problem with its path inside `with:`,
//! and `run()`, which can then trust the values. Column names are only checked against the file
//! when the stage runs; here they are checked against each other (a dropped column cannot be
//! used by a later rule).

use super::expr::Expr;
use crate::problems::{problem, unknown_option};
use serde_json::Value;
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

/// How outlier fences are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Method {
    /// `[Q1 - k·IQR, Q3 + k·IQR]`.
    Iqr { k: f64 },
    /// `mean ± threshold·sd` (population standard deviation).
    Zscore { threshold: f64 },
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
    pub(crate) method: Method,
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

const KEYS: [&str; 6] = [
    "drop_columns",
    "cast",
    "filter",
    "missing",
    "duplicates",
    "outliers",
];

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

fn unknown_keys(
    map: &serde_json::Map<String, Value>,
    path: &[&str],
    keys: &[&str],
    problems: &mut Vec<ConfigProblem>,
) {
    for key in map.keys() {
        if !keys.contains(&key.as_str()) {
            let help = did_you_mean(key, keys.iter().copied())
                .unwrap_or_else(|| format!("the options are {}", keys.join(", ")));
            let mut at = path.to_vec();
            at.push(key);
            problems.push(unknown_option(
                &at,
                format!("unknown option `{key}`"),
                Some(help),
            ));
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

fn positive(
    value: Option<&Value>,
    path: &[&str],
    default: f64,
    problems: &mut Vec<ConfigProblem>,
) -> f64 {
    match value {
        None => default,
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => x,
            _ => {
                problems.push(problem(
                    path,
                    format!("`{}` must be a number above 0, not {v}", path.join(".")),
                    None,
                ));
                default
            }
        },
    }
}

impl CleanConfig {
    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(crate) fn parse(with: &Value) -> Result<CleanConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let map = crate::problems::with_map(with, "with: {duplicates: drop}")?;
        unknown_keys(map, &[], &KEYS, &mut problems);

        let drop_columns = map
            .get("drop_columns")
            .map(|v| columns(v, &["drop_columns"], &mut problems))
            .unwrap_or_default();

        let mut cast = Vec::new();
        if let Some(m) = map
            .get("cast")
            .and_then(|v| mapping(v, &["cast"], "cast: {age: int}", &mut problems))
        {
            for (column, v) in m {
                if let Some(t) = word(v, &["cast", column], &CastType::NAMES, &mut problems) {
                    cast.push((column.clone(), CastType::parse(t).expect("a known name")));
                }
            }
        }

        let filter = match map.get("filter") {
            None => None,
            Some(Value::String(s)) => match Expr::parse(s) {
                Ok(e) => Some((s.clone(), e)),
                Err(e) => {
                    problems.push(problem(
                        &["filter"],
                        format!("`filter`: {e}"),
                        Some("write comparisons like `age >= 18 and country == \"NL\"`".into()),
                    ));
                    None
                }
            },
            Some(v) => {
                problems.push(problem(
                    &["filter"],
                    format!("`filter` must be an expression in quotes, not {v}"),
                    Some("write e.g. `filter: \"age >= 18\"`".into()),
                ));
                None
            }
        };

        let missing = map
            .get("missing")
            .and_then(|v| parse_missing(v, &mut problems));

        let drop_duplicates = match map.get("duplicates") {
            None => false,
            Some(v) => word(v, &["duplicates"], &["drop", "keep"], &mut problems) == Some("drop"),
        };

        let outliers = map
            .get("outliers")
            .and_then(|v| parse_outliers(v, &mut problems));

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

fn parse_missing(value: &Value, problems: &mut Vec<ConfigProblem>) -> Option<Missing> {
    let example = "missing: {default: drop, columns: {age: median}}";
    let map = mapping(value, &["missing"], example, problems)?;
    unknown_keys(map, &["missing"], &["default", "columns"], problems);
    let default = match map.get("default") {
        None => Fill::Keep,
        Some(v) => match word(v, &["missing", "default"], &["drop", "keep"], problems) {
            Some("drop") => Fill::Drop,
            _ => Fill::Keep,
        },
    };
    let mut columns = Vec::new();
    if let Some(m) = map
        .get("columns")
        .and_then(|v| mapping(v, &["missing", "columns"], example, problems))
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
    Some(Missing { default, columns })
}

fn parse_outliers(value: &Value, problems: &mut Vec<ConfigProblem>) -> Option<Outliers> {
    let example = "outliers: {columns: [income], method: iqr, k: 1.5, action: drop}";
    let map = mapping(value, &["outliers"], example, problems)?;
    unknown_keys(
        map,
        &["outliers"],
        &["columns", "method", "k", "threshold", "action"],
        problems,
    );
    let cols = match map.get("columns") {
        Some(v) => columns(v, &["outliers", "columns"], problems),
        None => {
            problems.push(problem(
                &["outliers"],
                "`outliers` needs `columns`, the numeric columns to check",
                Some(format!("write e.g. `{example}`")),
            ));
            Vec::new()
        }
    };
    let method = match map.get("method") {
        None => "iqr",
        Some(v) => word(v, &["outliers", "method"], &["iqr", "zscore"], problems).unwrap_or("iqr"),
    };
    let method = if method == "iqr" {
        if map.contains_key("threshold") {
            problems.push(problem(
                &["outliers", "threshold"],
                "`threshold` applies to `method: zscore`; `iqr` takes `k`",
                None,
            ));
        }
        Method::Iqr {
            k: positive(map.get("k"), &["outliers", "k"], 1.5, problems),
        }
    } else {
        if map.contains_key("k") {
            problems.push(problem(
                &["outliers", "k"],
                "`k` applies to `method: iqr`; `zscore` takes `threshold`",
                None,
            ));
        }
        Method::Zscore {
            threshold: positive(
                map.get("threshold"),
                &["outliers", "threshold"],
                3.0,
                problems,
            ),
        }
    };
    let action = match map.get("action") {
        None => Action::Drop,
        Some(v) => match word(v, &["outliers", "action"], &["drop", "clip"], problems) {
            Some("clip") => Action::Clip,
            _ => Action::Drop,
        },
    };
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
        assert_eq!(o.method, Method::Zscore { threshold: 2.5 });
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
        assert_eq!((o.method, o.action), (Method::Iqr { k: 1.5 }, Action::Drop));
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
