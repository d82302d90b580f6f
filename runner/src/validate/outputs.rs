//! Output paths: each stage's declared outputs (checked against its kind's, defaulted under
//! `out/PIPELINE/STAGE/`, with the extension the kind gives each file), each path kept inside the workspace, out of `.sluice/` and off symbolic
//! links that escape it; then, across stages, no path written twice nor inside another's output.

use super::Validator;
use crate::diag::did_you_mean;
use crate::paths::{Containment, PathProblem, WorkPath};
use crate::pipeline::{StageDef, StageKind};
use crate::spec::raw::RawStage;
use crate::spec::YPath;
use std::collections::BTreeMap;

impl Validator<'_, '_> {
    /// Each output of `s` by name. An invalid output gets a placeholder path, so that references
    /// to it resolve and do not cascade into more errors.
    pub(super) fn outputs(
        &mut self,
        s: &RawStage,
        kind: Option<&StageKind>,
        pipeline: &str,
        containment: &mut Containment<'_>,
    ) -> BTreeMap<String, WorkPath> {
        let mut out = BTreeMap::new();
        for (n, p) in self.declared_outputs(s, kind) {
            let (text, ypath) = match p {
                Some(p) => {
                    if p.contains("${{") {
                        self.problems.push(
                            &s.path.k("outputs").k(&n),
                            "output paths cannot contain `${{ }}` expressions",
                            Some("write the path literally".into()),
                        );
                        continue;
                    }
                    (p, s.path.k("outputs").k(&n))
                }
                None => {
                    let ext = self.default_extension(s, kind, &n);
                    let dot = if ext.is_some() { "." } else { "" };
                    (
                        format!("out/{pipeline}/{}/{n}{dot}{}", s.logical, ext.unwrap_or("")),
                        s.path.k("outputs").k(&n).key_of(),
                    )
                }
            };
            let valid = self.output_path(&n, &text, &ypath, containment);
            // An invalid output still gets a (never used) path, so that references to it do not
            // cascade into more errors.
            let safe = |t: &str| {
                t.replace(
                    |c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "_",
                )
            };
            let placeholder = format!(".sluice/invalid/{}/{}", safe(&s.name), safe(&n));
            if let Some(wp) = valid.or_else(|| WorkPath::parse(&placeholder, self.opts.root).ok()) {
                out.insert(n, wp);
            }
        }
        out
    }

    /// The extension a built-in kind gives output `name`'s default path, if any.
    fn default_extension(
        &self,
        s: &RawStage,
        kind: Option<&StageKind>,
        name: &str,
    ) -> Option<&'static str> {
        let Some(StageKind::Builtin { name: k, .. }) = kind else {
            return None;
        };
        let inputs: Vec<&str> = s.inputs.iter().map(|(n, _)| n.as_str()).collect();
        self.opts.registry.get(k)?.output_extension(name, &inputs)
    }

    /// The outputs as written, name and path; a built-in kind's are checked against the ones it
    /// writes, and those left out are added without a path (defaulted by the caller).
    fn declared_outputs(
        &mut self,
        s: &RawStage,
        kind: Option<&StageKind>,
    ) -> Vec<(String, Option<String>)> {
        let mut declared = s.outputs.clone();
        let Some(StageKind::Builtin { name, .. }) = kind else {
            return declared;
        };
        let allowed = self
            .opts
            .registry
            .get(name)
            .map(|st| st.outputs())
            .unwrap_or(&[]);
        for (n, _) in &declared {
            if !allowed.contains(&n.as_str()) {
                let help = did_you_mean(n, allowed.iter().copied())
                    .unwrap_or_else(|| format!("`{name}` writes: {}", allowed.join(", ")));
                self.problems.push(
                    &s.path.k("outputs").k(n).key_of(),
                    format!("stage kind `{name}` has no output `{n}`"),
                    Some(help),
                );
            }
        }
        for a in allowed {
            if !declared.iter().any(|(n, _)| n == a) {
                declared.push((a.to_string(), None));
            }
        }
        declared
    }

    /// Output `name`'s path `text`, if it is a workspace path outside `.sluice/` that no symbolic
    /// link leads out of the workspace.
    fn output_path(
        &mut self,
        name: &str,
        text: &str,
        ypath: &YPath,
        containment: &mut Containment<'_>,
    ) -> Option<WorkPath> {
        let wp = self.work_path(text, ypath, &format!("output `{name}`"))?;
        if wp.as_str() == ".sluice" || wp.as_str().starts_with(".sluice/") {
            self.problems.push(
                ypath,
                format!("output `{name}` is inside `.sluice/`, which sluice owns"),
                None,
            );
            return None;
        }
        match self.probes.output_escape(containment, &wp) {
            None => Some(wp),
            Some(escape) => {
                let (message, help) = escape.problem(name, &wp);
                self.problems.push(ypath, message, Some(help));
                None
            }
        }
    }

    pub(super) fn work_path(&mut self, text: &str, path: &YPath, what: &str) -> Option<WorkPath> {
        // No file system accepts a NUL in a name; `"\0"` in a quoted YAML string makes one.
        if text.contains('\0') {
            self.problems.push(
                path,
                format!(
                    "{what} path `{}` contains a NUL character",
                    text.escape_debug()
                ),
                Some("remove the `\\0` from the path".into()),
            );
            return None;
        }
        match WorkPath::parse(text, self.opts.root) {
            Ok(wp) => Some(wp),
            Err(PathProblem::Empty) => {
                self.problems
                    .push(path, format!("{what} has an empty path"), None);
                None
            }
            Err(PathProblem::Escapes) => {
                self.problems.push(
                    path,
                    format!("{what} path `{text}` is outside the workspace"),
                    Some(format!(
                        "paths are relative to the workspace `{}`",
                        self.opts.root.display()
                    )),
                );
                None
            }
        }
    }

    /// Two stages may not write the same path, nor one inside the other's output.
    pub(super) fn check_outputs(&mut self, raw: &[RawStage], stages: &[StageDef]) {
        let mut all: Vec<(&WorkPath, usize, &str)> = Vec::new();
        for s in stages {
            for o in &s.outputs {
                all.push((&o.path, s.idx, &o.name));
            }
        }
        all.sort();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if !b.0.is_within(a.0) {
                    break;
                }
                let (sa, sb) = (&stages[a.1].id, &stages[b.1].id);
                let msg = if a.0 == b.0 {
                    format!("stages `{sa}` and `{sb}` both write `{}`", a.0)
                } else {
                    format!(
                        "output `{}` of stage `{sb}` lies inside output `{}` of stage `{sa}`",
                        b.0, a.0
                    )
                };
                let help = if stages[a.1].base == stages[b.1].base
                    && !stages[a.1].bindings.is_empty()
                {
                    let keys: Vec<String> = stages[b.1]
                        .bindings
                        .iter()
                        .map(|(k, _)| format!("`${{{{ matrix.{k} }}}}`"))
                        .collect();
                    format!(
                        "every instance of a matrix stage needs its own outputs: put {} in the path, or leave the path out for the default `out/<pipeline>/<instance>/<name>`",
                        keys.join(" and ")
                    )
                } else {
                    "every output path belongs to exactly one stage".to_string()
                };
                let p = if raw[b.1]
                    .outputs
                    .iter()
                    .any(|(n, p)| n == b.2 && p.is_some())
                {
                    raw[b.1].path.k("outputs").k(b.2)
                } else {
                    raw[b.1].path.key_of()
                };
                self.problems.push(&p, msg, Some(help));
            }
        }
    }
}
