//! Test environment: a temporary workspace, the real `sluice` binary, and helpers to read what
//! it left behind. Every integration test runs the binary as a user would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod remote;
pub mod snapshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The repository root, for its example pipelines, data and scripts.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Ws {
    pub dir: tempfile::TempDir,
}

/// What a finished `sluice` invocation returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `--json` event stream.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
            .collect()
    }

    /// Stage name → outcome, from `--json` events.
    pub fn outcomes(&self) -> std::collections::BTreeMap<String, String> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "stage_finished")
            .map(|e| {
                (
                    e["stage"].as_str().unwrap().to_string(),
                    e["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Names of the stages that actually executed, in start order.
    pub fn started(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "stage_started")
            .map(|e| e["stage"].as_str().unwrap().to_string())
            .collect()
    }

    /// `stage`'s `stage_finished` event, from `--json` events.
    pub fn finished(&self, stage: &str) -> serde_json::Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == "stage_finished" && e["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage_finished for `{stage}`: {self:?}"))
    }

    /// The failure of `stage` in a `--json` run that failed (exit 1): its message, and its hint
    /// as the `= help:` line the terminal shows (see [`failure_text`]).
    pub fn failure(&self, stage: &str) -> String {
        assert_eq!(
            self.code, 1,
            "expected a failed run\n{}\n{}",
            self.stdout, self.stderr
        );
        failure_text(&self.finished(stage))
            .unwrap_or_else(|| panic!("no failure message for `{stage}`:\n{}", self.stdout))
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "sluice failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> &Ws {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        // Replace rather than write through, so a test never edits a file in place by accident.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, content).unwrap();
        self
    }

    pub fn pipeline(&self, yaml: &str) -> &Ws {
        self.write("sluice.yaml", yaml)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// A JSON file the run left, parsed.
    pub fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Copies the repository's file `rel` (an example pipeline, its data) to the same place in
    /// the workspace.
    pub fn copy_from_repo(&self, rel: &str) -> &Ws {
        let text = std::fs::read_to_string(repo().join(rel))
            .unwrap_or_else(|e| panic!("cannot read the repository's {rel}: {e}"));
        self.write(rel, &text)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.root())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("CUDA_VISIBLE_DEVICES");
        c
    }

    pub fn sluice(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run sluice"))
    }

    /// `sluice run --json ARGS...`
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        self.sluice(&all)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice")
    }
}

/// Copies the directory `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes. Synchronisation, not an assertion on time.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Waits for a child to exit, killing it after `timeout` (then the test fails on the code).
pub fn wait_child(mut child: Child, timeout: Duration) -> Run {
    let end = Instant::now() + timeout;
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().unwrap())
}

pub fn send_signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub const LONG: Duration = Duration::from_secs(60);

/// Whether this machine has an NVIDIA GPU (`nvidia-smi -L` lists one): the CUDA tests, ignored
/// by default, fail without one when asked to run.
pub fn gpu_present() -> bool {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// A `.npy` file, written by hand (not by the code under test): `descr` is `<f4` or `<i8`.
pub fn npy(shape: &[usize], descr: &str, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// An 8-bit RGB PNG, deliberately written by hand (stored deflate blocks) rather than by the
/// crate the stages decode with.
pub fn png(width: u32, height: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&rgb(x, y));
        }
    }
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A spawned `sluice ... --json` whose stdout is read line by line as it streams, so a test can
/// act on an event (create a file, send a signal) the moment sluice has reported it.
pub struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Streaming {
    /// Takes over `child`'s piped stdout; a thread forwards its lines until it closes.
    pub fn new(mut child: Child) -> Streaming {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("spawned with piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn child(&self) -> &Child {
        &self.child
    }

    /// Reads events until one satisfies `pred` and returns it; `None` when stdout closes or
    /// `timeout` passes first (the test then fails on that, instead of hanging).
    pub fn wait_for_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if !line.starts_with('{') {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad event line {line}: {e}"));
            if pred(&event) {
                return Some(event);
            }
        }
    }

    /// Waits for the exit as [`wait_child`] does; `stdout` holds every line, read before or now.
    pub fn finish(self, timeout: Duration) -> Run {
        let Streaming {
            child,
            lines,
            mut seen,
        } = self;
        let mut run = wait_child(child, timeout);
        // The reader thread ends with stdout, which closed when the child exited, unless a
        // leaked stage process still holds it: bounded, so that shows as a failure, not a hang.
        let end = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            seen.push(line);
        }
        run.stdout = seen.into_iter().map(|l| l + "\n").collect();
        run
    }
}

impl Ws {
    /// `sluice ARGS...` on a machine that shows no GPU, whatever this one has: an empty
    /// `CUDA_VISIBLE_DEVICES` gives the scheduler no GPU slots and hides every device from the
    /// stages, so the no-GPU paths are tested on GPU hosts too.
    pub fn sluice_without_gpus(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .env("CUDA_VISIBLE_DEVICES", "")
            .output()
            .expect("run sluice");
        Run::from(out)
    }
}

/// The reason on every test that needs an NVIDIA GPU (`#[ignore = ...]` wants a literal, so the
/// tests repeat it; this is what they assert with).
pub const NEEDS_GPU: &str = "needs an NVIDIA GPU (nvidia-smi -L lists one); run with `cargo test -- --ignored` on a GPU machine";

/// A `stage_finished` event's failure as the terminal shows it: its `message`, then its `hint`
/// (a separate field, never part of the message) the way diagnostics show their help.
pub fn failure_text(event: &serde_json::Value) -> Option<String> {
    let message = event["message"].as_str()?;
    Some(match event["hint"].as_str() {
        Some(hint) => format!("{message}\n  = help: {hint}"),
        None => message.to_string(),
    })
}
