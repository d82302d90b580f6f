//! Stage kinds: the `plugins:` a pipeline declares (refused if they shadow a built-in), and each
//! stage's kind from `uses:` (a built-in or a plugin, with a did-you-mean) or `run:`.

use super::Validator;
use crate::diag::did_you_mean;
use crate::paths::WorkPath;
use crate::pipeline::StageKind;
use crate::spec::raw::{RawPlugin, RawStage};
use std::collections::BTreeMap;

/// A declared plugin: its command, and the command words that are files in the workspace (their
/// content is part of the key).
pub(super) struct Plugin {
    command: Vec<String>,
    files: Vec<WorkPath>,
}

impl Validator<'_, '_> {
    /// The declared plugins by name.
    pub(super) fn plugins(&mut self, raw: &[RawPlugin]) -> BTreeMap<String, Plugin> {
        let root = self.opts.root;
        let mut plugins = BTreeMap::new();
        for p in raw {
            if self.opts.registry.get(&p.name).is_some() {
                self.problems.push(
                    &p.path.key_of(),
                    format!("plugin `{}` has the name of a built-in stage kind", p.name),
                    Some("rename the plugin".into()),
                );
            }
            let mut files = Vec::new();
            for word in &p.command {
                if let Ok(wp) = WorkPath::parse(word, root) {
                    if self.probes.is_file(&wp.to_abs(root)) {
                        files.push(wp);
                    }
                }
            }
            plugins.insert(
                p.name.clone(),
                Plugin {
                    command: p.command.clone(),
                    files,
                },
            );
        }
        plugins
    }

    /// The kind of stage `s`, or `None` (with a problem) when it has none or an unknown one.
    pub(super) fn kind(
        &mut self,
        s: &RawStage,
        plugins: &BTreeMap<String, Plugin>,
    ) -> Option<StageKind> {
        match (&s.uses, &s.run) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    &s.path.k("run").key_of(),
                    format!("stage `{}` has both `uses` and `run`", s.base),
                    Some("a stage either uses a kind or runs a command; keep one".into()),
                );
                None
            }
            (None, None) => {
                self.problems.push(
                    &s.path.key_of(),
                    format!("stage `{}` has neither `uses` nor `run`", s.base),
                    Some("add `uses: KIND` (a built-in or a plugin) or `run: COMMAND`".into()),
                );
                None
            }
            (None, Some(run)) if run.trim().is_empty() => {
                self.problems.push(
                    &s.path.k("run"),
                    format!("stage `{}` has an empty `run`", s.base),
                    Some("write the command to run, e.g. `run: python3 prepare.py`".into()),
                );
                None
            }
            (None, Some(run)) => Some(StageKind::Run {
                command: run.clone(),
            }),
            (Some(kind), None) => {
                if let Some(stage) = self.opts.registry.get(kind) {
                    Some(StageKind::Builtin {
                        name: kind.clone(),
                        version: stage.version(),
                    })
                } else if let Some(Plugin { command, files }) = plugins.get(kind) {
                    Some(StageKind::Plugin {
                        name: kind.clone(),
                        command: command.clone(),
                        files: files.clone(),
                    })
                } else {
                    let known: Vec<String> = self
                        .opts
                        .registry
                        .names()
                        .map(str::to_string)
                        .chain(plugins.keys().cloned())
                        .collect();
                    let help =
                        did_you_mean(kind, known.iter().map(String::as_str)).unwrap_or_else(|| {
                            if known.is_empty() {
                                "declare it under `plugins:`".to_string()
                            } else {
                                format!(
                                    "known kinds: {}; or declare it under `plugins:`",
                                    known.join(", ")
                                )
                            }
                        });
                    self.problems.push(
                        &s.path.k("uses"),
                        format!("unknown stage kind `{kind}`"),
                        Some(help),
                    );
                    None
                }
            }
        }
    }
}
