//! The cache: stage records (key → output hashes) and the content-addressed blobs they name,
//! behind the `CacheStore` trait: `LocalStore` (the workspace's `.sluice/cache`), and
//! `TieredStore`, the local store with a shared remote behind it (`remote/`).

mod copy;
mod inline;
mod local;
mod log;
pub mod remote;
mod tiered;

pub use inline::{Inline, INLINE_MAX};
pub use local::LocalStore;
pub use remote::{RemoteError, RemoteSettings, RemoteStore, RemoteSummary};
pub use tiered::TieredStore;

use crate::hash::{ContentHash, Hasher, TreeEntry};
use crate::paths::WorkPath;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The format of a record with no inline output, which sluice before inline outputs reads too
/// (records on a shared remote stay usable by older versions wherever they can).
pub const RECORD_FORMAT: u32 = 1;
/// The format of a record that keeps an output's content inline (`inline.rs`).
pub const RECORD_FORMAT_INLINE: u32 = 2;

/// Whether this sluice reads records of `format`.
pub(crate) fn readable_format(record: &StageRecord) -> bool {
    match record.format {
        RECORD_FORMAT => record.outputs.values().all(|o| o.inline.is_none()),
        RECORD_FORMAT_INLINE => true,
        _ => false,
    }
}

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
    /// A small file output's content, when the record keeps it instead of a blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Inline>,
}

impl OutputRecord {
    /// A file or directory output as hashed, content not kept inline.
    pub fn new(path: WorkPath, hash: ContentHash, tree: Option<Vec<TreeEntry>>) -> OutputRecord {
        OutputRecord {
            path,
            hash,
            tree,
            inline: None,
        }
    }
}

/// The blobs a record names: every output's content but those kept inline.
pub(crate) fn blobs_of(record: &StageRecord) -> impl Iterator<Item = ContentHash> + '_ {
    record
        .outputs
        .values()
        .filter(|out| out.inline.is_none())
        .flat_map(|out| match &out.tree {
            None => vec![out.hash],
            Some(entries) => entries.iter().map(|e| e.hash).collect(),
        })
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The entry cannot be trusted (a blob is missing or does not match its hash).
    #[error("cache entry is corrupt: {0}")]
    Corrupt(String),
    /// The entry may be sound but cannot be fetched now (a remote cache that failed).
    #[error("cache entry unavailable: {0}")]
    Unavailable(String),
    #[error("output `{0}` resolves outside the workspace through a symbolic link")]
    Escapes(WorkPath),
    #[error("cannot restore `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A store seen through its local part only (`CacheStore::lookup_local`).
pub struct LocalOnly<'a>(pub &'a dyn CacheStore);

impl CacheStore for LocalOnly<'_> {
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        self.0.lookup_local(key)
    }
    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> std::io::Result<()> {
        self.0.store(root, record, hasher)
    }
    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        self.0.restore(root, record, hasher)
    }
    fn verify(&self, record: &StageRecord, hasher: &Hasher) -> Result<(), RestoreError> {
        self.0.verify(record, hasher)
    }
    fn forget(&self, key: &ContentHash) {
        self.0.forget(key)
    }
    fn gc(&self, keep: &HashSet<ContentHash>, opts: GcOptions) -> std::io::Result<GcStats> {
        self.0.gc(keep, opts)
    }
    fn local_is_empty(&self) -> bool {
        self.0.local_is_empty()
    }
}

/// What `gc` does besides dropping unreferenced entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcOptions {
    /// Count what would go; remove nothing.
    pub dry_run: bool,
    /// Hash every blob a kept record names, in full (not through the memo), and drop the ones
    /// whose content does not match their name, with the records that name them.
    pub verify: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcStats {
    /// Records removed, including `records_corrupt`.
    pub records_removed: usize,
    pub records_kept: usize,
    /// Blobs removed, including `blobs_corrupt`.
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// With `verify`: blobs hashed.
    pub blobs_verified: usize,
    /// With `verify`: blobs whose content does not match their name.
    pub blobs_corrupt: usize,
    /// With `verify`: otherwise kept records that name a corrupt or missing blob.
    pub records_corrupt: usize,
    /// Temporary files and directories of killed runs (see `leftovers`).
    pub temps_removed: usize,
}

/// Where stage records and blobs live.
pub trait CacheStore: Send + Sync {
    /// The record for `key`, if there is one that parses.
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord>;
    /// `lookup` without asking a remote: for checks that must stay cheap (the dispatcher's
    /// inline up-to-date check runs on its one thread for every stage).
    fn lookup_local(&self, key: &ContentHash) -> Option<StageRecord> {
        self.lookup(key)
    }
    /// Files the outputs' content, then the record, so a record never names a missing blob. A
    /// blob already filed under an output's hash is kept only if its content (checked through
    /// `hasher`) matches; otherwise the output replaces it.
    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> std::io::Result<()>;
    /// Puts a record's outputs in place, verifying every blob.
    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError>;
    /// `restore`, given up when `cancel` is cancelled (a download from a remote cache can take
    /// minutes; Ctrl-C must not wait for it). A local restore is quick and not interrupted.
    fn restore_cancellable(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
        _cancel: &crate::cancel::CancelToken,
    ) -> Result<(), RestoreError> {
        self.restore(root, record, hasher)
    }
    /// Checks, without restoring, that every blob a record names is there and matches its
    /// hash (through `hasher`'s memo: a `stat` for a blob unchanged since it was last hashed).
    fn verify(&self, record: &StageRecord, hasher: &Hasher) -> Result<(), RestoreError>;
    /// Drops a record (after it proved corrupt).
    fn forget(&self, key: &ContentHash);
    /// Removes every record not in `keep` and every blob no kept record names (see `GcOptions`).
    fn gc(&self, keep: &HashSet<ContentHash>, opts: GcOptions) -> std::io::Result<GcStats>;
    /// Whether `key`'s record was found on a remote cache rather than locally (`status` says
    /// "will restore from the remote cache").
    fn is_remote(&self, _key: &ContentHash) -> bool {
        false
    }
    /// Whether this machine's part certainly holds no record (a fresh `.sluice/`): a search of
    /// it for every stage, such as the up-to-date pre-pass, would find nothing. `false` when
    /// unsure.
    fn local_is_empty(&self) -> bool {
        false
    }
}
