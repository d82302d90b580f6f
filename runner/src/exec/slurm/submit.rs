//! Submitting one process as a Slurm job: its directory under `.sluice/slurm/<run-id>/`, the
//! wrapper `job.sh` that runs it there with exactly its environment and writes its exit status,
//! the `sbatch` command line (resources, time limit, partition and the pipeline's extra
//! arguments), and the job id sbatch answers.

use super::errors::{self, SlurmError};
use crate::exec::{JobFacts, ProcessSpec};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Added to a stage's timeout for `--time`: the stage's own timeout is enforced by sluice (it
/// cancels the job and reports a timeout), so Slurm's limit only has to catch what sluice did
/// not, and must not fire first. `--time` counts whole minutes, rounded up after adding this.
pub(super) const TIME_GRACE: Duration = Duration::from_secs(60);

/// The files of one job, all in its directory.
pub(super) struct JobFiles {
    pub dir: PathBuf,
}

impl JobFiles {
    pub(super) fn status(&self) -> PathBuf {
        self.dir.join("status")
    }
    pub(super) fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }
    pub(super) fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }
    /// What Slurm itself writes for the job (`slurmstepd`'s "CANCELLED DUE TO TIME LIMIT").
    pub(super) fn slurm_out(&self) -> PathBuf {
        self.dir.join("slurm.out")
    }
}

/// A fresh directory for one job of `stage`: `.sluice/slurm/<run-id>/<stage>`, or
/// `<stage>.2`, `.3`... when the stage submits more than one process.
pub(super) fn job_dir(facts: &JobFacts<'_>, stage: &str) -> Result<JobFiles, SlurmError> {
    let base = facts
        .workspace
        .join(".sluice")
        .join("slurm")
        .join(facts.run_id);
    let files_err = |dir: &Path, source| SlurmError::JobFiles {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&base).map_err(|e| files_err(&base, e))?;
    for n in 1u32.. {
        let name = if n == 1 {
            stage.to_string()
        } else {
            format!("{stage}.{n}")
        };
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(JobFiles { dir }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(files_err(&dir, e)),
        }
    }
    unreachable!("some directory name is free")
}

/// Writes the job's stdin (if any) and its wrapper, `job.sh`.
pub(super) fn write_job(
    files: &JobFiles,
    spec: &ProcessSpec,
    gpus: u32,
    label: &str,
) -> Result<PathBuf, SlurmError> {
    let err = |source| SlurmError::JobFiles {
        dir: files.dir.clone(),
        source,
    };
    let stdin = match &spec.stdin {
        Some(bytes) => {
            let p = files.dir.join("stdin");
            std::fs::write(&p, bytes).map_err(err)?;
            p
        }
        None => PathBuf::from("/dev/null"),
    };
    let script = files.dir.join("job.sh");
    crate::atomic::write(
        &script,
        wrapper(files, spec, gpus, &stdin, label).as_bytes(),
    )
    .map_err(err)?;
    Ok(script)
}

/// The wrapper: enters the stage's directory, runs the program under `env -i` with exactly the
/// stage's environment (as locally: nothing is inherited, except the GPUs Slurm assigned), and
/// writes the exit status to `status` through a rename, so the watcher never reads half of it.
/// A job that ends without a status file was ended by Slurm (time limit, scancel, node
/// failure), and the watcher asks Slurm why.
fn wrapper(files: &JobFiles, spec: &ProcessSpec, gpus: u32, stdin: &Path, label: &str) -> String {
    let q = |p: &Path| quote(&p.display().to_string());
    let status = files.status();
    let tmp = files.dir.join("status.tmp");
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/sh");
    let _ = writeln!(s, "# Written by sluice for {label}.");
    let _ = writeln!(
        s,
        "st() {{ printf '%s\\n' \"$1\" > {} && mv -f {} {}; }}",
        q(&tmp),
        q(&tmp),
        q(&status)
    );
    let _ = writeln!(
        s,
        "cd {} || {{ echo \"sluice: cannot enter {} on $(hostname)\" >&2; st 127; exit 0; }}",
        q(&spec.cwd),
        spec.cwd.display()
    );
    let mut line = String::from("env -i");
    for (k, v) in &spec.env {
        line.push_str(" \\\n  ");
        if k == "CUDA_VISIBLE_DEVICES" && gpus > 0 {
            // The devices Slurm gave this job, not the submitter's numbering.
            line.push_str("CUDA_VISIBLE_DEVICES=\"${CUDA_VISIBLE_DEVICES-}\"");
        } else {
            line.push_str(&quote(&format!("{k}={v}")));
        }
    }
    line.push_str(" \\\n  ");
    line.push_str(&quote(&spec.program));
    for a in &spec.args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let _ = writeln!(
        s,
        "{line} \\\n  < {} > {} 2> {}",
        q(stdin),
        q(&files.stdout()),
        q(&files.stderr())
    );
    let _ = writeln!(s, "st $?");
    s
}

