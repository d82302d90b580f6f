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
    // The stage's outputs are staged beside their destinations: say so, as the submitting run does.
    crate::atomic::announce_temporaries_in(&job.workspace.join(".sluice").join("writers"));
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
            lost: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::protocol::{parse_line, Message, ResultMsg};
    use crate::onestage::{StageJob, JOB_FILE_FORMAT};
    use crate::stage::{ConfigProblem, Prepared, Stage};
    use std::sync::Arc;

    /// Writes `with.text` to its output `out`, reporting along the way; refuses a `with:`
    /// without `text`, and panics on `text: "panic"`.
    struct Write;

    impl Stage for Write {
        fn kind(&self) -> &'static str {
            "write"
        }
        fn version(&self) -> u32 {
            2
        }
        fn outputs(&self) -> &'static [&'static str] {
            &["out"]
        }
        fn prepare(&self, with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
            match with["text"].as_str() {
                Some(t) => Ok(Prepared::new(t.to_string())),
                None => Err(vec![ConfigProblem {
                    path: vec!["text".into()],
                    message: "needs a string".into(),
                    help: None,
                    at_key: false,
                }]),
            }
        }
        fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
            let text = ctx.config::<String>()?;
            if text == "panic" {
                panic!("asked to");
            }
            ctx.events
                .progress(1.0, Some(2.0), Some("steps".into()), None);
            ctx.events
                .log("info", format!("writing for {}", ctx.pipeline));
            ctx.events.metric("loss", f64::INFINITY, Some(1));
            ctx.events.warn("careful");
            std::fs::write(&ctx.outputs["out"], text).map_err(|e| e.to_string())?;
            if text == "fail" {
                return Err(StageError::new("it failed").hint("do not ask it to"));
            }
            Ok(())
        }
    }

    fn registry() -> StageRegistry {
        let mut r = StageRegistry::default();
        r.register(Arc::new(Write));
        r
    }

    /// Runs a job for `with` (the kind and version changed by `edit`), returning the exit
    /// status and the protocol messages printed.
    fn run(with: serde_json::Value, edit: impl FnOnce(&mut StageJob)) -> (bool, Vec<Message>) {
        let dir = tempfile::tempdir().unwrap();
        let mut job = StageJob {
            format: JOB_FILE_FORMAT,
            run_id: "r".into(),
            pipeline: "p".into(),
            stage: "s".into(),
            kind: "write".into(),
            kind_version: 2,
            with,
            inputs: Default::default(),
            outputs: [("out".to_string(), dir.path().join("out.txt"))].into(),
            params: Default::default(),
            env: Default::default(),
            key: "k".into(),
            workspace: dir.path().to_path_buf(),
            scratch: dir.path().join("scratch"),
            gpus: Vec::new(),
        };
        edit(&mut job);
        let path = dir.path().join("stage.json");
        job.write(&path).unwrap();
        let mut out = Vec::new();
        let ok = run_on_node(&registry(), &path, &CancelToken::default(), &mut out);
        let messages = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| parse_line(l).expect("a protocol line").expect("valid"))
            .collect();
        (ok, messages)
    }

    fn result(messages: &[Message]) -> &ResultMsg {
        match messages.last() {
            Some(Message::Result(r)) => r,
            other => panic!("the last line is not the result: {other:?}"),
        }
    }

    #[test]
    fn a_stage_reports_through_the_protocol_and_ends_with_its_result() {
        let (ok, messages) = run(serde_json::json!({"text": "hi"}), |_| {});
        assert!(ok);
        assert!(result(&messages).is_ok());
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(matches!(&messages[0], Message::Progress { done, .. } if *done == 1.0));
        assert!(matches!(&messages[1], Message::Log { message, .. } if message == "writing for p"));
        assert!(
            matches!(&messages[2], Message::Metric { value, step: Some(1), .. } if value.is_infinite())
        );
        assert!(matches!(&messages[3], Message::Log { level, .. } if level == "warning"));
    }

    #[test]
    fn failures_are_the_result_message_with_their_hint() {
        let (ok, messages) = run(serde_json::json!({"text": "fail"}), |_| {});
        assert!(!ok);
        let r = result(&messages);
        assert_eq!(r.message.as_deref(), Some("it failed"));
        assert_eq!(r.hint.as_deref(), Some("do not ask it to"));

        let (ok, messages) = run(serde_json::json!({"text": "panic"}), |_| {});
        assert!(!ok);
        let m = result(&messages).message.clone().unwrap();
        assert!(m.starts_with("panicked: asked to"), "{m}");
    }

    #[test]
    fn a_with_the_node_refuses_or_another_binary_is_a_failed_result() {
        let (ok, messages) = run(serde_json::json!({"text": 3}), |_| {});
        assert!(!ok);
        let m = result(&messages).message.clone().unwrap();
        assert!(
            m.contains("stage `s`") && m.contains("`with.text`: needs a string"),
            "{m}"
        );

        let (_, messages) = run(serde_json::json!({"text": "hi"}), |j| j.kind_version = 1);
        let m = result(&messages).message.clone().unwrap();
        assert!(m.contains("version 2 on this node but 1"), "{m}");

        let (_, messages) = run(serde_json::json!({}), |j| j.kind = "nope".into());
        let r = result(&messages);
        assert!(r.message.as_deref().unwrap().contains("`nope`"), "{r:?}");
        assert!(r.hint.as_deref().unwrap().contains("same sluice"), "{r:?}");
    }

    #[test]
    fn an_unreadable_job_file_is_a_failed_result_naming_it() {
        let mut out = Vec::new();
        let ok = run_on_node(
            &registry(),
            Path::new("/nonexistent/stage.json"),
            &CancelToken::default(),
            &mut out,
        );
        assert!(!ok);
        let text = String::from_utf8(out).unwrap();
        match parse_line(text.trim()) {
            Some(Ok(Message::Result(r))) => {
                assert!(r.message.unwrap().contains("/nonexistent/stage.json"))
            }
            other => panic!("{other:?}"),
        }
    }
}
