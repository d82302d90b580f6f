//! [`NormalizeConfig`]: the `with:` block of a `normalize` stage, parsed once into types.
//!
//! The same parser serves `check()`, which reports every problem with its path inside `with:`,
//! and `run()`, which can then trust the values. Column names are checked against the table only
//! when the stage runs; here they are checked against each other (the label cannot also be a
//! feature, a column cannot have two methods, a dropped column cannot have one).

use super::preprocess::{Encoding, Scaling, Task, Unknown};
use crate::problems::{problem, unknown_option};
use serde_json::Value;
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::ConfigProblem;

/// A default method and the columns that differ from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PerColumn<M> {
    pub(crate) default: M,
    pub(crate) columns: Vec<(String, M)>,
}

impl<M: Copy> PerColumn<M> {
    pub(crate) fn get(&self, column: &str) -> Option<M> {
        self.columns
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, m)| *m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NormalizeConfig {
    pub(crate) label: String,
    pub(crate) task: Task,
    pub(crate) numeric: PerColumn<Scaling>,
    pub(crate) categorical: PerColumn<Encoding>,
    pub(crate) drop: Vec<String>,
    pub(crate) unknown_category: Unknown,
}

const KEYS: [&str; 6] = [
    "label",
    "task",
    "numeric",
    "categorical",
    "drop",
    "unknown_category",
];
const SECTION_KEYS: [&str; 2] = ["default", "columns"];

/// A keyword value at `path` among `names`.
fn word<T>(
    value: &Value,
    path: &[&str],
    names: &[&str],
    parse: impl Fn(&str) -> Option<T>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let key = path.join(".");
    match value {
        Value::String(s) => parse(s).or_else(|| {
            let help = did_you_mean(s, names.iter().copied())
                .unwrap_or_else(|| format!("`{key}` is one of {}", names.join(", ")));
            problems.push(problem(
                path,
                format!("unknown value `{s}` for `{key}`"),
                Some(help),
            ));
            None
        }),
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

/// `numeric:` or `categorical:`: `{default: METHOD, columns: {COLUMN: METHOD}}`.
fn per_column<M: Copy>(
    value: Option<&Value>,
    section: &str,
    default: M,
    names: &[&str],
    parse: impl Fn(&str) -> Option<M>,
    problems: &mut Vec<ConfigProblem>,
) -> PerColumn<M> {
    let mut out = PerColumn {
        default,
        columns: Vec::new(),
    };
    let map = match value {
        None => return out,
        Some(Value::Object(m)) => m,
        Some(v) => {
            problems.push(problem(
                &[section],
                format!("`{section}` must be a mapping, not {v}"),
                Some(format!(
                    "write e.g. `{section}: {{default: {}, columns: {{COLUMN: {}}}}}`",
                    names[0], names[1]
                )),
            ));
            return out;
        }
    };
    for key in map.keys() {
        if !SECTION_KEYS.contains(&key.as_str()) {
            let help = did_you_mean(key, SECTION_KEYS)
                .unwrap_or_else(|| format!("`{section}` takes: default, columns"));
            problems.push(unknown_option(
                &[section, key],
                format!("unknown option `{key}`"),
                Some(help),
            ));
        }
    }
    if let Some(v) = map.get("default") {
        if let Some(m) = word(v, &[section, "default"], names, &parse, problems) {
            out.default = m;
        }
    }
    match map.get("columns") {
        None => {}
        Some(Value::Object(columns)) => {
            for (column, v) in columns {
                if let Some(m) = word(v, &[section, "columns", column], names, &parse, problems) {
                    out.columns.push((column.clone(), m));
                }
            }
        }
        Some(v) => problems.push(problem(
            &[section, "columns"],
            format!("`{section}.columns` must be a mapping of column to method, not {v}"),
            Some(format!("write e.g. `columns: {{COLUMN: {}}}`", names[0])),
        )),
    }
    out
}

impl NormalizeConfig {
    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(crate) fn parse(with: &Value) -> Result<NormalizeConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let map = crate::problems::with_map(with, "with: {label: species}")?;
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                let help = did_you_mean(key, KEYS)
                    .unwrap_or_else(|| format!("`normalize` takes: {}", KEYS.join(", ")));
                problems.push(unknown_option(
                    &[key],
                    format!("unknown option `{key}`"),
                    Some(help),
                ));
            }
        }
        let label = match map.get("label") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(v) => {
                problems.push(problem(
                    &["label"],
                    format!("`label` must be a column name, not {v}"),
                    None,
                ));
                None
            }
            None => {
                problems.push(problem(
                    &[],
                    "`normalize` needs a `label` column",
                    Some("add `label: COLUMN`, the column the model learns to predict; for image folders, set at least `size: [W, H]`".into()),
                ));
                None
            }
        };
        let task = map
            .get("task")
            .map_or(Some(Task::Classification), |v| {
                word(v, &["task"], &Task::NAMES, Task::parse, &mut problems)
            })
            .unwrap_or(Task::Classification);
        let numeric = per_column(
            map.get("numeric"),
            "numeric",
            Scaling::Zscore,
            &Scaling::NAMES,
            Scaling::parse,
            &mut problems,
        );
        let categorical = per_column(
            map.get("categorical"),
            "categorical",
            Encoding::Onehot,
            &Encoding::NAMES,
            Encoding::parse,
            &mut problems,
        );
        let unknown_category = map
            .get("unknown_category")
            .map_or(Some(Unknown::Ignore), |v| {
                word(
                    v,
                    &["unknown_category"],
                    &Unknown::NAMES,
                    Unknown::parse,
                    &mut problems,
                )
            })
            .unwrap_or(Unknown::Ignore);
        let drop = match map.get("drop") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.is_empty() => out.push(s.clone()),
                        v => problems.push(problem(
                            &["drop", &i.to_string()],
                            format!("expected a column name, not {v}"),
                            None,
                        )),
                    }
                }
                out
            }
            Some(v) => {
                problems.push(problem(
                    &["drop"],
                    format!("`drop` must be a list of column names, not {v}"),
                    Some("write e.g. `drop: [id, notes]`".into()),
                ));
                Vec::new()
            }
        };

        // Every column has one role: the label, dropped, or a feature with one method.
        for (column, _) in &numeric.columns {
            if categorical.get(column).is_some() {
                problems.push(problem(
                    &["categorical", "columns", column],
                    format!("column `{column}` has both a numeric method and an encoding"),
                    Some("keep it under `numeric` or under `categorical`, not both".into()),
                ));
            }
        }
        let sections: [(&str, Vec<&String>); 2] = [
            ("numeric", numeric.columns.iter().map(|(c, _)| c).collect()),
            (
                "categorical",
                categorical.columns.iter().map(|(c, _)| c).collect(),
            ),
        ];
        for (section, columns) in &sections {
            for column in columns {
                if label.as_ref() == Some(*column) {
                    problems.push(problem(
                        &[section, "columns", column],
                        format!(
                            "`{column}` is the label; it is encoded by `task`, not as a feature"
                        ),
                        Some(format!("remove it from `{section}.columns`")),
                    ));
                } else if drop.contains(column) {
                    problems.push(problem(
                        &[section, "columns", column],
                        format!("column `{column}` is dropped, so it cannot have a method"),
                        Some(format!("remove it from `drop` or from `{section}.columns`")),
                    ));
                }
            }
        }
        if let Some(label) = &label {
            if let Some(i) = drop.iter().position(|c| c == label) {
                problems.push(problem(
                    &["drop", &i.to_string()],
                    format!("`{label}` is the label and cannot be dropped"),
                    None,
                ));
            }
        }
        match label {
            Some(label) if problems.is_empty() => Ok(NormalizeConfig {
                label,
                task,
                numeric,
                categorical,
                drop,
                unknown_category,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(with: Value) -> Vec<String> {
        NormalizeConfig::parse(&with)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{}: {}", p.path.join("."), p.message))
            .collect()
    }

    #[test]
    fn defaults_are_classification_zscore_onehot_ignore() {
        let c = NormalizeConfig::parse(&json!({"label": "y"})).unwrap();
        assert_eq!(c.task, Task::Classification);
        assert_eq!(c.numeric.default, Scaling::Zscore);
        assert_eq!(c.categorical.default, Encoding::Onehot);
        assert_eq!(c.unknown_category, Unknown::Ignore);
        assert!(c.drop.is_empty());
    }

    #[test]
    fn a_full_config_parses() {
        let c = NormalizeConfig::parse(&json!({
            "label": "price", "task": "regression",
            "numeric": {"default": "minmax", "columns": {"age": "robust", "id2": "none"}},
            "categorical": {"default": "ordinal", "columns": {"city": "onehot"}},
            "drop": ["id"], "unknown_category": "error"
        }))
        .unwrap();
        assert_eq!(c.task, Task::Regression);
        assert_eq!(c.numeric.get("age"), Some(Scaling::Robust));
        assert_eq!(c.numeric.get("id2"), Some(Scaling::None));
        assert_eq!(c.categorical.default, Encoding::Ordinal);
        assert_eq!(c.categorical.get("city"), Some(Encoding::Onehot));
        assert_eq!(c.drop, ["id"]);
        assert_eq!(c.unknown_category, Unknown::Error);
    }

    #[test]
    fn every_problem_is_reported() {
        assert_eq!(
            messages(json!({
                "lable": "y", "task": "clasification",
                "numeric": {"default": "zscor", "column": {}},
                "categorical": {"columns": {"c": "onehto"}},
                "drop": "id"
            })),
            [
                "lable: unknown option `lable`",
                ": `normalize` needs a `label` column",
                "task: unknown value `clasification` for `task`",
                "numeric.column: unknown option `column`",
                "numeric.default: unknown value `zscor` for `numeric.default`",
                "categorical.columns.c: unknown value `onehto` for `categorical.columns.c`",
                "drop: `drop` must be a list of column names, not \"id\"",
            ]
        );
    }

    #[test]
    fn each_column_has_one_role() {
        assert_eq!(
            messages(json!({
                "label": "y",
                "numeric": {"columns": {"a": "zscore", "y": "minmax", "d": "none"}},
                "categorical": {"columns": {"a": "onehot"}},
                "drop": ["d", "y"]
            })),
            [
                "categorical.columns.a: column `a` has both a numeric method and an encoding",
                "numeric.columns.d: column `d` is dropped, so it cannot have a method",
                "numeric.columns.y: `y` is the label; it is encoded by `task`, not as a feature",
                "drop.1: `y` is the label and cannot be dropped",
            ]
        );
    }

    #[test]
    fn unknown_values_get_a_suggestion() {
        let p = NormalizeConfig::parse(&json!({"label": "y", "numeric": {"default": "robustt"}}))
            .unwrap_err();
        assert_eq!(p[0].help.as_deref(), Some("did you mean `robust`?"));
    }
}
