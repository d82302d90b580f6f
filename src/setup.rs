//! `sluice setup [--cuda]`: installs the training environment and fetches the ONNX Runtime
//! library for inference ahead of time (the first train or evaluate run does the same by
//! itself), and with `--cuda` proves that the CUDA provider loads.

use crate::gpus;
use anyhow::{bail, Context as _};
use sluice_runner::stage::CancelToken;
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
        let env = pyenv::find(flavor).context("the environment vanished after installing it")?;
        let worker = pyenv::worker_dir(&env)?;
        let out = std::process::Command::new(&env.python)
            .args(["-c", CUDA_PROBE])
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
            "the CUDA execution provider loads: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}
