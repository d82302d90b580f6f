//! `Promoted`: the params of a sweep's chosen trial, kept in `<stem>.promoted.yaml` beside the
//! pipeline file. Every load of the pipeline layers them over its `params:` and under `--set`
//! (`validate::load`), the lock file records which promotion its entries were made with
//! (`LockPromoted`), and the run that drops a promotion (the file deleted) says which params
//! changed back, once, instead of reverting them silently.
//!
//! The file is a user-visible, committable artefact like the lock file: small, plain YAML, with a
//! header that says what wrote it and that deleting it undoes the promotion.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::lock::LockPromoted;
use crate::pipeline::Pipeline;
use crate::spec::locate::YPath;
use crate::spec::raw::{Pending, Problems};
use crate::spec::yaml::read_yaml;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use yaml_serde::Value;

/// The largest promoted file read, in bytes. It holds one trial's params: a few lines.
pub const MAX_PROMOTED_BYTES: u64 = 1024 * 1024;

const KEYS: &[&str] = &["sweep", "trial", "params"];

/// A promotion read from its file, every param declared by the pipeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Promoted {
    /// The sweep's id (`iris-sweep-1a2b3c4d`).
    pub sweep: String,
    /// The trial's number, from 1.
    pub trial: usize,
    pub params: BTreeMap<String, Json>,
    /// The promoted file, absolute.
    pub file: PathBuf,
    /// The promoted file as messages name it: beside the pipeline file as the user named it.
    pub display: String,
}

impl Promoted {
    /// The one line every command that loads the pipeline says about it: "params from
    /// pipelines/iris-sweep.promoted.yaml (trial 7 of sweep iris-sweep-1a2b3c4d): hidden=64,
    /// lr=0.01". `effective` are the params the pipeline ends up with: a promoted param that
    /// `--set` replaced is named as overridden rather than listed with a value it does not have.
    pub fn notice(&self, effective: &BTreeMap<String, Json>) -> String {
        let (kept, overridden): (Vec<_>, Vec<_>) = self
            .params
            .iter()
            .partition(|(k, v)| effective.get(*k).is_none_or(|e| e == *v));
        let mut parts: Vec<String> = kept
            .iter()
            .map(|(k, v)| format!("{k}={}", render_value(v)))
            .collect();
        if !overridden.is_empty() {
            let names: Vec<_> = overridden.iter().map(|(k, _)| format!("`{k}`")).collect();
            parts.push(format!("`--set` overrides {}", names.join(", ")));
        }
        format!(
            "params from {} (trial {} of sweep {}): {}",
            self.display,
            self.trial,
            self.sweep,
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        )
    }

    /// What the lock file records of this promotion.
    pub fn record(&self) -> LockPromoted {
        LockPromoted {
            sweep: self.sweep.clone(),
            trial: self.trial,
            params: self.params.clone(),
        }
    }
}

/// `<dir>/<stem>.promoted.yaml` for the pipeline file `<dir>/<stem>.yaml`.
pub fn promoted_path(pipeline_file: &Path) -> PathBuf {
    pipeline_file.with_file_name(promoted_name(pipeline_file))
}

fn promoted_name(pipeline_file: &Path) -> String {
    let stem = pipeline_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sluice".into());
    format!("{stem}.promoted.yaml")
}

#[derive(serde::Serialize)]
struct FileRef<'a> {
    sweep: &'a str,
    trial: usize,
    params: &'a BTreeMap<String, Json>,
}

/// Writes the promoted file beside `pipeline_file` (atomically, flushed like the lock file:
/// people commit it) and returns its path.
pub fn write_promoted(
    pipeline_file: &Path,
    sweep: &str,
    trial: usize,
    params: &BTreeMap<String, Json>,
) -> io::Result<PathBuf> {
    let path = promoted_path(pipeline_file);
    let pipeline_name = pipeline_file
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = format!(
        "# Written by `sluice sweep promote`: the params of trial {trial} of sweep {sweep}.\n\
         # Every sluice command that loads {pipeline_name} uses them over its `params:` (`--set` still wins).\n\
         # To undo the promotion, delete this file.\n"
    );
    let body = yaml_serde::to_string(&FileRef {
        sweep,
        trial,
        params,
    })
    .map_err(io::Error::other)?;
    crate::atomic::write_durable(&path, format!("{header}{body}").as_bytes())?;
    Ok(path)
}

