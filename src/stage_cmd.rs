//! `sluice __stage JOB.json`: one built-in stage, run where an executor started it (a cluster
//! node), with its events as plugin-protocol lines on stdout (`sluice_runner::onestage`). Also
//! the hidden executor switch that runs built-in stages this way on this machine.

use sluice_runner::cancel::{CancelReason, CancelToken};
use sluice_runner::exec::RemoteLocalExecutor;
use sluice_runner::Engine;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The hidden switch: `SLUICE_EXECUTOR=local-remote` runs every built-in stage as a
/// `sluice __stage` process on this machine, exactly as a cluster executor would on a node, to
/// test and debug that path without a cluster.
const EXECUTOR_VAR: &str = "SLUICE_EXECUTOR";
const LOCAL_REMOTE: &str = "local-remote";

pub(crate) fn choose_debug_executor(engine: &mut Engine) {
    if std::env::var(EXECUTOR_VAR).is_ok_and(|v| v == LOCAL_REMOTE) {
        engine.executor = Arc::new(RemoteLocalExecutor);
    }
}

/// Runs the stage; exit 0 when it succeeded, 1 when not (the reason is in the `result` line).
/// SIGTERM (what `scancel` and the local scheduler send first) and SIGINT cancel the stage, which
/// stops its child processes and returns; a stage that does not stop is killed by whoever sent
/// the signal, after their grace period.
pub(crate) fn run_stage(job: &Path) -> Result<ExitCode, crate::Failure> {
    let cancel = CancelToken::default();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let handle = signals.handle();
    let token = cancel.clone();
    let thread = std::thread::spawn(move || {
        for _ in signals.forever() {
            token.cancel(CancelReason::Interrupt);
        }
    });
    let registry = sluice_stages::registry();
    let ok = sluice_runner::onestage::run_on_node(&registry, job, &cancel, &mut std::io::stdout());
    handle.close();
    let _ = thread.join();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
