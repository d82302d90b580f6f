//! The cache: stage records (key → output hashes) and the content-addressed blobs they name,
//! behind the `CacheStore` trait so that a remote store can sit beside the local directory later.

mod local;

pub use local::LocalStore;

use crate::hash::{ContentHash, Hasher, TreeEntry};
use crate::paths::WorkPath;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

pub const RECORD_FORMAT: u32 = 1;

/// What one successful stage run produced, filed under its key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub format: u32,
    pub stage: String,
    pub key: ContentHash,
    pub outputs: BTreeMap<String, OutputRecord>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputRecord {
    pub path: WorkPath,
    pub hash: ContentHash,
    /// Present when the output is a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Vec<TreeEntry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The entry cannot be trusted (a blob is missing or does not match its hash).
    #[error("cache entry is corrupt: {0}")]
    Corrupt(String),
    #[error("output `{0}` resolves outside the workspace through a symbolic link")]
    Escapes(WorkPath),
    #[error("cannot restore `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcStats {
    pub records_removed: usize,
    pub records_kept: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// Where stage records and blobs live.
pub trait CacheStore: Send + Sync {
    /// The record for `key`, if there is one that parses.
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord>;
    /// Files the outputs' content, then the record, so a record never names a missing blob.
    fn store(&self, root: &Path, record: &StageRecord) -> std::io::Result<()>;
    /// Puts a record's outputs in place, verifying every blob.
    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError>;
    /// Drops a record (after it proved corrupt).
    fn forget(&self, key: &ContentHash);
    /// Removes every record not in `keep` and every blob no kept record names.
    fn gc(&self, keep: &HashSet<ContentHash>, dry_run: bool) -> std::io::Result<GcStats>;
}
