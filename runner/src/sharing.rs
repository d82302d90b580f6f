//! `sluice cache push` and `sluice cache pull`: what a pipeline's lock file names, moved between
//! the local cache and the remote one. Push uploads each locked stage's local record (blobs
//! first); pull fills the local cache from the remote without touching the workspace, so a
//! following `sluice run` restores every pulled stage and runs none.

use crate::cache::remote::Moved;
use crate::cache::{CacheStore, LocalStore};
use crate::engine::{Engine, EngineError};
use crate::hash::Hasher;
use crate::pipeline::Pipeline;

/// Which way `sluice cache` moves results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Push,
    Pull,
}

/// What became of one locked stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Transfer {
    Moved {
        blobs: u64,
        bytes: u64,
    },
    /// Not in the cache it would come from (push: never run here; pull: not on the remote).
    Absent {
        why: String,
    },
    Failed {
        why: String,
    },
}

impl Engine {
    /// Moves every stage the pipeline's lock file names; `None` from `remote` is not allowed
    /// here (the caller checks that a remote is configured).
    pub fn share(
        &self,
        pipeline: &Pipeline,
        direction: Direction,
    ) -> Result<Vec<(String, Transfer)>, EngineError> {
        let remote = self.remote.as_ref().expect("the caller attached a remote");
        let _guard = self
            .ws
            .lock_run(true, |_| {})
            .map_err(|source| EngineError::Io {
                context: "cannot take the workspace lock".into(),
                source,
            })?;
        let lock = crate::lock::LockFile::load(&pipeline.lock_path(), &pipeline.name)?;
        let local = LocalStore::new(self.ws.cache_dir());
        let hasher = Hasher::load(&self.ws.memo_path());
        let mut out = Vec::new();
        for (stage, entry) in &lock.stages {
            let result = match direction {
                Direction::Push => match local.lookup(&entry.key) {
                    None => Transfer::Absent {
                        why: "not in the local cache (run it here, or pull it)".into(),
                    },
                    Some(rec) => match local.verify(&rec, &hasher) {
                        Err(e) => Transfer::Failed {
                            why: format!("the local entry is unusable: {e}"),
                        },
                        Ok(()) => moved(remote.push_now(&local, &rec)),
                    },
                },
                Direction::Pull => match remote.pull_now(&local, &entry.key, &hasher) {
                    Ok(None) => Transfer::Absent {
                        why: "not on the remote".into(),
                    },
                    Ok(Some(m)) => moved(Ok(m)),
                    Err(why) => Transfer::Failed { why },
                },
            };
            out.push((stage.clone(), result));
        }
        if self.ws.dir.exists() {
            let _ = hasher.save(&self.ws.memo_path());
        }
        Ok(out)
    }
}

fn moved(r: Result<Moved, String>) -> Transfer {
    match r {
        Ok(m) => Transfer::Moved {
            blobs: m.blobs,
            bytes: m.bytes,
        },
        Err(why) => Transfer::Failed { why },
    }
}
