//! `Workers`: the fixed pool of `--jobs` threads that run jobs. Each takes a `Job`, runs it
//! through `job::run_job`, then records its end in the shared run state itself and starts what
//! became ready, keeping the first such job for itself: a stage's end wakes no other thread
//! (in a chain of stages, the next one starts on the same thread), and the loop on the calling
//! thread is woken only when it has something to do.

use super::{lock, Dispatcher};
use crate::job::{run_job, Job, JobMsg, JobResult, RunCtx};
use crossbeam_channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The worker threads and the channel on which they wake the calling thread's loop.
pub(super) struct Workers {
    pub(super) msgs: Receiver<JobMsg>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(super) fn spawn(
        ctx: &Arc<RunCtx>,
        shared: &Arc<Mutex<Dispatcher>>,
        jobs: Receiver<Job>,
    ) -> Workers {
        let (msg_tx, msg_rx) = crossbeam_channel::unbounded::<JobMsg>();
        let n = lock(shared).jobs;
        // Enough workers for every stage that could join the run: a `Control::Rerun` can grow
        // the selection, so it is the pipeline, not the selection, that bounds the pool.
        let threads = (0..n.min(ctx.pipeline.stages.len().max(1)))
            .map(|slot| {
                let ctx = ctx.clone();
                let shared = shared.clone();
                let rx = jobs.clone();
                let tx = msg_tx.clone();
                std::thread::spawn(move || work(&ctx, &shared, slot, &rx, &tx))
            })
            .collect();
        Workers {
            msgs: msg_rx,
            threads,
        }
    }

    /// Waits for every worker to finish its job and leave (the job queue must be closed).
    pub(super) fn join(self) {
        for w in self.threads {
            let _ = w.join();
        }
    }
}

fn work(
    ctx: &RunCtx,
    shared: &Mutex<Dispatcher>,
    slot: usize,
    jobs: &Receiver<Job>,
    wake: &Sender<JobMsg>,
) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        // A panic in stage code must not end the worker: its stage would never be reported
        // done and the run would wait for it forever.
        let result =
            crate::panics::catch(|| run_job(ctx, &job, slot, wake)).unwrap_or_else(|message| {
                JobResult::Failed {
                    error: message.into(),
                    log_tail: Vec::new(),
                }
            });
        let (over, deadlines) = {
            let mut d = lock(shared);
            d.job_done(job.idx, result);
            let step = d.step(true);
            next = step.kept;
            (step.over, d.has_deadlines())
        };
        if over || deadlines {
            let _ = wake.send(JobMsg::Wake);
        }
    }
}
