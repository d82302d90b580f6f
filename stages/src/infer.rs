//! Inference with ONNX Runtime through the `ort` crate, shared by `evaluate` and `sluice serve`.
//!
//! The runtime library is loaded at run time (`load-dynamic`) from the `onnxruntime` wheel that
//! `pyenv::ensure_runtime` fetched (or the `onnxruntime-gpu` one `sluice setup --cuda` fetched),
//! or from `ORT_DYLIB_PATH`: the crate's own download comes from a CDN that users behind a proxy
//! (and these build machines) cannot reach.
//!
//! ONNX Runtime can be loaded once per process, and the CPU and CUDA builds are different files,
//! so the first [`init`] decides for the whole process ([`loaded`] tells which build won). The
//! CUDA build also runs CPU sessions, so it is the one to load wherever CUDA may be wanted;
//! `evaluate` loads it when it is installed and the stage has a GPU. The CUDA and cuDNN
//! libraries are loaded by absolute path just before the first CUDA session, so that the CUDA
//! provider finds them by name without `LD_LIBRARY_PATH`.

use ort::session::Session;
use ort::value::{Tensor, TensorElementType};
use sluice_runner::StageError;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Which ONNX Runtime build a library is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// PyPI's `onnxruntime`: the CPU provider only.
    Cpu,
    /// PyPI's `onnxruntime-gpu`: the CPU and CUDA providers.
    Cuda,
    /// `ORT_DYLIB_PATH`: whatever it was built with; the CUDA provider is tried when asked for.
    Custom,
}

/// A library to load, with what the CUDA provider will need.
#[derive(Debug, Clone)]
pub struct Library {
    pub path: PathBuf,
    pub build: Build,
    /// Loaded by absolute path, in order, before the first CUDA session (empty: none).
    pub cuda_libraries: Vec<PathBuf>,
}

struct Loaded {
    build: Build,
    cuda_libraries: Vec<PathBuf>,
    env: ort::environment::Environment,
}

static ENV: OnceLock<Result<Loaded, StageError>> = OnceLock::new();
static CUDA_PRELOAD: OnceLock<Result<(), StageError>> = OnceLock::new();

/// Loads the ONNX Runtime library at `lib` (once per process; the first library wins).
pub fn init(lib: &Path) -> Result<(), StageError> {
    init_library(&Library {
        path: lib.to_path_buf(),
        build: Build::Cpu,
        cuda_libraries: Vec::new(),
    })
    .map(|_| ())
}

/// Loads `lib` unless the process has loaded a library already; returns the build in use.
pub fn init_library(lib: &Library) -> Result<Build, StageError> {
    let got = ENV.get_or_init(|| {
        let builder = ort::init_from(&lib.path).map_err(|e| {
            StageError::new(format!(
                "cannot load ONNX Runtime from `{}`: {e}",
                lib.path.display()
            ))
            .hint("run `sluice setup`, or point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.31")
        })?;
        let env = builder
            .with_name("sluice")
            .build()
            .map_err(|e| StageError::new(format!("cannot start ONNX Runtime: {e}")))?;
        Ok(Loaded {
            build: lib.build,
            cuda_libraries: lib.cuda_libraries.clone(),
            env,
        })
    });
    got.as_ref().map(|l| l.build).map_err(Clone::clone)
}

/// The build this process loaded, if it loaded one.
pub fn loaded() -> Option<Build> {
    match ENV.get() {
        Some(Ok(l)) => Some(l.build),
        _ => None,
    }
}

fn loaded_env() -> Result<&'static Loaded, StageError> {
    match ENV.get() {
        Some(Ok(l)) => Ok(l),
        Some(Err(e)) => Err(e.clone()),
        None => Err("ONNX Runtime was not loaded (infer::init)".into()),
    }
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    /// CUDA device `device` (an ordinal among the devices this process sees).
    Cuda {
        device: i32,
    },
}

impl Provider {
    /// ONNX Runtime's name for it, as metrics.json and the train stage's history record it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda { .. } => "CUDAExecutionProvider",
        }
    }
}

/// Loads the CUDA and cuDNN libraries of the loaded build by absolute path (once per process).
fn preload_cuda(loaded: &Loaded) -> Result<(), StageError> {
    CUDA_PRELOAD
        .get_or_init(|| {
            for lib in &loaded.cuda_libraries {
                ort::util::preload_dylib(lib).map_err(|e| {
                    // libloading's own text is only "dlopen failed"; the reason is its source.
                    let why = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| s.to_string());
                    StageError::new(format!(
                        "cannot load the CUDA library `{}`: {why}",
                        lib.display()
                    ))
                    .hint("the NVIDIA driver (libcuda.so.1) must be installed and support CUDA 13 (driver 580 or newer; `nvidia-smi` shows it)")
                })?;
            }
            Ok(())
        })
        .clone()
}

