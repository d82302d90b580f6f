//! Atomic file writes: every file sluice itself produces (lock files, cache records, blobs, the hash
//! memo) is written to a uniquely named temporary file in the destination's own directory and then
//! renamed over the destination, so a killed process leaves either the old file or the new one,
//! never half of one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path next to `dest`, unique within this process and across processes (pid).
/// The `.sluice-tmp-` infix lets `gc` and the watcher recognise and ignore leftovers.
pub fn temp_path_for(dest: &Path) -> PathBuf {
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
    if let Some(parent) = dest.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    let tmp = temp_path_for(dest);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
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
