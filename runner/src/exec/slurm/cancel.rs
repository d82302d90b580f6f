//! `Submitted`: every job this sluice has in the queue. A job leaves the set when it has ended;
//! whatever is left when the executor is dropped is `scancel`led, and each job is also
//! registered with the guardian (`exec::guard`), which runs `scancel` for it if sluice dies
//! without getting that far (SIGKILL included).

use super::errors;
use crate::exec::guard;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Submitted {
    live: Mutex<BTreeMap<u64, guard::TrackedJob>>,
}

impl Submitted {
    pub(super) fn add(&self, job: u64) {
        let tracked = guard::track_slurm_job(job);
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, tracked);
    }

    /// The job has ended: nothing to cancel any more.
    pub(super) fn remove(&self, job: u64) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job);
    }

    pub(super) fn cancel_all(&self) {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        let ids: Vec<u64> = live.keys().copied().collect();
        scancel(&ids);
    }
}

/// Asks Slurm to cancel jobs. Failures are only logged: a job that already ended cannot be
/// cancelled, and there is nothing better to do about a controller that does not answer.
pub(super) fn scancel(ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let args: Vec<String> = ids.iter().map(u64::to_string).collect();
    match errors::run("scancel", &args) {
        Ok(out) if !out.status.success() => tracing::warn!(
            jobs = ?ids,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "scancel failed"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(jobs = ?ids, error = %e, "cannot run scancel"),
    }
}
