//! `Workers`: the fixed pool of `--jobs` threads that run jobs for the dispatcher. Each takes a
//! `Job`, runs it through `job::run_job` and reports back on the message channel.

use crate::job::{run_job, Job, JobMsg, JobResult, RunCtx};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The fixed pool of worker threads that run jobs, and the channels to and from them.
pub(super) struct Workers {
    pub(super) jobs: Sender<Job>,
    pub(super) msgs: Receiver<JobMsg>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(super) fn spawn(ctx: &Arc<RunCtx>, jobs: usize) -> Workers {
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (msg_tx, msg_rx) = crossbeam_channel::unbounded::<JobMsg>();
        // Enough workers for every stage that could join the run: a `Control::Rerun` can grow
        // the selection, so it is the pipeline, not the selection, that bounds the pool.
        let threads = (0..jobs.min(ctx.pipeline.stages.len().max(1)))
            .map(|slot| {
                let ctx = ctx.clone();
                let rx = job_rx.clone();
                let tx = msg_tx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        // A panic in stage code must not end the worker: its stage would never be
                        // reported done and the dispatcher would wait for it forever.
                        let result = crate::panics::catch(|| run_job(&ctx, &job, slot, &tx))
                            .unwrap_or_else(|message| JobResult::Failed {
                                error: message.into(),
                                log_tail: Vec::new(),
                            });
                        let _ = tx.send(JobMsg::Done {
                            idx: job.idx,
                            result: Box::new(result),
                        });
                    }
                })
            })
            .collect();
        Workers {
            jobs: job_tx,
            msgs: msg_rx,
            threads,
        }
    }

    /// Closes the job queue and waits for every worker to finish its job and leave.
    pub(super) fn join(self) {
        drop(self.jobs);
        for w in self.threads {
            let _ = w.join();
        }
    }
}
