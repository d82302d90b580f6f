//! `StageJob`: what a built-in stage's run needs, written by the submitter as JSON beside the
//! job's other files and read back on the node, within a size bound.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bumped when a field changes meaning, so a node running another sluice refuses the file
/// instead of misreading it.
pub const JOB_FILE_FORMAT: u32 = 1;

/// The most a job file may hold. Its size is the stage's `with:`, params and paths: a few KiB in
/// practice; anything near this is a damaged or foreign file, refused before it is parsed.
pub const MAX_JOB_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Everything [`crate::stage::StageContext`] holds, as data. Paths are absolute: the node sees
/// the workspace at the same place (the shared-filesystem requirement).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageJob {
    pub format: u32,
    pub run_id: String,
    /// The pipeline's `name:`.
    pub pipeline: String,
    pub stage: String,
    /// The built-in kind (`uses:`) and its version as the submitter keyed it: a node whose
    /// binary has another version would compute something the key does not describe.
    pub kind: String,
    pub kind_version: u32,
    /// `with:` as substituted; the node prepares it again through the registry.
    pub with: Json,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub params: BTreeMap<String, Json>,
    /// The clean environment the stage's own child processes get (`StageContext::env`).
    pub env: BTreeMap<String, String>,
    /// The stage's cache key (hex).
    pub key: String,
    pub workspace: PathBuf,
    pub scratch: PathBuf,
    pub gpus: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    #[error("cannot read the stage's job file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the stage's job file `{path}` is over {} MiB; it is not one sluice wrote", MAX_JOB_FILE_BYTES >> 20)]
    TooLarge { path: PathBuf },
    #[error("the stage's job file `{path}` is not a valid job description")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the stage's job file `{path}` has format {found}, this sluice reads format {JOB_FILE_FORMAT}; the node runs another sluice than the submitting machine")]
    Format { path: PathBuf, found: u32 },
    #[error("cannot write the stage's job file `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StageJob {
    /// Writes the job atomically (a node never reads half a file), creating its directory.
    pub fn write(&self, path: &Path) -> Result<(), JobFileError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a job always serializes");
        bytes.push(b'\n');
        crate::atomic::write(path, &bytes).map_err(|source| JobFileError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a job file, refusing one over [`MAX_JOB_FILE_BYTES`] before reading it whole.
    pub fn read(path: &Path) -> Result<StageJob, JobFileError> {
        let read_err = |source| JobFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_JOB_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_JOB_FILE_BYTES {
            return Err(JobFileError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        // The format is checked first, so a newer file says so rather than naming a field.
        let format = serde_json::from_slice::<FormatOnly>(&bytes)
            .map(|f| f.format)
            .unwrap_or(JOB_FILE_FORMAT);
        if format != JOB_FILE_FORMAT {
            return Err(JobFileError::Format {
                path: path.to_path_buf(),
                found: format,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| JobFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> StageJob {
        StageJob {
            format: JOB_FILE_FORMAT,
            run_id: "r1".into(),
            pipeline: "p".into(),
            stage: "clean".into(),
            kind: "clean".into(),
            kind_version: 3,
            with: serde_json::json!({"drop_columns": ["a"]}),
            inputs: [("table".to_string(), PathBuf::from("/w/data.csv"))].into(),
            outputs: [("table".to_string(), PathBuf::from("/w/out.parquet"))].into(),
            params: [("seed".to_string(), serde_json::json!(7))].into(),
            env: [("PATH".to_string(), "/usr/bin".to_string())].into(),
            key: "ab".repeat(32),
            workspace: "/w".into(),
            scratch: "/w/.sluice/tmp/r1/clean".into(),
            gpus: vec!["0".into()],
        }
    }

    #[test]
    fn a_written_job_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slurm/r1/clean/stage.json");
        job().write(&path).unwrap();
        assert_eq!(StageJob::read(&path).unwrap(), job());
    }

    #[test]
    fn oversized_foreign_and_broken_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_JOB_FILE_BYTES + 1).unwrap();
        let e = StageJob::read(&big).unwrap_err().to_string();
        assert!(e.contains("big.json") && e.contains("over 16 MiB"), "{e}");

        let newer = dir.path().join("newer.json");
        let mut v = serde_json::to_value(job()).unwrap();
        v["format"] = 99.into();
        std::fs::write(&newer, v.to_string()).unwrap();
        let e = StageJob::read(&newer).unwrap_err().to_string();
        assert!(
            e.contains("format 99") && e.contains("another sluice"),
            "{e}"
        );

        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"format\": 1, \"stage\": ").unwrap();
        let e = StageJob::read(&broken).unwrap_err();
        assert!(matches!(e, JobFileError::Parse { .. }), "{e}");

        let e = StageJob::read(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }
}
