//! The node's side: [`run_on_node`] reads a job file, prepares `with:` again, and runs the
//! stage with a context whose events become protocol lines on stdout and whose child processes
//! (the training worker) run on this machine.

use super::job_file::StageJob;
use super::protocol_out::{line_for, result_line, write_line};
use crate::cancel::CancelToken;
use crate::error::StageError;
use crate::events::{Event, StageEventSink};
use crate::exec::protocol::{self, Message};
use crate::exec::{run_in_group, signal_group, ExecOutcome, GroupIo, ProcessSpec, Stdout};
use crate::stage::{ProcessHost, StageContext, StageRegistry};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Runs the job in `job_file`, writing protocol lines to `out`, the last of them the `result`.
/// `cancel` is what SIGTERM (Slurm's `scancel`, the local scheduler's stop) cancels. Returns
/// whether the stage succeeded: the process's exit status.
pub fn run_on_node(
    registry: &StageRegistry,
    job_file: &Path,
    cancel: &CancelToken,
    out: &mut (dyn Write + Send),
) -> bool {
    let outcome = match StageJob::read(job_file) {
        Ok(job) => run_job(registry, &job, cancel, out),
        Err(e) => Err(StageError::new(crate::error::chain(&e))
            .hint("the job file is written by the sluice that submitted the stage; run the pipeline again")),
    };
    write_line(out, &result_line(&outcome));
    outcome.is_ok()
}

fn run_job(
    registry: &StageRegistry,
    job: &StageJob,
    cancel: &CancelToken,
    out: &mut (dyn Write + Send),
) -> Result<(), StageError> {
    let Some(imp) = registry.get(&job.kind) else {
        return Err(StageError::new(format!(
            "built-in stage kind `{}` is not in the sluice binary on this node",
            job.kind
        ))
        .hint("the nodes must run the same sluice as the submitting machine"));
    };
    if imp.version() != job.kind_version {
        return Err(StageError::new(format!(
            "built-in stage kind `{}` is version {} on this node but {} where the run was submitted",
            job.kind,
            imp.version(),
            job.kind_version
        ))
        .hint("the nodes must run the same sluice as the submitting machine"));
    }
    let prepared = imp.prepare(&job.with).map_err(|problems| {
        let listed: Vec<String> = problems
            .iter()
            .map(|p| match p.path.is_empty() {
                true => p.message.clone(),
                false => format!("`with.{}`: {}", p.path.join("."), p.message),
            })
            .collect();
        StageError::new(format!(
            "stage `{}`: its `with:` was refused on the node: {}",
            job.stage,
            listed.join("; ")
        ))
        .hint("the nodes must run the same sluice as the submitting machine")
    })?;
    let (tx, rx) = crossbeam_channel::unbounded::<Event>();
    std::thread::scope(|s| {
        // Events become lines in the order the stage sent them; the scope ends only after every
        // sender is dropped and the last line is written, so the `result` line comes last.
        s.spawn(move || {
            for event in rx {
                if let Some(line) = line_for(&event) {
                    write_line(out, &line);
                }
            }
        });
        let events = StageEventSink::new(&job.stage, tx);
        let processes = NodeProcesses {
            cancel,
            events: &events,
        };
        let ctx = StageContext {
            pipeline: &job.pipeline,
            stage: &job.stage,
            workspace: job.workspace.clone(),
            inputs: job.inputs.clone(),
            outputs: job.outputs.clone(),
            with: &job.with,
            prepared: &prepared,
            params: &job.params,
            scratch: job.scratch.clone(),
            gpus: job.gpus.clone(),
            cancel: cancel.clone(),
            events: events.clone(),
            key: job.key.clone(),
            env: job.env.clone(),
            processes: &processes,
        };
        let result = crate::panics::catch(|| imp.run(&ctx)).unwrap_or_else(|p| Err(p.into()));
        drop(ctx);
        drop(events);
        result
    })
}

/// How long a child process is looked at for cancellation of the stage.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// The stage's child processes, run here in their own process groups (registered with this
/// process's guardian, so a SIGKILLed `__stage` leaves none). Their protocol lines are relayed as
/// the stage's events; everything else they print goes to stderr, which the submitter keeps in
/// the stage's log. There is no scheduler on the node to stop them, so this does: SIGTERM to the
/// group once the stage is cancelled (the worker then stops, its checkpoints kept); a worker
/// that ignores it is killed with `__stage` itself when the submitter (or Slurm) escalates.
struct NodeProcesses<'a> {
    cancel: &'a CancelToken,
    events: &'a StageEventSink,
}

impl ProcessHost for NodeProcesses<'_> {
    fn run(&self, spec: &ProcessSpec) -> std::io::Result<ExecOutcome> {
        let program =
            crate::exec::resolve_program(&spec.program, spec.env.get("PATH").map(String::as_str));
        let mut cmd = std::process::Command::new(program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd);
        // The group once spawned, and whether the child is still running.
        let state = (Mutex::new((None::<i32>, true)), Condvar::new());
        let on_spawn = |pgid: i32| {
            state.0.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(pgid);
            state.1.notify_all();
        };
        let mut result = None;
        let events = self.events;
        let status = std::thread::scope(|s| {
            s.spawn(|| stop_on_cancel(self.cancel, &state));
            let status = run_in_group(
                &mut cmd,
                GroupIo {
                    stdin: spec.stdin.as_deref(),
                    on_spawn: &on_spawn,
                    stdout: &mut |line| match (spec.stdout, protocol::parse_line(line)) {
                        (Stdout::Protocol, Some(Ok(msg))) => match msg {
                            Message::Progress {
                                done,
                                total,
                                unit,
                                message,
                            } => events.progress(done, total, unit, message),
                            Message::Log { level, message } => events.log(&level, message),
                            Message::Metric { name, value, step } => {
                                events.metric(&name, value, step)
                            }
                            Message::Result(r) => result = Some(r),
                        },
                        (Stdout::Protocol, Some(Err(e))) => {
                            events.warn(format!("malformed protocol message ({e}): {line}"))
                        }
                        _ => eprintln!("{line}"),
                    },
                    stderr: &mut |line| eprintln!("{line}"),
                    kill_on_cancel: None,
                },
            );
            state.0.lock().unwrap_or_else(|e| e.into_inner()).1 = false;
            state.1.notify_all();
            status
        })?;
        Ok(ExecOutcome {
            code: status.code(),
            signal: status.signal(),
            result,
        })
    }
}

/// Sends SIGTERM to the child's group once `cancel` fires while it runs.
fn stop_on_cancel(cancel: &CancelToken, state: &(Mutex<(Option<i32>, bool)>, Condvar)) {
    let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
    while g.1 {
        if let (Some(pgid), true) = (g.0, cancel.is_cancelled()) {
            signal_group(pgid, libc::SIGTERM);
            return;
        }
        g = state
            .1
            .wait_timeout(g, CANCEL_POLL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
