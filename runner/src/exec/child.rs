//! `run_in_group`: the one way sluice runs a child process, whoever asks for it — a stage's
//! process (`LocalExecutor`), pip and `venv` while the training environment is installed
//! (`sluice_stages::pyenv`, inside a stage or from `sluice setup`), and short helpers
//! ([`output`]).
//!
//! Signal handling and process lifetime, documented here beside the spawn:
//!
//! - Each child gets its own process group (`process_group(0)`), so a terminal's Ctrl-C reaches
//!   only sluice, which then decides what to do: for a stage the scheduler sends SIGTERM to the
//!   group, waits a grace period, then SIGKILL; a caller without a scheduler passes a
//!   [`CancelToken`] in [`GroupIo::kill_on_cancel`] and the group is SIGKILLed when it fires.
//! - When the child exits on its own, whatever it left behind in its group is killed too, so no
//!   stage outlives its run and no pipe stays open. The leader is waited for without being
//!   reaped (`waitid` with `WNOWAIT`) until the group is killed: while the leader is a zombie its
//!   pid, and so the group's number, cannot be reused by an unrelated process.
//! - Every group is registered with the guardian (`guard.rs`) before the child can have done
//!   much, and unregistered only after the group is killed and the leader reaped: if sluice dies
//!   (SIGKILL included) the guardian kills what is still registered.
//! - The child inherits the run lock's descriptor (`Workspace::lock_run` clears its
//!   close-on-exec flag), and so does everything it starts: the lock stays held while any
//!   process of the run lives, a later run cannot start beside them, and the guardian finds
//!   even a process that left its group by the lock it holds.
//! - No `pre_exec` hook (such as `PR_SET_PDEATHSIG`, which would reach only the direct child
//!   anyway): with one, std forks instead of using `posix_spawn`, copying sluice's page tables
//!   for every stage.
//! - A process without stdin or cancel token (every `run:` stage's, through
//!   [`run_spec_in_group`]) is not started by std but by `spawn.rs`, a `clone(CLONE_VFORK)` of
//!   our own that keeps all of the above and avoids `posix_spawn`'s costs per call (its doc
//!   says which, and what the child does before `execve`).

use super::spawn::{self, Spawned};
use super::{guard, signal_group, ProcessSpec};
use crate::cancel::CancelToken;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What a child reads and writes, and who hears about it. Output arrives line by line (lossily
/// decoded, line ends removed) on the threads that read the pipes.
pub struct GroupIo<'a> {
    /// Written to the child's stdin (then closed); `None`: stdin is `/dev/null`.
    pub stdin: Option<&'a [u8]>,
    /// Called with the process group id right after the spawn.
    pub on_spawn: &'a (dyn Fn(i32) + Sync),
    pub stdout: &'a mut (dyn FnMut(&str) + Send),
    pub stderr: &'a mut (dyn FnMut(&str) + Send),
    /// SIGKILL the group once this token is cancelled. `None` where someone else signals the
    /// group (the scheduler escalates from SIGTERM for a stage's process).
    pub kill_on_cancel: Option<&'a CancelToken>,
}

