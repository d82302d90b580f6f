//! `LocalStore`: the cache as a directory (`.sluice/cache/`): `objects/ab/cdef…` holds file
//! contents by BLAKE3 hash, `records.log` the stage records (`log.rs`), which keep file outputs
//! of at most `INLINE_MAX` bytes themselves (`inline.rs`), so that a small stage's result costs
//! one appended line instead of two new files.
//!
//! No workspace file ever shares an inode with a blob: storing copies an output into the store
//! and restoring copies a blob out, by reflink where the file system allows and by an in-kernel
//! copy otherwise (`copy.rs`). With hard links, as sluice once used, an output and its blob were
//! one file in both directions: a stage process still writing its output after a run, or a user
//! editing an output in place, rewrote the cached copy too, and read-only modes do not stop root.
//!
//! Blobs are still checked before they are trusted, because anything can write into
//! `.sluice/cache/`. Every restore (and `status`, through `verify`) hashes each blob through the
//! memo, which costs a `stat` for a blob whose size, inode and times are unchanged since it was
//! last hashed and a full hash otherwise. Storing over an existing blob checks it the same way
//! and replaces it (atomically, by rename) when its content does not match its name, so a
//! truncated blob is repaired by the next run of its stage. `gc --verify` hashes every kept blob
//! in full, which also catches damage that left the metadata alone.

use super::copy::clone_file;
use super::log::RecordLog;
use super::{
    blobs_of, CacheStore, GcOptions, GcStats, Inline, OutputRecord, RestoreError, StageRecord,
    INLINE_MAX, RECORD_FORMAT_INLINE,
};
use crate::atomic;
use crate::hash::{hash_file_bytes, ContentHash, EntryKind, Hasher};
use crate::paths::output_site;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Permission bits of a blob, and of a restored file, by whether the content is executable.
pub(crate) const BLOB_MODE: [u32; 2] = [0o444, 0o555];
/// Restored outputs are ordinary files again (less the umask), like the ones a stage writes.
const OUTPUT_MODE: [u32; 2] = [0o666, 0o777];

fn exec_index(exec: bool) -> usize {
    usize::from(exec)
}

