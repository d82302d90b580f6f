//! [`Staged`]: a stage's outputs, written into its scratch directory first and moved into place
//! together once every one of them has been written.
//!
//! A stage that fails half-way must leave nothing behind that looks like a result. The engine
//! removes the outputs of failed stages too, but a stage should not depend on that: only
//! `commit` touches the real output paths, and it does so with renames.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum StagedError {
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move `{from}` to `{to}`: {source}")]
    Move {
        from: String,
        to: String,
        #[source]
        source: std::io::Error,
    },
}

/// Files waiting in scratch space for their final paths.
pub(crate) struct Staged {
    scratch: PathBuf,
    pending: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    pub(crate) fn new(scratch: &Path) -> Staged {
        Staged {
            scratch: scratch.to_path_buf(),
            pending: Vec::new(),
        }
    }

    /// A scratch path for output `name`, to be moved to `dest` on commit. The caller writes it.
    pub(crate) fn path_for(&mut self, name: &str, dest: &Path) -> Result<PathBuf, StagedError> {
        std::fs::create_dir_all(&self.scratch).map_err(|source| StagedError::Write {
            path: self.scratch.display().to_string(),
            source,
        })?;
        let tmp = self.scratch.join(format!("output-{name}"));
        self.pending.push((tmp.clone(), dest.to_path_buf()));
        Ok(tmp)
    }

    /// Stages `bytes` as output `name`.
    pub(crate) fn write(
        &mut self,
        name: &str,
        dest: &Path,
        bytes: &[u8],
    ) -> Result<(), StagedError> {
        let tmp = self.path_for(name, dest)?;
        std::fs::write(&tmp, bytes).map_err(|source| StagedError::Write {
            path: tmp.display().to_string(),
            source,
        })
    }

    /// Moves every staged file into place; if one move fails, the ones already moved are removed
    /// again. Scratch space and outputs normally share a file system; when they do not, the file
    /// is copied next to its destination and renamed there.
    pub(crate) fn commit(self) -> Result<(), StagedError> {
        for (i, (tmp, dest)) in self.pending.iter().enumerate() {
            let result = move_into_place(tmp, dest);
            if result.is_err() {
                for (_, done) in &self.pending[..i] {
                    let _ = std::fs::remove_file(done);
                }
            }
            result?;
        }
        Ok(())
    }
}

fn move_into_place(tmp: &Path, dest: &Path) -> Result<(), StagedError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| StagedError::Write {
            path: parent.display().to_string(),
            source,
        })?;
    }
    let moved = std::fs::rename(tmp, dest).or_else(|e| {
        if e.kind() != std::io::ErrorKind::CrossesDevices {
            return Err(e);
        }
        let near = sluice_runner::atomic::temp_path_for(dest);
        std::fs::copy(tmp, &near)
            .and_then(|_| std::fs::rename(&near, dest))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&near);
            })
    });
    moved.map_err(|source| StagedError::Move {
        from: tmp.display().to_string(),
        to: dest.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_reaches_the_destination_before_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out/a.json");
        let mut staged = Staged::new(&dir.path().join("scratch"));
        staged.write("a", &dest, b"{}").unwrap();
        assert!(!dest.exists());
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"{}");
    }
}
