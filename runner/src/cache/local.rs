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
mod tests {
    use super::*;
    use crate::cache::RECORD_FORMAT;
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
        let store = LocalStore::without_inline(root.join(".sluice/cache"));
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
                OutputRecord::new(WorkPath::parse(rel, &f.root).unwrap(), hash, None),
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

    /// Restoring skips the `mkdir` and the removal when the containment check saw the directory
    /// there and nothing in the way; whatever is in the way, a file or a directory, still goes.
    #[test]
    fn a_restore_replaces_whatever_is_in_the_way_and_makes_missing_directories() {
        let f = inline_fixture();
        let rec = produce(&f, "s", "out/deep/a", b"restored");
        let rec = f.store.lookup(&rec.key).unwrap();
        let dest = f.root.join("out/deep/a");
        let hasher = Hasher::default();
        /// What a test puts in the output's way before restoring it.
        type Obstacle = fn(&Path);
        let ways: [(&str, Obstacle); 4] = [
            ("an edited file", |p| fs::write(p, b"edited").unwrap()),
            ("a directory", |p| {
                fs::remove_file(p).unwrap();
                fs::create_dir_all(p.join("inner")).unwrap();
                fs::write(p.join("inner/x"), b"x").unwrap();
            }),
            ("nothing", |p| atomic::remove_path(p).unwrap()),
            ("no directory either", |p| {
                fs::remove_dir_all(p.parent().unwrap().parent().unwrap()).unwrap()
            }),
        ];
        for (what, make) in ways {
            make(&dest);
            f.store.restore(&f.root, &rec, &hasher).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"restored", "over {what}");
        }
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
                OutputRecord::new(
                    WorkPath::parse("out/d", &f.root).unwrap(),
                    h.hash,
                    h.tree.clone(),
                ),
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

    /// `fixture`, with outputs of up to `INLINE_MAX` bytes kept in their records.
    fn inline_fixture() -> Fixture {
        let f = fixture();
        Fixture {
            store: LocalStore::new(f.root.join(".sluice/cache")),
            ..f
        }
    }

    fn blob_count(f: &Fixture) -> usize {
        let objects = f.root.join(".sluice/cache/objects");
        fs::read_dir(objects)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| fs::read_dir(d.path()).map(|rd| rd.count()).unwrap_or(0))
            .sum()
    }

    #[test]
    fn a_small_output_travels_in_its_record_and_comes_back_with_its_mode() {
        let f = inline_fixture();
        let small = vec![0xffu8; INLINE_MAX as usize];
        let rec = produce(&f, "s", "out/a", &small);
        let script = f.root.join("out/a");
        assert_eq!(blob_count(&f), 0, "no blob for a small output");
        let found = f.store.lookup(&rec.key).unwrap();
        let inline = found.outputs["o"].inline.as_ref().expect("kept inline");
        assert!(
            inline.base64.is_some(),
            "bytes that are not UTF-8 go as base64"
        );
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let exec = produce(&f, "t", "out/a", &small);
        fs::remove_file(&script).unwrap();
        let found = f.store.lookup(&exec.key).unwrap();
        f.store
            .restore(&f.root, &found, &Hasher::default())
            .unwrap();
        assert_eq!(fs::read(&script).unwrap(), small);
        assert_ne!(fs::metadata(&script).unwrap().mode() & 0o100, 0);
        // One byte more and it is a blob again.
        let big = produce(&f, "u", "out/b", &vec![b'x'; INLINE_MAX as usize + 1]);
        assert_eq!(blob_count(&f), 1);
        assert!(f.store.lookup(&big.key).unwrap().outputs["o"]
            .inline
            .is_none());
    }

    #[test]
    fn damaged_inline_content_is_refused_on_restore_and_dropped_by_gc_verify() {
        let f = inline_fixture();
        let rec = produce(&f, "s", "out/a", b"0.93");
        let log = f.root.join(".sluice/cache/records.log");
        let text = fs::read_to_string(&log).unwrap();
        fs::write(&log, text.replace("\"text\":\"0.93\"", "\"text\":\"0.99\"")).unwrap();
        let store = LocalStore::new(f.root.join(".sluice/cache"));
        let found = store.lookup(&rec.key).unwrap();
        fs::remove_file(f.root.join("out/a")).unwrap();
        let err = store
            .restore(&f.root, &found, &Hasher::default())
            .unwrap_err();
        assert!(matches!(&err, RestoreError::Corrupt(why) if why.contains("does not match")));
        assert!(!f.root.join("out/a").exists(), "nothing half-restored");
        let opts = GcOptions {
            dry_run: false,
            verify: true,
        };
        let done = store.gc(&HashSet::from([rec.key]), opts).unwrap();
        assert_eq!((done.records_corrupt, done.records_kept), (1, 0));
        assert!(store.lookup(&rec.key).is_none());
    }

    #[test]
    fn a_small_output_that_changed_after_it_was_hashed_is_not_stored() {
        let f = inline_fixture();
        let rec = produce(&f, "s", "out/a", b"as hashed");
        fs::write(f.root.join("out/a"), b"rewritten").unwrap();
        let mut other = rec.clone();
        other.key = ContentHash::of(b"another key");
        let err = f
            .store
            .store(&f.root, &other, &Hasher::default())
            .unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert!(f.store.lookup(&other.key).is_none());
    }
}
