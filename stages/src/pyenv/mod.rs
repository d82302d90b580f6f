//! The Python environment the training worker runs in.
//!
//! ONNX Runtime's training API ships only as Python wheels (`onnxruntime-training[-cpu]`), so
//! training runs in a worker process (`stages/python/sluice_train`) inside a virtual environment
//! that sluice creates itself: in the user cache directory, keyed by the pinned requirements
//! and the interpreter, so a second run (or a second workspace) reuses it at once. Creation is
//! serialised by a file lock (parallel test processes, two pipelines) and published by a marker
//! written last: a killed `pip install` leaves a directory without a marker, which the next
//! attempt wipes and rebuilds.

use sluice_runner::cancel::CancelToken;
use sluice_runner::StageError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

const REQUIREMENTS_CPU: &str = include_str!("../../python/requirements.txt");
const REQUIREMENTS_CUDA: &str = include_str!("../../python/requirements-cuda.txt");
const REQUIREMENTS_ORT_CUDA: &str = include_str!("../../python/requirements-ort-cuda.txt");

/// The worker's source, embedded so that an installed binary needs no checkout. Materialised
/// once per content hash next to the environment.
const WORKER: &[(&str, &str)] = &[
    (
        "sluice_train/__main__.py",
        include_str!("../../python/sluice_train/__main__.py"),
    ),
    (
        "sluice_train/models.py",
        include_str!("../../python/sluice_train/models.py"),
    ),
    (
        "sluice_train/data.py",
        include_str!("../../python/sluice_train/data.py"),
    ),
    (
        "sluice_train/regularize.py",
        include_str!("../../python/sluice_train/regularize.py"),
    ),
    (
        "sluice_train/persist.py",
        include_str!("../../python/sluice_train/persist.py"),
    ),
];

/// Which ONNX Runtime training build an environment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `onnxruntime-training-cpu`.
    Cpu,
    /// `onnxruntime-training` (CUDA 12) with NVIDIA's runtime wheels.
    Cuda,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Cpu => "cpu",
            Flavor::Cuda => "cuda",
        }
    }
    pub fn requirements(self) -> &'static str {
        match self {
            Flavor::Cpu => REQUIREMENTS_CPU,
            Flavor::Cuda => REQUIREMENTS_CUDA,
        }
    }
}

/// A ready environment.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    pub flavor: Flavor,
    pub dir: PathBuf,
    pub python: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("training needs Python 3 (3.11 or newer): `{program}` was not found")]
    NoPython { program: String },
    #[error(
        "`{python} -m venv` failed, so sluice cannot create the training environment:\n{output}"
    )]
    NoVenv { python: String, output: String },
    #[error("pip could not install the training environment ({flavor}) into `{dir}`:\n{output}")]
    Pip {
        flavor: &'static str,
        dir: String,
        output: String,
        log: String,
    },
    #[error(
        "there is no cache directory: neither SLUICE_CACHE_DIR, XDG_CACHE_HOME nor HOME is set"
    )]
    NoCacheDir,
    #[error("cannot {what} `{path}`")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

impl EnvError {
    /// How to fix it, for the renderer to show apart from the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            EnvError::NoPython { .. } => {
                Some("install Python 3, or set SLUICE_PYTHON to an interpreter".into())
            }
            EnvError::NoVenv { .. } => Some("install Python's venv module (Debian/Ubuntu: `apt install python3-venv`), or set SLUICE_PYTHON to an interpreter that has it".into()),
            EnvError::Pip { log, .. } => Some(format!(
                "pip needs to reach PyPI; the full log is `{log}`"
            )),
            _ => None,
        }
    }
}

