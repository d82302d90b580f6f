//! `--executor local|slurm` (or `SLUICE_EXECUTOR`): which executor the engine gets, and the
//! defaults that follow from it (`--jobs`, the GPU slots).

use crate::cli::ExecutorArg;
use crate::{report, Failure};
use sluice_runner::exec::slurm::SlurmExecutor;
use sluice_runner::{Engine, Pipeline};
use std::sync::Arc;

/// How many jobs may be in a cluster's queue at once unless `--jobs` says.
const SLURM_JOBS: usize = 100;

/// The executor asked for: `--executor`, else `SLUICE_EXECUTOR`, else local.
pub(crate) fn chosen(arg: Option<ExecutorArg>) -> Result<ExecutorArg, Failure> {
    if let Some(a) = arg {
        return Ok(a);
    }
    match std::env::var("SLUICE_EXECUTOR").as_deref() {
        // `local-remote` is the one-stage mode's debugging executor, chosen where the
        // pipeline is opened: local as far as this choice goes.
        Err(_) | Ok("") | Ok("local") | Ok("local-remote") => Ok(ExecutorArg::Local),
        Ok("slurm") => Ok(ExecutorArg::Slurm),
        Ok(other) => Err(Failure::Invalid(format!(
            "error: {}\n",
            report::with_hint(
                &format!("`SLUICE_EXECUTOR` is `{other}`, which is not an executor"),
                Some("set it to `local` or `slurm`, or unset it")
            )
        ))),
    }
}

/// Gives the engine the executor; Slurm's client must be installed here.
pub(crate) fn install(
    engine: &mut Engine,
    kind: ExecutorArg,
    pipeline: &Pipeline,
) -> Result<(), Failure> {
    if kind == ExecutorArg::Slurm {
        SlurmExecutor::check_installed().map_err(|e| Failure::Invalid(format!("error: {e}\n")))?;
        engine.executor = Arc::new(SlurmExecutor::new(pipeline.slurm_poll));
    }
    Ok(())
}

/// `--jobs`: on a cluster it bounds the jobs in the queue, not this machine's CPUs.
pub(crate) fn jobs(arg: Option<usize>, kind: ExecutorArg) -> usize {
    match (arg, kind) {
        (None, ExecutorArg::Slurm) => SLURM_JOBS,
        _ => crate::jobs(arg),
    }
}

/// The GPU slots to hand out: on a cluster Slurm gives each job its GPUs (`--gres`), so this
/// machine's GPUs are no limit; every GPU stage may hold its count at once.
pub(crate) fn gpus(pipeline: &Pipeline, arg: Option<usize>, kind: ExecutorArg) -> Vec<String> {
    match (arg, kind) {
        (None, ExecutorArg::Slurm) => {
            let n: u32 = pipeline.stages.iter().map(|s| s.gpus).sum();
            (0..n).map(|i| i.to_string()).collect()
        }
        _ => crate::gpus_for(pipeline, arg),
    }
}
