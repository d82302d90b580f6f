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
    /// Matrix keys, keyed as params named `matrix.KEY`.
    pub(super) matrix: BTreeSet<String>,
    /// Instance names and output names.
    pub(super) stage_outputs: BTreeSet<(String, String)>,
}

/// What an expression stands for: one value, or (a gather, `[*]`) a list of them.
enum Resolved {
    One(String),
    Many(Vec<String>),
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
    /// A sweep trial's params, looked up before `params`.
    pub(super) overrides: &'s BTreeMap<String, Json>,
    pub(super) outputs_by_stage: &'s HashMap<String, BTreeMap<String, WorkPath>>,
    /// The stages' names as written (for did-you-mean).
    pub(super) stage_names: &'s [String],
    /// Instances (as indices into `stages`) by the name written under `stages:`.
    pub(super) by_base: &'s HashMap<String, Vec<usize>>,
    pub(super) stages: &'s [crate::spec::RawStage],
    pub(super) own: &'s str,
    pub(super) own_base: &'s str,
    /// The stage's `matrix:` had problems of its own: references to it are not reported too.
    pub(super) matrix_broken: bool,
    /// The stage's matrix values (and sweep trial): what `matrix.KEY` reads, and what picks the
    /// instance of another matrix stage a reference means.
    pub(super) bindings: &'s [(String, Json)],
    /// `None` while the inputs themselves are read: an input cannot refer to other inputs.
    pub(super) own_inputs: Option<&'s BTreeMap<String, WorkPath>>,
    /// Declared inputs that gather every instance of an output (`[*]`), as lists.
    pub(super) own_lists: Option<&'s BTreeMap<String, Vec<WorkPath>>>,
    pub(super) allow_own_outputs: bool,
}

