//! `TieredStore`: the local cache with a remote behind it. Lookups try the local cache first
//! and the remote on a miss; a remote hit is restored by fetching its blobs into the local cache
//! (each checked against its hash) and restoring from there as any local hit, so the next run
//! finds it locally. Results are stored locally, then uploaded in the background.

use super::remote::RemoteStore;
use super::{CacheStore, GcOptions, GcStats, LocalStore, RestoreError, StageRecord};
use crate::cancel::CancelToken;
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

    fn lookup_local(&self, key: &ContentHash) -> Option<StageRecord> {
        self.local.lookup(key)
    }

    fn local_is_empty(&self) -> bool {
        self.local.local_is_empty()
    }

    fn store(&self, root: &Path, record: &StageRecord, hasher: &Hasher) -> std::io::Result<()> {
        let filed = self.local.file(root, record, hasher)?;
        self.remote.push_later(&self.local, &filed);
        Ok(())
    }

    fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        self.restore_cancellable(root, record, hasher, &CancelToken::default())
    }

    fn restore_cancellable(
        &self,
        root: &Path,
        record: &StageRecord,
        hasher: &Hasher,
        cancel: &CancelToken,
    ) -> Result<(), RestoreError> {
        if !self.remote.knows(&record.key) {
            return self.local.restore(root, record, hasher);
        }
        self.remote
            .fetch_missing(&self.local, record, hasher, cancel)?;
        self.local
            .write_record(record)
            .map_err(|e| RestoreError::Io {
                path: "the local cache".into(),
                source: e,
            })?;
        self.local.restore(root, record, hasher)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::remote::RemoteSettings;
    use crate::cache::{OutputRecord, RECORD_FORMAT};
    use crate::paths::WorkPath;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A workspace with its own local cache, sharing `remote_dir` as a file:// remote.
    struct Machine {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        store: TieredStore,
        remote: Arc<RemoteStore>,
    }

    fn machine(remote_dir: &Path, push: bool) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let remote = Arc::new(
            RemoteStore::open(&RemoteSettings {
                url: format!("file://{}", remote_dir.display()),
                push,
                origin: "test".into(),
            })
            .unwrap(),
        );
        let (tx, _rx) = crossbeam_channel::unbounded();
        remote.begin_run(tx);
        let store = TieredStore::new(LocalStore::new(root.join(".sluice/cache")), remote.clone());
        Machine {
            _dir: dir,
            root,
            store,
            remote,
        }
    }

    /// Writes an executable single-file output and a directory output, and stores them.
    fn produce(m: &Machine) -> StageRecord {
        let hasher = Hasher::default();
        let tool = m.root.join("out/tool.sh");
        fs::create_dir_all(m.root.join("out/d/sub")).unwrap();
        fs::write(&tool, b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(m.root.join("out/d/a.txt"), b"first").unwrap();
        fs::write(m.root.join("out/d/sub/b.txt"), b"second").unwrap();
        std::os::unix::fs::symlink("a.txt", m.root.join("out/d/link")).unwrap();
        let mut outputs = BTreeMap::new();
        for (name, rel) in [("tool", "out/tool.sh"), ("d", "out/d")] {
            let h = hasher.hash_path(&m.root.join(rel)).unwrap().unwrap();
            outputs.insert(
                name.to_string(),
                OutputRecord::new(WorkPath::parse(rel, &m.root).unwrap(), h.hash, h.tree),
            );
        }
        let rec = StageRecord {
            format: RECORD_FORMAT,
            stage: "s".into(),
            key: ContentHash::of(b"the key"),
            outputs,
        };
        m.store.store(&m.root, &rec, &hasher).unwrap();
        rec
    }

    #[test]
    fn a_second_machine_restores_what_the_first_pushed_modes_and_links_included() {
        let shared = tempfile::tempdir().unwrap();
        let a = machine(shared.path(), true);
        let rec = produce(&a);
        let done = a.remote.finish_run(false);
        // The script is small enough to travel inside its record: three blobs, not four.
        assert_eq!((done.pushed_records, done.pushed_blobs), (1, 3), "{done:?}");

        let b = machine(shared.path(), true);
        let hasher = Hasher::default();
        let found = b.store.lookup(&rec.key).expect("the remote has it");
        assert!(b.store.is_remote(&rec.key));
        b.store.restore(&b.root, &found, &hasher).unwrap();
        let tool = b.root.join("out/tool.sh");
        assert_eq!(fs::read(&tool).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_ne!(fs::metadata(&tool).unwrap().permissions().mode() & 0o100, 0);
        assert_eq!(
            fs::read_link(b.root.join("out/d/link")).unwrap(),
            Path::new("a.txt")
        );
        assert_eq!(fs::read(b.root.join("out/d/sub/b.txt")).unwrap(), b"second");
        // Now local: found without the remote.
        assert!(b.store.lookup_local(&rec.key).is_some());
        assert_eq!(b.remote.finish_run(false).fetched_blobs, 3);
    }

    #[test]
    fn a_tampered_remote_blob_is_refused_and_repaired_by_the_next_store() {
        let shared = tempfile::tempdir().unwrap();
        let a = machine(shared.path(), true);
        let rec = produce(&a);
        a.remote.finish_run(false);
        let hex = ContentHash::of(b"second").hex();
        let blob = shared
            .path()
            .join("objects")
            .join(&hex[..2])
            .join(&hex[2..]);
        fs::write(&blob, b"SECOND").unwrap();

        let b = machine(shared.path(), true);
        let hasher = Hasher::default();
        let found = b.store.lookup(&rec.key).unwrap();
        let err = b.store.restore(&b.root, &found, &hasher).unwrap_err();
        assert!(
            matches!(&err, RestoreError::Corrupt(why) if why.contains("tampered")),
            "{err}"
        );
        assert!(!b.root.join("out/d").exists(), "nothing half-restored");
        b.store.forget(&rec.key);
        // The stage runs again and stores: the damaged blob goes up again although it "exists".
        let again = produce(&b);
        b.remote.finish_run(false);
        assert_eq!(fs::read(&blob).unwrap(), b"second");
        assert_eq!(again.key, rec.key);
    }

    #[test]
    fn a_read_only_remote_is_read_but_never_written() {
        let shared = tempfile::tempdir().unwrap();
        let a = machine(shared.path(), false);
        let rec = produce(&a);
        assert_eq!(a.remote.finish_run(false).pushed_records, 0);
        assert!(fs::read_dir(shared.path()).unwrap().next().is_none());
        let b = machine(shared.path(), true);
        assert!(b.store.lookup(&rec.key).is_none());
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;
    use crate::cache::remote::RemoteSettings;
    use crate::cache::{OutputRecord, RECORD_FORMAT};
    use crate::paths::WorkPath;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// An HTTP server that serves `record` for any record path and never answers a blob request.
    fn stalling_server(record: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        // Skip the headers.
                        let mut h = String::new();
                        while reader.read_line(&mut h).is_ok() && h.trim() != "" {
                            h.clear();
                        }
                        if path.contains("/stages/") {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                record.len()
                            );
                            conn.write_all(head.as_bytes()).unwrap();
                            conn.write_all(&record).unwrap();
                        } else {
                            // A blob: hold the connection, say nothing.
                            std::thread::sleep(std::time::Duration::from_secs(3600));
                        }
                    }
                });
            }
        });
        format!("http://{addr}/c")
    }

    #[test]
    fn a_cancelled_stage_stops_waiting_for_a_stalled_download_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let rec = StageRecord {
            format: RECORD_FORMAT,
            stage: "s".into(),
            key: ContentHash::of(b"k"),
            outputs: BTreeMap::from([(
                "o".to_string(),
                OutputRecord::new(
                    WorkPath::parse("out/big", &root).unwrap(),
                    ContentHash::of(b"never sent"),
                    None,
                ),
            )]),
        };
        let url = stalling_server(serde_json::to_vec(&rec).unwrap());
        let remote = Arc::new(
            RemoteStore::open(&RemoteSettings {
                url,
                push: false,
                origin: "test".into(),
            })
            .unwrap(),
        );
        let store = TieredStore::new(LocalStore::new(root.join(".sluice/cache")), remote);
        let found = store.lookup(&rec.key).expect("the record is served");
        let cancel = CancelToken::default();
        let later = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            later.cancel(crate::cancel::CancelReason::Interrupt);
        });
        let err = store
            .restore_cancellable(&root, &found, &Hasher::default(), &cancel)
            .unwrap_err();
        assert!(
            matches!(&err, RestoreError::Unavailable(w) if w.contains("stopped")),
            "{err}"
        );
        let objects = root.join(".sluice/cache/objects");
        let left: Vec<_> = walk(&objects);
        assert!(left.is_empty(), "temporaries left: {left:?}");
        assert!(!root.join("out/big").exists());
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    out.extend(walk(&e.path()));
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}
