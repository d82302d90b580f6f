//! [`Staged`]: a stage's outputs, written into its scratch directory first and moved into place
//! together once every one of them has been written.
//!
//! A stage that fails half-way must leave nothing behind that looks like a result. The engine
//! removes the outputs of failed stages too, but a stage should not depend on that: only
//! `commit` touches the real output paths, and it does so with renames. An output may be a file
//! or a directory of files (`dir_for`); both move the same way.

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

/// The most bytes handed to the kernel in one `write`.
const WRITE: usize = 1 << 20;

/// A new file for a large output, written in pieces of at most a mebibyte however large the
/// writes given to it. One large `write` has the kernel put the file's page cache in large
/// folios, which on the virtual machines sluice is measured on costs several times more:
/// 640 MB written in 64 MiB pieces took 0.3–2.7 s, in 1 MiB pieces 0.15–0.25 s.
pub(crate) struct OutputFile(std::fs::File);

impl OutputFile {
    pub(crate) fn create(path: &Path) -> std::io::Result<OutputFile> {
        std::fs::File::create(path).map(OutputFile)
    }
}

impl std::io::Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(&buf[..buf.len().min(WRITE)])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
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

    /// A scratch directory for output `name`, created empty, to be moved to `dest` on commit. The
    /// caller fills it.
    pub(crate) fn dir_for(&mut self, name: &str, dest: &Path) -> Result<PathBuf, StagedError> {
        let tmp = self.path_for(name, dest)?;
        std::fs::create_dir(&tmp).map_err(|source| StagedError::Write {
            path: tmp.display().to_string(),
            source,
        })?;
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
                    remove(done);
                }
            }
            result?;
        }
        Ok(())
    }
}

fn remove(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Copies a file, or a directory and everything in it.
fn copy_all(from: &Path, to: &Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return std::fs::copy(from, to).map(|_| ());
    }
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        copy_all(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
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
        copy_all(tmp, &near)
            .and_then(|_| std::fs::rename(&near, dest))
            .inspect_err(|_| remove(&near))
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

    #[test]
    fn directories_move_with_their_files_and_are_removed_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out/train");
        let mut staged = Staged::new(&dir.path().join("scratch"));
        let tmp = staged.dir_for("train", &dest).unwrap();
        std::fs::write(tmp.join("a.npy"), b"x").unwrap();
        assert!(!dest.exists());
        staged.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("a.npy")).unwrap(), b"x");

        // The second move fails (its scratch file was never written): the first is undone.
        let dest2 = dir.path().join("out2/train");
        let mut staged = Staged::new(&dir.path().join("scratch2"));
        let tmp = staged.dir_for("train", &dest2).unwrap();
        std::fs::write(tmp.join("a.npy"), b"x").unwrap();
        staged
            .path_for("never", &dir.path().join("out2/never"))
            .unwrap();
        assert!(staged.commit().is_err());
        assert!(!dest2.exists());
    }
}
