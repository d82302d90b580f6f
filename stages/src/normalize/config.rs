//! [`NormalizeConfig`]: the `with:` block of a `normalize` stage, parsed once into types.
//!
//! `prepare()` parses it once, when the pipeline loads, and reports every problem with its path
//! inside `with:`; `run()` gets the parsed config and can trust the values. Column names are
//! checked against the table only when the stage runs; here they are checked against each other
//! (the label cannot also be a feature, a column cannot have two methods, a dropped column cannot
//! have one).

use super::preprocess::{Encoding, Fence, Impute, Scaling, Task, Unknown};
use crate::fields::{Field, Reader, Type, Wording};
use crate::problems::problem;
use serde_json::{json, Value};
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
    /// Missing-value fills, fitted on the train split.
    pub(crate) impute: PerColumn<Impute>,
    /// Numeric columns clipped to fences fitted on the train split, and how.
    pub(crate) clip: Option<(Vec<String>, Fence)>,
    pub(crate) drop: Vec<String>,
    pub(crate) unknown_category: Unknown,
}

/// The options of `normalize` on tables: what the parser reads and the schema editors get.
pub(crate) const FIELDS: &[Field] = &[
    Field::new(
        "label",
        Type::Text {
            non_empty: true,
            expect: "a column name",
        },
        "The column the model learns to predict; encoded by `task`, never a feature.",
    )
    .required(),
    Field::new(
        "task",
        Type::Choice {
            names: &Task::NAMES,
            wording: Wording::ValueFor,
        },
        "classification encodes the label as class indices; regression keeps it a number.",
    )
    .default("\"classification\""),
    Field::new(
        "numeric",
        Type::Section(NUMERIC),
        "How numeric columns are scaled: a default method and the columns that differ.",
    ),
    Field::new(
        "categorical",
        Type::Section(CATEGORICAL),
        "How text columns are encoded: a default encoding and the columns that differ.",
    ),
    Field::new(
        "impute",
        Type::Section(IMPUTE),
        "How missing values are filled, from the train split only: a default method and the columns that differ.",
    ),
    Field::new(
        "clip",
        Type::Section(CLIP),
        "Numeric columns clipped to outlier fences fitted on the train split only.",
    ),
    Field::new(
        "drop",
        Type::Custom(drop_schema),
        "Columns left out of the features.",
    ),
    Field::new(
        "unknown_category",
        Type::Choice {
            names: &Unknown::NAMES,
            wording: Wording::ValueFor,
        },
        "What a category unseen in training becomes when the model is served.",
    )
    .default("\"ignore\""),
];

const NUMERIC: &[Field] = &[
    Field::new(
        "default",
        Type::Choice {
            names: &Scaling::NAMES,
            wording: Wording::ValueFor,
        },
        "The scaling of every numeric column not under `columns`.",
    )
    .default("\"zscore\""),
    Field::new(
        "columns",
        Type::Custom(numeric_columns_schema),
        "Per-column scaling: COLUMN: METHOD.",
    ),
];

const CATEGORICAL: &[Field] = &[
    Field::new(
        "default",
        Type::Choice {
            names: &Encoding::NAMES,
            wording: Wording::ValueFor,
        },
        "The encoding of every text column not under `columns`.",
    )
    .default("\"onehot\""),
    Field::new(
        "columns",
        Type::Custom(categorical_columns_schema),
        "Per-column encoding: COLUMN: ENCODING.",
    ),
];

const IMPUTE: &[Field] = &[
    Field::new(
        "default",
        Type::Choice {
            names: &Impute::NAMES,
            wording: Wording::ValueFor,
        },
        "The fill of every feature column not under `columns`; text columns fill `median` and `mean` with `mode`.",
    )
    .default("\"none\""),
    Field::new(
        "columns",
        Type::Custom(impute_columns_schema),
        "Per-column fill: COLUMN: METHOD.",
    ),
];

const ABOVE_0: Type = Type::Number {
    min: 0.0,
    max: f64::INFINITY,
    open_min: true,
};

const CLIP: &[Field] = &[
    Field::new(
        "columns",
        Type::Custom(drop_schema),
        "The numeric feature columns to clip.",
    )
    .required(),
    Field::new(
        "method",
        Type::Choice {
            names: &Fence::NAMES,
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
];

/// Full table-mode `with:` blocks that `normalize` accepts, for the schema's examples.
pub(crate) const EXAMPLES: &[&str] = &[
    r#"{"label": "species", "task": "classification", "numeric": {"default": "zscore", "columns": {"petal_length": "minmax"}}, "categorical": {"default": "onehot", "columns": {"island": "ordinal"}}, "drop": ["id"], "unknown_category": "ignore"}"#,
    r#"{"label": "price", "task": "regression", "impute": {"default": "median", "columns": {"city": "mode"}}, "clip": {"columns": ["area"], "method": "iqr", "k": 1.5}}"#,
    r#"{"label": "price", "task": "regression", "clip": {"columns": ["area"], "method": "zscore", "threshold": 3}}"#,
];

fn drop_schema() -> Value {
    json!({"type": "array", "items": {"type": "string", "minLength": 1}})
}

fn numeric_columns_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "enum": Scaling::NAMES}})
}

fn categorical_columns_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "enum": Encoding::NAMES}})
}

