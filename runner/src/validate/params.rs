//! Params: the pipeline's `params:` as JSON values, then the promoted params (`sweep::promote`,
//! read and checked by `load`) over them, then the `--set NAME=VALUE` overrides on top (only of
//! declared params, each read as a YAML scalar within bounds).

use super::Validator;
use crate::diag::did_you_mean;
use crate::spec::yaml::read_yaml;
use crate::spec::YPath;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The longest `--set` value, in bytes.
pub const MAX_SET_BYTES: usize = 64 * 1024;

/// Param values by name.
pub(super) type Params = BTreeMap<String, Json>;

impl Validator<'_, '_> {
    /// The declared params with the promoted params and then the `--set` overrides applied.
    pub(super) fn params(&mut self, declared: &[(String, yaml_serde::Value)]) -> Params {
        let mut params = self.declared_params(declared);
        if let Some(promoted) = self.promoted {
            // `read_promoted` took only names declared under `params:`.
            for (k, v) in &promoted.params {
                params.insert(k.clone(), v.clone());
            }
        }
        self.apply_overrides(&mut params);
        params
    }

    fn declared_params(&mut self, declared: &[(String, yaml_serde::Value)]) -> Params {
        let mut params = Params::new();
        for (k, v) in declared {
            match serde_json::to_value(v) {
                Ok(j) => {
                    params.insert(k.clone(), j);
                }
                Err(e) => self.problems.push(
                    &YPath::root().k("params").k(k),
                    format!("param `{k}`: {e}"),
                    None,
                ),
            }
        }
        params
    }

    fn apply_overrides(&mut self, params: &mut Params) {
        for (k, v) in self.opts.overrides {
            if !params.contains_key(k) {
                let help = did_you_mean(k, params.keys().map(String::as_str))
                    .unwrap_or_else(|| "declare it under `params:` first".to_string());
                self.problems.push_unlocated(
                    format!("`--set {k}=...` names an unknown param `{k}`"),
                    Some(help),
                );
                continue;
            }
            if v.len() > MAX_SET_BYTES {
                self.problems.push_unlocated(
                    format!(
                        "`--set {k}=...` is {} bytes long; a value may have at most {MAX_SET_BYTES}",
                        v.len()
                    ),
                    Some("keep large values in a file and pass its path".into()),
                );
                continue;
            }
            // A value that does not read as YAML within bounds is taken as the text given.
            let parsed = match read_yaml(v) {
                Ok((parsed, too_large)) if too_large.is_empty() => parsed,
                _ => yaml_serde::Value::String(v.clone()),
            };
            let j = serde_json::to_value(parsed).unwrap_or(Json::String(v.clone()));
            params.insert(k.clone(), j);
        }
    }
}
