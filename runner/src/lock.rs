//! `LockFile`: `<pipeline>.lock` beside the pipeline, readable YAML meant for git. It records, for
//! every stage that last completed, its key, the fingerprint the key came from (so `status` can
//! say which component changed) and its output hashes.

use crate::fingerprint::Fingerprint;
use crate::hash::ContentHash;
use crate::paths::WorkPath;
use crate::small_map::SmallMap;
use std::collections::BTreeMap;
use std::path::Path;

mod emit;

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub pipeline: String,
    /// The promotion the pipeline's params came from when the lock was written (none: the
    /// pipeline's own params). Absent from the file when there is none, so lock files written
    /// before promotions existed read and rewrite unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<LockPromoted>,
    #[serde(default)]
    pub stages: BTreeMap<String, LockEntry>,
}

/// The lock file's `promoted:` record: which sweep trial's params were layered over `params:`
/// (see `sweep::promote`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LockPromoted {
    pub sweep: String,
    pub trial: usize,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "EntryWire", into = "EntryWire")]
pub struct LockEntry {
    pub key: ContentHash,
    pub fingerprint: Fingerprint,
    pub output_hashes: SmallMap<String, LockedOutput>,
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
    inputs: SmallMap<String, crate::fingerprint::InputStamp>,
    #[serde(default)]
    outputs: SmallMap<String, WorkPath>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, ContentHash>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    facts: BTreeMap<String, String>,
    #[serde(default)]
    produced: SmallMap<String, LockedOutput>,
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

/// Size, mtime, ctime and inode of the YAML file the mirror was made from.
type Stamp = (u64, i128, i128, u64);

/// The mirror's first line; each further line is one stage's `[name, entry]`. JSON text never
/// holds a raw newline, so the lines split without parsing, and a large lock's entries are
/// parsed on every core.
#[derive(serde::Serialize, serde::Deserialize)]
struct MirrorHead {
    stamp: Stamp,
    version: u32,
    pipeline: String,
    promoted: Option<LockPromoted>,
    stages: usize,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.size(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        m.ino(),
    ))
}

fn mirror_path(path: &Path, mirror_dir: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let id = ContentHash::of(abs.to_string_lossy().as_bytes()).short();
    mirror_dir.join(format!("{id}.json"))
}

