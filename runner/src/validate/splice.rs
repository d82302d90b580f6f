//! Substitution of `${{ }}` expressions: params, other stages' outputs, and the stage's own
//! inputs and outputs, spliced into plain text, shell commands (quoted) or whole `with:` values
//! (a string that is one expression keeps the value's type). [`Used`] records what a stage
//! referred to, which makes its params and implied inputs.

use super::Validator;
use crate::diag::did_you_mean;
use crate::paths::WorkPath;
use crate::spec::template::{self, Piece, Ref};
use crate::spec::YPath;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// References a piece of configuration made, collected while substituting.
#[derive(Default)]
pub(super) struct Used {
    pub(super) params: BTreeSet<String>,
    pub(super) stage_outputs: BTreeSet<(String, String)>,
}

/// Where a template appears decides how values are spliced in.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Splice {
    /// Plain text.
    Text,
    /// Inside a shell command: values are quoted when they need it.
    Shell,
}

/// What an expression may refer to from where it is written.
pub(super) struct Scope<'s> {
    pub(super) params: &'s BTreeMap<String, Json>,
    pub(super) outputs_by_stage: &'s HashMap<String, BTreeMap<String, WorkPath>>,
    pub(super) stage_names: &'s [String],
    pub(super) own: &'s str,
    /// `None` while the inputs themselves are read: an input cannot refer to other inputs.
    pub(super) own_inputs: Option<&'s BTreeMap<String, WorkPath>>,
    pub(super) allow_own_outputs: bool,
}

impl Validator<'_, '_> {
    /// Substitutes expressions in a YAML value, keeping types where a string is one expression.
    pub(super) fn splice_value(
        &mut self,
        v: &yaml_serde::Value,
        path: &YPath,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<Json> {
        use yaml_serde::Value as Y;
        Some(match v {
            Y::String(s) => {
                let pieces = match template::parse(s) {
                    Ok(p) => p,
                    Err(e) => {
                        self.problems.push(path, e, None);
                        return None;
                    }
                };
                if let [Piece::Expr(Ref::Param(name))] = pieces.as_slice() {
                    used.params.insert(name.clone());
                    match scope.params.get(name) {
                        Some(v) => v.clone(),
                        None => {
                            self.unknown_param(name, path, scope);
                            return None;
                        }
                    }
                } else {
                    Json::String(self.splice_pieces(&pieces, path, scope, Splice::Text, used)?)
                }
            }
            Y::Sequence(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| {
                        self.splice_value(it, &path.i(i), scope, used)
                            .unwrap_or(Json::Null)
                    })
                    .collect(),
            ),
            Y::Mapping(m) => {
                let mut out = serde_json::Map::new();
                for (k, val) in m {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        other => yaml_serde::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    let j = self
                        .splice_value(val, &path.k(&key), scope, used)
                        .unwrap_or(Json::Null);
                    out.insert(key, j);
                }
                Json::Object(out)
            }
            Y::Tagged(t) => return self.splice_value(&t.value, path, scope, used),
            other => serde_json::to_value(other).unwrap_or(Json::Null),
        })
    }

    pub(super) fn splice_text(
        &mut self,
        s: &str,
        path: &YPath,
        scope: &Scope<'_>,
        mode: Splice,
        used: &mut Used,
    ) -> Option<String> {
        match template::parse(s) {
            Ok(pieces) => self.splice_pieces(&pieces, path, scope, mode, used),
            Err(e) => {
                self.problems.push(path, e, None);
                None
            }
        }
    }

    fn splice_pieces(
        &mut self,
        pieces: &[Piece],
        path: &YPath,
        scope: &Scope<'_>,
        mode: Splice,
        used: &mut Used,
    ) -> Option<String> {
        let mut out = String::new();
        let mut ok = true;
        for piece in pieces {
            let text = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Expr(r) => self.resolve_ref(r, path, scope, used),
            };
            match text {
                Some(t) if mode == Splice::Shell => out.push_str(&shell_quote(&t)),
                Some(t) => out.push_str(&t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn resolve_ref(
        &mut self,
        r: &Ref,
        path: &YPath,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<String> {
        match r {
            Ref::Param(name) => {
                used.params.insert(name.clone());
                match scope.params.get(name) {
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(Json::Null) => Some(String::new()),
                    Some(other) => Some(other.to_string()),
                    None => {
                        self.unknown_param(name, path, scope);
                        None
                    }
                }
            }
            Ref::StageOutput { stage, output } => {
                let Some(outs) = scope.outputs_by_stage.get(stage) else {
                    let help = did_you_mean(stage, scope.stage_names.iter().map(String::as_str));
                    self.problems
                        .push(path, format!("reference to unknown stage `{stage}`"), help);
                    return None;
                };
                match outs.get(output) {
                    Some(p) => {
                        used.stage_outputs.insert((stage.clone(), output.clone()));
                        Some(p.to_string())
                    }
                    None => {
                        let help =
                            did_you_mean(output, outs.keys().map(String::as_str)).or_else(|| {
                                Some(format!(
                                    "stage `{stage}` has outputs: {}",
                                    outs.keys().cloned().collect::<Vec<_>>().join(", ")
                                ))
                            });
                        self.problems.push(
                            path,
                            format!("stage `{stage}` has no output `{output}`"),
                            help,
                        );
                        None
                    }
                }
            }
            Ref::Output(name) => {
                let own = scope.outputs_by_stage.get(scope.own);
                match own.and_then(|m| m.get(name)) {
                    Some(p) if scope.allow_own_outputs => Some(p.to_string()),
                    Some(_) => {
                        self.problems.push(
                            path,
                            "an input cannot refer to the stage's own outputs",
                            None,
                        );
                        None
                    }
                    None => {
                        let help =
                            own.and_then(|m| did_you_mean(name, m.keys().map(String::as_str)));
                        self.problems.push(
                            path,
                            format!("stage `{}` declares no output `{name}`", scope.own),
                            help,
                        );
                        None
                    }
                }
            }
            Ref::Input(name) => match scope.own_inputs {
                None => {
                    self.problems
                        .push(path, "an input cannot refer to other inputs", None);
                    None
                }
                Some(inputs) => match inputs.get(name) {
                    Some(p) => Some(p.to_string()),
                    None => {
                        let help = did_you_mean(name, inputs.keys().map(String::as_str));
                        self.problems.push(
                            path,
                            format!("stage `{}` declares no input `{name}`", scope.own),
                            help,
                        );
                        None
                    }
                },
            },
        }
    }

    fn unknown_param(&mut self, name: &str, path: &YPath, scope: &Scope<'_>) {
        let help = did_you_mean(name, scope.params.keys().map(String::as_str))
            .unwrap_or_else(|| "declare it under `params:`".to_string());
        self.problems.push(
            path,
            format!("reference to unknown param `{name}`"),
            Some(help),
        );
    }
}

/// Quotes a value for `sh` when it contains anything beyond a safe set of characters.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("out/a.csv"), "out/a.csv");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