/// Reads the promoted file beside `pipeline_file`, if there is one. `pipeline_display` names the
/// pipeline file as the user did; `declared` are the names under its `params:`. Every problem is
/// a diagnostic located in the promoted file, reported like a pipeline's (exit 2).
pub fn read_promoted(
    pipeline_file: &Path,
    pipeline_display: &str,
    declared: &[&str],
) -> Result<Option<Promoted>, Diagnostics> {
    let file = promoted_path(pipeline_file);
    let display = Path::new(pipeline_display)
        .with_file_name(promoted_name(pipeline_file))
        .display()
        .to_string();
    let whole = |message: String, help: &str| Diagnostics {
        file: display.clone(),
        source: String::new(),
        items: vec![Diagnostic::new(message).help(help)],
    };
    let bytes = match read_bounded(&file) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(whole(
                format!(
                    "the promoted params file is larger than {} MiB",
                    MAX_PROMOTED_BYTES / (1024 * 1024)
                ),
                "it holds one trial's params; delete it, or promote the trial again",
            ))
        }
        Err(e) => {
            return Err(whole(
                format!("cannot read the promoted params file: {e}"),
                "delete it to drop the promotion, or promote the trial again",
            ))
        }
    };
    let Ok(source) = String::from_utf8(bytes) else {
        return Err(whole(
            "the promoted params file is not UTF-8 text".into(),
            "delete it, or promote the trial again",
        ));
    };
    let mut problems = Problems::default();
    let parsed = Parsed::read(&source, pipeline_display, declared, &display, &mut problems);
    match parsed {
        Some(p) if problems.is_empty() => Ok(Some(Promoted {
            sweep: p.sweep,
            trial: p.trial,
            params: p.params,
            file,
            display,
        })),
        _ => Err(crate::validate::located(problems, source, &display)),
    }
}

/// The file's bytes, or `None` where there is no file; `FileTooLarge` beyond the bound.
pub(crate) fn read_bounded(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(MAX_PROMOTED_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PROMOTED_BYTES {
        return Err(io::ErrorKind::FileTooLarge.into());
    }
    Ok(Some(bytes))
}

/// The file's three values, as far as they could be read.
struct Parsed {
    sweep: String,
    trial: usize,
    params: BTreeMap<String, Json>,
}

impl Parsed {
    fn read(
        source: &str,
        pipeline_display: &str,
        declared: &[&str],
        display: &str,
        problems: &mut Problems,
    ) -> Option<Parsed> {
        let root = YPath::root();
        let doc = match read_yaml(source) {
            Ok((doc, too_large)) => {
                for t in &too_large {
                    let at = YPath {
                        segs: t.path.clone(),
                        key: false,
                    };
                    problems.push(&at, t.message(), Some(t.help()));
                }
                if !too_large.is_empty() {
                    return None;
                }
                doc
            }
            Err(fatal) => {
                problems.0.push(Pending {
                    diag: Diagnostic::new(fatal.message)
                        .at(fatal.location)
                        .help_opt(fatal.help),
                    path: None,
                });
                return None;
            }
        };
        let Value::Mapping(map) = doc else {
            problems.push(
                &root,
                "the promoted params file must be a mapping of `sweep`, `trial` and `params`",
                Some(format!(
                    "delete {display} to drop the promotion, or promote the trial again"
                )),
            );
            return None;
        };
        for k in map.keys() {
            match k.as_str() {
                Some(name) if KEYS.contains(&name) => {}
                Some(name) => problems.push(
                    &root.k(name).key_of(),
                    format!("unknown key `{name}` in the promoted params file"),
                    Some(did_you_mean(name, KEYS.iter().copied()).unwrap_or_else(|| {
                        "a promoted params file holds `sweep`, `trial` and `params`".into()
                    })),
                ),
                None => problems.push(&root, "keys of the promoted params file must be text", None),
            }
        }
        let missing = |problems: &mut Problems, key: &str| {
            problems.push(
                &root,
                format!("the promoted params file has no `{key}`"),
                Some("a promoted params file holds `sweep`, `trial` and `params`; promote the trial again to rewrite it".into()),
            );
        };
        let sweep = match map.get("sweep") {
            None => {
                missing(problems, "sweep");
                None
            }
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                problems.push(
                    &root.k("sweep"),
                    "`sweep` must be the sweep's id (text)",
                    Some("e.g. `sweep: iris-sweep-1a2b3c4d`".into()),
                );
                None
            }
        };
        let trial = match map.get("trial") {
            None => {
                missing(problems, "trial");
                None
            }
            Some(Value::Number(n)) if n.as_u64().is_some_and(|t| t >= 1) => {
                usize::try_from(n.as_u64().unwrap_or_default()).ok()
            }
            Some(_) => {
                problems.push(
                    &root.k("trial"),
                    "`trial` must be a trial number (a whole number from 1)",
                    None,
                );
                None
            }
        };
        let params = match map.get("params") {
            None => {
                missing(problems, "params");
                None
            }
            Some(Value::Mapping(m)) => {
                let at = root.k("params");
                let mut params = BTreeMap::new();
                for (k, v) in m {
                    let Some(name) = k.as_str() else {
                        problems.push(&at, "param names must be text", None);
                        continue;
                    };
                    if !declared.contains(&name) {
                        let guess = did_you_mean(name, declared.iter().copied())
                            .map(|g| format!("{g} "))
                            .unwrap_or_default();
                        problems.push(
                            &at.k(name).key_of(),
                            format!(
                                "promoted param `{name}` is not declared under `params:` in {pipeline_display}"
                            ),
                            Some(format!(
                                "{guess}the pipeline has changed since this trial was promoted: \
                                 fix the name, or delete {display} and promote again"
                            )),
                        );
                        continue;
                    }
                    match serde_json::to_value(v) {
                        Ok(j) => {
                            params.insert(name.to_string(), j);
                        }
                        Err(e) => problems.push(&at.k(name), format!("param `{name}`: {e}"), None),
                    }
                }
                Some(params)
            }
            Some(_) => {
                problems.push(
                    &root.k("params"),
                    "`params` must be a mapping of param names to values",
                    Some("e.g. `params: {lr: 0.01, hidden: 64}`".into()),
                );
                None
            }
        };
        Some(Parsed {
            sweep: sweep?,
            trial: trial?,
            params: params?,
        })
    }
}

