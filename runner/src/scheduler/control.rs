//! Requests that reach a running dispatch from outside: `sluice watch` reruns or withdraws
//! stages whose inputs or definitions changed, `sluice sweep` prunes trials its stopping rule
//! gave up on. The `Dispatcher` methods here are called from its loop only, so run state keeps
//! one writer.

use super::stop::cancel_one;
use super::{pruned_message, Dispatcher};
use crate::cancel::CancelReason;
use crate::events::Outcome;
use crate::job::JobResult;
use std::collections::BTreeSet;
use std::time::Instant;

/// Requests from outside a run while it is going (`sluice watch`, `sluice sweep`), delivered to
/// the dispatch loop like signals and completions. Stages are indices of the run's pipeline; the
/// dispatcher takes their downstream closure itself, so a request never leaves a dependent
/// behind.
#[derive(Debug, Clone)]
pub enum Control {
    /// The stages' inputs changed: stop the running ones (process groups killed, partial outputs
    /// dropped) and run them all again in this run, after their upstream. Stages outside the
    /// selection join it. Unaffected running stages carry on.
    Rerun(BTreeSet<usize>),
    /// Stop the stages and drop them from this run without a verdict (their definitions changed,
    /// so the caller runs them in a later run with the new pipeline).
    Withdraw(BTreeSet<usize>),
    /// Give up on the stages without failing the run, each with why (shown after `pruned: `):
    /// running ones are stopped like a cancellation (process group stopped, partial outputs
    /// dropped, nothing cached or locked) and reported `Outcome::Pruned`; ones not started yet
    /// are reported pruned without running. Their downstream is skipped. Stages already
    /// finished are left alone, and so is everything once the run is stopping: its stop already
    /// decides what becomes of them.
    Prune(Vec<(usize, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Supersede {
    Rerun,
    Withdraw,
}

impl Dispatcher {
    /// Applies a `Control` request. Only the dispatch loop calls this, so run state still has
    /// one writer.
    pub(super) fn control(&mut self, c: Control) {
        let graph = &self.ctx.pipeline.graph;
        let (set, how) = match c {
            Control::Rerun(s) => (graph.downstream_closure(&s), Supersede::Rerun),
            Control::Withdraw(s) => (graph.downstream_closure(&s), Supersede::Withdraw),
            Control::Prune(stages) => return self.prune(stages),
        };
        if self.stop.is_some() {
            // The run is winding down and starts nothing new; the caller reruns these later.
            if how == Supersede::Rerun {
                self.deferred.extend(set);
            }
            return;
        }
        let grace = self.opts.kill_grace;
        for &i in &set {
            self.waiting.remove(&i);
            self.ready.retain(|&(_, j)| j != i);
            self.done.remove(&i);
            if let Some(r) = self.running.get_mut(&i) {
                cancel_one(r, CancelReason::Superseded, grace);
                self.superseded.insert(i, how);
            }
            match how {
                Supersede::Rerun => {
                    self.opts.selection.insert(i);
                }
                Supersede::Withdraw => {
                    self.opts.selection.remove(&i);
                }
            }
        }
        if how == Supersede::Rerun {
            let order: Vec<usize> = graph
                .topo_order()
                .iter()
                .copied()
                .filter(|i| set.contains(i) && !self.running.contains_key(i))
                .collect();
            for i in order {
                self.enqueue(i);
            }
        }
    }

    /// `Control::Prune`. A running stage's verdict comes when its job ends (`job_done`); a
    /// timeout or a supersede given first keeps its own.
    fn prune(&mut self, stages: Vec<(usize, String)>) {
        if self.stop.is_some() {
            return;
        }
        let grace = self.opts.kill_grace;
        for (i, why) in stages {
            if !self.opts.selection.contains(&i)
                || self.done.contains_key(&i)
                || self.superseded.contains_key(&i)
                || self.pruning.contains_key(&i)
            {
                continue;
            }
            if let Some(r) = self.running.get_mut(&i) {
                cancel_one(r, CancelReason::Pruned, grace);
                if r.cancel.reason() == Some(CancelReason::Pruned) {
                    self.pruning.insert(i, why);
                }
                continue;
            }
            self.waiting.remove(&i);
            self.ready.retain(|&(_, j)| j != i);
            self.finish(
                i,
                Outcome::Pruned,
                Instant::now(),
                Some(pruned_message(Some(&why), "; not started").into()),
                Vec::new(),
            );
            self.skip_downstream(i, "was pruned");
        }
    }

    /// Puts a stage back into the run: ready, waiting for its upstream, or skipped when an
    /// upstream stage of this run has already failed.
    fn enqueue(&mut self, i: usize) {
        let deps: Vec<usize> = self
            .ctx
            .pipeline
            .graph
            .deps(i)
            .filter(|d| self.opts.selection.contains(d))
            .collect();
        if let Some((&failed, r)) = deps.iter().find_map(|d| {
            self.done
                .get(d)
                .map(|r| (d, r))
                .filter(|(_, r)| !r.outcome.is_success())
        }) {
            let what = if r.outcome == Outcome::Pruned {
                "was pruned"
            } else {
                "did not succeed"
            };
            let failed = self.ctx.pipeline.stages[failed].id.0.clone();
            self.finish(
                i,
                Outcome::Skipped,
                Instant::now(),
                Some(format!("upstream `{failed}` {what}").into()),
                Vec::new(),
            );
            return;
        }
        let n = deps.iter().filter(|d| !self.done.contains_key(d)).count();
        if n == 0 {
            self.ready.insert((self.position[&i], i));
        } else {
            self.waiting.insert(i, n);
        }
    }

    /// A stage stopped by a `Control` has ended. Its verdict is reported (a result that made it
    /// out before the stop is still valid for its own key, so it is recorded), but it does not
    /// count for this run: it is run again, or dropped. Its dependents were taken back by the
    /// same request, so nothing waits on it.
    pub(super) fn superseded_done(
        &mut self,
        idx: usize,
        how: Supersede,
        started: Instant,
        result: JobResult,
    ) {
        let name = self.ctx.pipeline.stages[idx].id.0.clone();
        let (outcome, message) = match result {
            JobResult::UpToDate(c) => {
                self.record(&name, Some(c));
                (Outcome::UpToDate, None)
            }
            JobResult::Restored(c) => {
                self.record(&name, Some(c));
                (Outcome::Restored, None)
            }
            JobResult::Ran(c, cached) => {
                self.record(&name, cached.then_some(c));
                (Outcome::Ran, None)
            }
            JobResult::Failed { error, .. } => (Outcome::Failed, Some(error)),
            JobResult::Cancelled { .. } => (
                Outcome::Cancelled,
                Some(
                    match how {
                        Supersede::Rerun => {
                            "inputs changed; partial outputs removed, starting again"
                        }
                        Supersede::Withdraw => "definition changed; partial outputs removed",
                    }
                    .into(),
                ),
            ),
        };
        self.finish(idx, outcome, started, message, Vec::new());
        self.done.remove(&idx);
        match (how, self.stop) {
            (Supersede::Rerun, None) => self.enqueue(idx),
            (Supersede::Rerun, Some(_)) => {
                self.deferred.insert(idx);
            }
            (Supersede::Withdraw, _) => {}
        }
    }
}
