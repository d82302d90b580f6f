//! `LocalExecutor`: runs a stage's process on this machine.
//!
//! Signal handling and process lifetime, documented here beside the spawn:
//!
//! - Each child gets its own process group (`process_group(0)`), so a terminal's Ctrl-C reaches
//!   only sluice, which then decides what to do: the scheduler sends SIGTERM to the group, waits
//!   a grace period, then SIGKILL.
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

use super::protocol::{self, Message};
use super::{guard, signal_group, ExecControl, ExecOutcome, Executor, ProcessSpec, Stdout};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

#[derive(Default)]
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> io::Result<ExecOutcome> {
        let program = resolve_program(&spec.program, spec.env.get("PATH").map(String::as_str));
        let mut cmd = Command::new(program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .process_group(0)
            .stdin(if spec.stdin.is_some() {
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
        (ctl.on_spawn)(pgid);
        if ctl.cancel.is_cancelled() {
            signal_group(pgid, libc::SIGTERM);
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut result = None;
        std::thread::scope(|s| {
            if let (Some(mut w), Some(bytes)) = (stdin, spec.stdin.as_ref()) {
                s.spawn(move || {
                    // A plugin that exits without reading its request is not our error here.
                    let _ = w.write_all(bytes);
                });
            }
            s.spawn(|| pump(stderr, |line| ctl.log.line(line)));
            let out = s.spawn(|| {
                let mut result = None;
                pump(stdout, |line| {
                    match (spec.stdout, protocol::parse_line(line)) {
                        (Stdout::Protocol, Some(Ok(msg))) => match msg {
                            Message::Progress {
                                done,
                                total,
                                unit,
                                message,
                            } => ctl.events.progress(done, total, unit, message),
                            Message::Log { level, message } => {
                                ctl.log.line(&format!("[{level}] {message}"));
                                ctl.events.log(&level, message);
                            }
                            Message::Metric { name, value, step } => {
                                ctl.log.line(&format!("[metric] {name}={value}"));
                                ctl.events.metric(&name, value, step);
                            }
                            Message::Result(r) => result = Some(r),
                        },
                        (Stdout::Protocol, Some(Err(e))) => {
                            ctl.log.line(line);
                            ctl.events
                                .warn(format!("malformed protocol message ({e}): {line}"));
                        }
                        _ => ctl.log.line(line),
                    }
                });
                result
            });
            let exited = wait_unreaped(pgid);
            // Kill stragglers the stage left in its group, so the pipes close; the leader is
            // not reaped yet, so the group's number is still ours.
            signal_group(pgid, libc::SIGKILL);
            let status = exited.and_then(|()| child.wait());
            result = Some((status, out.join().unwrap_or(None)));
        });
        drop(tracked);
        let (status, msg) = result.expect("the scope sets the result");
        let status = status?;
        Ok(ExecOutcome {
            code: status.code(),
            signal: status.signal(),
            result: msg,
        })
    }
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

/// Finds a bare program name on the stage's own `PATH`. Besides being the right `PATH` to search,
/// this matters for speed: given a bare name and a replaced `PATH`, std must fork (copying the
/// page tables of a large sluice process for every stage) instead of using `posix_spawn`.
fn resolve_program(program: &str, path: Option<&str>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.into();
    }
    for dir in path.unwrap_or("").split(':').filter(|d| !d.is_empty()) {
        let candidate = std::path::Path::new(dir).join(program);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    program.into()
}

/// Reads lines (lossily decoded) until end of file.
fn pump<R: Read>(r: R, mut f: impl FnMut(&str)) {
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
