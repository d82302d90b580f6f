//! Content hashing of inputs and outputs, and the memo that makes re-checking an unchanged file
//! cost a `stat`.
//!
//! `ContentHash` is BLAKE3 of a file's bytes; a directory's hash is BLAKE3 over an explicit
//! encoding of its sorted manifest (relative path, kind, content hash). The memo maps a path to
//! `(device, inode, size, mtime, ctime)` and the hash seen for them; it is persisted under
//! `.sluice/` except for "racy" entries whose file changed within the last two seconds, where a
//! coarse clock could hide a second change.

use dashmap::DashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

mod memo_file;
use memo_file::{decode_memo, MemoWriter};

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
    pub fn parse(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| ContentHash(*h.as_bytes()))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a visitor, so a lock file's tens of thousands of digests are read from the
        // text in place rather than each copied into a `String` first.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = ContentHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a BLAKE3 hex digest")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ContentHash, E> {
                ContentHash::parse(s).ok_or_else(|| E::custom("not a BLAKE3 hex digest"))
            }
        }
        d.deserialize_str(Hex)
    }
}

/// One entry of a directory manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeEntry {
    /// Relative to the directory, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    /// The file's content hash, or the hash of a symlink's target text.
    pub hash: ContentHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Exec,
    Link,
}

/// The hash of a path, with the manifest when it is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathHash {
    pub hash: ContentHash,
    pub tree: Option<Vec<TreeEntry>>,
}

