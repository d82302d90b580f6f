//! `LockWriter`: the lock file's writes during a run, on a thread of their own.
//!
//! A 10,000-entry lock and its mirror take tens of milliseconds to write (and the YAML file is
//! flushed to the disk); written by a worker under the run state's mutex, every other worker
//! finishing a stage waited for it. The dispatcher hands this thread a snapshot (an `Arc` of the
//! lock, copied on the dispatcher's next change only if the write is still going) and carries
//! on. Only the newest snapshot waiting is written. The run's last write is made by the
//! dispatcher itself once this thread has finished (`finish`), so the file ends as the run does.

use crate::lock::LockFile;
use crossbeam_channel::Sender;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The writing thread: where snapshots go, and its end with the first error.
type Thread = (Sender<Arc<LockFile>>, JoinHandle<Option<String>>);

pub(super) struct LockWriter {
    path: PathBuf,
    mirror_dir: PathBuf,
    /// Started on the first write: most runs write the lock only at their end.
    running: Option<Thread>,
    /// How long the last write took, in nanoseconds.
    took: Arc<AtomicU64>,
    /// The thread is writing a snapshot.
    writing: Arc<AtomicBool>,
}

impl LockWriter {
    pub(super) fn new(path: PathBuf, mirror_dir: PathBuf) -> LockWriter {
        LockWriter {
            path,
            mirror_dir,
            running: None,
            took: Arc::new(AtomicU64::new(0)),
            writing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Queues `lock` to be written.
    pub(super) fn write(&mut self, lock: Arc<LockFile>) {
        let (path, mirror_dir, took, writing) =
            (&self.path, &self.mirror_dir, &self.took, &self.writing);
        // Marked before the send, so `busy` cannot miss a snapshot between queue and thread.
        writing.store(true, Ordering::Relaxed);
        let (tx, _) = self.running.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<LockFile>>();
            let (path, mirror_dir, took, writing) = (
                path.clone(),
                mirror_dir.clone(),
                took.clone(),
                writing.clone(),
            );
            let thread = std::thread::spawn(move || {
                let mut error = None;
                while let Ok(mut lock) = rx.recv() {
                    // Snapshots queued while the last one was written: only the newest counts.
                    while let Ok(newer) = rx.try_recv() {
                        lock = newer;
                    }
                    let t = Instant::now();
                    if let Err(e) = lock.save_mirrored(&path, &mirror_dir) {
                        error.get_or_insert(describe(&path, &e));
                    }
                    took.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if rx.is_empty() {
                        writing.store(false, Ordering::Relaxed);
                    }
                }
                error
            });
            (tx, thread)
        });
        let _ = tx.send(lock);
    }

    /// How long the last write took (zero before the first).
    pub(super) fn last_took(&self) -> Duration {
        Duration::from_nanos(self.took.load(Ordering::Relaxed))
    }

    /// A write queued earlier is not finished: the next one waits, rather than pile up
    /// snapshots (each costs the dispatcher a copy of the lock).
    pub(super) fn busy(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|(tx, _)| !tx.is_empty() || self.writing.load(Ordering::Relaxed))
    }

    /// Waits for the queued writes; the first error, if one failed.
    pub(super) fn finish(&mut self) -> Option<String> {
        let (tx, thread) = self.running.take()?;
        drop(tx);
        thread.join().unwrap_or_else(|_| {
            Some(format!(
                "cannot write `{}`: the writing thread panicked",
                self.path.display()
            ))
        })
    }
}

/// A failed write of the lock at `path`, as the run reports it.
pub(super) fn describe(path: &std::path::Path, e: &std::io::Error) -> String {
    format!("cannot write `{}`: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LOCK_VERSION;

    fn lock(pipeline: &str) -> Arc<LockFile> {
        Arc::new(LockFile {
            version: LOCK_VERSION,
            pipeline: pipeline.into(),
            ..LockFile::default()
        })
    }

    #[test]
    fn the_file_ends_as_the_last_snapshot_queued_and_errors_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lock");
        let mut w = LockWriter::new(path.clone(), dir.path().join("mirrors"));
        assert_eq!(w.finish(), None, "nothing was queued");
        for n in 0..20 {
            w.write(lock(&format!("p{n}")));
        }
        assert_eq!(w.finish(), None);
        let written = LockFile::load(&path, "x").unwrap();
        assert_eq!(written.pipeline, "p19");
        assert!(w.last_took() > Duration::ZERO);
        // A lock whose directory is a file cannot be written: said once the writes are done.
        std::fs::write(dir.path().join("file"), "").unwrap();
        let mut w = LockWriter::new(dir.path().join("file/p.lock"), dir.path().join("m"));
        w.write(lock("q"));
        let error = w.finish().expect("the write failed");
        assert!(error.starts_with("cannot write `"), "{error}");
    }
}
