//! `FsWatch`: the directories to watch for a set of sources, watched natively (inotify and the
//! other notify backends; raw events go to the loop, which debounces them in `debounce.rs`), or
//! polled when a native watch cannot be set up.
//!
//! A source file is watched through its parent directory, so editors' atomic saves (write a
//! temporary file, rename it over), deletes and re-creations are all seen; a source directory is
//! also watched recursively, so files added or removed inside it are seen. `sync` reconciles the
//! watched roots with what the sources need now, which also follows directories that appear or
//! disappear and a pipeline whose sources changed.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often polled roots are checked.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The directory's own entries.
    Flat,
    /// The directory and everything below it.
    Tree,
}

enum How {
    Native,
    /// Checked every `POLL_EVERY` by a signature of its entries' metadata.
    Polled {
        signature: blake3::Hash,
    },
}

struct Root {
    mode: Mode,
    how: How,
}

/// Why a root is polled instead of watched.
pub(crate) struct Fallback {
    pub path: PathBuf,
    pub reason: String,
}

pub(crate) struct FsWatch {
    /// `None` when no native watcher could be started (the inotify instance limit): everything
    /// is polled, and `native_failure` says why.
    watcher: Option<RecommendedWatcher>,
    native_failure: Option<String>,
    roots: BTreeMap<PathBuf, Root>,
    next_poll: Instant,
}

impl FsWatch {
    /// Starts the native watcher (unless `poll_only`); raw events arrive on `tx`. Its thread
    /// sleeps until the kernel has events, so an idle watch does not wake up.
    pub fn new(
        tx: crossbeam_channel::Sender<notify::Result<notify::Event>>,
        poll_only: bool,
    ) -> FsWatch {
        let (watcher, native_failure) = if poll_only {
            (None, None)
        } else {
            match RecommendedWatcher::new(tx, notify::Config::default()) {
                Ok(w) => (Some(w), None),
                Err(e) => (
                    None,
                    Some(format!("cannot start the watcher: {}", describe(&e))),
                ),
            }
        };
        FsWatch {
            watcher,
            native_failure,
            roots: BTreeMap::new(),
            next_poll: Instant::now() + POLL_EVERY,
        }
    }

    /// Counts of natively watched and polled roots.
    pub fn counts(&self) -> (usize, usize) {
        let polled = self
            .roots
            .values()
            .filter(|r| matches!(r.how, How::Polled { .. }))
            .count();
        (self.roots.len() - polled, polled)
    }

    /// Watches what `sources` need now and drops what they no longer need. Returns the roots that
    /// had to fall back to polling.
    pub fn sync(&mut self, sources: impl Iterator<Item = PathBuf>) -> Vec<Fallback> {
        let wanted = wanted_roots(sources);
        let stale: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|(p, r)| wanted.get(*p) != Some(&r.mode))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            self.drop_root(&p);
        }
        let mut fallbacks = Vec::new();
        for (path, mode) in wanted {
            if self.roots.contains_key(&path) {
                continue;
            }
            let polled = How::Polled {
                signature: signature(&path, mode),
            };
            let how = match self.watcher.as_mut() {
                // Polling by choice (`SLUICE_WATCH_POLL=1`) is not worth a warning per path.
                None => {
                    if let Some(reason) = &self.native_failure {
                        fallbacks.push(Fallback {
                            path: path.clone(),
                            reason: reason.clone(),
                        });
                    }
                    polled
                }
                Some(d) => {
                    let rm = match mode {
                        Mode::Flat => RecursiveMode::NonRecursive,
                        Mode::Tree => RecursiveMode::Recursive,
                    };
                    match d.watch(&path, rm) {
                        Ok(()) => How::Native,
                        // Gone between the check and the watch: the next sync sees what is there.
                        Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => continue,
                        Err(e) => {
                            // A recursive watch that failed part way leaves the watches it made.
                            let _ = d.unwatch(&path);
                            fallbacks.push(Fallback {
                                path: path.clone(),
                                reason: describe(&e),
                            });
                            polled
                        }
                    }
                }
            };
            self.roots.insert(path, Root { mode, how });
        }
        fallbacks
    }

    /// Forgets native roots that an event names itself (created, removed or renamed over): their
    /// watches may be gone with the old directory, so the next `sync` sets them up again.
    pub fn refresh_roots(&mut self, paths: &BTreeSet<PathBuf>) {
        let hit: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|(p, r)| matches!(r.how, How::Native) && paths.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in hit {
            self.drop_root(&p);
        }
    }

    /// Switches the native root that holds `path` to polling, after the watcher reported that it
    /// could not keep watching it (a new subdirectory past the inotify limit).
    pub fn fall_back(&mut self, path: &Path, reason: String) -> Option<Fallback> {
        let root = self
            .roots
            .iter()
            .filter(|(p, r)| path.starts_with(p) && matches!(r.how, How::Native))
            .map(|(p, _)| p.clone())
            .max_by_key(|p| p.as_os_str().len())?;
        if let Some(d) = self.watcher.as_mut() {
            let _ = d.unwatch(&root);
        }
        let r = self.roots.get_mut(&root)?;
        r.how = How::Polled {
            signature: signature(&root, r.mode),
        };
        Some(Fallback { path: root, reason })
    }

    /// How long until polled roots are due, if there are any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.roots
            .values()
            .any(|r| matches!(r.how, How::Polled { .. }))
            .then(|| self.next_poll.saturating_duration_since(Instant::now()))
    }

    /// Checks the polled roots that are due; returns the ones whose entries changed.
    pub fn poll(&mut self) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        if Instant::now() < self.next_poll {
            return changed;
        }
        for (path, r) in self.roots.iter_mut() {
            if let How::Polled { signature: old } = &mut r.how {
                let now = signature(path, r.mode);
                if now != *old {
                    *old = now;
                    changed.insert(path.clone());
                }
            }
        }
        self.next_poll = Instant::now() + POLL_EVERY;
        changed
    }

    fn drop_root(&mut self, path: &Path) {
        if let Some(Root {
            how: How::Native, ..
        }) = self.roots.remove(path)
        {
            if let Some(d) = self.watcher.as_mut() {
                let _ = d.unwatch(path);
            }
        }
    }
}