/// How a session holds the memory of its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// ONNX Runtime's arena: kept at its peak, reused by the next run.
    Arena,
    /// Allocated for each run and freed after it.
    PerRun,
}

/// A loaded model with one float input. `ort` sessions run through `&mut`, so concurrent callers
/// take turns; a server wanting parallel runs holds several.
pub struct Model {
    session: Mutex<Session>,
    /// The input's name and shape as the model declares it (`-1` for symbolic dimensions).
    pub input: String,
    pub input_shape: Vec<i64>,
    /// Output names and declared shapes, in order.
    pub outputs: Vec<(String, Vec<i64>)>,
}

/// An output tensor.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Model {
    /// Loads `path` with `threads` intra-op threads (0: ONNX Runtime's default) on the CPU.
    pub fn load(path: &Path, threads: usize) -> Result<Model, StageError> {
        Model::load_on(path, threads, Provider::Cpu)
    }

    /// Loads `path` on the CPU without ONNX Runtime's memory arena: each run allocates what it
    /// needs and frees it after, instead of keeping the largest batch's peak for the life of the
    /// session. For `serve`, where one huge request must not hold its memory forever.
    pub fn load_per_run(path: &Path, threads: usize) -> Result<Model, StageError> {
        Model::load_with(path, threads, Provider::Cpu, Memory::PerRun)
    }

    /// Loads `path` for `provider`. A CUDA provider that cannot be registered (a CPU build, a
    /// missing library, no device) is an error, never a silent fall-back to the CPU.
    pub fn load_on(path: &Path, threads: usize, provider: Provider) -> Result<Model, StageError> {
        Model::load_with(path, threads, provider, Memory::Arena)
    }

    fn load_with(
        path: &Path,
        threads: usize,
        provider: Provider,
        memory: Memory,
    ) -> Result<Model, StageError> {
        let what =
            |e: &dyn std::fmt::Display| format!("cannot load the model `{}`: {e}", path.display());
        let loaded = loaded_env()?;
        let mut builder = Session::builder(&loaded.env).map_err(|e| what(&e))?;
        if memory == Memory::PerRun {
            builder = builder
                .with_memory_pattern(false)
                .map_err(|e| what(&e))?
                .with_execution_providers([ort::ep::CPU::default()
                    .with_arena_allocator(false)
                    .build()])
                .map_err(|e| what(&e))?;
        }
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| what(&e))?;
        }
        if let Provider::Cuda { device } = provider {
            preload_cuda(loaded)?;
            let cuda = ort::ep::CUDA::default()
                .with_device_id(device)
                .build()
                .error_on_failure();
            builder = builder.with_execution_providers([cuda]).map_err(|e| {
                let e = e.to_string();
                format!(
                    "the CUDA execution provider does not load (CUDA device {device}): {}",
                    e.trim_end_matches('.')
                )
            })?;
        }
        let session = builder.commit_from_file(path).map_err(|e| what(&e))?;
        let [input] = session.inputs() else {
            return Err(what(&format!(
                "it has {} inputs, and sluice feeds exactly one (`features`)",
                session.inputs().len()
            ))
            .into());
        };
        if input.dtype().tensor_type() != Some(TensorElementType::Float32) {
            return Err(what(&format!(
                "its input `{}` is not a float32 tensor",
                input.name()
            ))
            .into());
        }
        let input_shape = input
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let input_name = input.name().to_string();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.name().to_string(),
                    o.dtype()
                        .tensor_shape()
                        .map(|s| s.to_vec())
                        .unwrap_or_default(),
                )
            })
            .collect();
        Ok(Model {
            session: Mutex::new(session),
            input: input_name,
            input_shape,
            outputs,
        })
    }

    /// Runs one batch: `data` is row-major with `shape` (batch first). Returns every output.
    pub fn run(&self, shape: &[usize], data: Vec<f32>) -> Result<Vec<Output>, String> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = Tensor::from_array((dims, data))
            .map_err(|e| format!("cannot build the input tensor: {e}"))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, values) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("output `{name}` is not a float32 tensor: {e}"))?;
            out.push(Output {
                name: name.to_string(),
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                values: values.to_vec(),
            });
        }
        Ok(out)
    }
}
