//! `SlurmExecutor`: runs a stage's process as a Slurm batch job on a cluster node that sees the
//! workspace through a shared filesystem. `submit` writes the job's wrapper and calls
//! `sbatch`; `watch` follows every job from one thread (status files for completion, `squeue`
//! for the queue, `scontrol` for jobs Slurm ended); `cancel` makes sure nothing sluice submitted
//! outlives it. `execute` blocks its worker until the job ends, like `LocalExecutor`, so the
//! scheduler, the cache and the lock file work exactly as locally. A `local: true` stage runs
//! on this machine through `LocalExecutor`.

mod cancel;
mod errors;
mod submit;
mod watch;

pub use errors::SlurmError;

use super::process::relay_stdout;
use super::{ExecControl, ExecOutcome, Executor, LocalExecutor, ProcessSpec};
use crate::cancel::CancelToken;
use crossbeam_channel::RecvTimeoutError;
use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use watch::{End, Update, Watcher};

pub struct SlurmExecutor {
    poll: Duration,
    local: LocalExecutor,
    watcher: OnceLock<Watcher>,
    submitted: cancel::Submitted,
    /// Each run's probe result, by run id: the first submission of a run checks that the nodes
    /// see the workspace, and every other one of the run waits for that answer.
    probes: Mutex<HashMap<String, Result<(), String>>>,
}