/// The directories to watch for `sources`: each source's parent (or, while that is missing, the
/// nearest existing ancestor), and each source directory as a tree. A root inside a tree root is
/// left out: the tree covers it, and unwatching one would take the shared watch away.
fn wanted_roots(sources: impl Iterator<Item = PathBuf>) -> BTreeMap<PathBuf, Mode> {
    let mut wanted: BTreeMap<PathBuf, Mode> = BTreeMap::new();
    for s in sources {
        if s.is_dir() {
            wanted.insert(s.clone(), Mode::Tree);
        }
        let mut dir = s.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d.is_dir() {
                wanted.entry(d).or_insert(Mode::Flat);
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    let trees: Vec<PathBuf> = wanted
        .iter()
        .filter(|(_, m)| **m == Mode::Tree)
        .map(|(p, _)| p.clone())
        .collect();
    wanted.retain(|p, _| !trees.iter().any(|t| p != t && p.starts_with(t)));
    wanted
}

/// A digest of the metadata of a root's entries (names, sizes, times, inodes): cheap to compute,
/// and any write, create, delete or rename changes it. Content is confirmed afterwards.
fn signature(path: &Path, mode: Mode) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(m) = e.metadata() else { continue };
            h.update(e.path().as_os_str().as_encoded_bytes());
            for n in [m.len(), m.ino(), m.mode() as u64] {
                h.update(&n.to_le_bytes());
            }
            for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
                h.update(&n.to_le_bytes());
            }
            if mode == Mode::Tree && m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    h.finalize()
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "the inotify watch limit is reached (raise `fs.inotify.max_user_watches`)".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_watched_through_their_directory_and_trees_cover_what_is_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/images/a")).unwrap();
        std::fs::write(root.join("data/iris.csv"), "x").unwrap();
        let wanted = wanted_roots(
            [
                root.join("data/iris.csv"),
                root.join("data/images"),
                root.join("data/images/a/labels.csv"),
                root.join("missing/deep/file.csv"),
            ]
            .into_iter(),
        );
        let expect: BTreeMap<PathBuf, Mode> = [
            (root.to_path_buf(), Mode::Flat),
            (root.join("data"), Mode::Flat),
            (root.join("data/images"), Mode::Tree),
        ]
        .into_iter()
        .collect();
        assert_eq!(wanted, expect);
    }

    #[test]
    fn signatures_see_new_files_in_subdirectories_only_for_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let (flat, tree) = (signature(root, Mode::Flat), signature(root, Mode::Tree));
        std::fs::write(root.join("a/b/new.png"), "x").unwrap();
        assert_eq!(signature(root, Mode::Flat), flat);
        assert_ne!(signature(root, Mode::Tree), tree);
    }
}
