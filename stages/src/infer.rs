//! Inference with ONNX Runtime through the `ort` crate, shared by `evaluate` and `sluice serve`.
//!
//! The runtime library is loaded at run time (`load-dynamic`) from the `onnxruntime` wheel that
//! `pyenv::ensure_runtime` fetched, or from `ORT_DYLIB_PATH`: the crate's own download comes from
//! a CDN that users behind a proxy (and these build machines) cannot reach. The library can be
//! loaded once per process; the first path wins.

use ort::session::Session;
use ort::value::{Tensor, TensorElementType};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static ENV: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

/// Loads the ONNX Runtime library at `lib` (once per process).
pub fn init(lib: &Path) -> Result<(), String> {
    let got = ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from `{}`: {e}\nhint: run `sluice setup`, or point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.31",
                lib.display()
            )
        })?;
        let env = builder
            .with_name("sluice")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        Ok((lib.to_path_buf(), env))
    });
    got.as_ref().map(|_| ()).map_err(Clone::clone)
}

fn env() -> Result<&'static ort::environment::Environment, String> {
    match ENV.get() {
        Some(Ok((_, env))) => Ok(env),
        Some(Err(e)) => Err(e.clone()),
        None => Err("ONNX Runtime was not loaded (infer::init)".into()),
    }
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
    /// Loads `path` with `threads` intra-op threads (0: ONNX Runtime's default).
    pub fn load(path: &Path, threads: usize) -> Result<Model, String> {
        let what =
            |e: &dyn std::fmt::Display| format!("cannot load the model `{}`: {e}", path.display());
        let mut builder = Session::builder(env()?).map_err(|e| what(&e))?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| what(&e))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| what(&e))?;
        let [input] = session.inputs() else {
            return Err(what(&format!(
                "it has {} inputs, and sluice feeds exactly one (`features`)",
                session.inputs().len()
            )));
        };
        if input.dtype().tensor_type() != Some(TensorElementType::Float32) {
            return Err(what(&format!(
                "its input `{}` is not a float32 tensor",
                input.name()
            )));
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
