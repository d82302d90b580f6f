//! `sluice setup [--cuda]`: installs the training environment and fetches the ONNX Runtime
//! library for inference ahead of time (the first train or evaluate run does the same by
//! itself). `--cuda` installs the CUDA builds of both — training's environment and inference's
//! `onnxruntime-gpu` with NVIDIA's libraries, which `evaluate` never fetches by itself — and
//! proves that each one's CUDA provider loads.

use crate::gpus;
use anyhow::{bail, Context as _};
use sluice_runner::stage::CancelToken;
use sluice_stages::infer;
use sluice_stages::pyenv::{self, Flavor, Step};

/// Loads the CUDA execution provider for real: `get_available_providers()` only says that the
/// build has it, not that cuDNN and friends can be loaded. With a path argument, it also saves
/// the probe model there, for the inference runtime's own check.
const CUDA_PROBE: &str = r#"
import sys, onnx
from onnx import helper, TensorProto
import onnxruntime as ort
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
if len(sys.argv) > 1:
    onnx.save(m, sys.argv[1])
s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider"])
used = s.get_providers()
print(" ".join(used))
sys.exit(0 if "CUDAExecutionProvider" in used else 3)
"#;

pub fn run(cuda: bool) -> anyhow::Result<()> {
    let flavor = if cuda { Flavor::Cuda } else { Flavor::Cpu };
    if cuda && gpus::detect(None).is_empty() {
        bail!("`--cuda` asks for the CUDA training environment, but this machine shows no GPU (CUDA_VISIBLE_DEVICES is empty or nvidia-smi found none)\nhint: run `sluice setup` for the CPU environment");
    }
    if let Some(env) = pyenv::find(flavor) {
        eprintln!(
            "the {} training environment is ready: {}",
            flavor.name(),
            env.dir.display()
        );
    } else {
        let mut last = 0;
        let env = pyenv::ensure(flavor, &CancelToken::default(), &mut |step| match step {
            Step::Phase(text) => eprintln!("{text}"),
            Step::Packages { done, total, line } => {
                if done != last && line.starts_with("Collecting") {
                    last = done;
                    eprintln!("  [{done}/{total}] {line}");
                }
            }
        })?;
        eprintln!("installed: {}", env.dir.display());
    }
    if let Some(lib) = pyenv::find_runtime() {
        eprintln!("ONNX Runtime for inference is ready: {}", lib.display());
    } else {
        let lib = pyenv::ensure_runtime(&CancelToken::default(), &mut |step| {
            if let Step::Phase(text) = step {
                eprintln!("{text}");
            }
        })?;
        eprintln!("installed: {}", lib.display());
    }
    if cuda {
        let runtime = gpu_runtime()?;
        let env = pyenv::find(flavor).context("the environment vanished after installing it")?;
        let worker = pyenv::worker_dir(&env)?;
        let probe_model =
            std::env::temp_dir().join(format!("sluice-cuda-probe-{}.onnx", std::process::id()));
        let out = std::process::Command::new(&env.python)
            .args(["-c", CUDA_PROBE])
            .arg(&probe_model)
            .envs(pyenv::worker_env(&env, &worker))
            .output()
            .context("cannot start the environment's Python")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            bail!(
                "the CUDA execution provider does not load:\n{}\nhint: the NVIDIA driver must support CUDA 12 (`nvidia-smi` shows the version); the CUDA and cuDNN libraries come from the environment's NVIDIA wheels",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!(
            "the CUDA execution provider loads for training: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        let checked = inference_cuda(runtime, &probe_model);
        let _ = std::fs::remove_file(&probe_model);
        checked?;
    }
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
            let mut last = 0;
            let r = pyenv::ensure_gpu_runtime(&CancelToken::default(), &mut |step| match step {
                Step::Phase(text) => eprintln!("{text}"),
                Step::Packages { done, total, line } => {
                    if done != last && line.starts_with("Collecting") {
                        last = done;
                        eprintln!("  [{done}/{total}] {line}");
                    }
                }
            })?;
            eprintln!("installed: {}", r.library.display());
            r
        }
    })
}

/// Runs `probe_model` on the CUDA provider of `runtime` in this process, as `evaluate` will.
fn inference_cuda(runtime: pyenv::GpuRuntime, probe_model: &std::path::Path) -> anyhow::Result<()> {
    infer::init_library(&infer::Library {
        path: runtime.library,
        build: infer::Build::Cuda,
        cuda_libraries: runtime.cuda_libraries,
    })
    .map_err(anyhow::Error::msg)?;
    let model = infer::Model::load_on(probe_model, 1, infer::Provider::Cuda { device: 0 })
        .map_err(anyhow::Error::msg)
        .context("the CUDA execution provider does not load for inference")?;
    model
        .run(&[1, 1], vec![1.0])
        .map_err(anyhow::Error::msg)
        .context("the CUDA execution provider loads for inference, but cannot run a model")?;
    eprintln!("the CUDA execution provider loads for inference: CUDAExecutionProvider");
    Ok(())
}
