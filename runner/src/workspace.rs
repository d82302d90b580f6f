//! `Workspace`: the directory sluice runs in and its private `.sluice/` state directory (cache,
//! logs, hash memo, scratch space), plus the per-workspace run lock that keeps two `sluice run`s
//! from writing the same outputs at once.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exec::procfs::{self, LockedFile, ProcessId};

mod scratch_seen;

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
        self.dir.join("hashes.bin")
    }
    /// Where processes making temporaries say so (`leftovers`).
    pub fn writers_dir(&self) -> PathBuf {
        self.dir.join("writers")
    }
    pub fn logs_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("logs").join(run_id)
    }
    /// A stage's own scratch directory (stages that run on a cluster node).
    pub fn scratch_dir(&self, run_id: &str, stage: &str) -> PathBuf {
        self.dir.join("tmp").join(run_id).join(stage)
    }

    /// The scratch directory of worker `slot`, empty, for the one stage that worker runs now.
    ///
    /// Workers reuse theirs from stage to stage: a `mkdir` per stage (an inode allocated, on
    /// ext4 a large part of a cold run's cost) becomes a look at an empty directory. The
    /// leading dot keeps it apart from any stage's own directory (stage names cannot start
    /// with one). What a stage left in it is removed here, before the next stage may see it.
    pub fn scratch_slot(&self, run_id: &str, slot: usize) -> io::Result<PathBuf> {
        let dir = self
            .dir
            .join("tmp")
            .join(run_id)
            .join(format!(".worker-{slot}"));
        if scratch_seen::still_empty(&dir) {
            return Ok(dir);
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                return Ok(dir);
            }
            Err(e) => return Err(e),
        };
        let mut emptied = Ok(());
        for entry in entries {
            emptied = emptied.and_then(|()| crate::atomic::remove_path(&entry?.path()));
        }
        if emptied.is_err() {
            // Something the last stage left cannot be removed (a directory it made read-only):
            // it moves aside, to go with the run's directory, and the slot starts afresh.
            let mut n = 0;
            let aside = loop {
                let aside = dir.with_file_name(format!(".worker-{slot}-left-{n}"));
                if !aside.exists() {
                    break aside;
                }
                n += 1;
            };
            fs::rename(&dir, &aside)?;
            fs::create_dir(&dir)?;
        }
        scratch_seen::remember_empty(&dir);
        Ok(dir)
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

    /// Takes the run lock. When another run holds it, `on_busy` is told who (see
    /// [`LockHolder`]): a live sluice is waited for (`wait == true`) or refused (`Ok(None)`);
    /// the leftover processes of a sluice that has died are killed and the lock taken over.
    ///
    /// The lock's descriptor is inherited by every process the run starts (its close-on-exec
    /// flag is cleared), so the lock stays held while any of them lives, even after sluice
    /// itself was killed: a later run can never start beside an earlier run's stage processes.
    /// The file names the sluice that took it (pid, start time, process group) so that a later
    /// run can tell a live holder from leftovers, with no confusion when a pid is reused.
    pub fn lock_run(
        &self,
        wait: bool,
        mut on_busy: impl FnMut(LockHolder),
    ) -> io::Result<Option<RunLock>> {
        self.ensure()?;
        let path = self.dir.join("run.lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let me = ProcessId::current();
        let this = LockedFile::of(&file.metadata()?);
        let mut told_leftovers = false;
        let mut rounds_without_holders = 0;
        loop {
            // std's file locks are `flock(2)` locks on Linux: held by the open file description,
            // so by every process that inherits the descriptor, and released when the last copy
            // is closed. `procfs` finds the holders by that kind in `/proc/locks`.
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
            let mut text = String::new();
            file.rewind()?;
            let _ = file.read_to_string(&mut text);
            let owner = Owner::parse(&text);
            match owner {
                // This process itself may hold the lock (through another `RunLock`).
                Some(o) if (o.id != me && o.is_alive()) || holds_it_here(o, me, &this) => {
                    on_busy(LockHolder::Running {
                        pid: Some(o.id.pid as u32),
                    });
                    return Self::wait_for_lock(file, wait);
                }
                // Empty: the holder has just taken the lock and not yet written its name.
                None => {
                    on_busy(LockHolder::Running { pid: None });
                    return Self::wait_for_lock(file, wait);
                }
                Some(o) => {
                    // The sluice that took the lock is gone (or is this process, in an earlier
                    // round of `sluice watch`), yet processes it started still hold it.
                    if !told_leftovers {
                        told_leftovers = true;
                        on_busy(LockHolder::Leftovers {
                            pid: o.id.pid as u32,
                            processes: procfs::flock_holders(
                                o.id.pid,
                                (o.id == me).then_some(&this),
                            )
                            .len(),
                        });
                        if o.id != me {
                            wait_for_guardian(o.id);
                        }
                    }
                    // SAFETY: getpgrp(2) cannot fail.
                    let mine = unsafe { libc::getpgrp() };
                    // A dead sluice's locked descriptors are all leftovers; in this process,
                    // only those of this workspace's lock are (tests run several engines).
                    let only = (o.id == me).then_some(&this);
                    if procfs::kill_flock_holders(o.id.pid, only, &[mine, o.pgid]) == 0 {
                        rounds_without_holders += 1;
                    }
                    // Holders we cannot see (another user's processes, no `/proc`): wait for
                    // the lock like for a live run rather than spin.
                    if rounds_without_holders > 200 {
                        return Self::wait_for_lock(file, wait);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        Self::claim(file).map(Some)
    }

    fn wait_for_lock(file: fs::File, wait: bool) -> io::Result<Option<RunLock>> {
        if !wait {
            return Ok(None);
        }
        loop {
            // As in `lock_run`, blocking this time; a signal handled meanwhile interrupts it.
            match file.lock() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Self::claim(file).map(Some)
    }

    /// Writes our name into the lock we now hold and lets child processes inherit it.
    fn claim(mut file: fs::File) -> io::Result<RunLock> {
        let me = ProcessId::current();
        // SAFETY: getpgrp(2) cannot fail.
        let pgid = unsafe { libc::getpgrp() };
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{} {} {}", me.pid, me.start, pgid)?;
        // std opens every file close-on-exec and has no way to clear the flag; the lock only
        // outlives sluice in its stage processes if they inherit the descriptor.
        // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RunLock { _file: file })
    }
}

/// Who holds the run lock, as `Workspace::lock_run` tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHolder {
    /// Another sluice that is still running (its pid, unless it has not written it yet).
    Running { pid: Option<u32> },
    /// Processes left behind by a sluice that was killed (pid `pid`): they are killed and the
    /// lock taken over.
    Leftovers { pid: u32, processes: usize },
}

/// The sluice named in the lock file: `PID START PGID` (a bare pid from older versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    id: ProcessId,
    pgid: i32,
}

impl Owner {
    fn parse(text: &str) -> Option<Owner> {
        let mut words = text.split_whitespace();
        let pid: i32 = words.next()?.parse().ok()?;
        let start = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let pgid = words.next().and_then(|w| w.parse().ok()).unwrap_or(pid);
        Some(Owner {
            id: ProcessId { pid, start },
            pgid,
        })
    }

    fn is_alive(&self) -> bool {
        if self.id.start == 0 {
            // Written by a version that did not record start times: the pid is all we have.
            return procfs::stat(self.id.pid).is_some_and(|s| s.state != 'Z');
        }
        self.id.is_alive()
    }
}

/// Whether this process holds the lock that `owner` (this very process) took.
fn holds_it_here(owner: Owner, me: ProcessId, file: &LockedFile) -> bool {
    owner.id == me && procfs::holds_flock(me.pid, me.pid, Some(file))
}

/// Waits (a few seconds at most) for a dead sluice's guardian to finish killing what it
/// registered: it knows process groups that no longer hold the lock.
fn wait_for_guardian(owner: ProcessId) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && procfs::guardian_of(owner).is_some() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Held for the duration of a run; dropping it releases the lock (once every process that
/// inherited it has ended).
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
        let second = ws.lock_run(false, |h| told = Some(h)).unwrap();
        assert!(second.is_none());
        assert_eq!(
            told,
            Some(LockHolder::Running {
                pid: Some(std::process::id())
            })
        );
    }

    /// The run lock outlives its `RunLock` in the processes started while it was held, and is
    /// free once they end: the guarantee that no run starts beside an earlier run's stages.
    #[test]
    fn processes_started_under_the_lock_keep_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let lock = ws.lock_run(false, |_| {}).unwrap().unwrap();
        let mut stage = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        drop(lock);
        let other = fs::File::open(ws.dir.join("run.lock")).unwrap();
        assert!(
            matches!(other.try_lock(), Err(fs::TryLockError::WouldBlock)),
            "the stage process did not inherit the lock"
        );
        stage.kill().unwrap();
        stage.wait().unwrap();
        // Blocking: a process another test spawns meanwhile may inherit the descriptor too,
        // and holds it until that test ends it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(other.lock().map_err(|e| e.to_string())));
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the lock was not released")
            .unwrap();
    }
}