/// How often a [`GroupIo::kill_on_cancel`] token is looked at while the child runs.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Runs `cmd` (program, arguments, environment and directory already set) in a process group of
/// its own, registered with the guardian, until its leader exits; then kills what is left in the
/// group and returns the leader's status once both pipes are read to the end.
pub fn run_in_group(cmd: &mut Command, io: GroupIo<'_>) -> io::Result<ExitStatus> {
    let GroupIo {
        stdin,
        on_spawn,
        stdout,
        stderr,
        kill_on_cancel,
    } = io;
    cmd.process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    guard::start();
    let mut child = cmd.spawn()?;
    let pgid = child.id() as i32;
    let tracked = guard::track(pgid);
    on_spawn(pgid);
    let child_stdin = child.stdin.take();
    let child_stdout = child.stdout.take().expect("stdout is piped");
    let child_stderr = child.stderr.take().expect("stderr is piped");
    if stdin.is_none() && kill_on_cancel.is_none() {
        if let Some(pidfd) = pidfd_open(pgid) {
            // The common case (every `run:` stage): both pipes and the leader's exit are
            // watched from this thread, instead of two reader threads started for each stage.
            let (out, err) = (OwnedFd::from(child_stdout), OwnedFd::from(child_stderr));
            let exited = poll_until_closed(pgid, &pidfd, out.into(), err.into(), stdout, stderr);
            let status = exited.and_then(|()| child.wait());
            drop(tracked);
            return status;
        }
    }
    // `true` while the leader is unreaped, so the group's number is still ours to signal.
    let alive = (Mutex::new(true), Condvar::new());
    let status = std::thread::scope(|s| {
        if let (Some(mut w), Some(bytes)) = (child_stdin, stdin) {
            s.spawn(move || {
                // A child that exits without reading its input is not our error here.
                let _ = w.write_all(bytes);
            });
        }
        s.spawn(|| pump(child_stderr, stderr));
        s.spawn(|| pump(child_stdout, stdout));
        if let Some(cancel) = kill_on_cancel {
            let alive = &alive;
            s.spawn(move || {
                let mut running = alive.0.lock().unwrap_or_else(|e| e.into_inner());
                while *running {
                    if cancel.is_cancelled() {
                        signal_group(pgid, libc::SIGKILL);
                        break;
                    }
                    running = alive
                        .1
                        .wait_timeout(running, CANCEL_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            });
        }
        let exited = wait_unreaped(pgid);
        // Kill stragglers the child left in its group, so the pipes close; the leader is not
        // reaped yet, so the group's number is still ours.
        signal_group(pgid, libc::SIGKILL);
        *alive.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        alive.1.notify_all();
        exited.and_then(|()| child.wait())
    });
    drop(tracked);
    status
}

/// Runs `spec`'s process (its `program` resolved to `program`) as [`run_in_group`] does. A
/// process without stdin and cancel token (every `run:` stage's) is started by
/// [`spawn::spawn_in_group`], which costs less than std's spawn; any other with std's.
pub(crate) fn run_spec_in_group(
    spec: &ProcessSpec,
    program: &Path,
    io: GroupIo<'_>,
) -> io::Result<ExitStatus> {
    if io.stdin.is_none() && io.kill_on_cancel.is_none() {
        guard::start();
        if let Some(child) = spawn::spawn_in_group(spec, program)? {
            return run_spawned(child, io.on_spawn, io.stdout, io.stderr);
        }
    }
    let mut cmd = Command::new(program);
    // `argv[0]` as written, as `spawn.rs` and a shell pass it.
    cmd.arg0(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd);
    run_in_group(&mut cmd, io)
}

/// The rest of [`run_in_group`]'s common case for a child [`spawn::spawn_in_group`] started:
/// the guardian, `on_spawn`, both pipes and the leader's exit watched from this thread, the
/// group killed once the leader exits, and only then the leader reaped.
fn run_spawned(
    child: Spawned,
    on_spawn: &(dyn Fn(i32) + Sync),
    stdout: &mut (dyn FnMut(&str) + Send),
    stderr: &mut (dyn FnMut(&str) + Send),
) -> io::Result<ExitStatus> {
    let pgid = child.pid;
    let tracked = guard::track(pgid);
    on_spawn(pgid);
    let exited = poll_until_closed(
        pgid,
        &child.pidfd,
        child.stdout,
        child.stderr,
        stdout,
        stderr,
    );
    let status = exited.and_then(|()| spawn::reap(pgid));
    drop(tracked);
    status
}

/// Runs `cmd` to completion like [`Command::output`], through [`run_in_group`]: for short
/// helper processes that need no streaming. Output comes back as its lines, each ended by `\n`.
pub fn output(cmd: &mut Command) -> io::Result<std::process::Output> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let collect = |buf: &mut Vec<u8>, line: &str| {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    };
    let status = run_in_group(
        cmd,
        GroupIo {
            stdin: None,
            on_spawn: &|_| {},
            stdout: &mut |line| collect(&mut out, line),
            stderr: &mut |line| collect(&mut err, line),
            kill_on_cancel: None,
        },
    )?;
    Ok(std::process::Output {
        status,
        stdout: out,
        stderr: err,
    })
}

/// Waits until process `pid` (a child of ours) has exited, leaving it unreaped.
fn wait_unreaped(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: waitid(2) writes only into the zeroed siginfo we pass.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pidfd for child `pid`, readable once it exits; `None` where the kernel has none (before
/// Linux 5.3), and the reader threads are used instead.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Relays both pipes line by line until each is closed, on this thread. When the leader exits
/// (the pidfd becomes readable) what is left in its group is killed, as in [`run_in_group`]'s
/// threaded path, so the pipes close; the leader stays unreaped until the caller waits for it.
fn poll_until_closed(
    pgid: i32,
    pidfd: &OwnedFd,
    out: File,
    err: File,
    on_out: &mut (dyn FnMut(&str) + Send),
    on_err: &mut (dyn FnMut(&str) + Send),
) -> io::Result<()> {
    let mut pipes = [
        Pipe::new(Box::new(out), on_out),
        Pipe::new(Box::new(err), on_err),
    ];
    let mut leader_running = true;
    let mut exited = Ok(());
    let mut chunk = vec![0u8; 64 * 1024];
    while leader_running || pipes.iter().any(|p| p.open) {
        let mut fds = Vec::with_capacity(3);
        for p in pipes.iter().filter(|p| p.open) {
            fds.push(libc::pollfd {
                fd: p.fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if leader_running {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll(2) reads and writes only the `fds.len()` entries we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot watch any more: fall back to waiting, and the kill closes the pipes.
            exited = wait_unreaped(pgid);
            signal_group(pgid, libc::SIGKILL);
            return exited;
        }
        for fd in fds.iter().filter(|f| f.revents != 0) {
            if fd.fd == pidfd.as_raw_fd() {
                exited = wait_unreaped(pgid);
                // Kill stragglers the child left in its group, so the pipes close; the leader
                // is not reaped yet, so the group's number is still ours.
                signal_group(pgid, libc::SIGKILL);
                leader_running = false;
            } else if let Some(p) = pipes.iter_mut().find(|p| p.open && p.fd == fd.fd) {
                p.read_some(&mut chunk);
            }
        }
    }
    exited
}

/// One pipe of [`poll_until_closed`], with its partial last line.
struct Pipe<'a> {
    reader: Box<dyn Read + 'a>,
    fd: RawFd,
    open: bool,
    pending: Vec<u8>,
    sink: &'a mut (dyn FnMut(&str) + Send),
}

impl<'a> Pipe<'a> {
    fn new<R: Read + AsRawFd + 'a>(r: Box<R>, sink: &'a mut (dyn FnMut(&str) + Send)) -> Self {
        Pipe {
            fd: r.as_raw_fd(),
            reader: r,
            open: true,
            pending: Vec::new(),
            sink,
        }
    }

    /// One `read` (poll said it will not block); complete lines go to the sink, and at the end
    /// of the stream an unterminated last line too, as [`pump`] does.
    fn read_some(&mut self, chunk: &mut [u8]) {
        match self.reader.read(chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => {
                self.open = false;
                if !self.pending.is_empty() {
                    let rest = std::mem::take(&mut self.pending);
                    emit(self.sink, &rest);
                }
            }
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                while let Some(i) = self.pending[start..].iter().position(|&b| b == b'\n') {
                    emit(self.sink, &self.pending[start..start + i + 1]);
                    start += i + 1;
                }
                self.pending.drain(..start);
            }
        }
    }
}

fn emit(sink: &mut (dyn FnMut(&str) + Send), line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    sink(text.trim_end_matches(['\n', '\r']));
}

/// Reads lines (lossily decoded) until end of file.
fn pump<R: Read>(r: R, f: &mut (dyn FnMut(&str) + Send)) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                f(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    #[test]
    fn output_keeps_both_streams_and_the_status() {
        let out =
            output(Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"one\n");
        assert_eq!(out.stderr, b"two\n");
    }

    #[test]
    fn stdin_is_written_and_the_group_is_reported() {
        let seen = AtomicI32::new(0);
        let mut lines = Vec::new();
        let status = run_in_group(
            &mut Command::new("cat"),
            GroupIo {
                stdin: Some(b"a\nb\n"),
                on_spawn: &|pgid| seen.store(pgid, Ordering::SeqCst),
                stdout: &mut |l| lines.push(l.to_string()),
                stderr: &mut |_| {},
                kill_on_cancel: None,
            },
        )
        .unwrap();
        assert!(status.success());
        assert_eq!(lines, ["a", "b"]);
        assert!(seen.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn a_cancelled_token_kills_the_whole_group() {
        let cancel = CancelToken::default();
        // The child cancels its own run once it is running, and leaves a grandchild behind that
        // would keep stdout open for a minute if the group were not killed.
        let mut started = false;
        let status = run_in_group(
            Command::new("sh").args(["-c", "sleep 60 & echo up; sleep 60"]),
            GroupIo {
                stdin: None,
                on_spawn: &|_| {},
                stdout: &mut |l| {
                    if l == "up" {
                        started = true;
                        cancel.cancel(crate::cancel::CancelReason::Interrupt);
                    }
                },
                stderr: &mut |_| {},
                kill_on_cancel: Some(&cancel),
            },
        )
        .unwrap();
        assert!(started);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn stragglers_are_killed_once_the_leader_exits_and_every_line_arrives() {
        // The poll path (no stdin, no cancel token): the background `sleep` holds stdout open
        // and must be killed when `sh` exits, or this test would hang for a minute. Output
        // split over many writes, interleaved streams and an unterminated last line all arrive.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_in_group(
            Command::new("sh").args([
                "-c",
                "sleep 60 & i=0; while [ $i -lt 500 ]; do echo line$i; echo e$i >&2; \
                 i=$((i+1)); done; printf tail; exit 4",
            ]),
            GroupIo {
                stdin: None,
                on_spawn: &|_| {},
                stdout: &mut |l| out.push(l.to_string()),
                stderr: &mut |l| err.push(l.to_string()),
                kill_on_cancel: None,
            },
        )
        .unwrap();
        assert_eq!(status.code(), Some(4));
        assert_eq!(out.len(), 501);
        assert_eq!(out[0], "line0");
        assert_eq!(out[499], "line499");
        assert_eq!(out[500], "tail");
        assert_eq!(err.len(), 500);
        assert_eq!(err[499], "e499");
    }

    #[test]
    fn a_program_missing_from_the_stages_path_is_not_found() {
        let spec = ProcessSpec {
            program: "no-such-program-xq".into(),
            args: Vec::new(),
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            cwd: std::env::temp_dir(),
            stdin: None,
            stdout: super::super::Stdout::Log,
        };
        let program = super::super::resolve_program(&spec.program, Some("/usr/bin:/bin"));
        let err = run_spec_in_group(
            &spec,
            &program,
            GroupIo {
                stdin: None,
                on_spawn: &|_| {},
                stdout: &mut |_| {},
                stderr: &mut |_| {},
                kill_on_cancel: None,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn a_spec_without_stdin_runs_in_its_group_and_its_stragglers_are_killed() {
        // The path of every `run:` stage (spawn.rs's clone): the background `sleep` holds both
        // pipes open and must be killed when `sh` exits, or this test would hang for a minute.
        let spec = ProcessSpec {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                "sleep 60 & echo up; echo err >&2; exit 5".into(),
            ],
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            cwd: std::env::temp_dir(),
            stdin: None,
            stdout: super::super::Stdout::Log,
        };
        let program = super::super::resolve_program("sh", Some("/usr/bin:/bin"));
        let group = AtomicI32::new(0);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_spec_in_group(
            &spec,
            &program,
            GroupIo {
                stdin: None,
                on_spawn: &|pgid| group.store(pgid, Ordering::SeqCst),
                stdout: &mut |l| out.push(l.to_string()),
                stderr: &mut |l| err.push(l.to_string()),
                kill_on_cancel: None,
            },
        )
        .unwrap();
        assert_eq!(status.code(), Some(5));
        assert_eq!(
            (out, err),
            (vec!["up".to_string()], vec!["err".to_string()])
        );
        let pgid = group.load(Ordering::SeqCst);
        assert!(pgid > 0);
        // The pipes reached their end, so the `sleep` is dead; the leader is reaped.
        // SAFETY: waitpid(2) with WNOHANG on a pid; the status is not read.
        let rc = unsafe { libc::waitpid(pgid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(rc, -1);
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
}
