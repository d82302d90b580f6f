//! Stopping stages: Ctrl-C and SIGTERM (the first stops the run gracefully, the next kills),
//! timeouts, and the escalation from SIGTERM to SIGKILL after the grace period, with the
//! deadlines that the loop on the calling thread (`scheduler::run`) wakes up for.

use super::{Dispatcher, Running};
use crate::cancel::CancelReason;
use crate::events::Event;
use crate::exec::signal_group;
use std::time::{Duration, Instant};

impl Dispatcher {
    /// Whether a running stage has a timeout or a kill pending, which the loop on the calling
    /// thread must wake up for.
    pub(super) fn has_deadlines(&self) -> bool {
        self.running
            .values()
            .any(|r| r.deadline.is_some() || r.kill_at.is_some())
    }

    /// How long the loop may wait for a message before a timeout or a kill is due.
    pub(super) fn until_next_deadline(&self) -> Duration {
        self.running
            .values()
            .flat_map(|r| [r.deadline, r.kill_at])
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600))
    }

    /// SIGINT or SIGTERM: the first stops the run gracefully, the next kills what still runs.
    pub(super) fn signalled(&mut self) {
        let reason = if self.stop >= Some(CancelReason::Interrupt) {
            CancelReason::ForceKill
        } else {
            CancelReason::Interrupt
        };
        self.stop = Some(reason);
        self.cancel_all(reason);
    }

    pub(super) fn cancel_all(&mut self, reason: CancelReason) {
        let grace = self.opts.kill_grace;
        for r in self.running.values_mut() {
            cancel_one(r, reason, grace);
        }
    }

    pub(super) fn check_deadlines(&mut self) {
        let now = Instant::now();
        let grace = self.opts.kill_grace;
        let mut timed_out = Vec::new();
        for (idx, r) in self.running.iter_mut() {
            if r.deadline.is_some_and(|t| t <= now) {
                r.deadline = None;
                cancel_one(r, CancelReason::TimedOut, grace);
                // A stage already being stopped for another reason keeps that reason.
                if r.cancel.reason() == Some(CancelReason::TimedOut) {
                    timed_out.push(*idx);
                }
            }
            if r.kill_at.is_some_and(|k| k <= now) {
                r.kill_at = None;
                if let Some(pgid) = r.group.get() {
                    signal_group(pgid, libc::SIGKILL);
                }
            }
        }
        for idx in timed_out {
            let _ = self.ctx.events.send(Event::Warning {
                stage: Some(self.ctx.pipeline.stages[idx].id.0.clone()),
                message: "timeout reached; stopping the stage".into(),
            });
        }
    }
}

/// Starts stopping one running stage: the token for in-process stages, SIGTERM (or SIGKILL) for
/// a process group, with SIGKILL scheduled after the grace period.
pub(super) fn cancel_one(r: &mut Running, reason: CancelReason, grace: Duration) {
    r.cancel.cancel(reason);
    if let Some(pgid) = r.group.get() {
        if reason == CancelReason::ForceKill {
            signal_group(pgid, libc::SIGKILL);
            r.kill_at = None;
        } else {
            signal_group(pgid, libc::SIGTERM);
            if r.kill_at.is_none() {
                r.kill_at = Instant::now().checked_add(grace);
            }
        }
    }
}