impl SlurmExecutor {
    /// `poll`: how often `squeue` is asked about the live jobs (the pipeline's
    /// `executor.slurm.poll`).
    pub fn new(poll: Duration) -> SlurmExecutor {
        SlurmExecutor {
            poll,
            local: LocalExecutor,
            watcher: OnceLock::new(),
            submitted: cancel::Submitted::default(),
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// Fails early, before any stage, when Slurm's client is not installed here.
    pub fn check_installed() -> Result<(), SlurmError> {
        errors::run("sbatch", &["--version".to_string()]).map(|_| ())
    }

    fn watcher(&self) -> &Watcher {
        self.watcher.get_or_init(|| Watcher::start(self.poll))
    }

    /// Submits one job and waits for its end, passing what it prints to `relay`. A cancelled
    /// token scancels the job; the wait goes on until Slurm has ended it, so that no process of
    /// the stage still writes its outputs when the caller cleans them up.
    fn run_job(
        &self,
        spec: &ProcessSpec,
        facts: &super::JobFacts<'_>,
        name: &str,
        cancel: &CancelToken,
        relay: &mut dyn FnMut(Update),
    ) -> Result<(u64, End), SlurmError> {
        let files = submit::job_dir(facts, name)?;
        let label = format!(
            "stage `{}` of pipeline `{}`, run {}",
            facts.stage, facts.pipeline, facts.run_id
        );
        let script = submit::write_job(&files, spec, facts.gpus, &label)?;
        let args = submit::sbatch_args(facts, &files, &script);
        tracing::debug!(stage = facts.stage, args = ?args, "sbatch");
        let id = submit::sbatch(&args)?;
        self.submitted.add(id);
        relay(Update::Submitted(id));
        let updates = self.watcher().follow(id, files);
        let mut scancelled = false;
        let end = loop {
            match updates.recv_timeout(watch::TICK) {
                Ok(Update::Ended(end)) => break end,
                Ok(u) => relay(u),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.submitted.remove(id);
                    cancel::scancel(&[id]);
                    return Err(SlurmError::WatcherGone(id));
                }
            }
            if cancel.is_cancelled() && !scancelled {
                cancel::scancel(&[id]);
                self.watcher().cancelling(id);
                scancelled = true;
            }
        };
        self.submitted.remove(id);
        Ok((id, end))
    }

    /// The run's probe: a job that writes a file into `.sluice/` (its status file), which this
    /// machine must then see. Done once per run, before its first real job.
    fn probe(&self, ctl: &ExecControl<'_>) -> Result<(), SlurmError> {
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = probes.get(ctl.job.run_id) {
            return done.clone().map_err(SlurmError::Probe);
        }
        let spec = ProcessSpec {
            program: "true".into(),
            args: Vec::new(),
            env: std::env::var("PATH")
                .map(|p| [("PATH".to_string(), p)].into())
                .unwrap_or_default(),
            cwd: ctl.job.workspace.to_path_buf(),
            stdin: None,
            stdout: super::Stdout::Log,
        };
        let facts = super::JobFacts {
            stage: "probe",
            cpus: 1,
            gpus: 0,
            memory: None,
            timeout: None,
            ..ctl.job
        };
        ctl.log
            .line("[slurm] checking that the nodes see the workspace (a probe job)");
        let outcome = match self.run_job(&spec, &facts, ".probe", ctl.cancel, &mut |_| {}) {
            Ok((_, End::Status(0))) => Ok(()),
            Ok((id, End::Status(code))) => Err(format!("job {id} exited with code {code}")),
            Ok((id, End::Vanished { state, .. }))
                if matches!(state.as_str(), "COMPLETED" | "FAILED") =>
            {
                let file = ctl
                    .job
                    .workspace
                    .join(".sluice/slurm")
                    .join(ctl.job.run_id)
                    .join(".probe/status");
                return Err(SlurmError::NotShared {
                    job: id,
                    state,
                    file,
                });
            }
            Ok((id, End::Vanished { state, reason })) => Err(format!(
                "Slurm ended job {id} in state {state} (reason: {reason})"
            )),
            // sbatch refusing says more as itself than as a failed probe.
            Err(e) => return Err(e),
        };
        probes.insert(ctl.job.run_id.to_string(), outcome.clone());
        outcome.map_err(SlurmError::Probe)
    }
}

impl Executor for SlurmExecutor {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> io::Result<ExecOutcome> {
        if ctl.job.slurm.local {
            return self.local.execute(spec, ctl);
        }
        self.probe(ctl)?;
        let mut result = None;
        let mut started = false;
        // No local process group: `on_spawn(0)` tells the scheduler the stage is running, once
        // its job is seen running or writing (its timeout starts then, not while it queued).
        let running = |started: &mut bool| {
            if !std::mem::replace(started, true) {
                (ctl.on_spawn)(0);
            }
        };
        let mut relay = |u: Update| match u {
            Update::Stdout(line) => {
                running(&mut started);
                relay_stdout(spec.stdout, &line, ctl, &mut result)
            }
            Update::Stderr(line) => {
                running(&mut started);
                ctl.log.line(&line)
            }
            Update::Queue { state, detail } => {
                let message = match state.as_str() {
                    "PENDING" => format!("queued {detail}"),
                    "RUNNING" => {
                        running(&mut started);
                        format!("running on {detail}")
                    }
                    other => format!("{} {detail}", other.to_lowercase()),
                };
                ctl.log.line(&format!("[slurm] {message}"));
                ctl.events.progress(0.0, None, None, Some(message));
            }
            Update::Submitted(id) => ctl.log.line(&format!("[slurm] submitted job {id}")),
            Update::Ended(_) => {}
        };
        let (id, end) = self.run_job(spec, &ctl.job, ctl.job.stage, ctl.cancel, &mut relay)?;
        Ok(match end {
            End::Status(code) => ExecOutcome {
                code: Some(code),
                signal: None,
                result,
                lost: None,
            },
            End::Vanished { state, reason } => {
                let message = if ctl.cancel.is_cancelled() {
                    format!("job {id} cancelled ({state})")
                } else {
                    vanished_message(id, &state, &reason)
                };
                ctl.log.line(&format!("[slurm] {message}"));
                ExecOutcome {
                    code: None,
                    signal: None,
                    result,
                    lost: Some(message),
                }
            }
        })
    }

    fn remote(&self) -> bool {
        true
    }
}

impl Drop for SlurmExecutor {
    fn drop(&mut self) {
        self.submitted.cancel_all();
    }
}

/// Why a job ended without its process's exit status, in Slurm's words and ours.
fn vanished_message(id: u64, state: &str, reason: &str) -> String {
    let why = match state {
        "TIMEOUT" => " (it reached its --time limit)",
        "CANCELLED" => " (cancelled outside sluice, e.g. by scancel)",
        "NODE_FAIL" => " (its node failed)",
        "PREEMPTED" => " (preempted by another job)",
        "OUT_OF_MEMORY" => " (it used more memory than it asked for; raise `resources.memory`)",
        "BOOT_FAIL" => " (its node failed to boot)",
        "DEADLINE" => " (it reached its deadline)",
        _ => "",
    };
    let reason = if reason.is_empty() || reason == "None" {
        String::new()
    } else {
        format!(", reason {reason}")
    };
    format!("Slurm ended job {id} in state {state}{why}{reason}")
}
