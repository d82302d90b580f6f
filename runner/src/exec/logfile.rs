//! `StageLog`: a stage's log file, capped so a chatty stage cannot fill the disk, keeping the last
//! lines in memory for the failure message.
//!
//! The file is made only when there is something to keep: on the first line the stage itself
//! writes, or when it fails ([`StageLog::keep`]). A silent stage that succeeds leaves none; on
//! ext4 the inode allocation of a file per stage was a large part of a cold run's cost. sluice's
//! own lines ([`StageLog::note`]) wait in memory until then, so a file always starts with them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes a single stage may write to its log before the rest is dropped.
pub const LOG_CAP_BYTES: u64 = 16 * 1024 * 1024;
const TAIL_LINES: usize = 20;

pub struct StageLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

enum Sink {
    /// Not created yet: sluice's lines so far, written first when it is.
    Pending(Vec<String>),
    Open(File),
    /// Creating it failed (said once, through tracing); lines still reach the tail.
    Failed,
}

struct Inner {
    file: Sink,
    written: u64,
    truncated: bool,
    tail: VecDeque<String>,
}

impl StageLog {
    /// A log at `path` whose file, once made, starts with `header`. Nothing is created yet.
    pub fn new(path: &Path, header: String) -> StageLog {
        let mut log = Inner {
            file: Sink::Pending(Vec::new()),
            written: 0,
            truncated: false,
            tail: VecDeque::new(),
        };
        log.push(&header);
        StageLog {
            path: path.to_path_buf(),
            inner: Mutex::new(log),
        }
    }

    /// Where the file is, or would be.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line the stage wrote (without its newline), making the file if needed.
    pub fn line(&self, line: &str) {
        let mut g = self.lock();
        g.open(&self.path);
        g.push(line);
    }

    /// Appends one of sluice's own lines; it reaches the file only if the file is made.
    pub fn note(&self, line: &str) {
        self.lock().push(line);
    }

    /// Makes the file (with what was noted so far) if it does not exist yet: a failed or stopped
    /// stage always has its log.
    pub fn keep(&self) {
        self.lock().open(&self.path);
    }

    /// Whether the file was made.
    pub fn exists(&self) -> bool {
        matches!(self.lock().file, Sink::Open(_))
    }

    /// The last lines, oldest first (sluice's own included, file or not).
    pub fn tail(&self) -> Vec<String> {
        self.lock().tail.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn open(&mut self, path: &Path) {
        let Sink::Pending(lines) = &mut self.file else {
            return;
        };
        let lines = std::mem::take(lines);
        self.file = match create(path) {
            Ok(mut f) => {
                for l in &lines {
                    let _ = writeln!(f, "{l}");
                }
                Sink::Open(f)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot create the stage log: {e}");
                Sink::Failed
            }
        };
    }

    /// Counts `line` against the cap and writes it (or, before the file exists, keeps it).
    fn push(&mut self, line: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if self.truncated {
            return;
        }
        let n = line.len() as u64 + 1;
        if self.written + n > LOG_CAP_BYTES {
            self.truncated = true;
            let note = format!(
                "[sluice: log truncated at {} MiB; further output dropped]",
                LOG_CAP_BYTES >> 20
            );
            match &mut self.file {
                Sink::Open(f) => {
                    let _ = writeln!(f, "{note}");
                }
                Sink::Pending(lines) => lines.push(note),
                Sink::Failed => {}
            }
            return;
        }
        self.written += n;
        match &mut self.file {
            Sink::Open(f) => {
                let _ = writeln!(f, "{line}");
            }
            Sink::Pending(lines) => lines.push(line.to_string()),
            Sink::Failed => {}
        }
    }
}

fn create(path: &Path) -> io::Result<File> {
    // The run's log directory exists after its first log: create it only when missing, since a
    // `mkdir` that fails still locks the parent, beside every other stage's create.
    match File::create(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            File::create(path)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_alone_make_no_file_and_lead_the_file_once_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/s.log");
        let log = StageLog::new(&path, "[sluice] running `s`".into());
        log.note("[slurm] submitted job 7");
        assert!(!path.exists() && !log.exists());
        log.line("hello");
        log.note("[sluice] done");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[sluice] running `s`\n[slurm] submitted job 7\nhello\n[sluice] done\n"
        );
        assert_eq!(log.tail().len(), 4);
    }

    #[test]
    fn keep_makes_the_file_with_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let log = StageLog::new(&path, "[sluice] running `s`".into());
        log.note("[sluice] failed: no");
        log.keep();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[sluice] running `s`\n[sluice] failed: no\n"
        );
    }
}
