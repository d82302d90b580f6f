//! [`Source`] (what `sluice serve` was pointed at: a registry or one bundle) and [`Catalog`]
//! (the loaded models by name and version). [`Scanner::scan`] builds a new catalog from the
//! files, reusing every bundle the current one already holds, so polling the registry costs a
//! few directory reads and a new version is loaded once, off the request path. A directory
//! that cannot be listed keeps what was loaded from it: only a listing that succeeds can
//! unload a model.

use super::bundle::Bundle;
use sluice_runner::StageError;
use sluice_stages::deploy::{self, BUNDLE, LATEST, REGISTRY_MARKER};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is served.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A registry directory (it holds `.sluice-registry`): every model in it, every version.
    Registry(PathBuf),
    /// One bundle directory (`model.onnx` and `preprocess.json`), served as one version.
    Bundle {
        dir: PathBuf,
        name: String,
        version: u64,
    },
}

/// Why a path cannot be served, and what to serve instead.
#[derive(Debug)]
pub(crate) struct NotServable {
    pub message: String,
    pub hint: String,
}

impl Source {
    /// Classifies `path`.
    pub(crate) fn open(path: &Path) -> Result<Source, NotServable> {
        let shown = path.display();
        if !path.is_dir() {
            return Err(NotServable {
                message: format!("`{shown}` is not a directory"),
                hint: "name a model registry (the `registry` of a `deploy` stage, e.g. `models`) or one bundle in it (`models/iris/1`)".into(),
            });
        }
        if path.join(REGISTRY_MARKER).exists() {
            return Ok(Source::Registry(path.to_path_buf()));
        }
        if path.join("model.onnx").is_file() && path.join("preprocess.json").is_file() {
            let dir_name = path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let version = dir_name.as_deref().and_then(|n| n.parse::<u64>().ok());
            let bundle_name = std::fs::read_to_string(path.join(BUNDLE))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
            let name = match (bundle_name, version) {
                (Some(n), _) => n,
                // `models/iris/3`: the parent names the model.
                (None, Some(_)) => path
                    .canonicalize()
                    .ok()
                    .and_then(|p| {
                        p.parent()
                            .and_then(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_else(|| "model".into()),
                (None, None) => dir_name.unwrap_or_else(|| "model".into()),
            };
            return Ok(Source::Bundle {
                dir: path.to_path_buf(),
                name,
                version: version.unwrap_or(1),
            });
        }
        let hint = if path.join(LATEST).is_file() || !deploy::versions(path).is_empty() {
            format!(
                "this looks like one model's directory; serve its registry (`{}`) instead",
                path.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        } else {
            "a `deploy` stage creates a registry (`with: {registry: models, name: iris}`); serve that directory".into()
        };
        Err(NotServable {
            message: format!(
                "`{shown}` is neither a model registry (no `{REGISTRY_MARKER}`) nor a bundle (no `model.onnx` and `preprocess.json`)"
            ),
            hint,
        })
    }
}

/// One model's loaded versions.
#[derive(Clone)]
pub(crate) struct Versions {
    pub by_number: BTreeMap<u64, Arc<Bundle>>,
    /// What a request without a version gets: `latest` when it is loaded, else the highest.
    pub latest: u64,
}

/// Every loaded model; replaced whole when the registry changes.
#[derive(Clone, Default)]
pub(crate) struct Catalog {
    pub models: BTreeMap<String, Versions>,
}

impl Catalog {
    /// `(model, version)` → the bundle; `None` version means the latest.
    pub(crate) fn get(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Option<(&Versions, &Arc<Bundle>)> {
        let v = self.models.get(name)?;
        let b = v.by_number.get(&version.unwrap_or(v.latest))?;
        Some((v, b))
    }

    /// `name 1, 2 (latest 2)` lines for the log.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|(name, v)| {
                let list: Vec<String> = v.by_number.keys().map(u64::to_string).collect();
                format!("{name} (versions {}; latest {})", list.join(", "), v.latest)
            })
            .collect()
    }
}

/// A version that failed to load, with why.
pub(crate) struct LoadFailure {
    pub dir: PathBuf,
    pub error: StageError,
}

/// A directory that could not be listed; what it held stays as it was.
#[derive(Debug)]
pub(crate) struct Unlisted {
    pub dir: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot list `{}`: {}", self.dir.display(), self.error)
    }
}

/// What one scan found.
pub(crate) struct Scan {
    pub catalog: Catalog,
    /// Versions that failed to load (each reported once).
    pub failures: Vec<LoadFailure>,
    /// Model directories that could not be listed: their loaded versions were kept.
    pub unlisted: Vec<Unlisted>,
}

/// What a model directory holds: its versions and `latest`.
struct Found {
    name: String,
    /// `None`: the directory could not be listed; keep what is loaded.
    versions: Option<Vec<(u64, PathBuf)>>,
    latest: Option<u64>,
}

/// Builds catalogs from a [`Source`].
pub(crate) struct Scanner {
    pub source: Source,
    /// Sessions per bundle.
    pub sessions: usize,
    /// Bundles that failed to load: not retried until the directory's modification time changes.
    failed: BTreeSet<(PathBuf, Option<std::time::SystemTime>)>,
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The entries of `dir`, or the first error listing it. Unlike a listing that skips what it
/// cannot read, a failure here is never mistaken for an empty directory.
fn list(dir: &Path) -> Result<Vec<std::fs::DirEntry>, Unlisted> {
    let unlisted = |error| Unlisted {
        dir: dir.to_path_buf(),
        error,
    };
    std::fs::read_dir(dir)
        .map_err(unlisted)?
        .collect::<Result<_, _>>()
        .map_err(unlisted)
}

/// A model directory's numbered version directories that hold a model, sorted.
fn versions(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Unlisted> {
    let mut found = Vec::new();
    for entry in list(dir)? {
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join("model.onnx").is_file() {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

impl Scanner {
    pub(crate) fn new(source: Source, sessions: usize) -> Scanner {
        Scanner {
            source,
            sessions,
            failed: BTreeSet::new(),
        }
    }

    /// What the files describe now, reusing what `current` has loaded. A registry that cannot
    /// be listed is an error (the caller keeps serving `current`), and a model directory that
    /// cannot be listed keeps its loaded versions: a failed listing never unloads a model.
    pub(crate) fn scan(&mut self, current: &Catalog) -> Result<Scan, Unlisted> {
        let mut failures = Vec::new();
        let mut unlisted = Vec::new();
        let mut models = BTreeMap::new();
        let found: Vec<Found> = match &self.source {
            Source::Bundle { dir, name, version } => vec![Found {
                name: name.clone(),
                versions: Some(vec![(*version, dir.clone())]),
                latest: None,
            }],
            Source::Registry(root) => {
                let mut found = Vec::new();
                for entry in list(root)? {
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    let path = entry.path();
                    if name.starts_with('.') {
                        continue;
                    }
                    match std::fs::metadata(&path) {
                        Ok(m) if !m.is_dir() => continue,
                        Ok(_) => {}
                        Err(error) => {
                            unlisted.push(Unlisted { dir: path, error });
                            found.push(Found {
                                name,
                                versions: None,
                                latest: None,
                            });
                            continue;
                        }
                    }
                    let latest = std::fs::read_to_string(path.join(LATEST))
                        .ok()
                        .and_then(|t| t.trim().parse().ok());
                    let versions = match versions(&path) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            unlisted.push(e);
                            None
                        }
                    };
                    found.push(Found {
                        name,
                        versions,
                        latest,
                    });
                }
                found
            }
        };
        for Found {
            name,
            versions,
            latest,
        } in found
        {
            let Some(versions) = versions else {
                if let Some(kept) = current.models.get(&name) {
                    models.insert(name, kept.clone());
                }
                continue;
            };
            let mut by_number = BTreeMap::new();
            for (number, dir) in versions {
                if let Some(b) = current
                    .models
                    .get(&name)
                    .and_then(|v| v.by_number.get(&number))
                {
                    by_number.insert(number, b.clone());
                    continue;
                }
                let key = (dir.clone(), mtime(&dir));
                if self.failed.contains(&key) {
                    continue;
                }
                match Bundle::load(&dir, &name, number, self.sessions) {
                    Ok(b) => {
                        by_number.insert(number, Arc::new(b));
                    }
                    Err(error) => {
                        self.failed.insert(key);
                        failures.push(LoadFailure { dir, error });
                    }
                }
            }
            let Some(&highest) = by_number.keys().next_back() else {
                continue;
            };
            let latest = latest
                .filter(|l| by_number.contains_key(l))
                .unwrap_or(highest);
            models.insert(name, Versions { by_number, latest });
        }
        Ok(Scan {
            catalog: Catalog { models },
            failures,
            unlisted,
        })
    }
}
