//! Leftovers: the temporaries a killed sluice leaves behind, found by name and removed by the next
//! run (while it holds the run lock) and by `gc`.
//!
//! sluice makes two kinds:
//! - `.NAME.sluice-tmp-PID-N` (`atomic::temp_path_for`), a file or a directory next to its
//!   destination: lock files and their mirrors, the hash memo, cache records and blobs, restored
//!   outputs (a whole directory for a directory output), and built-in stage outputs moved across
//!   file systems (`Staged` in the stages crate);
//! - `.sluice/tmp/<run-id>/`, a run's scratch space, where built-in stages also write their
//!   outputs before moving them into place, and `.sluice/slurm/<run-id>/`, its Slurm jobs'
//!   directories; the run id ends in `-PID`.
//!
//! Reading every output directory for them costs a no-op run of 10,000 stages more than 10 ms, so
//! a run reads them only after a crash: every process that makes temporaries first leaves a
//! notice in `.sluice/writers/` (`atomic::announce_temporaries_in`) and withdraws it when it ends
//! normally; `sweep_after_crash` sweeps when a notice of a dead process is there (or a dead run's
//! scratch space or Slurm jobs, or no `writers/` directory yet). `gc` always sweeps everything.
//!
//! A temporary is removed only when the process named in it is gone. The run lock keeps other
//! runs out, but `status` and `run --dry-run` save the hash memo without taking it, and a live
//! process's temporary may be renamed into place at any moment.

use crate::atomic;
use crate::workspace::Workspace;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// The process that made a temporary named by `atomic::temp_path_for`.
fn temp_writer(name: &str) -> Option<i32> {
    let (_, tail) = name.strip_prefix('.')?.rsplit_once(".sluice-tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// The process of a run, from its id (`…Z-PID`).
fn run_owner(run_id: &str) -> Option<i32> {
    let (_, pid) = run_id.rsplit_once('-')?;
    pid.parse().ok()
}

/// True when `pid` names a running process (one we may not signal counts as running).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 checks for existence and sends nothing.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// `sweep` at the start of a run, when something may have been left behind: see the module's
/// documentation. `dirs` is asked for only then.
pub(crate) fn sweep_after_crash(ws: &Workspace, dirs: impl FnOnce() -> BTreeSet<PathBuf>) -> usize {
    let writers = ws.writers_dir();
    let crashed =
        !writers.is_dir()
            || owned_places(ws).iter().any(|dir| {
                fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
                    run_owner(&e.file_name().to_string_lossy()).is_some_and(|pid| !alive(pid))
                })
            });
    if !crashed {
        return 0;
    }
    // A sweep cut short is done again by the next run: the dead notices go with it, last.
    let removed = sweep(ws, &dirs(), false);
    let _ = fs::create_dir_all(&writers);
    removed
}

/// Where entries are named after the process that owns them (`…-PID`): runs' scratch space and
/// Slurm job directories, and the notices of processes making temporaries. Listed last by
/// `sweep`, so that a notice goes only after the temporaries it announced.
fn owned_places(ws: &Workspace) -> [PathBuf; 3] {
    [ws.dir.join("tmp"), ws.dir.join("slurm"), ws.writers_dir()]
}

