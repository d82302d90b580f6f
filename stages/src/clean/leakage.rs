//! The warnings of [`super::Clean`]: rules that fit a statistic (a fill's mean, median or mode,
//! the fences of `outliers`) on every row of the table. `clean` runs before `split`, so such a
//! statistic has seen the test rows, and the test metrics are no longer those of unseen data.
//! Rules that fit nothing (drop, constant fills, filters, casts, duplicates) are left alone.

use super::config::{CleanConfig, Fill};
use crate::problems::problem;
use sluice_runner::stage::ConfigProblem;

/// One warning per rule that fits a statistic, at the rule.
pub(super) fn warnings(config: &CleanConfig) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if let Some(missing) = &config.missing {
        for (column, fill) in &missing.columns {
            let method = match fill {
                Fill::Mean => "mean",
                Fill::Median => "median",
                Fill::Mode => "mode",
                Fill::Keep | Fill::Drop | Fill::Constant(_) => continue,
            };
            out.push(problem(
                &["missing", "columns", column],
                format!(
                    "the `{method}` fill of `{column}` is computed on every row, test rows included, so the test split leaks into training"
                ),
                Some(format!(
                    "fill it from the train split instead: remove it here and give the `normalize` stage `impute: {{columns: {{{column}: {method}}}}}`; `drop` and `{{constant: VALUE}}` fit nothing and may stay"
                )),
            ));
        }
    }
    if let Some(outliers) = &config.outliers {
        let method = outliers.method.name();
        out.push(problem(
            &["outliers"],
            format!(
                "the `{method}` fences of `outliers` are computed on every row, test rows included, so the test split leaks into training"
            ),
            Some(format!(
                "clip with fences fitted on the train split instead: remove it here and give the `normalize` stage `clip: {{columns: [{}], method: {method}}}`; to drop rows, use a `filter` with fixed bounds, which fits nothing",
                outliers.columns.join(", ")
            )),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(with: serde_json::Value) -> Vec<String> {
        warnings(&CleanConfig::parse(&with).unwrap())
            .into_iter()
            .map(|p| p.path.join("."))
            .collect()
    }

    #[test]
    fn only_rules_that_fit_a_statistic_are_named() {
        assert_eq!(
            paths(json!({"missing": {"default": "drop", "columns": {
                "a": "median", "b": "mean", "c": "mode", "d": "drop", "e": {"constant": 0}, "f": "keep"
            }}})),
            [
                "missing.columns.a",
                "missing.columns.b",
                "missing.columns.c"
            ]
        );
        assert_eq!(
            paths(json!({"outliers": {"columns": ["x"], "method": "zscore"}})),
            ["outliers"]
        );
        assert!(paths(json!({
            "missing": {"default": "drop"}, "drop_columns": ["id"], "cast": {"x": "float"},
            "filter": "x > 0", "duplicates": "drop"
        }))
        .is_empty());
    }
}
