//! `LocalStore`: the cache as a directory (`.sluice/cache/`): `objects/ab/cdef…` holds file
//! contents by BLAKE3 hash, `stages/<key>.json` holds stage records.
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
use super::{
    CacheStore, GcOptions, GcStats, OutputRecord, RestoreError, StageRecord, RECORD_FORMAT,
};
use crate::atomic;
use crate::hash::{hash_file_bytes, ContentHash, EntryKind, Hasher};
use crate::paths::resolves_inside;
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
}

/// The blobs a record names.
fn blobs_of(record: &StageRecord) -> impl Iterator<Item = ContentHash> + '_ {
    record.outputs.values().flat_map(|out| match &out.tree {
        None => vec![out.hash],
        Some(entries) => entries.iter().map(|e| e.hash).collect(),
    })
}

impl LocalStore {
    pub fn new(dir: PathBuf) -> Self {
        LocalStore { dir }
    }

    fn record_path(&self, key: &ContentHash) -> PathBuf {
        self.dir.join("stages").join(format!("{}.json", key.hex()))
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

    /// Files a record whose blobs are already in place (fetched from a remote and checked).
    pub(crate) fn write_record(&self, record: &StageRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        atomic::write(&self.record_path(&record.key), &bytes)
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
        // A run killed in here leaves this temporary behind; the next run removes it
        // (`leftovers`).
        let tmp = atomic::temp_path_for(&dest);
        let result = (|| -> Result<(), RestoreError> {
            match &out.tree {
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
            atomic::remove_path(&dest).map_err(io_err)?;
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
        let bytes = fs::read(self.record_path(key)).ok()?;
        let rec: StageRecord = serde_json::from_slice(&bytes).ok()?;
        (rec.format == RECORD_FORMAT && &rec.key == key).then_some(rec)
    }

    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> io::Result<()> {
        for out in record.outputs.values() {
            let abs = out.path.to_abs(root);
            match &out.tree {
                None => self.put_blob(&abs, &out.hash, hasher)?,
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
        self.write_record(record)
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
        for hash in blobs_of(record) {
            self.verified_blob(&hash, hasher)?;
        }
        Ok(())
    }

    fn forget(&self, key: &ContentHash) {
        let _ = fs::remove_file(self.record_path(key));
    }

    fn gc(&self, keep: &HashSet<ContentHash>, opts: GcOptions) -> io::Result<GcStats> {
        let mut stats = GcStats::default();
        let mut kept: Vec<(PathBuf, StageRecord)> = Vec::new();
        let mut doomed: Vec<PathBuf> = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("stages")) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // A temporary may belong to a writer that is still alive (`status` does not take
                // the run lock); `leftovers` removes those whose writer is gone.
                if atomic::is_temp_name(&name) {
                    continue;
                }
                let key = name.strip_suffix(".json").and_then(ContentHash::parse);
                match key.and_then(|k| self.lookup(&k)) {
                    Some(rec) if keep.contains(&rec.key) => kept.push((entry.path(), rec)),
                    _ => doomed.push(entry.path()),
                }
            }
        }
        if opts.verify {
            let mut states: HashMap<ContentHash, BlobState> = HashMap::new();
            for (_, rec) in &kept {
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
            kept.retain(|(path, rec)| {
                let sound = blobs_of(rec).all(|h| states[&h] == BlobState::Sound);
                if !sound {
                    stats.records_corrupt += 1;
                    doomed.push(path.clone());
                }
                sound
            });
        }
        stats.records_kept = kept.len();
        stats.records_removed = doomed.len();
        if !opts.dry_run {
            for path in &doomed {
                fs::remove_file(path)?;
            }
        }
        let live: HashSet<ContentHash> = kept.iter().flat_map(|(_, rec)| blobs_of(rec)).collect();
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
mod tests {
    use super::*;
    use crate::paths::WorkPath;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: LocalStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let store = LocalStore::new(root.join(".sluice/cache"));
        Fixture {
            _dir: dir,
            root,
            store,
        }
    }

    /// Writes `content` to `rel` and files it as stage `stage`'s only output.
    fn produce(f: &Fixture, stage: &str, rel: &str, content: &[u8]) -> StageRecord {
        let abs = f.root.join(rel);
        fs::create_dir_all(abs.parent().unwrap()).unwrap();
        fs::write(&abs, content).unwrap();
        let hash = ContentHash::of(content);
        let record = StageRecord {
            format: RECORD_FORMAT,
            stage: stage.into(),
            key: ContentHash::of(stage.as_bytes()),
            outputs: BTreeMap::from([(
                "o".to_string(),
                OutputRecord {
                    path: WorkPath::parse(rel, &f.root).unwrap(),
                    hash,
                    tree: None,
                },
            )]),
        };
        f.store.store(&f.root, &record, &Hasher::default()).unwrap();
        record
    }

    #[test]
    fn storing_over_a_damaged_blob_replaces_it() {
        let f = fixture();
        let rec = produce(&f, "s", "out/a", b"fresh output");
        let blob = f.store.blob_path(&ContentHash::of(b"fresh output"));
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, b"fresh").unwrap();
        let hasher = Hasher::default();
        assert!(matches!(
            f.store.verify(&rec, &hasher),
            Err(RestoreError::Corrupt(_))
        ));
        f.store.store(&f.root, &rec, &hasher).unwrap();
        assert_eq!(fs::read(&blob).unwrap(), b"fresh output");
        f.store.verify(&rec, &hasher).unwrap();
    }

    #[test]
    fn an_output_that_changed_after_it_was_hashed_is_not_stored() {
        let f = fixture();
        let rec = produce(&f, "s", "out/a", b"as hashed");
        fs::remove_dir_all(f.root.join(".sluice")).unwrap();
        fs::write(f.root.join("out/a"), b"rewritten").unwrap();
        let err = f
            .store
            .store(&f.root, &rec, &Hasher::default())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being stored"),
            "{err}"
        );
        assert!(!f.store.blob_path(&ContentHash::of(b"as hashed")).exists());
        assert!(f.store.lookup(&rec.key).is_none());
    }

    #[test]
    fn a_restored_output_is_a_writable_file_of_its_own() {
        let f = fixture();
        let rec = produce(&f, "s", "out/a", b"content");
        let out = f.root.join("out/a");
        fs::remove_file(&out).unwrap();
        f.store.restore(&f.root, &rec, &Hasher::default()).unwrap();
        let blob = f.store.blob_path(&ContentHash::of(b"content"));
        let (o, b) = (fs::metadata(&out).unwrap(), fs::metadata(&blob).unwrap());
        assert_ne!(o.ino(), b.ino());
        assert_eq!(b.mode() & 0o222, 0, "blobs are read-only");
        assert_ne!(o.mode() & 0o200, 0, "restored outputs are not");
        fs::write(&out, b"edited").unwrap();
        assert_eq!(fs::read(&blob).unwrap(), b"content");
    }

    #[test]
    fn a_record_is_found_by_its_key_only() {
        let f = fixture();
        let rec = produce(&f, "s", "out/a", b"content");
        assert_eq!(f.store.lookup(&rec.key), Some(rec));
        assert_eq!(f.store.lookup(&ContentHash::of(b"another key")), None);
    }

    #[test]
    fn a_directory_output_round_trips_with_its_tree() {
        let f = fixture();
        let dir = f.root.join("out/d");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.txt"), b"first").unwrap();
        fs::write(dir.join("sub/b.bin"), b"second").unwrap();
        let script = dir.join("run.sh");
        fs::write(&script, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let hasher = Hasher::default();
        let h = hasher.hash_path(&dir).unwrap().unwrap();
        assert!(h.tree.is_some());
        let record = StageRecord {
            format: RECORD_FORMAT,
            stage: "s".into(),
            key: ContentHash::of(b"s"),
            outputs: BTreeMap::from([(
                "o".to_string(),
                OutputRecord {
                    path: WorkPath::parse("out/d", &f.root).unwrap(),
                    hash: h.hash,
                    tree: h.tree.clone(),
                },
            )]),
        };
        f.store.store(&f.root, &record, &hasher).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        f.store
            .restore(&f.root, &record, &Hasher::default())
            .unwrap();
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"first");
        assert_eq!(fs::read(dir.join("sub/b.bin")).unwrap(), b"second");
        assert_ne!(fs::metadata(&script).unwrap().mode() & 0o100, 0);
        let again = Hasher::default().hash_path(&dir).unwrap().unwrap();
        assert_eq!(again.hash, h.hash);
    }

    #[test]
    fn restoring_from_a_damaged_blob_fails_as_corrupt_and_leaves_no_output() {
        let f = fixture();
        let rec = produce(&f, "s", "out/a", b"the real output");
        let out = f.root.join("out/a");
        fs::remove_file(&out).unwrap();
        let blob = f.store.blob_path(&ContentHash::of(b"the real output"));
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, b"the real outpuT").unwrap();
        let err = f
            .store
            .restore(&f.root, &rec, &Hasher::default())
            .unwrap_err();
        assert!(matches!(err, RestoreError::Corrupt(_)), "{err}");
        assert!(!out.exists(), "a damaged blob was put in place");
    }

    #[test]
    fn gc_verify_drops_every_record_that_names_a_damaged_blob() {
        let f = fixture();
        let a = produce(&f, "a", "out/a", b"shared");
        let b = produce(&f, "b", "out/b", b"shared");
        let c = produce(&f, "c", "out/c", b"sound");
        let keep: HashSet<ContentHash> = [a.key, b.key, c.key].into();
        let blob = f.store.blob_path(&ContentHash::of(b"shared"));
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, b"SHARED").unwrap();

        let plain = f.store.gc(&keep, GcOptions::default()).unwrap();
        assert_eq!((plain.records_removed, plain.blobs_removed), (0, 0));
        let opts = GcOptions {
            dry_run: true,
            verify: true,
        };
        let dry = f.store.gc(&keep, opts).unwrap();
        assert_eq!((dry.blobs_verified, dry.blobs_corrupt), (2, 1));
        assert_eq!((dry.records_corrupt, dry.records_removed), (2, 2));
        assert!(f.store.lookup(&a.key).is_some() && blob.exists());

        let opts = GcOptions {
            dry_run: false,
            verify: true,
        };
        let done = f.store.gc(&keep, opts).unwrap();
        assert_eq!((done.records_removed, done.blobs_removed), (2, 1));
        assert!(f.store.lookup(&a.key).is_none() && f.store.lookup(&b.key).is_none());
        assert!(f.store.lookup(&c.key).is_some() && !blob.exists());
        f.store.verify(&c, &Hasher::default()).unwrap();
    }
}
