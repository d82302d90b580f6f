//! `TieredStore`: the local cache with a remote behind it. Lookups try the local cache first
//! and the remote on a miss; a remote hit is restored by fetching its blobs into the local cache
//! (each checked against its hash) and restoring from there as any local hit, so the next run
//! finds it locally. Results are stored locally, then uploaded in the background.

use super::remote::RemoteStore;
use super::{CacheStore, GcOptions, GcStats, LocalStore, RestoreError, StageRecord};
use crate::hash::{ContentHash, Hasher};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub struct TieredStore {
    local: LocalStore,
    remote: Arc<RemoteStore>,
}

impl TieredStore {
    pub fn new(local: LocalStore, remote: Arc<RemoteStore>) -> TieredStore {
        TieredStore { local, remote }
    }
}

impl CacheStore for TieredStore {
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        self.local.lookup(key).or_else(|| self.remote.lookup(key))
    }

    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> std::io::Result<()> {
        self.local.store(root, record, hasher)?;
        self.remote.push_later(&self.local, record);
        Ok(())
    }

    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        if !self.remote.knows(&record.key) {
            return self.local.restore(root, record, hasher);
        }
        self.remote.fetch_missing(&self.local, record, hasher)?;
        self.local
            .write_record(record)
            .map_err(|e| RestoreError::Io {
                path: "the local cache".into(),
                source: e,
            })?;
        self.local.restore(root, record, hasher)?;
        self.remote.count_restored();
        Ok(())
    }

    fn verify(&self, record: &StageRecord, hasher: &Hasher) -> Result<(), RestoreError> {
        if self.remote.knows(&record.key) {
            self.remote.verify(&self.local, record, hasher)
        } else {
            self.local.verify(record, hasher)
        }
    }

    fn forget(&self, key: &ContentHash) {
        // The remote's copy is not deleted: another machine may hold it sound, and the blob that
        // proved bad is uploaded again after the stage runs.
        self.local.forget(key);
        self.remote.forget(key);
    }

    fn gc(&self, keep: &HashSet<ContentHash>, opts: GcOptions) -> std::io::Result<GcStats> {
        self.local.gc(keep, opts)
    }

    fn is_remote(&self, key: &ContentHash) -> bool {
        self.remote.knows(key)
    }
}
