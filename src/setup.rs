//! `sluice setup [--cuda]`: installs the training environment and fetches the ONNX Runtime
//! library for inference ahead of time (the first train or evaluate run does the same by
//! itself). `--cuda` installs the CUDA builds of both — training's environment and inference's
//! `onnxruntime-gpu` with NVIDIA's libraries, which `evaluate` never fetches by itself — and
//! proves that each one's CUDA provider loads.

use crate::gpus;
use anyhow::{bail, Context as _};
use sluice_runner::stage::CancelToken;
use sluice_runner::StageError;
use sluice_stages::infer;
use sluice_stages::pyenv::{self, Flavor, Step};

/// Loads the CUDA execution provider for real: `get_available_providers()` only says that the
/// build has it, not that cuDNN and friends can be loaded.
const CUDA_PROBE: &str = r#"
import sys, onnx
from onnx import helper, TensorProto
import onnxruntime as ort
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider"])
used = s.get_providers()
print(" ".join(used))
sys.exit(0 if "CUDAExecutionProvider" in used else 3)
"#;

/// The inference runtime's probe: `y = Relu(x)` on a float `[1, 1]`, IR 9, opset 17, as
/// `onnx.helper.make_model` serializes it (the graph of `CUDA_PROBE` with a 2-D input, since
/// sluice feeds a batch dimension). Embedded, so the check needs no Python.
const PROBE_MODEL: &[u8] = b"\x08\x09\x3a\x3f\x0a\x0c\x0a\x01x\x12\x01y\x22\x04Relu\x12\x05probe\
\x5a\x13\x0a\x01x\x12\x0e\x0a\x0c\x08\x01\x12\x08\x0a\x02\x08\x01\x0a\x02\x08\x01\
\x62\x13\x0a\x01y\x12\x0e\x0a\x0c\x08\x01\x12\x08\x0a\x02\x08\x01\x0a\x02\x08\x01\
\x42\x04\x0a\x00\x10\x11";

pub fn run(cuda: bool) -> anyhow::Result<()> {
    let flavor = if cuda { Flavor::Cuda } else { Flavor::Cpu };
    if cuda && gpus::detect(None).is_empty() {
        return Err(StageError::new("`--cuda` asks for the CUDA training environment, but this machine shows no GPU (CUDA_VISIBLE_DEVICES is empty or nvidia-smi found none)")
            .hint("run `sluice setup` for the CPU environment")
            .into());
    }
    if let Some(env) = pyenv::find(flavor) {
        eprintln!(
            "the {} training environment is ready: {}",
            flavor.name(),
            env.dir.display()
        );
    } else {
        let env = pyenv::ensure(flavor, &CancelToken::default(), &mut printer())
            .map_err(StageError::from)?;
        eprintln!("installed: {}", env.dir.display());
    }
    if let Some(lib) = pyenv::find_runtime() {
        eprintln!("ONNX Runtime for inference is ready: {}", lib.display());
    } else {
        let lib = pyenv::ensure_runtime(&CancelToken::default(), &mut |step| {
            if let Step::Phase(text) = step {
                eprintln!("{text}");
            }
        })
        .map_err(StageError::from)?;
        eprintln!("installed: {}", lib.display());
    }
    if cuda {
        // Both checks run, so that one build's failure does not hide the other's state.
        let training = training_cuda(flavor);
        let inference = gpu_runtime().and_then(inference_cuda);
        match (training, inference) {
            (Ok(()), Ok(())) => {}
            (Err(e), Ok(())) | (Ok(()), Err(e)) => return Err(e),
            (Err(t), Err(i)) => bail!("{t:#}\n\nand for inference: {i:#}"),
        }
    }
    Ok(())
}

/// Runs the probe in the CUDA training environment.
fn training_cuda(flavor: Flavor) -> anyhow::Result<()> {
    let env = pyenv::find(flavor).context("the environment vanished after installing it")?;
    let worker = pyenv::worker_dir(&env).map_err(StageError::from)?;
    let out = sluice_runner::exec::output(
        std::process::Command::new(&env.python)
            .args(["-c", CUDA_PROBE])
            .envs(pyenv::worker_env(&env, &worker)),
    )
    .context("cannot start the environment's Python")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        return Err(StageError::new(format!(
            "the CUDA execution provider does not load for training:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
        .hint("the NVIDIA driver must support CUDA 11.8 (`nvidia-smi` shows the version); the CUDA and cuDNN libraries come from the environment's NVIDIA wheels")
        .into());
    }
    eprintln!(
        "the CUDA execution provider loads for training: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

/// ONNX Runtime's CUDA build for `evaluate`, fetched first when needed.
fn gpu_runtime() -> anyhow::Result<pyenv::GpuRuntime> {
    Ok(match pyenv::find_gpu_runtime() {
        Some(r) => {
            eprintln!(
                "ONNX Runtime's CUDA build for inference is ready: {}",
                r.library.display()
            );
            r
        }
        None => {
            let r = pyenv::ensure_gpu_runtime(&CancelToken::default(), &mut printer())
                .map_err(StageError::from)?;
            eprintln!("installed: {}", r.library.display());
            r
        }
    })
}

/// Runs the probe model on the CUDA provider of `runtime` in this process, as `evaluate` will.
fn inference_cuda(runtime: pyenv::GpuRuntime) -> anyhow::Result<()> {
    infer::init_library(&infer::Library {
        path: runtime.library,
        build: infer::Build::Cuda,
        cuda_libraries: runtime.cuda_libraries,
    })?;
    let probe_model =
        std::env::temp_dir().join(format!("sluice-cuda-probe-{}.onnx", std::process::id()));
    std::fs::write(&probe_model, PROBE_MODEL)
        .with_context(|| format!("cannot write `{}`", probe_model.display()))?;
    let loaded = infer::Model::load_on(&probe_model, 1, infer::Provider::Cuda { device: 0 });
    let _ = std::fs::remove_file(&probe_model);
    let model = loaded.context("the CUDA execution provider does not load for inference")?;
    model
        .run(&[1, 1], vec![1.0])
        .map_err(anyhow::Error::msg)
        .context("the CUDA execution provider loads for inference, but cannot run a model")?;
    eprintln!("the CUDA execution provider loads for inference: CUDAExecutionProvider");
    Ok(())
}

/// Prints installation steps on stderr: each phase, and each package as pip starts on it.
fn printer() -> impl FnMut(Step<'_>) {
    let mut last = 0;
    move |step| match step {
        Step::Phase(text) => eprintln!("{text}"),
        Step::Packages { done, total, line } => {
            if done != last && line.starts_with("Collecting") {
                last = done;
                eprintln!("  [{done}/{total}] {line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded probe is a model ONNX Runtime accepts (on the CPU here; the CUDA provider is
    /// `sluice setup --cuda`'s business).
    #[test]
    fn the_probe_model_runs() {
        // Like the train and evaluate tests, this needs the environment `sluice setup` makes.
        let lib = pyenv::find_runtime()
            .expect("ONNX Runtime is not installed: run `sluice setup` before the tests");
        infer::init(&lib).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.onnx");
        std::fs::write(&path, PROBE_MODEL).unwrap();
        let model = infer::Model::load(&path, 1).unwrap();
        let out = model.run(&[1, 1], vec![-1.0]).unwrap();
        assert_eq!((out[0].name.as_str(), &out[0].values), ("y", &vec![0.0]));
        let out = model.run(&[1, 1], vec![2.5]).unwrap();
        assert_eq!(out[0].values, vec![2.5]);
    }
}
