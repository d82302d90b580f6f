//! `LocalStore`: the cache as a directory (`.sluice/cache/`): `objects/ab/cdef…` holds file
//! contents by BLAKE3 hash, `stages/<key>.json` holds stage records.
//!
//! Blobs are hard-linked from outputs when the file system allows (copied otherwise) and made
//! read-only, so storing and restoring large outputs costs no copy. Because a hard-linked blob
//! shares its inode with an output, a user editing an output in place would change the blob: every
//! restore therefore verifies each blob's hash (through the memo, so unchanged blobs cost a stat)
//! and a mismatch drops the record.

use super::{CacheStore, GcStats, OutputRecord, RestoreError, StageRecord, RECORD_FORMAT};
use crate::atomic;
use crate::hash::{ContentHash, EntryKind, Hasher};
use crate::paths::resolves_inside;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: PathBuf) -> Self {
        LocalStore { dir }
    }

    fn record_path(&self, key: &ContentHash) -> PathBuf {
        self.dir.join("stages").join(format!("{}.json", key.hex()))
    }

    fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Files `src` under `hash` unless a blob is already there.
    fn put_blob(&self, src: &Path, hash: &ContentHash) -> io::Result<()> {
        let dest = self.blob_path(hash);
        if dest.exists() {
            return Ok(());
        }
        fs::create_dir_all(dest.parent().expect("blob paths have a parent"))?;
        let tmp = atomic::temp_path_for(&dest);
        if fs::hard_link(src, &tmp).is_err() {
            fs::copy(src, &tmp)?;
        }
        let mode = fs::metadata(&tmp)?.permissions().mode();
        let ro = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
        fs::set_permissions(&tmp, fs::Permissions::from_mode(ro))?;
        fs::rename(&tmp, &dest)
    }

    fn put_bytes(&self, bytes: &[u8], hash: &ContentHash) -> io::Result<()> {
        let dest = self.blob_path(hash);
        if dest.exists() {
            return Ok(());
        }
        atomic::write(&dest, bytes)
    }

    fn verified_blob(&self, hash: &ContentHash, hasher: &Hasher) -> Result<PathBuf, RestoreError> {
        let blob = self.blob_path(hash);
        let meta = fs::metadata(&blob)
            .map_err(|_| RestoreError::Corrupt(format!("blob {} is missing", hash.short())))?;
        let actual = hasher
            .hash_file(&blob, &meta)
            .map_err(|e| RestoreError::Io {
                path: blob.display().to_string(),
                source: e,
            })?;
        if &actual != hash {
            return Err(RestoreError::Corrupt(format!(
                "blob {} holds content {}",
                hash.short(),
                actual.short()
            )));
        }
        Ok(blob)
    }

    /// Places `blob` at `dest` (a fresh name), by hard link or copy.
    fn place(blob: &Path, dest: &Path) -> io::Result<()> {
        if fs::hard_link(blob, dest).is_err() {
            fs::copy(blob, dest)?;
        }
        Ok(())
    }

    fn restore_output(
        &self,
        root: &Path,
        out: &OutputRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        if !resolves_inside(root, &out.path) {
            return Err(RestoreError::Escapes(out.path.clone()));
        }
        let dest = out.path.to_abs(root);
        let io_err = |e: io::Error| RestoreError::Io {
            path: out.path.to_string(),
            source: e,
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let tmp = atomic::temp_path_for(&dest);
        let result = (|| -> Result<(), RestoreError> {
            match &out.tree {
                None => {
                    let blob = self.verified_blob(&out.hash, hasher)?;
                    Self::place(&blob, &tmp).map_err(io_err)?;
                }
                Some(entries) => {
                    fs::create_dir_all(&tmp).map_err(io_err)?;
                    for e in entries {
                        let blob = self.verified_blob(&e.hash, hasher)?;
                        let target = tmp.join(&e.path);
                        if let Some(parent) = target.parent() {
                            fs::create_dir_all(parent).map_err(io_err)?;
                        }
                        match e.kind {
                            EntryKind::Link => {
                                let text = fs::read_to_string(&blob).map_err(io_err)?;
                                std::os::unix::fs::symlink(text, &target).map_err(io_err)?;
                            }
                            EntryKind::File | EntryKind::Exec => {
                                Self::place(&blob, &target).map_err(io_err)?
                            }
                        }
                    }
                }
            }
            atomic::remove_path(&dest).map_err(io_err)?;
            fs::rename(&tmp, &dest).map_err(io_err)
        })();
        if result.is_err() {
            let _ = atomic::remove_path(&tmp);
        }
        result
    }
}

impl CacheStore for LocalStore {
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        let bytes = fs::read(self.record_path(key)).ok()?;
        let rec: StageRecord = serde_json::from_slice(&bytes).ok()?;
        (rec.format == RECORD_FORMAT && &rec.key == key).then_some(rec)
    }

    fn store(&self, root: &Path, record: &StageRecord) -> io::Result<()> {
        for out in record.outputs.values() {
            let abs = out.path.to_abs(root);
            match &out.tree {
                None => self.put_blob(&abs, &out.hash)?,
                Some(entries) => {
                    for e in entries {
                        let p = abs.join(&e.path);
                        match e.kind {
                            EntryKind::Link => {
                                let text = fs::read_link(&p)?;
                                self.put_bytes(text.to_string_lossy().as_bytes(), &e.hash)?;
                            }
                            EntryKind::File | EntryKind::Exec => self.put_blob(&p, &e.hash)?,
                        }
                    }
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        atomic::write(&self.record_path(&record.key), &bytes)
    }

    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        for out in record.outputs.values() {
            self.restore_output(root, out, hasher)?;
        }
        Ok(())
    }

    fn forget(&self, key: &ContentHash) {
        let _ = fs::remove_file(self.record_path(key));
    }

    fn gc(&self, keep: &HashSet<ContentHash>, dry_run: bool) -> io::Result<GcStats> {
        let mut stats = GcStats::default();
        let mut live_blobs: HashSet<ContentHash> = HashSet::new();
        let stages_dir = self.dir.join("stages");
        if let Ok(rd) = fs::read_dir(&stages_dir) {
            for entry in rd.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".json").and_then(ContentHash::parse);
                let record = key.and_then(|k| self.lookup(&k));
                match (key, record) {
                    (Some(k), Some(rec)) if keep.contains(&k) => {
                        stats.records_kept += 1;
                        for out in rec.outputs.values() {
                            match &out.tree {
                                None => {
                                    live_blobs.insert(out.hash);
                                }
                                Some(t) => live_blobs.extend(t.iter().map(|e| e.hash)),
                            }
                        }
                    }
                    _ => {
                        stats.records_removed += 1;
                        if !dry_run {
                            fs::remove_file(&path)?;
                        }
                    }
                }
            }
        }
        let objects = self.dir.join("objects");
        if let Ok(rd) = fs::read_dir(&objects) {
            for prefix in rd.flatten() {
                let Ok(inner) = fs::read_dir(prefix.path()) else {
                    continue;
                };
                for blob in inner.flatten() {
                    let hex = format!(
                        "{}{}",
                        prefix.file_name().to_string_lossy(),
                        blob.file_name().to_string_lossy()
                    );
                    let live = ContentHash::parse(&hex).is_some_and(|h| live_blobs.contains(&h));
                    if !live {
                        stats.blobs_removed += 1;
                        stats.bytes_freed += blob.metadata().map(|m| m.len()).unwrap_or(0);
                        if !dry_run {
                            fs::remove_file(blob.path())?;
                        }
                    }
                }
            }
        }
        Ok(stats)
    }
}