fn impute_columns_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "enum": Impute::NAMES}})
}

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
    r: &mut Reader<'_>,
    section: &str,
    names: &[&str],
    parse: impl Fn(&str) -> Option<M>,
) -> PerColumn<M> {
    let example = format!(
        "{section}: {{default: {}, columns: {{COLUMN: {}}}}}",
        names[0], names[1]
    );
    let fallback = || parse(names[0]).expect("the first name is the default");
    let mut out = PerColumn {
        default: fallback(),
        columns: Vec::new(),
    };
    let Some(mut s) = r.section(section, &example) else {
        return out;
    };
    if let Some(m) = s.choice("default").and_then(&parse) {
        out.default = m;
    }
    match s.get("columns") {
        None => {}
        Some(Value::Object(columns)) => {
            for (column, v) in columns {
                let path = [section, "columns", column.as_str()];
                if let Some(m) = word(v, &path, names, &parse, s.problems_mut()) {
                    out.columns.push((column.clone(), m));
                }
            }
        }
        Some(v) => s.report(
            &["columns"],
            format!("`{section}.columns` must be a mapping of column to method, not {v}"),
            Some(format!("write e.g. `columns: {{COLUMN: {}}}`", names[0])),
        ),
    }
    r.absorb(s);
    out
}

/// `clip: {columns: [...], method: iqr, k: 1.5}` or `{..., method: zscore, threshold: 3}`.
fn parse_clip(r: &mut Reader<'_>) -> Option<(Vec<String>, Fence)> {
    let example = "clip: {columns: [income], method: iqr, k: 1.5}";
    let mut s = r.section("clip", example)?;
    let mut columns = Vec::new();
    match s.get("columns") {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(c) if !c.is_empty() => columns.push(c.clone()),
                    v => s.report(
                        &["columns", &i.to_string()],
                        format!("expected a column name, not {v}"),
                        None,
                    ),
                }
            }
        }
        Some(v) => s.report(
            &["columns"],
            format!("`clip.columns` must be a list of column names, not {v}"),
            Some(format!("write e.g. `{example}`")),
        ),
        None => s.report(
            &[],
            "`clip` needs `columns`, the numeric columns to clip".into(),
            Some(format!("write e.g. `{example}`")),
        ),
    }
    let fence = Fence::read(&mut s);
    r.absorb(s);
    Some((columns, fence))
}

impl NormalizeConfig {
    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(crate) fn parse(with: &Value) -> Result<NormalizeConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(with, FIELDS, "`normalize`", "with: {label: species}")?;
        let label = r.text("label");
        if !r.has("label") {
            r.report(
                &[],
                "`normalize` needs a `label` column".into(),
                Some("add `label: COLUMN`, the column the model learns to predict; for image folders, set at least `size: [W, H]`".into()),
            );
        }
        let task = r
            .choice("task")
            .and_then(Task::parse)
            .unwrap_or(Task::Classification);
        let numeric = per_column(&mut r, "numeric", &Scaling::NAMES, Scaling::parse);
        let categorical = per_column(&mut r, "categorical", &Encoding::NAMES, Encoding::parse);
        let impute = per_column(&mut r, "impute", &Impute::NAMES, Impute::parse);
        let clip = parse_clip(&mut r);
        let unknown_category = r
            .choice("unknown_category")
            .and_then(Unknown::parse)
            .unwrap_or(Unknown::Ignore);
        let drop_value = r.get("drop");
        let mut problems = r.finish();
        let drop = match drop_value {
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
        let sections: [(&str, Vec<&String>); 3] = [
            ("numeric", numeric.columns.iter().map(|(c, _)| c).collect()),
            (
                "categorical",
                categorical.columns.iter().map(|(c, _)| c).collect(),
            ),
            ("impute", impute.columns.iter().map(|(c, _)| c).collect()),
        ];
        if let Some((columns, _)) = &clip {
            for (i, column) in columns.iter().enumerate() {
                let path = ["clip", "columns", &i.to_string()];
                if label.as_ref() == Some(column) || drop.contains(column) {
                    problems.push(problem(
                        &path,
                        format!("column `{column}` is the label or dropped, so it is no feature to clip"),
                        Some("`clip` takes numeric feature columns".into()),
                    ));
                } else if categorical.get(column).is_some() {
                    problems.push(problem(
                        &path,
                        format!(
                            "column `{column}` is encoded as categories, so it cannot be clipped"
                        ),
                        Some("`clip` takes numeric feature columns".into()),
                    ));
                }
            }
        }
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
                impute,
                clip,
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
    fn clip_takes_numeric_features_and_its_method_s_own_parameter() {
        let c = NormalizeConfig::parse(&json!({"label": "y", "clip": {"columns": ["x"]}})).unwrap();
        assert_eq!(c.clip, Some((vec!["x".to_string()], Fence::Iqr { k: 1.5 })));
        assert_eq!(
            messages(json!({
                "label": "y", "drop": ["d"], "categorical": {"columns": {"c": "onehot"}},
                "clip": {"columns": ["y", "d", "c"], "method": "zscore", "k": 2}
            })),
            [
                "clip.k: `k` applies to `method: iqr`; `zscore` takes `threshold`",
                "clip.columns.0: column `y` is the label or dropped, so it is no feature to clip",
                "clip.columns.1: column `d` is the label or dropped, so it is no feature to clip",
                "clip.columns.2: column `c` is encoded as categories, so it cannot be clipped",
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
