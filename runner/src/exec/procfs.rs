//! What `/proc` says about processes: a process's identity (pid plus start time, which a reused
//! pid does not share), its process group, and which processes hold a `flock` that a given
//! process took. The guardian (`guard.rs`) and the run lock's takeover (`workspace.rs`) use these
//! to find a dead sluice's leftover stage processes.

use std::fs;

/// A process, told apart from a later one that reuses its pid by its start time (clock ticks
/// after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        let pid = std::process::id() as i32;
        ProcessId {
            pid,
            start: stat(pid).map(|s| s.start).unwrap_or(0),
        }
    }

    /// Whether this very process still runs (a zombie counts as gone: it holds no files).
    pub fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }
}

/// The fields of `/proc/<pid>/stat` that sluice needs.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub state: char,
    pub pgid: i32,
    pub start: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): pgid is field 5, starttime field 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Pids of every process we can see, except this one.
fn other_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != me)
        .collect()
}

/// Whether any `flock` taken by `owner` is still held, by anyone (`/proc/locks` names the
/// process that took each lock, not those that inherited its descriptor). Cheap: lets the
/// guardian skip the full scan when nothing was left behind.
fn owner_has_flocks(owner: i32, file: Option<&LockedFile>) -> bool {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return true;
    };
    text.lines().any(|l| is_flock_of(l, owner, file))
}

/// A locked file, by inode number as lock lines show it (`MAJOR:MINOR:INODE`). The device is
/// left out on purpose: some file systems (btrfs subvolumes) report a different device to
/// `stat` than the one the kernel prints here, and a lock taken by the same process on another
/// device's file with the same inode number is not a real risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedFile(u64);

impl LockedFile {
    pub fn of(meta: &fs::Metadata) -> LockedFile {
        use std::os::unix::fs::MetadataExt;
        LockedFile(meta.ino())
    }
}

/// The pid and file of a `/proc/locks` or fdinfo `lock:` line, when the lock is a `flock`.
fn flock_owner(line: &str) -> Option<(i32, &str)> {
    let line = line.strip_prefix("lock:").unwrap_or(line);
    let mut words = line.split_whitespace();
    // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5400533 0 EOF"
    words.next()?;
    if words.next()? != "FLOCK" {
        return None;
    }
    let pid = words.nth(2)?.parse().ok()?;
    Some((pid, words.next()?))
}

/// Whether `line` shows a `flock` taken by `owner` (on `file`, when given).
fn is_flock_of(line: &str, owner: i32, file: Option<&LockedFile>) -> bool {
    flock_owner(line).is_some_and(|(pid, f)| {
        pid == owner
            && file.is_none_or(|want| f.rsplit(':').next() == Some(want.0.to_string().as_str()))
    })
}

/// A process holding a descriptor on which another process took a `flock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub pgid: i32,
}

/// Processes (other than this one) that hold a `flock` taken by `owner`: the owner itself and
/// every process that inherited the locked descriptor from it. A process that merely opened
/// the same file, or waits for the lock, has its own descriptor and is not listed: the kernel
/// shows a lock in `/proc/<pid>/fdinfo/<fd>` only for the descriptor that holds it.
///
/// `file` narrows this to one locked file; without it, any `flock` taken by `owner` counts.
pub fn flock_holders(owner: i32, file: Option<&LockedFile>) -> Vec<Holder> {
    if !owner_has_flocks(owner, file) {
        return Vec::new();
    }
    let mut found = Vec::new();
    for pid in other_pids() {
        if holds_flock(pid, owner, file) {
            if let Some(s) = stat(pid) {
                if s.state != 'Z' {
                    found.push(Holder { pid, pgid: s.pgid });
                }
            }
        }
    }
    found
}

/// Whether process `pid` holds a descriptor locked with `flock` by `owner` (on `file`, when
/// given). Processes of other users are unreadable here; they cannot hold our descriptors.
pub fn holds_flock(pid: i32, owner: i32, file: Option<&LockedFile>) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        fs::read_to_string(fd.path())
            .map(|t| t.lines().any(|l| is_flock_of(l, owner, file)))
            .unwrap_or(false)
    })
}

/// SIGKILLs every holder of `owner`'s `flock`s with its whole process group (stages run in
/// groups of their own), except groups in `spare`, where only the holder itself is killed: a
/// process left in the owner's own group shares it with whatever the user's shell started
/// beside sluice. Repeats until none is left (a holder may have forked between the scan and the
/// kill), a few rounds at most. Returns how many holders were found in all.
pub fn kill_flock_holders(owner: i32, file: Option<&LockedFile>, spare: &[i32]) -> usize {
    let mut killed = 0;
    for _ in 0..8 {
        let holders = flock_holders(owner, file);
        if holders.is_empty() {
            break;
        }
        killed += holders.len();
        for h in holders {
            if h.pgid > 1 && !spare.contains(&h.pgid) {
                super::signal_group(h.pgid, libc::SIGKILL);
            }
            // SAFETY: kill(2) on a pid; no memory involved.
            unsafe {
                libc::kill(h.pid, libc::SIGKILL);
            }
        }
        // Killed processes close their files as they exit; give them a moment before looking
        // again, so the next round does not count the same ones.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
}

/// The pid of the guardian watching over `owner`, if one still runs (`sluice __guard PID START
/// PGID` on its command line).
pub fn guardian_of(owner: ProcessId) -> Option<i32> {
    let (pid, start) = (owner.pid.to_string(), owner.start.to_string());
    other_pids().into_iter().find(|p| {
        let Ok(raw) = fs::read(format!("/proc/{p}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        args.len() >= 4
            && args[1] == super::guard::GUARD_ARG.as_bytes()
            && args[2] == pid.as_bytes()
            && args[3] == start.as_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn parses_flock_lines() {
        assert_eq!(
            flock_owner("lock:\t1: FLOCK  ADVISORY  WRITE 25606 fe:00:10012043 0 EOF"),
            Some((25606, "fe:00:10012043"))
        );
        assert_eq!(
            flock_owner("3: FLOCK  ADVISORY  WRITE 7 fe:00:1 0 EOF"),
            Some((7, "fe:00:1"))
        );
        assert_eq!(
            flock_owner("1: POSIX  ADVISORY  WRITE 25606 fe:00:10012043 0 EOF"),
            None
        );
        assert_eq!(flock_owner("pos:\t0"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = ProcessId::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        let earlier = ProcessId {
            start: me.start - 1,
            ..me
        };
        assert!(!earlier.is_alive());
    }

    #[test]
    fn finds_a_child_that_inherited_a_locked_descriptor_and_not_one_that_opened_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let file = fs::File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        // A bystander with its own descriptor on the same file, started while ours is still
        // closed on exec.
        let opened = dir.path().join("opened");
        let mut bystander = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 7<\"$0\"; touch \"$1\"; exec sleep 30")
            .arg(&path)
            .arg(&opened)
            .spawn()
            .unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !opened.exists() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The run lock is taken with std's `File::lock`: it must be a `flock` for this module.
        file.lock().unwrap();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        let mut inheritor = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let this = LockedFile::of(&file.metadata().unwrap());
        let holders = flock_holders(me, Some(&this));
        let pids: Vec<i32> = holders.iter().map(|h| h.pid).collect();
        assert!(pids.contains(&(inheritor.id() as i32)), "{holders:?}");
        assert!(!pids.contains(&(bystander.id() as i32)), "{holders:?}");
        let _ = inheritor.kill();
        let _ = bystander.kill();
        let _ = inheritor.wait();
        let _ = bystander.wait();
    }
}
