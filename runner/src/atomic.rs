//! Atomic file writes: every file sluice itself produces (lock files, cache records, blobs, the hash
//! memo) is written to a uniquely named temporary file in the destination's own directory and then
//! renamed over the destination, so a killed process leaves either the old file or the new one,
//! never half of one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory where this process says that it makes temporaries (`.sluice/writers`), set once
/// by [`announce_temporaries_in`]; and whether its notice (`writer-PID`) is there.
static NOTICE_DIR: OnceLock<PathBuf> = OnceLock::new();
static NOTICED: AtomicBool = AtomicBool::new(false);

/// Makes every temporary of this process announced in `dir` (the workspace's `.sluice/writers`):
/// the first [`temp_path_for`] creates `dir/writer-PID` before handing out a name, and [`retire`] removes
/// it once the process is done. A notice of a dead process is how the next run knows that
/// temporaries may have been left behind and the output directories must be swept
/// (`leftovers::sweep_after_crash`); without one, a run skips reading them. The directory is made
/// by that sweep, never here: while it is missing, every run sweeps. The first call wins: one
/// process works in one workspace.
pub fn announce_temporaries_in(dir: &Path) {
    let _ = NOTICE_DIR.set(dir.to_path_buf());
}

fn notice_path(dir: &Path) -> PathBuf {
    dir.join(format!("writer-{}", std::process::id()))
}

fn notice() {
    if NOTICED.load(Ordering::Acquire) {
        return;
    }
    let Some(dir) = NOTICE_DIR.get() else { return };
    // Racing threads may both create it: the same empty file, harmless. Without the directory
    // (a workspace no run has swept yet) this fails and is tried again by the next temporary.
    if fs::File::create(notice_path(dir)).is_ok() {
        NOTICED.store(true, Ordering::Release);
    }
}

/// Withdraws this process's notice: every temporary it made has been renamed into place or
/// removed. Called as the process ends normally; a killed process leaves its notice behind.
pub fn retire() {
    if let (true, Some(dir)) = (NOTICED.swap(false, Ordering::AcqRel), NOTICE_DIR.get()) {
        let _ = fs::remove_file(notice_path(dir));
    }
}

/// A temporary path next to `dest`, unique within this process and across processes (pid).
/// The `.sluice-tmp-` infix lets `gc` and the watcher recognise and ignore leftovers.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    notice();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.sluice-tmp-{}-{n}", std::process::id());
    match dest.parent() {
        Some(p) => p.join(tmp),
        None => PathBuf::from(tmp),
    }
}

/// Writes `bytes` to `dest` atomically, creating parent directories as needed. Atomic against a
/// killed process (the rename is all or nothing); not flushed to the disk, see `write_durable`.
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_inner(dest, bytes, false)
}

/// `write`, with the data flushed to the disk before the rename, so that a power loss cannot
/// leave an empty file under the final name. Used for the lock file, which people commit.
pub fn write_durable(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_inner(dest, bytes, true)
}

fn write_inner(dest: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path_for(dest);
    let result = (|| {
        // The directory nearly always exists (a cache record's, the lock's): a `mkdir` that
        // fails still locks the parent, beside every other stage writing there, so the
        // directories are made only when the create says they are missing.
        let mut f = match fs::File::create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => fs::create_dir_all(parent)?,
                    None => return Err(e),
                }
                fs::File::create(&tmp)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// True for names produced by [`temp_path_for`].
pub fn is_temp_name(name: &str) -> bool {
    name.contains(".sluice-tmp-")
}

/// Removes a file or a directory tree; a missing path is not an error.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