/// The lock a mirror holds, when it was made from the YAML file as it is now (`stamp`).
fn read_mirror(bytes: &[u8], stamp: Stamp) -> Option<LockFile> {
    use rayon::prelude::*;
    let mut lines = bytes.split(|&b| b == b'\n');
    let head: MirrorHead = serde_json::from_slice(lines.next()?).ok()?;
    if head.stamp != stamp || head.version != LOCK_VERSION {
        return None;
    }
    let lines: Vec<&[u8]> = lines.collect();
    if lines.len() != head.stages {
        return None;
    }
    let entries: Vec<(String, LockEntry)> = lines
        .par_iter()
        .with_min_len(512)
        .map(|line| serde_json::from_slice(line))
        .collect::<Result<_, _>>()
        .ok()?;
    Some(LockFile {
        version: head.version,
        pipeline: head.pipeline,
        promoted: head.promoted,
        stages: entries.into_iter().collect(),
    })
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
                    promoted: None,
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
        let lock: LockFile = yaml_serde::from_str(&text).map_err(|e| LockReadError {
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
        let body = emit::to_yaml(self).map_err(std::io::Error::other)?;
        crate::atomic::write_durable(path, format!("{HEADER}{body}").as_bytes())
    }

    /// `load`, through a JSON copy under `mirror_dir` that is used while the YAML file is
    /// unchanged: YAML is the format for people and git, but parsing it dominated no-op reruns
    /// of large pipelines (about 20 MB/s against JSON's 200).
    pub fn load_mirrored(
        path: &Path,
        pipeline: &str,
        mirror_dir: &Path,
    ) -> Result<LockFile, LockReadError> {
        let mirror = mirror_path(path, mirror_dir);
        let stamp = stamp_of(path);
        if let (Some(stamp), Ok(bytes)) = (stamp, std::fs::read(&mirror)) {
            if let Some(lock) = read_mirror(&bytes, stamp) {
                return Ok(lock);
            }
        }
        let lock = LockFile::load(path, pipeline)?;
        if stamp.is_some() {
            let _ = lock.write_mirror(path, &mirror);
        }
        Ok(lock)
    }

    /// `save`, refreshing the JSON copy.
    pub fn save_mirrored(&self, path: &Path, mirror_dir: &Path) -> std::io::Result<()> {
        self.save(path)?;
        self.write_mirror(path, &mirror_path(path, mirror_dir))
    }

    fn write_mirror(&self, path: &Path, mirror: &Path) -> std::io::Result<()> {
        let Some(stamp) = stamp_of(path) else {
            return Ok(());
        };
        let head = MirrorHead {
            stamp,
            version: self.version,
            pipeline: self.pipeline.clone(),
            promoted: self.promoted.clone(),
            stages: self.stages.len(),
        };
        let mut bytes = serde_json::to_vec(&head).map_err(std::io::Error::other)?;
        for entry in &self.stages {
            bytes.push(b'\n');
            serde_json::to_writer(&mut bytes, &entry).map_err(std::io::Error::other)?;
        }
        crate::atomic::write(mirror, &bytes)
    }

    /// Keeps only entries for stages that still exist.
    pub fn retain_stages<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = names.into_iter().collect();
        self.stages.retain(|k, _| keep.contains(k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_used_only_while_the_yaml_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lock");
        let mirrors = dir.path().join("mirrors");
        let mut lock = LockFile {
            version: LOCK_VERSION,
            pipeline: "first".into(),
            promoted: None,
            stages: BTreeMap::new(),
        };
        lock.save_mirrored(&path, &mirrors).unwrap();
        assert_eq!(
            LockFile::load_mirrored(&path, "x", &mirrors)
                .unwrap()
                .pipeline,
            "first"
        );
        // An edit behind sluice's back (a git checkout, say) wins over the mirror.
        lock.pipeline = "second".into();
        lock.save(&path).unwrap();
        assert_eq!(
            LockFile::load_mirrored(&path, "x", &mirrors)
                .unwrap()
                .pipeline,
            "second"
        );
        // Entries come back whole, each parsed from its own line of the mirror.
        let entry = |seed: &[u8]| LockEntry {
            key: ContentHash::of(seed),
            fingerprint: Fingerprint {
                kind: "run".into(),
                implementation: BTreeMap::new(),
                version: Some("2".into()),
                config: ContentHash::of(b"echo"),
                params: [("lr".to_string(), serde_json::json!(0.1))].into(),
                inputs: SmallMap::new(),
                outputs: SmallMap::new(),
                env: BTreeMap::new(),
                facts: [("os".to_string(), "linux\nx".to_string())].into(),
            },
            output_hashes: SmallMap::new(),
        };
        lock.stages.insert("a".into(), entry(b"a"));
        lock.stages.insert("b\nc".into(), entry(b"b"));
        lock.save_mirrored(&path, &mirrors).unwrap();
        assert_eq!(LockFile::load_mirrored(&path, "x", &mirrors).unwrap(), lock);
        // A mirror cut short is not used: the YAML file is read instead.
        let mirror = mirror_path(&path, &mirrors);
        let text = std::fs::read(&mirror).unwrap();
        let cut = text.iter().rposition(|&b| b == b'\n').unwrap();
        std::fs::write(&mirror, &text[..cut]).unwrap();
        assert_eq!(LockFile::load_mirrored(&path, "x", &mirrors).unwrap(), lock);
        std::fs::remove_file(&path).unwrap();
        assert!(LockFile::load_mirrored(&path, "x", &mirrors)
            .unwrap()
            .stages
            .is_empty());
    }
}