/// The warning for a run whose pipeline has no promoted file while its lock file records a
/// promotion, when any recorded param now has another value: each such param, old and new, and
/// how to get them back. The run's lock file then drops the record, so this is said once.
pub fn reverted_warning(pipeline: &Pipeline, recorded: Option<&LockPromoted>) -> Option<String> {
    let rec = recorded.filter(|_| pipeline.promoted.is_none())?;
    let changed: Vec<String> = rec
        .params
        .iter()
        .filter_map(|(k, old)| {
            let new = pipeline.params.get(k);
            (new != Some(old)).then(|| {
                let new = new.map_or_else(|| "(no longer declared)".into(), render_value);
                format!("{k} {} -> {new}", render_value(old))
            })
        })
        .collect();
    if changed.is_empty() {
        return None;
    }
    let display = Path::new(&pipeline.display_file)
        .with_file_name(promoted_name(&pipeline.file))
        .display()
        .to_string();
    Some(format!(
        "params promoted from trial {trial} of sweep {sweep} are no longer used ({display} is gone): {}\n  \
         = help: to keep the promoted params, run `sluice sweep promote {sweep} --trial {trial}`; \
         this run's lock file no longer records the promotion",
        changed.join(", "),
        trial = rec.trial,
        sweep = rec.sweep,
    ))
}

/// A param value as a notice shows it: text as it is, anything else as compact JSON.
fn render_value(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Json) -> BTreeMap<String, Json> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn written_file_reads_back_the_same_params() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("iris-sweep.yaml");
        let p = params(json!({"lr": 0.01, "hidden": 64, "name": "yes", "v": "1.0", "on": true}));
        let path = write_promoted(&pipeline, "iris-sweep-1a2b3c4d", 7, &p).unwrap();
        assert_eq!(path, dir.path().join("iris-sweep.promoted.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Written by `sluice sweep promote`"),
            "{text}"
        );
        assert!(text.contains("delete this file"), "{text}");
        let read = read_promoted(
            &pipeline,
            "pipelines/iris-sweep.yaml",
            &["lr", "hidden", "name", "v", "on", "seed"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (read.sweep.as_str(), read.trial),
            ("iris-sweep-1a2b3c4d", 7)
        );
        assert_eq!(read.params, p);
        assert_eq!(read.display, "pipelines/iris-sweep.promoted.yaml");
        assert_eq!(
            read.notice(&p),
            "params from pipelines/iris-sweep.promoted.yaml (trial 7 of sweep \
             iris-sweep-1a2b3c4d): hidden=64, lr=0.01, name=yes, on=true, v=1.0"
        );
        let mut set = p.clone();
        set.insert("lr".into(), json!(0.5));
        assert!(read
            .notice(&set)
            .ends_with("name=yes, on=true, v=1.0, `--set` overrides `lr`"));
    }

    #[test]
    fn no_file_is_no_promotion() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("p.yaml");
        assert_eq!(read_promoted(&pipeline, "p.yaml", &["lr"]).unwrap(), None);
    }

    fn problems_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("p.yaml");
        std::fs::write(promoted_path(&pipeline), text).unwrap();
        read_promoted(&pipeline, "p.yaml", &["lr", "hidden"])
            .unwrap_err()
            .render()
    }

    #[test]
    fn problems_are_located_in_the_promoted_file() {
        let out = problems_of("sweep: s-1\ntrial: 2\nparams:\n  lrr: 0.1\n");
        assert!(
            out.contains("promoted param `lrr` is not declared under `params:` in p.yaml"),
            "{out}"
        );
        assert!(out.contains("--> p.promoted.yaml:4:3"), "{out}");
        assert!(out.contains("did you mean `lr`?"), "{out}");
        assert!(out.contains("the pipeline has changed since"), "{out}");

        let out = problems_of("sweep: s-1\ntrial: 0\nparms: {}\n");
        assert!(out.contains("`trial` must be a trial number"), "{out}");
        assert!(out.contains("--> p.promoted.yaml:2:8"), "{out}");
        assert!(out.contains("unknown key `parms`"), "{out}");
        assert!(out.contains("did you mean `params`?"), "{out}");
        assert!(out.contains("has no `params`"), "{out}");

        let out = problems_of("sweep: [\n");
        assert!(out.contains("invalid YAML"), "{out}");
        assert!(
            out.contains("error: p.promoted.yaml has 1 problem"),
            "{out}"
        );

        let out = problems_of("- 1\n");
        assert!(out.contains("must be a mapping"), "{out}");
    }
}
