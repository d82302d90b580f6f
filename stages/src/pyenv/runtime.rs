//! The ONNX Runtime libraries evaluate, explain and serve load for inference: the CPU build from
//! PyPI's `onnxruntime` wheel and, for `--cuda`, `onnxruntime-gpu` with the NVIDIA libraries it
//! needs, installed with `pip --target` into the user cache (no Python involved at run time).

use super::*;

/// The ONNX Runtime release whose C library evaluate and serve load (the `ort` crate's API
/// level); taken from PyPI's `onnxruntime` wheel, which ships `libonnxruntime.so` in
/// `onnxruntime/capi/`.
pub const ORT_VERSION: &str = "1.31.1";

/// The ONNX Runtime library for inference: `ORT_DYLIB_PATH` when set, else the one `sluice
/// setup` (or the first evaluate run) put in the user cache. Never installs.
pub fn find_runtime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let dir = runtime_dir().ok()?;
    dir.join(READY).is_file().then(|| runtime_library(&dir))
}

fn runtime_dir() -> Result<PathBuf, EnvError> {
    Ok(cache_root()?.join("onnxruntime").join(ORT_VERSION))
}

fn runtime_library(dir: &Path) -> PathBuf {
    dir.join("onnxruntime")
        .join("capi")
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The ONNX Runtime library, fetched first when needed: `pip install --no-deps --target` of the
/// `onnxruntime` wheel (no virtual environment: only the shared library is used).
pub fn ensure_runtime(
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<PathBuf, EnvError> {
    if let Some(p) = find_runtime() {
        return Ok(p);
    }
    let dir = runtime_dir()?;
    let parent = dir.parent().expect("runtime_dir has a parent");
    let Some(_lock) = claim(&dir, "ONNX Runtime", progress)? else {
        return Ok(runtime_library(&dir));
    };
    let base = base_python()?;
    progress(Step::Phase(&format!(
        "fetching ONNX Runtime {ORT_VERSION} for inference from PyPI into {} (once)",
        dir.display()
    )));
    let log_path = parent.join(format!("{ORT_VERSION}.pip.log"));
    let wanted = [format!("onnxruntime=={ORT_VERSION}")];
    pip_target(
        &base,
        &dir,
        &wanted,
        1,
        "onnxruntime",
        &log_path,
        cancel,
        progress,
    )?;
    let lib = runtime_library(&dir);
    if !lib.is_file() {
        return Err(EnvError::Io {
            what: "find the library in the onnxruntime wheel at",
            path: lib.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let ready = dir.join(READY);
    std::fs::write(&ready, ORT_VERSION).map_err(io("write", &ready))?;
    Ok(lib)
}

/// `pip install --no-deps --target dir` of `wanted` (`total` packages): wheels whose shared
/// libraries sluice loads itself, so no virtual environment. On failure `dir` is removed and the
/// error carries the end of pip's output.
#[allow(clippy::too_many_arguments)]
fn pip_target(
    base: &Path,
    dir: &Path,
    wanted: &[String],
    total: usize,
    flavor: &'static str,
    log_path: &Path,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<(), EnvError> {
    let mut args = vec![
        "install".to_string(),
        "--no-deps".into(),
        "--target".into(),
        dir.display().to_string(),
    ];
    args.extend_from_slice(wanted);
    if pip(base, &args, log_path, total, cancel, progress)? {
        return Ok(());
    }
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(dir);
    Err(EnvError::Pip {
        flavor,
        dir: dir.display().to_string(),
        output: tail(&log),
        log: log_path.display().to_string(),
    })
}

/// ONNX Runtime's CUDA build for inference: `onnxruntime-gpu` (the same release as
/// [`ORT_VERSION`]) and NVIDIA's CUDA 13 and cuDNN 9 runtime wheels, pinned in
/// `stages/python/requirements-ort-cuda.txt` and installed with `pip --no-deps --target` into
/// `onnxruntime-gpu/<version>/` of the user cache by `sluice setup --cuda`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRuntime {
    /// `libonnxruntime.so` of the CUDA build; its CUDA provider library lies beside it.
    pub library: PathBuf,
    /// The CUDA and cuDNN libraries, by absolute path, in the order they must be loaded (each
    /// after those it links): the CUDA provider finds them by name once they are loaded.
    pub cuda_libraries: Vec<PathBuf>,
}

/// The NVIDIA libraries the CUDA provider needs, relative to `site-packages/nvidia`, in load
/// order; `false`: loaded when present (not every release of the wheel ships it).
pub(super) const CUDA_LIBRARIES: &[(&str, bool)] = &[
    ("cu13/lib/libcudart.so.13", true),
    ("cu13/lib/libcublasLt.so.13", true),
    ("cu13/lib/libcublas.so.13", true),
    ("cu13/lib/libnvrtc.so.13", true),
    ("cu13/lib/libcurand.so.10", true),
    ("cu13/lib/libnvJitLink.so.13", false),
    ("cu13/lib/libcufft.so.12", true),
    ("cudnn/lib/libcudnn_graph.so.9", true),
    ("cudnn/lib/libcudnn_ops.so.9", true),
    ("cudnn/lib/libcudnn_heuristic.so.9", true),
    ("cudnn/lib/libcudnn_cnn.so.9", true),
    ("cudnn/lib/libcudnn_adv.so.9", true),
    ("cudnn/lib/libcudnn_engines_precompiled.so.9", true),
    ("cudnn/lib/libcudnn_engines_runtime_compiled.so.9", true),
    ("cudnn/lib/libcudnn_engines_tensor_ir.so.9", false),
    ("cudnn/lib/libcudnn_ext.so.9", false),
    ("cudnn/lib/libcudnn.so.9", true),
];

/// The pinned CUDA build, as `pip -r` reads it.
pub fn gpu_requirements() -> &'static str {
    REQUIREMENTS_ORT_CUDA
}

fn gpu_runtime_dir() -> Result<PathBuf, EnvError> {
    Ok(cache_root()?.join("onnxruntime-gpu").join(ORT_VERSION))
}

/// The runtime in `dir`, with every required library present.
pub(super) fn gpu_runtime_in(dir: &Path) -> Result<GpuRuntime, PathBuf> {
    let library = runtime_library(dir);
    if !library.is_file() {
        return Err(library);
    }
    let mut cuda_libraries = Vec::new();
    for (rel, required) in CUDA_LIBRARIES {
        let path = dir.join("nvidia").join(rel);
        if path.is_file() {
            cuda_libraries.push(path);
        } else if *required {
            return Err(path);
        }
    }
    Ok(GpuRuntime {
        library,
        cuda_libraries,
    })
}

/// The CUDA build when `sluice setup --cuda` installed it; never installs.
pub fn find_gpu_runtime() -> Option<GpuRuntime> {
    let dir = gpu_runtime_dir().ok()?;
    if !dir.join(READY).is_file() {
        return None;
    }
    gpu_runtime_in(&dir).ok()
}

/// The CUDA build, fetched first when needed (about 1.6 GB from PyPI).
pub fn ensure_gpu_runtime(
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<GpuRuntime, EnvError> {
    if let Some(r) = find_gpu_runtime() {
        return Ok(r);
    }
    let dir = gpu_runtime_dir()?;
    let parent = dir.parent().expect("gpu_runtime_dir has a parent");
    let Some(_lock) = claim(&dir, "ONNX Runtime's CUDA build", progress)? else {
        return find_gpu_runtime().ok_or(EnvError::Io {
            what: "find the CUDA build that another sluice installed in",
            path: dir.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    };
    let base = base_python()?;
    let total = REQUIREMENTS_ORT_CUDA
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    progress(Step::Phase(&format!(
        "fetching ONNX Runtime {ORT_VERSION} with CUDA 13 and cuDNN 9 ({total} wheels, about 1.6 GB) from PyPI into {} (once)",
        dir.display()
    )));
    let req = parent.join(format!("{ORT_VERSION}.requirements.txt"));
    std::fs::write(&req, REQUIREMENTS_ORT_CUDA).map_err(io("write", &req))?;
    let log_path = parent.join(format!("{ORT_VERSION}.pip.log"));
    let wanted = ["-r".to_string(), req.display().to_string()];
    pip_target(
        &base,
        &dir,
        &wanted,
        total,
        "onnxruntime-gpu",
        &log_path,
        cancel,
        progress,
    )?;
    let runtime = gpu_runtime_in(&dir).map_err(|missing| EnvError::Io {
        what: "find a library of the CUDA build at",
        path: missing.display().to_string(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let ready = dir.join(READY);
    std::fs::write(&ready, REQUIREMENTS_ORT_CUDA).map_err(io("write", &ready))?;
    Ok(runtime)
}