/// Single-quotes a word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// sbatch's arguments for the job: everything sluice knows about the stage, then the pipeline's
/// own `sbatch_args`, which come last so that they win (sbatch takes the last of a repeated
/// option).
pub(super) fn sbatch_args(facts: &JobFacts<'_>, files: &JobFiles, script: &Path) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=sluice:{}:{}", facts.pipeline, facts.stage),
        format!("--output={}", files.slurm_out().display()),
        format!("--chdir={}", files.dir.display()),
        // A preempted job that came back would run a second time behind sluice's back.
        "--no-requeue".to_string(),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", facts.cpus.max(1)),
    ];
    if let Some(bytes) = facts.memory {
        a.push(format!("--mem={}M", bytes.div_ceil(1 << 20)));
    }
    if facts.gpus > 0 {
        a.push(format!("--gres=gpu:{}", facts.gpus));
    }
    if let Some(t) = facts.timeout {
        a.push(format!("--time={}", time_minutes(t)));
    }
    let s = facts.slurm;
    for (flag, v) in [
        ("partition", &s.partition),
        ("account", &s.account),
        ("qos", &s.qos),
    ] {
        if let Some(v) = v {
            a.push(format!("--{flag}={v}"));
        }
    }
    a.extend(s.sbatch_args.iter().cloned());
    a.push(script.display().to_string());
    a
}

/// `--time` in whole minutes: the timeout plus [`TIME_GRACE`], rounded up.
pub(super) fn time_minutes(timeout: Duration) -> u64 {
    (timeout + TIME_GRACE).as_secs().div_ceil(60).max(1)
}

/// Runs sbatch; its refusal comes back verbatim.
pub(super) fn sbatch(args: &[String]) -> Result<u64, SlurmError> {
    let out = errors::run("sbatch", args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr.trim();
        return Err(SlurmError::Refused {
            message: if message.is_empty() {
                format!("it exited with {} and said nothing", out.status)
            } else {
                message.to_string()
            },
        });
    }
    parse_job_id(&stdout).ok_or_else(|| SlurmError::NoJobId {
        output: stdout.trim().to_string(),
    })
}

/// `--parsable` prints `ID` or `ID;CLUSTER`.
pub(super) fn parse_job_id(stdout: &str) -> Option<u64> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.split(';').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::SlurmJob;

    #[test]
    fn job_ids_are_read_with_or_without_a_cluster() {
        assert_eq!(parse_job_id("123\n"), Some(123));
        assert_eq!(parse_job_id("77;cluster\n"), Some(77));
        assert_eq!(parse_job_id("Submitted batch job 5"), None);
        assert_eq!(parse_job_id(""), None);
    }

    #[test]
    fn time_adds_the_grace_and_rounds_up_to_minutes() {
        assert_eq!(time_minutes(Duration::from_secs(1)), 2);
        assert_eq!(time_minutes(Duration::from_secs(60)), 2);
        assert_eq!(time_minutes(Duration::from_secs(61)), 3);
        assert_eq!(time_minutes(Duration::from_secs(3600)), 61);
    }

    #[test]
    fn resources_map_to_sbatch_flags_and_extra_arguments_come_last() {
        let slurm = SlurmJob {
            local: false,
            partition: Some("gpu".into()),
            account: None,
            qos: Some("high".into()),
            sbatch_args: vec!["--constraint=a100".into(), "--partition=other".into()],
        };
        let facts = JobFacts {
            stage: "train",
            pipeline: "iris",
            run_id: "r1",
            workspace: Path::new("/ws"),
            cpus: 4,
            gpus: 2,
            memory: Some(3 << 30),
            timeout: Some(Duration::from_secs(90)),
            slurm: &slurm,
        };
        let files = JobFiles {
            dir: "/ws/.sluice/slurm/r1/train".into(),
        };
        let a = sbatch_args(&facts, &files, Path::new("/ws/job.sh"));
        for want in [
            "--job-name=sluice:iris:train",
            "--cpus-per-task=4",
            "--mem=3072M",
            "--gres=gpu:2",
            "--time=3",
            "--partition=gpu",
            "--qos=high",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("--account")));
        let n = a.len();
        assert_eq!(
            &a[n - 3..],
            ["--constraint=a100", "--partition=other", "/ws/job.sh"]
        );
    }

    #[test]
    fn the_wrapper_quotes_everything_and_keeps_slurms_gpus() {
        let spec = ProcessSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "echo 'hi'".into()],
            env: [
                ("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string()),
                ("X".to_string(), "a b".to_string()),
            ]
            .into(),
            cwd: "/ws".into(),
            stdin: None,
            stdout: crate::exec::Stdout::Log,
        };
        let files = JobFiles {
            dir: "/ws/.sluice/slurm/r1/s".into(),
        };
        let w = wrapper(&files, &spec, 1, Path::new("/dev/null"), "stage `s`");
        assert!(w.contains(r#"CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}""#));
        assert!(w.contains("'X=a b'"));
        assert!(w.contains(r"'sh' '-c' 'echo '\''hi'\'''"));
        let w = wrapper(&files, &spec, 0, Path::new("/dev/null"), "stage `s`");
        assert!(w.contains("'CUDA_VISIBLE_DEVICES=0'"));
    }
}