/// Removes (or, with `dry_run`, counts) the temporaries of dead processes in the workspace's
/// state directory, its scratch space, and `dirs` (the directories that hold outputs and lock
/// files). Returns how many there were. Errors are skipped: a leftover that cannot be removed
/// now is tried again next time.
pub(crate) fn sweep(ws: &Workspace, dirs: &BTreeSet<PathBuf>, dry_run: bool) -> usize {
    let cache = ws.cache_dir();
    let mut places: BTreeSet<PathBuf> = dirs.clone();
    places.extend([
        ws.dir.clone(),
        ws.lock_mirror_dir(),
        cache.clone(),
        cache.join("stages"),
    ]);
    if let Ok(rd) = fs::read_dir(cache.join("objects")) {
        places.extend(rd.flatten().map(|e| e.path()));
    }
    let mut doomed: Vec<PathBuf> = Vec::new();
    for dir in &places {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for entry in rd.flatten() {
            let name = entry.file_name();
            if temp_writer(&name.to_string_lossy()).is_some_and(|pid| !alive(pid)) {
                doomed.push(entry.path());
            }
        }
    }
    // A run's scratch space and its Slurm job directories (`.sluice/slurm/<run-id>/`: job
    // scripts, status files, the one-stage mode's job descriptions), and the notices of
    // processes that made temporaries.
    for runs in owned_places(ws) {
        let Ok(rd) = fs::read_dir(runs) else { continue };
        for entry in rd.flatten() {
            if run_owner(&entry.file_name().to_string_lossy()).is_some_and(|pid| !alive(pid)) {
                doomed.push(entry.path());
            }
        }
    }
    if !dry_run {
        doomed.retain(|p| atomic::remove_path(p).is_ok());
    }
    if !doomed.is_empty() {
        tracing::info!(
            count = doomed.len(),
            dry_run,
            "removed temporaries of killed runs"
        );
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_sluice_makes_them() {
        let tmp = atomic::temp_path_for(std::path::Path::new("out/model.bin"));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(temp_writer(&name), Some(std::process::id() as i32));
        assert_eq!(temp_writer(".a.b.sluice-tmp-42-7"), Some(42));
        assert_eq!(
            temp_writer("a.sluice-tmp-42-7"),
            None,
            "ours start with a dot"
        );
        assert_eq!(temp_writer(".a.sluice-tmp-42"), None);
        assert_eq!(temp_writer(".a.sluice-tmp-x-1"), None);
        assert_eq!(run_owner("20261206T201908.123Z-4242"), Some(4242));
        assert_eq!(run_owner("notes"), None);
    }

    /// A pid that no process has: one that just exited and was reaped.
    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id() as i32
    }

    #[test]
    fn only_temporaries_of_dead_processes_go() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        ws.ensure().unwrap();
        let out = ws.root.join("out");
        fs::create_dir_all(&out).unwrap();
        let dead = dead_pid();
        let mine = std::process::id();
        let dead_dir = out.join(format!(".d.sluice-tmp-{dead}-0"));
        fs::create_dir_all(dead_dir.join("sub")).unwrap();
        fs::write(dead_dir.join("sub/f"), b"x").unwrap();
        let dead_memo = ws.dir.join(format!(".hashes.bin.sluice-tmp-{dead}-3"));
        fs::write(&dead_memo, b"{").unwrap();
        let live = out.join(format!(".f.sluice-tmp-{mine}-0"));
        fs::write(&live, b"x").unwrap();
        let user = out.join("notes.sluice-tmp-1-1");
        fs::write(&user, b"x").unwrap();
        let dead_run = ws
            .dir
            .join("tmp")
            .join(format!("20261206T201908.123Z-{dead}"));
        fs::create_dir_all(dead_run.join("stage")).unwrap();
        let live_run = ws
            .dir
            .join("tmp")
            .join(format!("20261206T201908.123Z-{mine}"));
        fs::create_dir_all(&live_run).unwrap();
        let dead_jobs = ws
            .dir
            .join("slurm")
            .join(format!("20261206T201908.123Z-{dead}"));
        fs::create_dir_all(dead_jobs.join("train")).unwrap();
        fs::write(dead_jobs.join("train/job.sh"), b"#!/bin/sh\n").unwrap();

        let dirs = BTreeSet::from([out.clone()]);
        assert_eq!(sweep(&ws, &dirs, true), 4);
        assert!(dead_dir.exists(), "a dry run removes nothing");
        assert_eq!(sweep(&ws, &dirs, false), 4);
        assert!(!dead_dir.exists() && !dead_memo.exists() && !dead_run.exists());
        assert!(
            !dead_jobs.exists(),
            "a killed run's Slurm job directories go too"
        );
        assert!(
            live.exists() && live_run.exists(),
            "a live process keeps its own"
        );
        assert!(user.exists(), "names sluice does not make are left alone");
        assert_eq!(sweep(&ws, &dirs, false), 0);
    }

    #[test]
    fn a_run_sweeps_only_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        ws.ensure().unwrap();
        let out = ws.root.join("out");
        fs::create_dir_all(&out).unwrap();
        let dirs = || BTreeSet::from([out.clone()]);
        let dead = dead_pid();
        let left = |n: u32| {
            let p = out.join(format!(".f.sluice-tmp-{dead}-{n}"));
            fs::write(&p, b"x").unwrap();
            p
        };
        // A workspace no run has swept yet (older sluice): swept once, then announced.
        let old = left(0);
        assert_eq!(sweep_after_crash(&ws, dirs), 1);
        assert!(!old.exists() && ws.writers_dir().is_dir());
        // No notice of a dead process: the output directories are not read.
        let unannounced = left(1);
        assert_eq!(
            sweep_after_crash(&ws, || panic!("no directory is read without a crash")),
            0
        );
        assert!(unannounced.exists(), "left for `gc`");
        // A killed writer's notice: everything is swept, and the notice goes last.
        let notice = ws.writers_dir().join(format!("writer-{dead}"));
        fs::write(&notice, b"").unwrap();
        let live = ws
            .writers_dir()
            .join(format!("writer-{}", std::process::id()));
        fs::write(&live, b"").unwrap();
        let killed = left(2);
        // Two temporaries and the notice (also what `gc` now clears).
        assert_eq!(sweep_after_crash(&ws, dirs), 3);
        assert!(!killed.exists() && !unannounced.exists() && !notice.exists());
        assert!(live.exists(), "a running process keeps its notice");
        // A live writer alone is no crash.
        assert_eq!(sweep_after_crash(&ws, || panic!("nothing to sweep")), 0);
        // A dead run's scratch space is one too.
        let run = ws
            .dir
            .join("tmp")
            .join(format!("20261206T201908.123Z-{dead}"));
        fs::create_dir_all(&run).unwrap();
        let again = left(3);
        assert_eq!(sweep_after_crash(&ws, dirs), 2);
        assert!(!again.exists() && !run.exists());
    }
}
