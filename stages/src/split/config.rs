//! [`SplitConfig`]: the `with:` block of a `split` stage, parsed once into types.
//!
//! `prepare()` parses it once, when the pipeline loads, and reports every problem with its path
//! inside `with:` so that the engine can point at the YAML; `run()` gets the parsed config and can
//! trust the values.

use super::Part;
use crate::fields::{Field, Reader, Type, Wording};
use crate::problems::problem;
use sluice_runner::diag::did_you_mean;
use sluice_runner::stage::ConfigProblem;

/// How rows are dealt to the splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Shuffle all rows, cut by the ratios.
    Random,
    /// Cut each class of the `label` column by the ratios.
    Stratified,
    /// Deal whole groups of the `group` column, approaching the ratios in rows.
    Grouped,
}

impl Method {
    const NAMES: [&'static str; 3] = ["random", "stratified", "grouped"];

    fn parse(s: &str) -> Option<Method> {
        match s {
            "random" => Some(Method::Random),
            "stratified" => Some(Method::Stratified),
            "grouped" => Some(Method::Grouped),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Random => "random",
            Method::Stratified => "stratified",
            Method::Grouped => "grouped",
        }
    }
}

/// Fractions of the rows for train, val and test: each at least 0, train and test above 0,
/// summing to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ratios([f64; 3]);

impl Ratios {
    pub(crate) fn get(&self, part: Part) -> f64 {
        self.0[part as usize]
    }

    #[cfg(test)]
    pub(crate) fn new(train: f64, val: f64, test: f64) -> Ratios {
        Ratios([train, val, test])
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SplitConfig {
    pub(crate) ratios: Ratios,
    pub(crate) seed: u64,
    pub(crate) method: Method,
    /// Required by `stratified`; elsewhere only counted in the summary.
    pub(crate) label: Option<String>,
    pub(crate) group: Option<String>,
}

/// The options of `split`: what the parser reads and the schema editors get.
pub(crate) const FIELDS: &[Field] = &[
    Field::new(
        "ratios",
        Type::Custom(ratios_schema),
        "Fractions of the rows for train, val and test, summing to 1; val may be left out.",
    )
    .required(),
    Field::new(
        "seed",
        Type::Whole {
            min: 0,
            expect: Some("a whole number from 0 to 2^64-1"),
        },
        "Seed of the shuffle: the same seed deals the same rows.",
    )
    .default("0"),
    Field::new(
        "method",
        Type::Choice {
            names: &Method::NAMES,
            wording: Wording::Noun {
                listing: "methods",
                help_on_wrong_type: false,
            },
        },
        "random shuffles all rows; stratified keeps each class of `label` in proportion; grouped keeps the rows of each `group` value together.",
    )
    .default("\"random\""),
    Field::new("label", COLUMN, "The class column: needed by `method: stratified`, counted in the summary otherwise."),
    Field::new("group", COLUMN, "The column whose values `method: grouped` keeps in one split."),
];

const COLUMN: Type = Type::Text {
    non_empty: true,
    expect: "a column name",
};

/// Full `with:` blocks that `split` accepts, for the schema's examples.
pub(crate) const EXAMPLES: &[&str] = &[
    r#"{"ratios": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 42, "method": "stratified", "label": "species"}"#,
    r#"{"ratios": {"train": 0.8, "test": 0.2}, "method": "grouped", "group": "patient"}"#,
];

fn ratios_schema() -> serde_json::Value {
    // Train and test must hold rows; a run may go without validation rows.
    let above_0 = serde_json::json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1});
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["train", "test"],
        "properties": {
            "train": above_0,
            "val": {"type": "number", "minimum": 0, "maximum": 1},
            "test": above_0,
        },
    })
}

const TOLERANCE: f64 = 1e-6;

impl SplitConfig {
    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(crate) fn parse(with: &serde_json::Value) -> Result<SplitConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(
            with,
            FIELDS,
            "`split`",
            "with: {ratios: {train: 0.8, val: 0.1, test: 0.1}}",
        )?;
        let ratios = parse_ratios(r.get("ratios"), r.problems_mut());
        let seed = r.whole("seed").unwrap_or(0);
        let method = r.choice("method").and_then(Method::parse);
        let label = r.text("label");
        let group = r.text("group");
        match method {
            Some(Method::Stratified) if label.is_none() && !r.has("label") => {
                r.report(
                    &["method"],
                    "`method: stratified` needs a `label` column".into(),
                    Some("add `label: COLUMN`, the column whose classes each split keeps in proportion; for an `images` input, leave `method` out: images are stratified by class folder".into()),
                )
            }
            Some(Method::Grouped) if group.is_none() && !r.has("group") => {
                r.report(
                    &["method"],
                    "`method: grouped` needs a `group` column".into(),
                    Some("add `group: COLUMN`; rows with the same value stay in one split".into()),
                )
            }
            Some(m) if m != Method::Grouped && r.has("group") => r.report(
                &["group"],
                format!("`group` only applies to `method: grouped`, and this split is {}", m.name()),
                Some("set `method: grouped`, or remove `group`".into()),
            ),
            _ => {}
        }
        let problems = r.finish();
        match (ratios, method) {
            (Some(ratios), Some(method)) if problems.is_empty() => Ok(SplitConfig {
                ratios,
                seed,
                method,
                label,
                group,
            }),
            _ => Err(problems),
        }
    }
}