impl Scope<'_> {
    fn param(&self, name: &str) -> Option<&Json> {
        self.overrides.get(name).or_else(|| self.params.get(name))
    }
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
                    match scope.param(name) {
                        Some(v) => v.clone(),
                        None => {
                            self.unknown_param(name, path, scope);
                            return None;
                        }
                    }
                } else if let [Piece::Expr(Ref::Matrix(key))] = pieces.as_slice() {
                    self.matrix_value(key, path, scope, used)?
                } else if let [Piece::Expr(
                    r @ (Ref::StageOutput { all: true, .. } | Ref::Input(_)),
                )] = pieces.as_slice()
                {
                    match self.resolve_ref(r, path, scope, used)? {
                        Resolved::One(t) => Json::String(t),
                        Resolved::Many(v) => Json::Array(v.into_iter().map(Json::String).collect()),
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
            let quote = |t: &str| {
                if mode == Splice::Shell {
                    shell_quote(t)
                } else {
                    t.to_string()
                }
            };
            match text {
                Some(Resolved::One(t)) => out.push_str(&quote(&t)),
                // A list becomes words: one per item, each quoted on its own in a command.
                Some(Resolved::Many(items)) => {
                    let words: Vec<String> = items.iter().map(|t| quote(t)).collect();
                    out.push_str(&words.join(" "));
                }
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
    ) -> Option<Resolved> {
        match r {
            Ref::Param(name) => {
                used.params.insert(name.clone());
                match scope.param(name) {
                    Some(Json::String(s)) => Some(Resolved::One(s.clone())),
                    Some(Json::Null) => Some(Resolved::One(String::new())),
                    Some(other) => Some(Resolved::One(other.to_string())),
                    None => {
                        self.unknown_param(name, path, scope);
                        None
                    }
                }
            }
            Ref::Matrix(key) => {
                let v = self.matrix_value(key, path, scope, used)?;
                Some(Resolved::One(crate::spec::matrix::value_text(&v)))
            }
            Ref::StageOutput { stage, output, all } => {
                let instances = self.instances_of(stage, path, scope, *all)?;
                let mut paths = Vec::with_capacity(instances.len());
                for i in instances {
                    let name = &scope.stages[i].name;
                    let outs = scope.outputs_by_stage.get(name)?;
                    match outs.get(output) {
                        Some(p) => {
                            used.stage_outputs.insert((name.clone(), output.clone()));
                            paths.push(p.to_string());
                        }
                        None => {
                            let help = did_you_mean(output, outs.keys().map(String::as_str))
                                .or_else(|| {
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
                            return None;
                        }
                    }
                }
                Some(if *all {
                    Resolved::Many(paths)
                } else {
                    Resolved::One(paths.pop()?)
                })
            }
            Ref::Output(name) => {
                let own = scope.outputs_by_stage.get(scope.own);
                match own.and_then(|m| m.get(name)) {
                    Some(p) if scope.allow_own_outputs => Some(Resolved::One(p.to_string())),
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
                Some(inputs) => {
                    if let Some(list) = scope.own_lists.and_then(|l| l.get(name)) {
                        return Some(Resolved::Many(list.iter().map(|p| p.to_string()).collect()));
                    }
                    match inputs.get(name) {
                        Some(p) => Some(Resolved::One(p.to_string())),
                        None => {
                            let help = did_you_mean(
                                name,
                                inputs.keys().map(String::as_str).chain(
                                    scope
                                        .own_lists
                                        .into_iter()
                                        .flat_map(|l| l.keys().map(String::as_str)),
                                ),
                            );
                            self.problems.push(
                                path,
                                format!("stage `{}` declares no input `{name}`", scope.own),
                                help,
                            );
                            None
                        }
                    }
                }
            },
        }
    }

    /// The instance's value of matrix key `key`, recorded as the param `matrix.KEY` it keys as.
    fn matrix_value(
        &mut self,
        key: &str,
        path: &YPath,
        scope: &Scope<'_>,
        used: &mut Used,
    ) -> Option<Json> {
        let keys = || {
            scope
                .bindings
                .iter()
                .filter(|(k, _)| k != crate::spec::matrix::TRIAL_KEY)
        };
        match keys().find(|(k, _)| k == key) {
            Some((_, v)) => {
                used.matrix.insert(key.to_string());
                Some(v.clone())
            }
            None if scope.matrix_broken => None,
            None => {
                let base = scope.own_base;
                let (message, help) = if keys().next().is_none() {
                    (
                        format!(
                            "stage `{base}` has no `matrix`, so `matrix.{key}` means nothing here"
                        ),
                        Some(format!(
                            "add `matrix: {{{key}: [...]}}` to the stage, or use a param"
                        )),
                    )
                } else {
                    (
                        format!("stage `{base}` has no matrix key `{key}`"),
                        did_you_mean(key, keys().map(|(k, _)| k.as_str())).or_else(|| {
                            Some(format!(
                                "its matrix keys: {}",
                                keys()
                                    .map(|(k, _)| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }),
                    )
                };
                self.problems.push(path, message, help);
                None
            }
        }
    }

    /// The instances of `stage` a reference from this stage means: those whose bindings agree
    /// with this stage's on every key both have. Without `all`, exactly one must.
    fn instances_of(
        &mut self,
        stage: &str,
        path: &YPath,
        scope: &Scope<'_>,
        all: bool,
    ) -> Option<Vec<usize>> {
        let Some(candidates) = scope.by_base.get(stage) else {
            let help = did_you_mean(stage, scope.stage_names.iter().map(String::as_str));
            self.problems
                .push(path, format!("reference to unknown stage `{stage}`"), help);
            return None;
        };
        let matching: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| crate::spec::matrix::agree(scope.bindings, &scope.stages[i].bindings))
            .collect();
        if all || matching.len() == 1 {
            return Some(matching);
        }
        let keys: Vec<&str> = scope.stages[candidates[0]]
            .bindings
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != crate::spec::matrix::TRIAL_KEY)
            .collect();
        let base = scope.own_base;
        if matching.is_empty() {
            self.problems.push(
                path,
                format!("no instance of stage `{stage}` matches `{}`", scope.own),
                Some(format!(
                    "`{stage}`'s matrix ({}) has no instance with this stage's values",
                    keys.join(", ")
                )),
            );
        } else {
            self.problems.push(
                path,
                format!(
                    "stage `{stage}` has {} instances (matrix: {}) and this reference from `{base}` does not pick one",
                    matching.len(),
                    keys.join(", ")
                ),
                Some(format!(
                    "give `{base}` the same matrix keys to pair instance by instance, or gather them all as a list with `${{{{ stages.{stage}.outputs.NAME[*] }}}}`"
                )),
            );
        }
        None
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
