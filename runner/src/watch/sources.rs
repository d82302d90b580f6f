//! `Sources`: what a pipeline reads from outside itself (external inputs and plugin command
//! files) and which stages read each, plus the paths whose changes never count (stage outputs and
//! `.sluice/`). Changes are confirmed here by content, against the hash last seen.

use crate::hash::{ContentHash, Hasher};
use crate::paths::WorkPath;
use crate::pipeline::{Pipeline, StageKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub(crate) struct Sources {
    root: PathBuf,
    /// Each source with the stages that read it directly.
    readers: BTreeMap<WorkPath, BTreeSet<usize>>,
    /// Absolute paths whose changes never trigger anything.
    ignored: Vec<PathBuf>,
    /// Content as last seen (`None`: missing or unreadable).
    seen: BTreeMap<WorkPath, Option<ContentHash>>,
}

impl Sources {
    /// The sources of `pipeline`. Hashes are carried over from `previous` for sources it shares
    /// (so a change made while the pipeline was being edited is still noticed) and taken now for
    /// new ones.
    pub fn new(
        pipeline: &Pipeline,
        state_dir: &Path,
        hasher: &Hasher,
        previous: Option<&Sources>,
    ) -> Sources {
        let mut readers: BTreeMap<WorkPath, BTreeSet<usize>> = BTreeMap::new();
        for s in &pipeline.stages {
            for i in s.inputs.iter().filter(|i| i.producer.is_none()) {
                readers.entry(i.path.clone()).or_default().insert(s.idx);
            }
            if let StageKind::Plugin { files, .. } = &s.kind {
                for f in files {
                    readers.entry(f.clone()).or_default().insert(s.idx);
                }
            }
        }
        let mut ignored: Vec<PathBuf> = vec![state_dir.to_path_buf(), pipeline.lock_path()];
        ignored.extend(
            pipeline
                .stages
                .iter()
                .flat_map(|s| &s.outputs)
                .map(|o| o.path.to_abs(&pipeline.root)),
        );
        let root = pipeline.root.clone();
        let seen = readers
            .keys()
            .map(|p| {
                let h = previous
                    .and_then(|prev| prev.seen.get(p).copied())
                    .unwrap_or_else(|| content(hasher, &p.to_abs(&root)));
                (p.clone(), h)
            })
            .collect();
        Sources {
            root,
            readers,
            ignored,
            seen,
        }
    }

    pub fn len(&self) -> usize {
        self.readers.len()
    }

    /// Every source, absolute.
    pub fn abs_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.readers.keys().map(|p| p.to_abs(&self.root))
    }

    pub fn is_ignored(&self, abs: &Path) -> bool {
        self.ignored.iter().any(|i| abs.starts_with(i))
    }

    /// The sources an event on `paths` may have touched (the path itself, a file inside a source
    /// directory, or a directory above a source that was moved or removed) whose content is now
    /// different, with their new hashes recorded.
    pub fn confirm(&mut self, paths: &BTreeSet<PathBuf>, hasher: &Hasher) -> Vec<WorkPath> {
        let relevant: Vec<&PathBuf> = paths.iter().filter(|p| !self.is_ignored(p)).collect();
        let mut changed = Vec::new();
        for (source, seen) in self.seen.iter_mut() {
            let abs = source.to_abs(&self.root);
            if !relevant
                .iter()
                .any(|p| p.starts_with(&abs) || abs.starts_with(p))
            {
                continue;
            }
            let now = content(hasher, &abs);
            if now != *seen {
                *seen = now;
                changed.push(source.clone());
            }
        }
        changed
    }

    /// The stages that read `source` directly.
    pub fn readers(&self, source: &WorkPath) -> BTreeSet<usize> {
        self.readers.get(source).cloned().unwrap_or_default()
    }
}

/// A path's content hash, or `None` when it is missing or cannot be read (a file mid-rename):
/// the next event on it settles it.
pub(crate) fn content(hasher: &Hasher, abs: &Path) -> Option<ContentHash> {
    hasher.hash_path(abs).ok().flatten().map(|h| h.hash)
}