/// The hash of a manifest, through an explicit, versioned encoding.
pub fn tree_hash(entries: &[TreeEntry]) -> ContentHash {
    let mut h = blake3::Hasher::new();
    h.update(b"sluice-tree-v1\0");
    for e in entries {
        h.update(&[match e.kind {
            EntryKind::File => b'f',
            EntryKind::Exec => b'x',
            EntryKind::Link => b'l',
        }]);
        h.update(&(e.path.len() as u64).to_le_bytes());
        h.update(e.path.as_bytes());
        h.update(&e.hash.0);
    }
    ContentHash(*h.finalize().as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct MemoEntry {
    stamp: Stamp,
    hash: ContentHash,
    racy: bool,
}

/// Which memo entries `Hasher::hash_file_trusting` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Any entry whose stamp matches.
    Racy,
    /// Only entries made two seconds or more after the file last changed.
    Settled,
}

/// Files above this size are hashed with memory mapping across all cores.
const PARALLEL_HASH_BYTES: u64 = 32 * 1024 * 1024;
const RACY_NS: i128 = 2_000_000_000;

/// Hashes paths, remembering what it has seen. Shared by every worker (read-mostly).
#[derive(Default)]
pub struct Hasher {
    memo: DashMap<PathBuf, MemoEntry>,
    dirty: AtomicBool,
}

impl Hasher {
    /// Loads the memo; a missing, unreadable or damaged memo just starts empty.
    pub fn load(path: &Path) -> Hasher {
        let Ok(bytes) = fs::read(path) else {
            return Hasher::default();
        };
        let Some(entries) = decode_memo(&bytes) else {
            tracing::debug!(path = %path.display(), "hash memo unreadable; starting empty");
            return Hasher::default();
        };
        let memo = DashMap::with_capacity(entries.len());
        for (p, stamp, hash) in entries {
            let racy = false;
            memo.insert(p, MemoEntry { stamp, hash, racy });
        }
        Hasher {
            memo,
            dirty: AtomicBool::new(false),
        }
    }

    /// Writes the memo atomically, dropping racy entries. Entries of files that no longer exist
    /// are kept (harmless: a path that comes back is `stat`ed and compared like any other; they
    /// only make the memo larger, and a pass that drops them would `stat` every entry on save).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if !self.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Encoded straight from the map, in its order (which means nothing to the reader):
        // cloning 20,000 paths to sort them first was a large run's peak of memory.
        let mut memo = MemoWriter::with_capacity(self.memo.len());
        for e in self.memo.iter().filter(|e| !e.value().racy) {
            memo.push(e.key(), &e.value().stamp, &e.value().hash);
        }
        crate::atomic::write(path, &memo.finish())
    }

    /// Hashes a file or directory; `None` when it does not exist.
    pub fn hash_path(&self, abs: &Path) -> io::Result<Option<PathHash>> {
        let meta = match fs::symlink_metadata(abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        self.hash_with_metadata(abs, meta)
    }

    /// `hash_path` for a stage's output: a regular file of at most `keep` bytes is read once,
    /// and the bytes hashed come back with the hash, for a cache record to keep inline without
    /// opening the file again. Anything else (larger, a directory, a link) is hashed as
    /// `hash_path` does and comes back without content. The memo is not consulted for a kept
    /// file (its bytes are needed anyway) but learns its hash as usual.
    pub fn hash_output(
        &self,
        abs: &Path,
        keep: u64,
    ) -> io::Result<Option<(PathHash, Option<SmallFile>)>> {
        let meta = match fs::symlink_metadata(abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_file() || meta.len() > keep {
            return Ok(self.hash_with_metadata(abs, meta)?.map(|h| (h, None)));
        }
        let Some(bytes) = read_exactly(abs, meta.len())? else {
            // Its size moved between the `stat` and the read: someone is still writing it. It is
            // hashed the ordinary way and left to the store, which checks it again.
            return Ok(self.hash_path(abs)?.map(|h| (h, None)));
        };
        let hash = ContentHash::of(&bytes);
        self.note(abs, Stamp::of(&meta), hash);
        let exec = meta.mode() & 0o111 != 0;
        let small = SmallFile { bytes, exec, hash };
        Ok(Some((PathHash { hash, tree: None }, Some(small))))
    }

    fn hash_with_metadata(&self, abs: &Path, meta: fs::Metadata) -> io::Result<Option<PathHash>> {
        if meta.is_dir() {
            let mut entries = Vec::new();
            self.walk(abs, abs, &mut entries)?;
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(Some(PathHash {
                hash: tree_hash(&entries),
                tree: Some(entries),
            }))
        } else if meta.file_type().is_symlink() {
            // A symlinked input is hashed through its target.
            match fs::metadata(abs) {
                Ok(m) if m.is_dir() => {
                    let real = fs::canonicalize(abs)?;
                    self.hash_path(&real)
                }
                Ok(m) => Ok(Some(PathHash {
                    hash: self.hash_file(abs, &m)?,
                    tree: None,
                })),
                Err(_) => Ok(None),
            }
        } else {
            Ok(Some(PathHash {
                hash: self.hash_file(abs, &meta)?,
                tree: None,
            }))
        }
    }

    fn walk(&self, base: &Path, dir: &Path, out: &mut Vec<TreeEntry>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if crate::atomic::is_temp_name(&name.to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let ft = entry.file_type()?;
            let rel = path
                .strip_prefix(base)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if ft.is_dir() {
                self.walk(base, &path, out)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)?;
                out.push(TreeEntry {
                    path: rel,
                    kind: EntryKind::Link,
                    hash: ContentHash::of(target.to_string_lossy().as_bytes()),
                });
            } else {
                let meta = entry.metadata()?;
                let exec = meta.mode() & 0o111 != 0;
                out.push(TreeEntry {
                    path: rel,
                    kind: if exec {
                        EntryKind::Exec
                    } else {
                        EntryKind::File
                    },
                    hash: self.hash_file(&path, &meta)?,
                });
            }
        }
        Ok(())
    }

    /// Hashes one regular file, through the memo.
    pub fn hash_file(&self, abs: &Path, meta: &fs::Metadata) -> io::Result<ContentHash> {
        self.hash_file_trusting(abs, meta, Trust::Racy)
    }

    /// `hash_file` for a file whose content is about to be trusted as a copy of something else
    /// (a cache blob): a memo entry made within two seconds of the file's last change is not
    /// used. File times come from a coarse clock, so a same-size write soon after such a change
    /// can leave every field of the stamp as it was; the ordinary memo accepts that risk for
    /// files seen again within one run, which blobs rarely are.
    pub fn hash_file_settled(&self, abs: &Path, meta: &fs::Metadata) -> io::Result<ContentHash> {
        self.hash_file_trusting(abs, meta, Trust::Settled)
    }

    /// Records `hash` for a file sluice has just written from bytes it hashed on the way (a blob
    /// downloaded from a remote cache), so that restoring it does not read it all again. The
    /// entry is not racy: no one else writes the file, and its stamp is taken after the write.
    pub fn remember(&self, abs: &Path, hash: ContentHash) -> io::Result<()> {
        let meta = fs::symlink_metadata(abs)?;
        self.memo.insert(
            abs.to_path_buf(),
            MemoEntry {
                stamp: Stamp::of(&meta),
                hash,
                racy: false,
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn hash_file_trusting(
        &self,
        abs: &Path,
        meta: &fs::Metadata,
        trust: Trust,
    ) -> io::Result<ContentHash> {
        let stamp = Stamp::of(meta);
        if let Some(e) = self.memo.get(abs) {
            if e.stamp == stamp && (trust == Trust::Racy || !e.racy) {
                return Ok(e.hash);
            }
        }
        let hash = hash_file_bytes(abs, stamp.size)?;
        self.note(abs, stamp, hash);
        Ok(hash)
    }

    /// Remembers `hash` for the file at `abs` as `stamp` described it before it was read.
    fn note(&self, abs: &Path, stamp: Stamp, hash: ContentHash) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let racy = now - stamp.mtime_ns.max(stamp.ctime_ns) < RACY_NS;
        self.memo
            .insert(abs.to_path_buf(), MemoEntry { stamp, hash, racy });
        self.dirty.store(true, Ordering::Relaxed);
    }
}

/// A small output's bytes exactly as `Hasher::hash_output` hashed them, with its hash and
/// whether it was executable. Only the hasher makes one, so the content and the hash a record
/// keeps of it cannot disagree.
#[derive(Debug)]
pub struct SmallFile {
    bytes: Vec<u8>,
    exec: bool,
    hash: ContentHash,
}

impl SmallFile {
    pub fn hash(&self) -> ContentHash {
        self.hash
    }
    pub fn exec(&self) -> bool {
        self.exec
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The content of the regular file at `abs`, when it holds exactly `len` bytes; `None` when it
/// holds more or fewer (it changed since its size was taken).
///
/// A read of a regular file that returns fewer bytes than asked for has reached the end, so a
/// file whose `len` bytes come in one read costs that one read, not a second one returning 0.
/// Asking for one byte more than `len` tells a file that grew from one that did not.
fn read_exactly(abs: &Path, len: u64) -> io::Result<Option<Vec<u8>>> {
    let len = len as usize;
    let mut f = fs::File::open(abs)?;
    let mut bytes = vec![0u8; len + 1];
    let mut got = 0;
    loop {
        let n = f.read(&mut bytes[got..])?;
        got += n;
        if n == 0 || got >= len {
            break;
        }
    }
    if got != len {
        return Ok(None);
    }
    bytes.truncate(len);
    Ok(Some(bytes))
}

/// Reads and hashes a file's bytes, in parallel for large files.
pub fn hash_file_bytes(abs: &Path, size: u64) -> io::Result<ContentHash> {
    let mut h = blake3::Hasher::new();
    if size >= PARALLEL_HASH_BYTES {
        h.update_mmap_rayon(abs)?;
    } else {
        let mut f = fs::File::open(abs)?;
        // At most 128 KiB: below the mmap threshold `main` pins (256 KiB), so hashing file after
        // file reuses heap memory instead of mapping and zeroing a fresh buffer each time; larger
        // reads were no faster.
        let mut buf = vec![0u8; (size as usize).clamp(4096, 128 << 10)];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(ContentHash(*h.finalize().as_bytes()))
}

/// A cheap snapshot of a path's metadata (every file under a directory), to notice edits made
/// while a stage runs.
///
/// The path itself is followed when it is a symbolic link, but links inside a directory are
/// stamped as links, the way `Hasher::hash_path` hashes them: following them would let a link
/// back to its own directory (`data/self -> .`) make the walk endless.
pub fn metadata_snapshot(abs: &Path) -> Vec<(PathBuf, u64, i128, u64)> {
    let mut out = Vec::new();
    fn go(p: &Path, m: io::Result<fs::Metadata>, out: &mut Vec<(PathBuf, u64, i128, u64)>) {
        let Ok(m) = m else {
            out.push((p.to_path_buf(), u64::MAX, 0, 0));
            return;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                let mut children: Vec<PathBuf> =
                    rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                for c in children {
                    let m = fs::symlink_metadata(&c);
                    go(&c, m, out);
                }
            }
        } else {
            let s = Stamp::of(&m);
            out.push((p.to_path_buf(), s.size, s.mtime_ns.max(s.ctime_ns), s.ino));
        }
    }
    go(abs, fs::metadata(abs), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_recognises_unchanged_and_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        fs::write(&f, b"hello").unwrap();
        let h = Hasher::default();
        let first = h.hash_path(&f).unwrap().unwrap();
        assert_eq!(first.hash, ContentHash::of(b"hello"));
        fs::write(&f, b"world!").unwrap();
        let second = h.hash_path(&f).unwrap().unwrap();
        assert_eq!(second.hash, ContentHash::of(b"world!"));
        assert!(h.hash_path(&dir.path().join("missing")).unwrap().is_none());
    }

    #[test]
    fn an_output_hashed_for_its_record_keeps_exactly_the_bytes_it_hashed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let h = Hasher::default();
        let keep = 4096;
        for len in [0usize, 5, keep as usize] {
            let f = dir.path().join(format!("f{len}"));
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            fs::write(&f, &content).unwrap();
            let (ph, small) = h.hash_output(&f, keep).unwrap().unwrap();
            let small = small.expect("small files come with their bytes");
            assert_eq!(ph.hash, ContentHash::of(&content));
            assert_eq!((small.hash(), small.exec()), (ph.hash, false));
            assert_eq!(small.into_bytes(), content);
            // The memo learnt it: hashing again is a `stat`, with the same answer.
            assert_eq!(h.memo.get(f.as_path()).unwrap().hash, ph.hash);
        }
        let exec = dir.path().join("tool");
        fs::write(&exec, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&exec, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(h
            .hash_output(&exec, keep)
            .unwrap()
            .unwrap()
            .1
            .unwrap()
            .exec());
        // One byte over, a directory, a link, nothing: hashed as `hash_path` does, no bytes.
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; keep as usize + 1]).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&exec, &link).unwrap();
        for p in [&big, &link, &dir.path().to_path_buf()] {
            let (ph, small) = h.hash_output(p, keep).unwrap().unwrap();
            assert!(small.is_none(), "{}", p.display());
            assert_eq!(ph, h.hash_path(p).unwrap().unwrap());
        }
        assert!(h
            .hash_output(&dir.path().join("none"), keep)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_file_whose_size_moved_since_its_stat_is_not_read_as_that_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"12345").unwrap();
        assert_eq!(read_exactly(&f, 5).unwrap().unwrap(), b"12345");
        assert!(read_exactly(&f, 4).unwrap().is_none(), "it grew");
        assert!(read_exactly(&f, 6).unwrap().is_none(), "it shrank");
        fs::write(&f, b"").unwrap();
        assert_eq!(read_exactly(&f, 0).unwrap().unwrap(), b"");
    }

    #[test]
    fn the_memo_file_reads_back_what_was_saved_and_nothing_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        fs::write(&a, b"alpha").unwrap();
        fs::write(&b, b"beta").unwrap();
        let h = Hasher::default();
        for f in [&a, &b] {
            h.hash_path(f).unwrap();
            // Entries older than the racy window are the ones saved.
            h.memo.get_mut(f.as_path()).unwrap().racy = false;
        }
        let memo = dir.path().join("memo");
        h.save(&memo).unwrap();
        let loaded = Hasher::load(&memo);
        assert_eq!(loaded.memo.len(), 2);
        for (f, content) in [(&a, &b"alpha"[..]), (&b, &b"beta"[..])] {
            let e = *loaded.memo.get(f.as_path()).unwrap();
            assert_eq!(e.hash, ContentHash::of(content));
            assert_eq!(e.stamp, Stamp::of(&fs::metadata(f).unwrap()));
        }
        // Cut short, or from another version: ignored, not half read.
        let bytes = fs::read(&memo).unwrap();
        for bad in [&bytes[..bytes.len() - 1], &bytes[..20], b"{\"version\":1}"] {
            fs::write(&memo, bad).unwrap();
            assert!(Hasher::load(&memo).memo.is_empty());
        }
    }

    #[test]
    fn settled_hashing_does_not_trust_an_entry_made_right_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        fs::write(&f, b"real").unwrap();
        let meta = fs::metadata(&f).unwrap();
        // What a same-size write in the same clock tick as the hashed change would leave: a
        // matching stamp whose remembered hash is no longer the content's.
        let stale = ContentHash::of(b"gone");
        let h = Hasher::default();
        for racy in [true, false] {
            let stamp = Stamp::of(&meta);
            h.memo.insert(
                f.clone(),
                MemoEntry {
                    stamp,
                    hash: stale,
                    racy,
                },
            );
            assert_eq!(h.hash_file(&f, &meta).unwrap(), stale);
            let settled = h.hash_file_settled(&f, &meta).unwrap();
            if racy {
                assert_eq!(settled, ContentHash::of(b"real"));
            } else {
                assert_eq!(settled, stale, "an old entry is trusted like any other");
            }
        }
    }

    #[test]
    fn directory_hash_depends_on_names_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/x"), b"1").unwrap();
        fs::write(d.join("y"), b"2").unwrap();
        let h = Hasher::default();
        let a = h.hash_path(&d).unwrap().unwrap();
        assert_eq!(a.tree.as_ref().unwrap().len(), 2);
        fs::rename(d.join("y"), d.join("z")).unwrap();
        let b = h.hash_path(&d).unwrap().unwrap();
        assert_ne!(a.hash, b.hash);
    }

    /// Links back to their own directory would make a walk that follows them endless (2^40
    /// paths with two of them); both the hash and the snapshot take them as links.
    #[test]
    fn links_inside_a_directory_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("a.txt"), b"a").unwrap();
        std::os::unix::fs::symlink(".", d.join("self")).unwrap();
        std::os::unix::fs::symlink(".", d.join("again")).unwrap();
        let tree = Hasher::default()
            .hash_path(&d)
            .unwrap()
            .unwrap()
            .tree
            .unwrap();
        let kinds: Vec<_> = tree.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("a.txt", EntryKind::File),
                ("again", EntryKind::Link),
                ("self", EntryKind::Link)
            ]
        );
        let snapshot = metadata_snapshot(&d);
        assert_eq!(snapshot.len(), 3);
        // The directory itself may be reached through a link, which is followed.
        let link = dir.path().join("to_d");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert_eq!(metadata_snapshot(&link).len(), 3);
    }
}
