//! `SlurmError`: what can go wrong between sluice and Slurm, each with the hint a user needs.
//! Executors report through `io::Error`, so each becomes one with the whole message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{program}` is not on PATH\nhint: install Slurm's client commands (`sbatch`, `squeue`, `scancel`, `scontrol`) on this machine, or run without `--executor slurm`")]
    NotInstalled { program: &'static str },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// sbatch's own message, verbatim: it names the bad partition or the GPUs it cannot give.
    #[error("sbatch refused the job: {message}")]
    Refused { message: String },
    #[error("sbatch answered `{output}`, not a job id")]
    NoJobId { output: String },
    #[error("cannot write the job's files in `{}`: {source}", dir.display())]
    JobFiles {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the workspace is not on a filesystem the nodes share: Slurm job {job} ended ({state}) but the file it wrote, `{}`, never appeared here\nhint: put the workspace on the cluster's shared filesystem (NFS, Lustre, GPFS, ...) so that the nodes and this machine see the same `.sluice/` directory", file.display())]
    NotShared {
        job: u64,
        state: String,
        file: PathBuf,
    },
    #[error("the probe job that checks the nodes see the workspace failed: {0}")]
    Probe(String),
    #[error("lost track of Slurm job {0}: the watcher stopped")]
    WatcherGone(u64),
}

impl From<SlurmError> for std::io::Error {
    fn from(e: SlurmError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Runs a Slurm client command to completion, mapping "not installed" to its hint.
pub(super) fn run(
    program: &'static str,
    args: &[String],
) -> Result<std::process::Output, SlurmError> {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SlurmError::NotInstalled { program }
            } else {
                SlurmError::Spawn { program, source }
            }
        })
}
