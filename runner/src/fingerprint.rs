//! `Fingerprint`: everything that decides a stage's result, and the cache key hashed from it.
//!
//! The key is BLAKE3 over an explicit, versioned encoding of sorted fields: never Rust's `Hash`
//! and never a map's iteration order. Bump `FORMAT_VERSION` whenever the encoding or the set of
//! fields changes, so old cache entries stop matching instead of matching wrongly.

use crate::canonical::canonical_json;
use crate::hash::{ContentHash, Hasher};
use crate::paths::WorkPath;
use crate::pipeline::{StageDef, StageKind};
use crate::small_map::SmallMap;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

/// One input as it was when the key was computed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputStamp {
    pub path: WorkPath,
    pub hash: ContentHash,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub kind: String,
    /// Content of the files a plugin's command names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub implementation: BTreeMap<String, ContentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Hash of `with` and `run` as written (and a plugin's command line).
    pub config: ContentHash,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Json>,
    #[serde(default)]
    pub inputs: SmallMap<String, InputStamp>,
    #[serde(default)]
    pub outputs: SmallMap<String, WorkPath>,
    /// Declared variables, as hashes of their values (values may be secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, ContentHash>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("input `{name}` (`{path}`) does not exist")]
    MissingInput { name: String, path: WorkPath },
    #[error("cannot read `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Known hashes of paths that are not (yet) on disk as they will be: outputs an upstream stage
/// would restore, when planning without running.
pub type Overlay = HashMap<WorkPath, ContentHash>;

impl Fingerprint {
    /// Computes a stage's fingerprint, hashing its inputs through the memo.
    pub fn compute(
        stage: &StageDef,
        root: &Path,
        hasher: &Hasher,
        overlay: &Overlay,
    ) -> Result<Fingerprint, FingerprintError> {
        let mut implementation = BTreeMap::new();
        let mut config = blake3::Hasher::new();
        config.update(stage.config_text.as_bytes());
        match &stage.kind {
            StageKind::Run { .. } => {}
            StageKind::Plugin { command, files, .. } => {
                config.update(b"\0");
                config.update(
                    canonical_json(&Json::Array(
                        command.iter().cloned().map(Json::String).collect(),
                    ))
                    .as_bytes(),
                );
                for f in files {
                    let hash = hash_required(hasher, root, f, f.as_str())?;
                    implementation.insert(f.to_string(), hash);
                }
            }
            StageKind::Builtin { .. } => {}
        }
        // In a sweep, paths are keyed without the sweep's slot: a trial keys like a plain run.
        let keyed = |p: &WorkPath| match &stage.sweep_dir {
            Some(dir) => p.keyed(dir),
            None => p.clone(),
        };
        let mut inputs = SmallMap::new();
        for input in &stage.inputs {
            let hash = match overlay.get(&input.path) {
                Some(h) => *h,
                None => hash_required(hasher, root, &input.path, &input.name)?,
            };
            inputs.insert(
                input.name.clone(),
                InputStamp {
                    path: keyed(&input.path),
                    hash,
                },
            );
        }
        Ok(Fingerprint {
            kind: stage.kind.label(),
            implementation,
            version: stage.version.clone(),
            config: ContentHash(*config.finalize().as_bytes()),
            params: stage.params.clone(),
            inputs,
            outputs: stage
                .outputs
                .iter()
                .map(|o| (o.name.clone(), keyed(&o.path)))
                .collect(),
            env: stage
                .env
                .iter()
                .map(|(k, v)| (k.clone(), ContentHash::of(v.as_bytes())))
                .collect(),
            facts: stage.facts.iter().cloned().collect(),
        })
    }

    /// The cache key.
    pub fn key(&self) -> ContentHash {
        let mut e = Encoder(blake3::Hasher::new());
        e.str("sluice-stage-key");
        e.u64(FORMAT_VERSION as u64);
        e.str(&self.kind);
        e.u64(self.implementation.len() as u64);
        for (k, v) in &self.implementation {
            e.str(k);
            e.hash(v);
        }
        match &self.version {
            Some(v) => {
                e.u64(1);
                e.str(v);
            }
            None => e.u64(0),
        }
        e.hash(&self.config);
        e.u64(self.params.len() as u64);
        for (k, v) in &self.params {
            e.str(k);
            e.str(&canonical_json(v));
        }
        e.u64(self.inputs.len() as u64);
        for (k, v) in &self.inputs {
            e.str(k);
            e.str(v.path.as_str());
            e.hash(&v.hash);
        }
        e.u64(self.outputs.len() as u64);
        for (k, v) in &self.outputs {
            e.str(k);
            e.str(v.as_str());
        }
        e.u64(self.env.len() as u64);
        for (k, v) in &self.env {
            e.str(k);
            e.hash(v);
        }
        e.u64(self.facts.len() as u64);
        for (k, v) in &self.facts {
            e.str(k);
            e.str(v);
        }
        ContentHash(*e.0.finalize().as_bytes())
    }
}

fn hash_required(
    hasher: &Hasher,
    root: &Path,
    path: &WorkPath,
    name: &str,
) -> Result<ContentHash, FingerprintError> {
    match hasher.hash_path(&path.to_abs(root)) {
        Ok(Some(h)) => Ok(h.hash),
        Ok(None) => Err(FingerprintError::MissingInput {
            name: name.to_string(),
            path: path.clone(),
        }),
        Err(source) => Err(FingerprintError::Io {
            path: path.to_string(),
            source,
        }),
    }
}

/// Length-prefixed fields, so that no two different field sequences encode alike.
struct Encoder(blake3::Hasher);

impl Encoder {
    fn u64(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }
    fn hash(&mut self, h: &ContentHash) {
        self.0.update(&h.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp() -> Fingerprint {
        Fingerprint {
            kind: "run".into(),
            implementation: BTreeMap::new(),
            version: None,
            config: ContentHash::of(b"{}"),
            params: [("seed".to_string(), json!(42))].into_iter().collect(),
            inputs: SmallMap::new(),
            outputs: SmallMap::new(),
            env: BTreeMap::new(),
            facts: BTreeMap::new(),
        }
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        let a = fp();
        assert_eq!(a.key(), fp().key());
        let mut b = fp();
        b.params.insert("seed".into(), json!(43));
        assert_ne!(a.key(), b.key());
        let mut c = fp();
        c.version = Some("2".into());
        assert_ne!(a.key(), c.key());
    }
}
