//! `StageLog`: a stage's log file, capped so a chatty stage cannot fill the disk, keeping the last
//! lines in memory for the failure message.

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

struct Inner {
    file: Option<File>,
    written: u64,
    truncated: bool,
    tail: VecDeque<String>,
}

impl StageLog {
    pub fn create(path: &Path) -> io::Result<StageLog> {
        // The run's log directory exists after its first stage: create it only when missing,
        // since a `mkdir` that fails still locks the parent, beside every other stage's create.
        let file = match File::create(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p)?;
                }
                File::create(path)?
            }
            other => other?,
        };
        Ok(StageLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file: Some(file),
                written: 0,
                truncated: false,
                tail: VecDeque::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (without its newline).
    pub fn line(&self, line: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.tail.len() == TAIL_LINES {
            g.tail.pop_front();
        }
        g.tail.push_back(line.to_string());
        if g.truncated {
            return;
        }
        let n = line.len() as u64 + 1;
        if g.written + n > LOG_CAP_BYTES {
            g.truncated = true;
            if let Some(f) = g.file.as_mut() {
                let _ = writeln!(
                    f,
                    "[sluice: log truncated at {} MiB; further output dropped]",
                    LOG_CAP_BYTES >> 20
                );
            }
            return;
        }
        g.written += n;
        if let Some(f) = g.file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The last lines written, oldest first.
    pub fn tail(&self) -> Vec<String> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tail.iter().cloned().collect()
    }
}
