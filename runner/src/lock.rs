//! `LockFile`: `<pipeline>.lock` beside the pipeline, readable YAML meant for git. It records, for
//! every stage that last completed, its key, the fingerprint the key came from (so `status` can
//! say which component changed) and its output hashes.

use crate::fingerprint::Fingerprint;
use crate::hash::ContentHash;
use crate::paths::WorkPath;
use std::collections::BTreeMap;
use std::path::Path;

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub pipeline: String,
    #[serde(default)]
    pub stages: BTreeMap<String, LockEntry>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "EntryWire", into = "EntryWire")]
pub struct LockEntry {
    pub key: ContentHash,
    pub fingerprint: Fingerprint,
    pub output_hashes: BTreeMap<String, LockedOutput>,
}

/// The entry as written: the fingerprint's fields inline. Spelled out rather than
/// `#[serde(flatten)]`, which buffers every entry and made large lock files slow to read.
#[derive(serde::Serialize, serde::Deserialize)]
struct EntryWire {
    key: ContentHash,
    kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    implementation: BTreeMap<String, ContentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    config: ContentHash,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    inputs: BTreeMap<String, crate::fingerprint::InputStamp>,
    #[serde(default)]
    outputs: BTreeMap<String, WorkPath>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, ContentHash>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    facts: BTreeMap<String, String>,
    #[serde(default)]
    produced: BTreeMap<String, LockedOutput>,
}

impl From<EntryWire> for LockEntry {
    fn from(w: EntryWire) -> Self {
        LockEntry {
            key: w.key,
            fingerprint: Fingerprint {
                kind: w.kind,
                implementation: w.implementation,
                version: w.version,
                config: w.config,
                params: w.params,
                inputs: w.inputs,
                outputs: w.outputs,
                env: w.env,
                facts: w.facts,
            },
            output_hashes: w.produced,
        }
    }
}

impl From<LockEntry> for EntryWire {
    fn from(e: LockEntry) -> Self {
        let f = e.fingerprint;
        EntryWire {
            key: e.key,
            kind: f.kind,
            implementation: f.implementation,
            version: f.version,
            config: f.config,
            params: f.params,
            inputs: f.inputs,
            outputs: f.outputs,
            env: f.env,
            facts: f.facts,
            produced: e.output_hashes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockedOutput {
    pub path: WorkPath,
    pub hash: ContentHash,
}

const HEADER: &str = "# Written by `sluice run`. It records what each stage was last run with and produced.\n# Commit it with the pipeline; do not edit it by hand.\n";

#[derive(Debug, thiserror::Error)]
#[error("cannot read lock file `{path}`: {message}")]
pub struct LockReadError {
    pub path: String,
    pub message: String,
}

impl LockFile {
    /// Reads a lock file; a missing file is an empty lock.
    pub fn load(path: &Path, pipeline: &str) -> Result<LockFile, LockReadError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LockFile {
                    version: LOCK_VERSION,
                    pipeline: pipeline.to_string(),
                    stages: BTreeMap::new(),
                })
            }
            Err(e) => {
                return Err(LockReadError {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        let lock: LockFile = serde_yaml::from_str(&text).map_err(|e| LockReadError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockReadError {
                path: path.display().to_string(),
                message: format!("lock format {} is not {LOCK_VERSION}", lock.version),
            });
        }
        Ok(lock)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_yaml::to_string(self).map_err(std::io::Error::other)?;
        crate::atomic::write(path, format!("{HEADER}{body}").as_bytes())
    }

    /// Keeps only entries for stages that still exist.
    pub fn retain_stages<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = names.into_iter().collect();
        self.stages.retain(|k, _| keep.contains(k.as_str()));
    }
}
