//! `Workspace`: the directory sluice runs in and its private `.sluice/` state directory (cache,
//! logs, hash memo, scratch space), plus the per-workspace run lock that keeps two `sluice run`s
//! from writing the same outputs at once.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Workspace {
    /// Canonical.
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl Workspace {
    pub fn open(root: &Path) -> io::Result<Workspace> {
        let root = fs::canonicalize(root)?;
        let dir = root.join(".sluice");
        Ok(Workspace { root, dir })
    }

    /// Creates `.sluice/` (with a `.gitignore` so it never ends up in a commit).
    pub fn ensure(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let gi = self.dir.join(".gitignore");
        if !gi.exists() {
            crate::atomic::write(&gi, b"*\n")?;
        }
        Ok(())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    /// Parsed copies of lock files (see `LockFile::load_mirrored`).
    pub fn lock_mirror_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }
    pub fn memo_path(&self) -> PathBuf {
        self.dir.join("hashes.json")
    }
    pub fn logs_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("logs").join(run_id)
    }
    pub fn scratch_dir(&self, run_id: &str, stage: &str) -> PathBuf {
        self.dir.join("tmp").join(run_id).join(stage)
    }
    fn locks_registry(&self) -> PathBuf {
        self.dir.join("lockfiles.txt")
    }

    /// Remembers a lock file's path so `gc` knows which cache entries are still wanted.
    pub fn register_lock_file(&self, lock: &Path) -> io::Result<()> {
        let mut known = self.lock_files();
        let lock = lock.to_path_buf();
        if known.contains(&lock) {
            return Ok(());
        }
        known.push(lock);
        let text: String = known.iter().map(|p| format!("{}\n", p.display())).collect();
        crate::atomic::write(&self.locks_registry(), text.as_bytes())
    }

    /// Lock files this workspace has written, that still exist.
    pub fn lock_files(&self) -> Vec<PathBuf> {
        fs::read_to_string(self.locks_registry())
            .unwrap_or_default()
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    }

    /// Takes the run lock. When another run holds it: `on_busy(pid)` is told, and then we either
    /// wait (`wait == true`) or return `Ok(None)`.
    pub fn lock_run(
        &self,
        wait: bool,
        on_busy: impl FnOnce(Option<u32>),
    ) -> io::Result<Option<RunLock>> {
        self.ensure()?;
        let path = self.dir.join("run.lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        let got = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !got {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            on_busy(text.trim().parse().ok());
            if !wait {
                return Ok(None);
            }
            // SAFETY: as above, blocking this time.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Some(RunLock { _file: file }))
    }
}

/// Held for the duration of a run; dropping it releases the lock.
pub struct RunLock {
    _file: fs::File,
}

/// A sortable, readable identifier for a run: UTC time plus pid.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_millis(),
        std::process::id()
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
    }

    #[test]
    fn second_lock_is_refused_without_wait() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let first = ws
            .lock_run(false, |_| panic!("free lock reported busy"))
            .unwrap();
        assert!(first.is_some());
        let mut told = None;
        let second = ws.lock_run(false, |pid| told = pid).unwrap();
        assert!(second.is_none());
        assert_eq!(told, Some(std::process::id()));
    }
}