/// The message with its OS error (printed once: the message leaves it to the source).
impl From<EnvError> for StageError {
    fn from(e: EnvError) -> StageError {
        StageError::new(sluice_runner::error::chain(&e)).hint_opt(e.hint())
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EnvError + 'a {
    move |source| EnvError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Where sluice keeps per-user state: `SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else
/// `~/.cache/sluice`.
pub fn cache_root() -> Result<PathBuf, EnvError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("SLUICE_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("sluice"));
    }
    var("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("sluice"))
        .ok_or(EnvError::NoCacheDir)
}

/// The interpreter environments are built from: `SLUICE_PYTHON`, else `python3` on `PATH`.
pub fn base_python() -> Result<PathBuf, EnvError> {
    let program = std::env::var("SLUICE_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into());
    let found = if program.contains('/') {
        Some(PathBuf::from(&program)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(&program))
                .find(|p| p.is_file())
        })
    };
    // Canonical, so that the key changes when `python3` starts meaning another interpreter.
    found
        .map(|p| p.canonicalize().unwrap_or(p))
        .ok_or(EnvError::NoPython { program })
}

/// The environment's directory for this flavor and interpreter.
pub fn env_dir(flavor: Flavor, python: &Path) -> Result<PathBuf, EnvError> {
    let mut h = blake3::Hasher::new();
    h.update(flavor.requirements().as_bytes());
    h.update(b"\0");
    h.update(python.as_os_str().as_encoded_bytes());
    let hex = h.finalize().to_hex();
    Ok(cache_root()?
        .join("python")
        .join(format!("{}-{}", flavor.name(), &hex[..16])))
}

const READY: &str = ".sluice-ready";

/// The environment when it is already installed; never installs.
pub fn find(flavor: Flavor) -> Option<PythonEnv> {
    let python = base_python().ok()?;
    let dir = env_dir(flavor, &python).ok()?;
    dir.join(READY).is_file().then(|| PythonEnv {
        flavor,
        python: dir.join("bin").join("python"),
        dir,
    })
}

/// What `ensure` reports while it works.
pub enum Step<'a> {
    /// A phase starts (a line for humans).
    Phase(&'a str),
    /// Packages processed so far, of about `total`, and pip's current line.
    Packages {
        done: usize,
        total: usize,
        line: &'a str,
    },
}

/// The environment, installed first when needed (with `progress` reports).
pub fn ensure(
    flavor: Flavor,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<PythonEnv, EnvError> {
    let base = base_python()?;
    let dir = env_dir(flavor, &base)?;
    let env = PythonEnv {
        flavor,
        python: dir.join("bin").join("python"),
        dir: dir.clone(),
    };
    if dir.join(READY).is_file() {
        return Ok(env);
    }
    let parent = dir.parent().expect("env_dir has a parent");
    let Some(_lock) = claim(&dir, "the training environment", progress)? else {
        return Ok(env);
    };
    progress(Step::Phase(&format!(
        "creating the {} training environment in {} (once; later runs reuse it)",
        flavor.name(),
        dir.display()
    )));
    let mut venv_output = Vec::new();
    let venv = run_tool(
        Command::new(&base).args(["-m", "venv"]).arg(&dir),
        cancel,
        &mut |line| venv_output.push(line.to_string()),
    )
    .map_err(|e| match e {
        ToolError::Cancelled => EnvError::Cancelled,
        ToolError::Start(_) => EnvError::NoPython {
            program: base.display().to_string(),
        },
    })?;
    if !venv.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(EnvError::NoVenv {
            python: base.display().to_string(),
            output: tail(&venv_output.join("\n")),
        });
    }
    let req = dir.join("requirements.txt");
    std::fs::write(&req, flavor.requirements()).map_err(io("write", &req))?;
    let total = flavor
        .requirements()
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && !l.starts_with('-')
        })
        .count();
    let log_path = parent.join(format!(
        "{}.pip.log",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    progress(Step::Phase(&format!(
        "installing {total} pinned packages from PyPI with pip"
    )));
    let args = [
        "install".to_string(),
        "-r".into(),
        req.display().to_string(),
    ];
    let ok = pip(&env.python, &args, &log_path, total, cancel, progress)?;
    if !ok {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        return Err(EnvError::Pip {
            flavor: flavor.name(),
            dir: dir.display().to_string(),
            output: tail(&log),
            log: log_path.display().to_string(),
        });
    }
    let ready = dir.join(READY);
    std::fs::write(&ready, flavor.requirements()).map_err(io("write", &ready))?;
    progress(Step::Phase("the training environment is ready"));
    Ok(env)
}

/// Takes the right to build `dir`: its lock (`<dir>.lock`, waited for with a notice) and a clean
/// slate (an incomplete earlier attempt is removed). `None` when another process finished it
/// meanwhile. The lock is held until the returned file is dropped.
fn claim(
    dir: &Path,
    what: &str,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<Option<std::fs::File>, EnvError> {
    let parent = dir.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
    if lock.try_lock().is_err() {
        progress(Step::Phase(&format!(
            "waiting for another sluice to finish installing {what}"
        )));
        lock.lock().map_err(io("lock", &lock_path))?;
    }
    if dir.join(READY).is_file() {
        return Ok(None);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove the incomplete", dir))?;
    }
    Ok(Some(lock))
}

/// Runs `python -m pip ARGS`, streaming its output to `log` and counting `Collecting` lines for
/// progress. `Ok(false)` when pip failed.
fn pip(
    python: &Path,
    args: &[String],
    log: &Path,
    total: usize,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<bool, EnvError> {
    use std::io::Write;
    let mut log_file = std::fs::File::create(log).map_err(io("create", log))?;
    let mut done = 0;
    let status = run_tool(
        Command::new(python)
            .args(["-m", "pip"])
            .args(args)
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .env("PYTHONUNBUFFERED", "1"),
        cancel,
        &mut |line| {
            let _ = writeln!(log_file, "{line}");
            if line.starts_with("Collecting ") {
                done += 1;
            }
            // "Collecting numpy==2.4.6 (from -r /long/path/requirements.txt (line 7))"
            let shown = line.split(" (from ").next().unwrap_or("").trim();
            if !shown.is_empty() {
                progress(Step::Packages {
                    done: done.min(total),
                    total,
                    line: shown,
                });
            }
        },
    )
    .map_err(|e| match e {
        ToolError::Cancelled => EnvError::Cancelled,
        ToolError::Start(source) => EnvError::Io {
            what: "start",
            path: python.display().to_string(),
            source,
        },
    })?;
    Ok(status.success())
}

enum ToolError {
    Start(std::io::Error),
    Cancelled,
}

/// Runs a setup tool (`venv`, pip) through the engine's process runner
/// (`sluice_runner::exec::run_in_group`: its own process group, registered with the guardian so
/// it dies with sluice, the group killed when the tool exits or `cancel` fires), handing its
/// stdout and stderr lines to `on_line` on this thread as they come.
fn run_tool(
    cmd: &mut Command,
    cancel: &CancelToken,
    on_line: &mut dyn FnMut(&str),
) -> Result<ExitStatus, ToolError> {
    use sluice_runner::exec::{run_in_group, GroupIo};
    // The runner reads the pipes on threads of its own, and `on_line` (a progress display) need
    // not be `Send`: lines come over a channel to this thread while another one runs the tool.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let status = std::thread::scope(|s| {
        let running = s.spawn(move || {
            let err_tx = tx.clone();
            run_in_group(
                cmd,
                GroupIo {
                    stdin: None,
                    on_spawn: &|_| {},
                    stdout: &mut |line| {
                        let _ = tx.send(line.to_string());
                    },
                    stderr: &mut |line| {
                        let _ = err_tx.send(line.to_string());
                    },
                    kill_on_cancel: Some(cancel),
                },
            )
        });
        // Ends when the runner is done and has dropped both senders.
        for line in rx {
            on_line(&line);
        }
        running.join().expect("the tool runner does not panic")
    });
    let status = status.map_err(ToolError::Start)?;
    if cancel.is_cancelled() && !status.success() {
        return Err(ToolError::Cancelled);
    }
    Ok(status)
}

/// The last lines of a tool's output, enough to see why it failed.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(15);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The worker's package directory for this build (for `PYTHONPATH`), written on first use.
pub fn worker_dir(env: &PythonEnv) -> Result<PathBuf, EnvError> {
    let mut h = blake3::Hasher::new();
    for (name, text) in WORKER {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    let dir = env
        .dir
        .join(format!("worker-{}", &h.finalize().to_hex()[..16]));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = env.dir.join(format!(".worker-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, text) in WORKER {
        let path = tmp.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .map_err(io("create", &tmp))?;
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    // Another process may have won the race; its copy is identical.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

/// A fingerprint of the worker's code and the pinned requirements: part of the train stage's
/// key, so a new worker or runtime retrains.
pub fn code_fact() -> String {
    let mut h = blake3::Hasher::new();
    for (name, text) in WORKER {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    h.update(REQUIREMENTS_CPU.as_bytes());
    h.update(REQUIREMENTS_CUDA.as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// The NVIDIA runtime wheels' library folders (`site-packages/nvidia/*/lib`), which the CUDA
/// provider loads with `dlopen`: they go on the worker's `LD_LIBRARY_PATH`, so that only the
/// driver has to come from the system.
pub fn cuda_library_dirs(env: &PythonEnv) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(libs) = std::fs::read_dir(env.dir.join("lib")) else {
        return dirs;
    };
    for py in libs.flatten() {
        let nvidia = py.path().join("site-packages").join("nvidia");
        if let Ok(pkgs) = std::fs::read_dir(&nvidia) {
            for p in pkgs.flatten() {
                let lib = p.path().join("lib");
                if lib.is_dir() {
                    dirs.push(lib);
                }
            }
        }
    }
    dirs.sort();
    dirs
}

/// The environment variables the worker needs on top of the stage's clean environment.
pub fn worker_env(env: &PythonEnv, worker: &Path) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("PYTHONPATH".into(), worker.display().to_string());
    vars.insert("PYTHONHASHSEED".into(), "0".into());
    vars.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    if env.flavor == Flavor::Cuda {
        let mut paths: Vec<String> = cuda_library_dirs(env)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        if let Ok(existing) = std::env::var("LD_LIBRARY_PATH") {
            paths.push(existing);
        }
        if !paths.is_empty() {
            vars.insert("LD_LIBRARY_PATH".into(), paths.join(":"));
        }
    }
    vars
}

mod runtime;
#[cfg(test)]
mod tests;

pub use runtime::*;