fn parse_ratios(
    value: Option<&serde_json::Value>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Ratios> {
    let example = "write e.g. `ratios: {train: 0.7, val: 0.15, test: 0.15}`";
    let map = match value {
        Some(serde_json::Value::Object(m)) => m,
        Some(v) => {
            problems.push(problem(
                &["ratios"],
                format!("`ratios` must be a mapping of split to fraction, not {v}"),
                Some(example.into()),
            ));
            return None;
        }
        None => {
            problems.push(problem(&[], "`split` needs `ratios`", Some(example.into())));
            return None;
        }
    };
    let before = problems.len();
    for key in map.keys() {
        if Part::from_name(key).is_none() {
            let names = Part::ALL.map(Part::name);
            let help = did_you_mean(key, names)
                .unwrap_or_else(|| format!("the splits are {}", names.join(", ")));
            problems.push(problem(
                &["ratios", key],
                format!("unknown split `{key}`"),
                Some(help),
            ));
        }
    }
    let mut values = [0.0; 3];
    for part in Part::ALL {
        let name = part.name();
        match map.get(name) {
            // Only val may be left out: a run without validation data is a choice, one without
            // training or test data is a mistake.
            None if part == Part::Val => {}
            None => problems.push(problem(
                &["ratios"],
                format!("`ratios` has no `{name}` fraction"),
                Some(example.into()),
            )),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {
                    if x == 0.0 && part != Part::Val {
                        problems.push(problem(
                            &["ratios", name],
                            format!("the {name} fraction must be above 0"),
                            None,
                        ));
                    }
                    values[part as usize] = x;
                }
                _ => problems.push(problem(
                    &["ratios", name],
                    format!("the {name} fraction must be a number from 0 to 1, not {v}"),
                    None,
                )),
            },
        }
    }
    if problems.len() > before {
        return None;
    }
    let sum: f64 = values.iter().sum();
    if (sum - 1.0).abs() > TOLERANCE {
        problems.push(problem(
            &["ratios"],
            format!("the ratios sum to {}, not 1", (sum * 1e6).round() / 1e6),
            Some("make train + val + test = 1".into()),
        ));
        return None;
    }
    Some(Ratios(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(with: serde_json::Value) -> Vec<String> {
        SplitConfig::parse(&with)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{}: {}", p.path.join("."), p.message))
            .collect()
    }

    #[test]
    fn a_full_config_parses() {
        let c = SplitConfig::parse(&json!({
            "ratios": {"train": 0.7, "val": 0.15, "test": 0.15},
            "seed": 42, "method": "stratified", "label": "species"
        }))
        .unwrap();
        assert_eq!(c.ratios, Ratios::new(0.7, 0.15, 0.15));
        assert_eq!((c.seed, c.method), (42, Method::Stratified));
        assert_eq!(c.label.as_deref(), Some("species"));
    }

    #[test]
    fn defaults_are_seed_0_random_and_no_val() {
        let c = SplitConfig::parse(&json!({"ratios": {"train": 0.8, "test": 0.2}})).unwrap();
        assert_eq!((c.seed, c.method), (0, Method::Random));
        assert_eq!(c.ratios.get(Part::Val), 0.0);
    }

    #[test]
    fn every_problem_is_reported() {
        assert_eq!(
            messages(json!({
                "ratio": 1, "seed": -1, "method": "stratifed",
                "group": "g"
            })),
            [
                "ratio: unknown option `ratio`",
                ": `split` needs `ratios`",
                "seed: `seed` must be a whole number from 0 to 2^64-1, not -1",
                "method: unknown method `stratifed`",
            ]
        );
        assert_eq!(
            messages(json!({"ratios": {"train": 0.7, "val": 0.2, "test": 0.2}})),
            ["ratios: the ratios sum to 1.1, not 1"]
        );
        assert_eq!(
            messages(json!({"ratios": {"train": 0.9, "tset": 0.1}})),
            [
                "ratios.tset: unknown split `tset`",
                "ratios: `ratios` has no `test` fraction"
            ]
        );
        assert_eq!(
            messages(json!({"ratios": {"train": 1, "test": 0}, "method": "stratified"})),
            [
                "ratios.test: the test fraction must be above 0",
                "method: `method: stratified` needs a `label` column"
            ]
        );
    }

    #[test]
    fn unknown_options_get_a_suggestion() {
        let p = SplitConfig::parse(&json!({"ratios": {"train": 0.5, "test": 0.5}, "lable": "y"}))
            .unwrap_err();
        assert_eq!(p[0].help.as_deref(), Some("did you mean `label`?"));
    }
}
