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
pub struct LockEntry {
    pub key: ContentHash,
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    #[serde(rename = "produced", default)]
    pub output_hashes: BTreeMap<String, LockedOutput>,
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