/// True when nothing wrote to the file between the two `stat`s (any write moves the change
/// time; the size and modification time are compared too, for file systems with coarse clocks).
fn unchanged(before: &fs::Metadata, after: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &fs::Metadata| {
        (
            m.ino(),
            m.size(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        )
    };
    stamp(before) == stamp(after)
}

pub struct LocalStore {
    dir: PathBuf,
    log: RecordLog,
    /// File outputs up to this size are kept in their record (`INLINE_MAX`; unit tests of the
    /// blob path lower it).
    inline_max: u64,
}

impl LocalStore {
    pub fn new(dir: PathBuf) -> Self {
        LocalStore {
            log: RecordLog::new(&dir),
            dir,
            inline_max: INLINE_MAX,
        }
    }

    /// A store that keeps no output inline: every output gets a blob.
    #[cfg(test)]
    pub(crate) fn without_inline(dir: PathBuf) -> Self {
        LocalStore {
            inline_max: 0,
            ..LocalStore::new(dir)
        }
    }

    pub(crate) fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// True when the blob for `hash` is a regular file whose content matches its name.
    pub(crate) fn holds(&self, hash: &ContentHash, hasher: &Hasher) -> bool {
        let blob = self.blob_path(hash);
        match fs::symlink_metadata(&blob) {
            Ok(meta) if meta.is_file() => hasher
                .hash_file_settled(&blob, &meta)
                .is_ok_and(|actual| &actual == hash),
            _ => false,
        }
    }

    /// Files a copy of `src` under `hash`, unless a sound blob is already there. A blob that does
    /// not match its name is replaced by the rename, never patched in place.
    fn put_blob(&self, src: &Path, hash: &ContentHash, hasher: &Hasher) -> io::Result<()> {
        if self.holds(hash, hasher) {
            return Ok(());
        }
        // The output must still be what was hashed, and stay so while it is copied: a process
        // still writing it (one that outlived its stage, say) would otherwise leave a blob whose
        // content does not match its name. The first check is a memo hit for an output hashed
        // just before; the second compares its metadata after the copy with before.
        let from = fs::File::open(src)?;
        let before = from.metadata()?;
        let changed = || {
            io::Error::other(format!(
                "`{}` changed while it was being stored",
                src.display()
            ))
        };
        if &hasher.hash_file(src, &before)? != hash {
            return Err(changed());
        }
        let dest = self.blob_path(hash);
        // After the first few hundred blobs every shard directory exists; see `job::prepare`.
        let shard = dest.parent().expect("blob paths have a parent");
        if !shard.is_dir() {
            fs::create_dir_all(shard)?;
        }
        let exec = before.permissions().mode() & 0o111 != 0;
        let tmp = atomic::temp_path_for(&dest);
        let result = clone_file(&from, &tmp, BLOB_MODE[exec_index(exec)]).and_then(|()| {
            if unchanged(&before, &from.metadata()?) {
                fs::rename(&tmp, &dest)
            } else {
                Err(changed())
            }
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The content of the file output at `src` when it is small enough to keep in its record,
    /// read in one go and checked against `hash` (the stage's output must still be what was
    /// hashed, as in `put_blob`).
    fn inline_of(&self, src: &Path, hash: &ContentHash) -> io::Result<Option<Inline>> {
        use std::io::Read;
        let mut from = fs::File::open(src)?;
        let before = from.metadata()?;
        if !before.is_file() || before.len() > self.inline_max {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(before.len() as usize);
        from.by_ref()
            .take(self.inline_max + 1)
            .read_to_end(&mut bytes)?;
        if &ContentHash::of(&bytes) != hash || !unchanged(&before, &from.metadata()?) {
            return Err(io::Error::other(format!(
                "`{}` changed while it was being stored",
                src.display()
            )));
        }
        let exec = before.permissions().mode() & 0o111 != 0;
        Ok(Some(Inline::new(bytes, exec)))
    }

    /// Files the outputs' content, then the record; returns the record as filed (with the small
    /// outputs' content inline), which is what a remote cache gets too.
    pub(crate) fn file(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> io::Result<StageRecord> {
        let mut filed = record.clone();
        for out in filed.outputs.values_mut() {
            let abs = out.path.to_abs(root);
            match &out.tree {
                None if out.inline.is_some() => {}
                None => match self.inline_of(&abs, &out.hash)? {
                    Some(inline) => out.inline = Some(inline),
                    None => self.put_blob(&abs, &out.hash, hasher)?,
                },
                Some(entries) => {
                    for e in entries {
                        let p = abs.join(&e.path);
                        match e.kind {
                            EntryKind::Link => {
                                let text = fs::read_link(&p)?;
                                let bytes = text.to_string_lossy();
                                self.put_bytes(bytes.as_bytes(), &e.hash, hasher)?;
                            }
                            EntryKind::File | EntryKind::Exec => {
                                self.put_blob(&p, &e.hash, hasher)?
                            }
                        }
                    }
                }
            }
        }
        if filed.outputs.values().any(|o| o.inline.is_some()) {
            filed.format = RECORD_FORMAT_INLINE;
        }
        self.log.append(&filed)?;
        Ok(filed)
    }

    /// Files a record whose blobs are already in place (fetched from a remote and checked).
    pub(crate) fn write_record(&self, record: &StageRecord) -> io::Result<()> {
        self.log.append(record)
    }

    fn put_bytes(&self, bytes: &[u8], hash: &ContentHash, hasher: &Hasher) -> io::Result<()> {
        if self.holds(hash, hasher) {
            return Ok(());
        }
        atomic::write(&self.blob_path(hash), bytes)
    }

    /// The blob for `hash` once its content is checked, with its metadata.
    fn verified_blob(
        &self,
        hash: &ContentHash,
        hasher: &Hasher,
    ) -> Result<(PathBuf, fs::Metadata), RestoreError> {
        let blob = self.blob_path(hash);
        let meta = fs::symlink_metadata(&blob)
            .ok()
            .filter(|m| m.is_file())
            .ok_or_else(|| RestoreError::Corrupt(format!("blob {} is missing", hash.short())))?;
        let actual = hasher
            .hash_file_settled(&blob, &meta)
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
        Ok((blob, meta))
    }

    fn restore_output(
        &self,
        root: &Path,
        out: &OutputRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        let Some(site) = output_site(root, &out.path) else {
            return Err(RestoreError::Escapes(out.path.clone()));
        };
        let dest = out.path.to_abs(root);
        let io_err = |e: io::Error| RestoreError::Io {
            path: out.path.to_string(),
            source: e,
        };
        // The containment check has usually gone through the directory already; a `mkdir` of
        // an existing one would cost a failed call and a `stat`.
        if let Some(parent) = dest.parent().filter(|_| !site.dir_exists) {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        // A run killed in here leaves this temporary behind; the next run removes it
        // (`leftovers`).
        let tmp = atomic::temp_path_for(&dest);
        let result = (|| -> Result<(), RestoreError> {
            match &out.tree {
                None if out.inline.is_some() => {
                    let (bytes, exec) = inline_content(out)?;
                    write_new(&tmp, &bytes, OUTPUT_MODE[exec_index(exec)]).map_err(io_err)?;
                }
                None => {
                    let (blob, meta) = self.verified_blob(&out.hash, hasher)?;
                    let exec = meta.permissions().mode() & 0o111 != 0;
                    let from = fs::File::open(&blob).map_err(io_err)?;
                    clone_file(&from, &tmp, OUTPUT_MODE[exec_index(exec)]).map_err(io_err)?;
                }
                Some(entries) => {
                    fs::create_dir_all(&tmp).map_err(io_err)?;
                    for e in entries {
                        let (blob, _) = self.verified_blob(&e.hash, hasher)?;
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
                                let exec = e.kind == EntryKind::Exec;
                                let from = fs::File::open(&blob).map_err(io_err)?;
                                clone_file(&from, &target, OUTPUT_MODE[exec_index(exec)])
                                    .map_err(io_err)?
                            }
                        }
                    }
                }
            }
            // A file in the way is replaced by the rename itself; a directory has to go first.
            if site.occupied {
                atomic::remove_path(&dest).map_err(io_err)?;
            }
            fs::rename(&tmp, &dest).map_err(io_err)
        })();
        if result.is_err() {
            let _ = atomic::remove_path(&tmp);
        }
        result
    }

    /// Hashes the blob for `hash` in full, bypassing the memo, which trusts unchanged metadata.
    fn check_in_full(&self, hash: &ContentHash) -> BlobState {
        let blob = self.blob_path(hash);
        match fs::symlink_metadata(&blob) {
            Ok(meta) if meta.is_file() => match hash_file_bytes(&blob, meta.len()) {
                Ok(actual) if &actual == hash => BlobState::Sound,
                _ => BlobState::Corrupt,
            },
            Ok(_) => BlobState::Corrupt,
            Err(_) => BlobState::Missing,
        }
    }
}

/// An inline output's content once checked against its hash, with whether it is executable.
fn inline_content(out: &OutputRecord) -> Result<(Vec<u8>, bool), RestoreError> {
    let inline = out.inline.as_ref().expect("only called for inline outputs");
    let bytes = inline
        .content(&out.hash)
        .map_err(|why| RestoreError::Corrupt(format!("output `{}`: {why}", out.path)))?;
    Ok((bytes, inline.exec))
}

/// Writes `bytes` to a new file at `path` with `mode` (less the umask).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)
}

/// What `gc --verify` found for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobState {
    Sound,
    /// There, but not a regular file, unreadable, or not matching its name.
    Corrupt,
    Missing,
}

impl CacheStore for LocalStore {
    fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        self.log.lookup(key)
    }

    fn local_is_empty(&self) -> bool {
        self.log.is_empty()
    }

    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> io::Result<()> {
        self.file(root, record, hasher).map(|_| ())
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

    fn verify(&self, record: &StageRecord, hasher: &Hasher) -> Result<(), RestoreError> {
        for out in record.outputs.values().filter(|o| o.inline.is_some()) {
            inline_content(out)?;
        }
        for hash in blobs_of(record) {
            self.verified_blob(&hash, hasher)?;
        }
        Ok(())
    }

    fn forget(&self, key: &ContentHash) {
        self.log.forget(key);
    }

    fn gc(&self, keep: &HashSet<ContentHash>, opts: GcOptions) -> io::Result<GcStats> {
        let mut stats = GcStats::default();
        let all = self.log.all();
        let total = all.len();
        let mut kept: Vec<StageRecord> = all
            .into_iter()
            .filter(|rec| keep.contains(&rec.key))
            .collect();
        if opts.verify {
            let mut states: HashMap<ContentHash, BlobState> = HashMap::new();
            for rec in &kept {
                for hash in blobs_of(rec) {
                    states
                        .entry(hash)
                        .or_insert_with(|| self.check_in_full(&hash));
                }
            }
            stats.blobs_verified = states
                .values()
                .filter(|s| **s != BlobState::Missing)
                .count();
            stats.blobs_corrupt = states
                .values()
                .filter(|s| **s == BlobState::Corrupt)
                .count();
            kept.retain(|rec| {
                let sound = blobs_of(rec).all(|h| states[&h] == BlobState::Sound)
                    && rec
                        .outputs
                        .values()
                        .all(|o| o.inline.is_none() || inline_content(o).is_ok());
                if !sound {
                    stats.records_corrupt += 1;
                }
                sound
            });
        }
        stats.records_kept = kept.len();
        stats.records_removed = total - kept.len();
        if !opts.dry_run {
            // The log is rewritten with the kept records only, which also drops lines later
            // ones replaced, and the record files of older versions move into it.
            self.log.replace(&kept.iter().collect::<Vec<_>>())?;
        }
        let live: HashSet<ContentHash> = kept.iter().flat_map(blobs_of).collect();
        let objects = self.dir.join("objects");
        if let Ok(rd) = fs::read_dir(&objects) {
            for prefix in rd.flatten() {
                let Ok(inner) = fs::read_dir(prefix.path()) else {
                    continue;
                };
                for blob in inner.flatten() {
                    let name = blob.file_name().to_string_lossy().into_owned();
                    if atomic::is_temp_name(&name) {
                        continue;
                    }
                    let hex = format!("{}{name}", prefix.file_name().to_string_lossy());
                    let is_live = ContentHash::parse(&hex).is_some_and(|h| live.contains(&h));
                    if !is_live {
                        stats.blobs_removed += 1;
                        stats.bytes_freed += blob.metadata().map(|m| m.len()).unwrap_or(0);
                        if !opts.dry_run {
                            atomic::remove_path(&blob.path())?;
                        }
                    }
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests;
