//! The guardian: a small process (`sluice __guard`) that outlives sluice only to kill what sluice
//! started. Every process group sluice starts (stages, plugins, the training worker, pip) is
//! registered with it; when sluice ends, however it ends (SIGKILL included), the guardian reads
//! end of file on its pipe and SIGKILLs each registered group still alive, then every process
//! still holding sluice's run lock (`procfs::kill_flock_holders`), and exits.
//!
//! Slurm jobs (`exec::slurm`) are registered the same way, by job id, and `scancel`led.
//!
//! Why a process and not something in the kernel: `PR_SET_PDEATHSIG` reaches only the direct
//! child (it is cleared across `fork`, so `sh -c "a; b > f"`'s grandchildren survive), fires
//! when the spawning *thread* exits, and needs a `pre_exec` hook, which makes std `fork` instead
//! of `posix_spawn` for every stage. A child subreaper only helps while sluice lives. The pipe's
//! end of file is the one notice that is certain to come.
//!
//! Live groups go into a page of memory the guardian shares (`table.rs`): a store, not a line on
//! the pipe that would wake the guardian twice for every stage. The pipe carries Slurm jobs and
//! groups beyond the table's last free slot. A guardian killed by hand is noticed (and warned
//! about) only at the next line on the pipe.
//!
//! One guardian per sluice process, started before the first process is spawned and never
//! stopped: the kernel closes the pipe when sluice exits. It closes every descriptor it
//! inherited (so it never holds the run lock), sits in its own process group (a terminal's
//! Ctrl-C or a kill of sluice's group does not reach it) and ignores SIGINT, SIGHUP and SIGTERM:
//! end of file on its pipe is the only thing that ends it. Library users (tests of the engine)
//! run without one unless they call [`enable`]; the binary always does.

mod table;

use super::procfs::{self, ProcessId};
use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use table::Table;

/// The hidden subcommand that runs the guardian: `sluice __guard OWNER_PID OWNER_START
/// OWNER_PGID`.
pub const GUARD_ARG: &str = "__guard";

static GUARD: Mutex<State> = Mutex::new(State {
    program: None,
    running: None,
    failed: false,
});

/// The table of the running guardian, once one runs with a table.
static TABLE: OnceLock<Table> = OnceLock::new();

struct State {
    /// The executable that runs [`serve`] for `__guard`.
    program: Option<PathBuf>,
    running: Option<(Child, ChildStdin)>,
    /// Starting it failed once (warned about); later spawns go unguarded rather than retrying
    /// for each stage.
    failed: bool,
}

/// Lets this process start a guardian: `program __guard ...` must run [`serve`]. The binary
/// passes `/proc/self/exe`, which names the running executable even if its file has been
/// replaced since (a rebuild during `sluice watch`).
pub fn enable(program: &Path) {
    lock().program = Some(program.to_path_buf());
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    GUARD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the guardian if it is enabled and not yet running. Call it before spawning, so that no
/// process exists that a guardian could have missed.
pub fn start() {
    let mut st = lock();
    ensure_running(&mut st);
}

fn ensure_running(st: &mut State) {
    if st.running.is_some() || st.failed {
        return;
    }
    let Some(program) = st.program.clone() else {
        return;
    };
    let me = ProcessId::current();
    // SAFETY: getpgrp(2) cannot fail.
    let pgid = unsafe { libc::getpgrp() };
    // The table is the guardian's stdout; without one, every group goes over the pipe.
    let (table, table_fd) = match Table::create() {
        Ok((t, fd)) => (Some(t), Stdio::from(fd)),
        Err(e) => {
            tracing::debug!(error = %e, "no shared table for the guardian; using its pipe");
            (None, Stdio::null())
        }
    };
    let spawned = Command::new(&program)
        .arg(GUARD_ARG)
        .args([me.pid.to_string(), me.start.to_string(), pgid.to_string()])
        .stdin(Stdio::piped())
        .stdout(table_fd)
        .stderr(Stdio::null())
        // Not the workspace: the guardian should keep nothing busy.
        .current_dir("/")
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            let stdin = child.stdin.take().expect("stdin is piped");
            st.running = Some((child, stdin));
            if let Some(t) = table {
                let _ = TABLE.set(t);
            }
        }
        Err(e) => {
            st.failed = true;
            tracing::warn!(program = %program.display(), error = %e,
                "cannot start the guardian; stage processes may outlive a killed sluice");
        }
    }
}

