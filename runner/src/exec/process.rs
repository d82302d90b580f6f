//! `LocalExecutor`: runs a stage's process on this machine, through `child::run_spec_in_group`
//! (where its process group, the guardian and signal handling are documented; `spawn.rs` starts
//! the process when it has no stdin), reading the stage protocol from its stdout.

use super::child::{run_spec_in_group, GroupIo};
use super::protocol::{self, Message};
use super::{signal_group, ExecControl, ExecOutcome, Executor, ProcessSpec, Stdout};
use std::io;
use std::os::unix::process::ExitStatusExt;

#[derive(Default)]
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> io::Result<ExecOutcome> {
        let program = resolve_program(&spec.program, spec.env.get("PATH").map(String::as_str));
        let on_spawn = |pgid: i32| {
            (ctl.on_spawn)(pgid);
            if ctl.cancel.is_cancelled() {
                signal_group(pgid, libc::SIGTERM);
            }
        };
        let mut result = None;
        let status = run_spec_in_group(
            spec,
            &program,
            GroupIo {
                stdin: spec.stdin.as_deref(),
                on_spawn: &on_spawn,
                stdout: &mut |line| relay_stdout(spec.stdout, line, ctl, &mut result),
                stderr: &mut |line| ctl.log.line(line),
                kill_on_cancel: None,
            },
        )?;
        Ok(ExecOutcome {
            code: status.code(),
            signal: status.signal(),
            result,
            lost: None,
        })
    }
}

/// [`LocalExecutor`] that says its processes are remote: built-in stages run as `sluice __stage`
/// processes, exactly as they would on a cluster node, but on this machine. It proves the
/// one-stage mode in tests without a cluster, and is a debugging aid for it
/// (`SLUICE_EXECUTOR=local-remote`).
#[derive(Default)]
pub struct RemoteLocalExecutor;

impl Executor for RemoteLocalExecutor {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> io::Result<ExecOutcome> {
        LocalExecutor.execute(spec, ctl)
    }

    fn remote(&self) -> bool {
        true
    }
}

/// One line of a stage's stdout: protocol messages become events (the final `result` is kept),
/// anything else goes to the log. Shared by every executor, so a stage reads the same wherever
/// it runs.
pub(super) fn relay_stdout(
    kind: Stdout,
    line: &str,
    ctl: &ExecControl<'_>,
    result: &mut Option<protocol::ResultMsg>,
) {
    match (kind, protocol::parse_line(line)) {
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
            Message::Result(r) => *result = Some(r),
        },
        (Stdout::Protocol, Some(Err(e))) => {
            ctl.log.line(line);
            ctl.events
                .warn(format!("malformed protocol message ({e}): {line}"));
        }
        _ => ctl.log.line(line),
    }
}

/// Finds a bare program name on the stage's own `PATH`. Besides being the right `PATH` to search,
/// this matters for speed: given a bare name and a replaced `PATH`, std must fork (copying the
/// page tables of a large sluice process for every stage) instead of using `posix_spawn`.
///
/// Found programs are remembered per (`PATH`, name) for the life of the process: every `run:`
/// stage starts `sh`, and searching a long `PATH` cost up to ten `stat`s a stage. A program
/// removed since is then reported missing by the spawn, as it would be without the memo.
pub(crate) fn resolve_program(program: &str, path: Option<&str>) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Found = HashMap<(String, String), std::path::PathBuf>;
    static FOUND: OnceLock<Mutex<Found>> = OnceLock::new();
    if program.contains('/') {
        return program.into();
    }
    let key = (path.unwrap_or("").to_string(), program.to_string());
    let found = FOUND.get_or_init(Default::default);
    if let Some(p) = found.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return p.clone();
    }
    let resolved = search_path(program, path);
    if resolved.is_absolute() {
        found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, resolved.clone());
    }
    resolved
}

fn search_path(program: &str, path: Option<&str>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
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
