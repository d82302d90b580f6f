//! Knowing a worker's scratch directory is still empty from one `stat`.
//!
//! Listing the directory before every stage (open, two `getdents`, close) was ~5 % of a worker
//! thread's CPU in a cold run of small stages, almost always to find it empty. Creating,
//! removing or renaming an entry changes a directory's ctime, which no process can set back: the
//! directory is unchanged since it was last seen empty if its ctime (and identity) is. Each
//! worker thread remembers the last directory it found empty.
//!
//! One catch: timestamps come from a clock that may tick only every few milliseconds, so an
//! entry created in the same tick as the last change would leave the ctime as it was. A
//! directory is therefore remembered only once the coarse clock has moved past its ctime: any
//! later change then gets a later ctime. (Kernels with fine-grained ctimes make this moot.)

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(PartialEq)]
struct Seen {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    nlink: u64,
}

thread_local! {
    static LAST_EMPTY: RefCell<Option<(PathBuf, Seen)>> = const { RefCell::new(None) };
}

fn look(dir: &Path) -> Option<Seen> {
    let m = std::fs::symlink_metadata(dir).ok()?;
    m.is_dir().then(|| Seen {
        dev: m.dev(),
        ino: m.ino(),
        ctime: (m.ctime(), m.ctime_nsec()),
        nlink: m.nlink(),
    })
}

/// Whether `dir` is the directory this thread last found empty, unchanged since.
pub(super) fn still_empty(dir: &Path) -> bool {
    LAST_EMPTY.with(|last| {
        let last = last.borrow();
        let Some((path, seen)) = last.as_ref().filter(|(p, _)| p == dir) else {
            return false;
        };
        debug_assert_eq!(path, dir);
        look(dir).is_some_and(|now| &now == seen)
    })
}

/// Remembers `dir`, just found empty, if its ctime would show any change from now on.
pub(super) fn remember_empty(dir: &Path) {
    let seen = look(dir).filter(|s| s.ctime < coarse_now());
    LAST_EMPTY.with(|last| *last.borrow_mut() = seen.map(|s| (dir.to_path_buf(), s)));
}

/// The clock file timestamps are taken from (the coarse real-time clock).
fn coarse_now() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_made_or_removed_at_any_moment_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("slot");
        std::fs::create_dir(&dir).unwrap();
        // Remembered only once the clock has moved past the directory's last change.
        remember_empty(&dir);
        while !still_empty(&dir) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            remember_empty(&dir);
        }
        // Right after being remembered, in the same clock tick as often as not.
        for round in 0..50 {
            let f = dir.join(format!("f{round}"));
            std::fs::write(&f, b"x").unwrap();
            assert!(!still_empty(&dir), "round {round}: a new file went unseen");
            std::fs::remove_file(&f).unwrap();
            remember_empty(&dir);
            if !still_empty(&dir) {
                // Not remembered in the tick of its change: wait for the next one.
                while !still_empty(&dir) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    remember_empty(&dir);
                }
            }
        }
        // Another directory in its place is not the one remembered.
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert!(!still_empty(&dir));
        // Nor is another path.
        assert!(!still_empty(tmp.path()));
    }
}