/// A registered process group; dropping it tells the guardian the group is gone. Drop it only
/// after the group has been killed and its leader reaped, so the guardian never signals a group
/// whose number may have been reused.
#[must_use = "dropping it unregisters the group at once"]
pub struct Tracked {
    pgid: i32,
    /// Its slot in the guardian's table; `None`: registered over the pipe.
    slot: Option<usize>,
}

/// Registers a process group with the guardian (starting it if needed).
pub fn track(pgid: i32) -> Tracked {
    if let Some(slot) = TABLE.get().and_then(|t| t.claim(pgid)) {
        return Tracked {
            pgid,
            slot: Some(slot),
        };
    }
    send(&format!("+{pgid}\n"));
    Tracked { pgid, slot: None }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        match (self.slot, TABLE.get()) {
            (Some(slot), Some(table)) => table.release(slot),
            _ => send(&format!("-{}\n", self.pgid)),
        }
    }
}

/// A registered Slurm job; dropping it tells the guardian the job has ended.
#[must_use = "dropping it unregisters the job at once"]
pub struct TrackedJob {
    job: u64,
}

/// Registers a Slurm job with the guardian, which runs `scancel` for it if sluice ends while it
/// is registered.
pub fn track_slurm_job(job: u64) -> TrackedJob {
    send(&format!("+s{job}\n"));
    TrackedJob { job }
}

impl Drop for TrackedJob {
    fn drop(&mut self) {
        send(&format!("-s{}\n", self.job));
    }
}

fn send(line: &str) {
    let mut st = lock();
    ensure_running(&mut st);
    let Some((_, stdin)) = st.running.as_mut() else {
        return;
    };
    if let Err(e) = stdin.write_all(line.as_bytes()) {
        // The guardian is gone (killed by hand): the run lock, which stage processes inherit,
        // still keeps a later run from starting beside them (see `Workspace::lock_run`).
        tracing::warn!(error = %e, "the guardian is gone; stage processes may outlive a killed sluice");
        st.running = None;
        st.failed = true;
    }
}

/// The guardian's main loop (`sluice __guard`): see the module documentation.
pub fn serve(owner: i32, owner_start: u64, owner_pgid: i32) -> io::Result<()> {
    let _ = owner_start; // On the command line so that a later run can find this guardian.
    close_inherited_descriptors();
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to "ignore"; no handler runs.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut groups = HashSet::new();
    let mut jobs = std::collections::BTreeSet::new();
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if let Some(j) = line.strip_prefix("+s").and_then(|n| n.parse::<u64>().ok()) {
            jobs.insert(j);
        } else if let Some(j) = line.strip_prefix("-s").and_then(|n| n.parse::<u64>().ok()) {
            jobs.remove(&j);
        } else if let Some(g) = line.strip_prefix('+').and_then(|n| n.parse::<i32>().ok()) {
            if g > 1 {
                groups.insert(g);
            }
        } else if let Some(g) = line.strip_prefix('-').and_then(|n| n.parse::<i32>().ok()) {
            groups.remove(&g);
        }
    }
    // Sluice has exited: what is in the table (its stdout) has not been seen to end either.
    groups.extend(table::read_groups(1));
    // Whatever it registered and did not see end is killed, then anything
    // still holding its run lock (a process that left its group, or one spawned in the instant
    // before sluice could register it).
    for g in groups {
        super::signal_group(g, libc::SIGKILL);
    }
    // Slurm jobs it submitted and did not see end: nothing of the run stays in the queue.
    if !jobs.is_empty() {
        let _ = Command::new("scancel")
            .args(jobs.iter().map(u64::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    // SAFETY: getpgrp(2) cannot fail.
    let mine = unsafe { libc::getpgrp() };
    // Any lock sluice took counts: one sluice works in one workspace, and the only lock it lets
    // children inherit is that workspace's run lock.
    procfs::kill_flock_holders(owner, None, &[owner_pgid, mine]);
    Ok(())
}

/// Closes every descriptor above stderr: the guardian must not keep sluice's run lock (or any
/// other file) open while it waits.
fn close_inherited_descriptors() {
    // SAFETY: close_range(2) only closes descriptors; we hold no Rust handles to them.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0;
    if done {
        return;
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: as above.
        unsafe {
            libc::close(fd);
        }
    }
}
