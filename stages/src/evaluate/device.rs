//! Choosing where `evaluate` runs the model, as `train` chooses where it trains
//! (`train/device.rs`): pure logic, apart from the I/O, so that every case has a unit test.
//! `device:` as written, the GPUs the scheduler gave the stage and what ONNX Runtime can offer in
//! this process ([`CudaRuntime`]) decide the provider. A fall-back to the CPU is never silent:
//! `note` says why, and the stage logs it.

use crate::train::Device;
use sluice_runner::StageError;

/// What this process can offer the CUDA provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CudaRuntime {
    /// ONNX Runtime's CUDA build is installed (or loaded already), or `ORT_DYLIB_PATH` names a
    /// library that may have the provider.
    Ready,
    /// `sluice setup --cuda` has not installed the CUDA build.
    NotInstalled,
    /// An earlier stage of this process loaded the CPU-only build, and a process loads ONNX
    /// Runtime once.
    CpuBuildLoaded,
}

/// Where the model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Cpu,
    /// The stage's first GPU, as the scheduler names it (`CUDA_VISIBLE_DEVICES` or nvidia-smi).
    Cuda {
        gpu: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub target: Target,
    /// `device: auto`: a CUDA provider that does not load falls back to the CPU (saying so).
    pub auto: bool,
    /// Why the CPU was chosen where a GPU might have been used.
    pub note: Option<String>,
}

pub(crate) fn choose(
    requested: Device,
    gpus: &[String],
    runtime: CudaRuntime,
) -> Result<Choice, StageError> {
    let cpu = |note: Option<String>| Choice {
        target: Target::Cpu,
        auto: requested == Device::Auto,
        note,
    };
    let cuda = |gpu: &String| Choice {
        target: Target::Cuda { gpu: gpu.clone() },
        auto: requested == Device::Auto,
        note: None,
    };
    let gpu = gpus.first();
    match (requested, gpu, runtime) {
        (Device::Cpu, _, _) => Ok(cpu(None)),
        (Device::Cuda, None, _) => Err(StageError::new(
            "`device: cuda` but this stage has no GPU: none was detected (CUDA_VISIBLE_DEVICES, nvidia-smi), or the stage asks for none",
        ).hint("give the stage `resources: {gpus: 1}`, or use `device: auto` to evaluate on the CPU where there is no GPU")),
        (Device::Cuda, Some(_), CudaRuntime::NotInstalled) => Err(StageError::new(
            "`device: cuda` needs ONNX Runtime's CUDA build, which is not installed",
        ).hint("run `sluice setup --cuda` once (it fetches onnxruntime-gpu with the CUDA 13 and cuDNN 9 libraries from PyPI, about 1.6 GB)")),
        (Device::Cuda, Some(_), CudaRuntime::CpuBuildLoaded) => Err(StageError::new(
            "`device: cuda`, but an earlier stage of this run loaded ONNX Runtime's CPU build, and a process can load ONNX Runtime only once",
        ).hint("give every evaluate stage of the pipeline a GPU (`resources: {gpus: 1}`), so that the CUDA build is the one loaded (it runs CPU sessions too)")),
        (Device::Cuda, Some(g), CudaRuntime::Ready) => Ok(cuda(g)),
        (Device::Auto, None, _) => Ok(cpu(Some(
            "no GPU is available to this stage; evaluating on the CPU (a stage gets one with `resources: {gpus: 1}` on a machine that has one)".into(),
        ))),
        (Device::Auto, Some(_), CudaRuntime::NotInstalled) => Ok(cpu(Some(format!(
            "GPU {} is assigned, but ONNX Runtime's CUDA build is not installed; evaluating on the CPU (`sluice setup --cuda` installs it once)",
            gpus.join(",")
        )))),
        (Device::Auto, Some(_), CudaRuntime::CpuBuildLoaded) => Ok(cpu(Some(format!(
            "GPU {} is assigned, but an earlier stage of this run loaded ONNX Runtime's CPU build (a process loads it once); evaluating on the CPU",
            gpus.join(",")
        )))),
        (Device::Auto, Some(g), CudaRuntime::Ready) => Ok(cuda(g)),
    }
}

/// The CUDA device ordinal of `gpu` inside this process: its position in this process's
/// `CUDA_VISIBLE_DEVICES` (`visible`) when that is set, since CUDA numbers the visible devices
/// from 0; else the index `nvidia-smi` gave it. `None` when it cannot be placed.
pub(crate) fn cuda_ordinal(gpu: &str, visible: Option<&str>) -> Option<i32> {
    match visible.map(str::trim).filter(|v| !v.is_empty()) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .position(|d| d == gpu)
            .and_then(|p| i32::try_from(p).ok()),
        None => gpu.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Vec<String> {
        vec!["0".into()]
    }

    const ALL: [CudaRuntime; 3] = [
        CudaRuntime::Ready,
        CudaRuntime::NotInstalled,
        CudaRuntime::CpuBuildLoaded,
    ];

    #[test]
    fn cpu_is_cpu_everywhere() {
        for gpus in [vec![], gpu()] {
            for runtime in ALL {
                let c = choose(Device::Cpu, &gpus, runtime).unwrap();
                assert_eq!((c.target, c.auto, c.note), (Target::Cpu, false, None));
            }
        }
    }

    #[test]
    fn cuda_needs_a_gpu_and_the_cuda_build() {
        for runtime in ALL {
            let e = choose(Device::Cuda, &[], runtime).unwrap_err();
            assert!(
                e.message
                    .contains("`device: cuda` but this stage has no GPU"),
                "{e}"
            );
            assert!(e.hint.unwrap().contains("`device: auto`"));
        }
        let e = choose(Device::Cuda, &gpu(), CudaRuntime::NotInstalled).unwrap_err();
        assert!(e.hint.unwrap().contains("sluice setup --cuda"));
        let e = choose(Device::Cuda, &gpu(), CudaRuntime::CpuBuildLoaded).unwrap_err();
        assert!(e.message.contains("loaded ONNX Runtime's CPU build"), "{e}");
        let c = choose(Device::Cuda, &gpu(), CudaRuntime::Ready).unwrap();
        assert_eq!(
            (c.target, c.auto, c.note),
            (Target::Cuda { gpu: "0".into() }, false, None)
        );
    }

    #[test]
    fn auto_uses_cuda_only_with_a_gpu_and_the_cuda_build_and_says_why_not() {
        let c = choose(Device::Auto, &["3".into(), "5".into()], CudaRuntime::Ready).unwrap();
        assert_eq!(
            (c.target, c.auto, c.note),
            (Target::Cuda { gpu: "3".into() }, true, None)
        );
        for runtime in ALL {
            let c = choose(Device::Auto, &[], runtime).unwrap();
            assert_eq!((c.target, c.auto), (Target::Cpu, true));
            assert!(c
                .note
                .unwrap()
                .contains("no GPU is available to this stage"));
        }
        let c = choose(Device::Auto, &gpu(), CudaRuntime::NotInstalled).unwrap();
        assert_eq!(c.target, Target::Cpu);
        assert!(c.note.unwrap().contains("sluice setup --cuda"));
        let c = choose(Device::Auto, &gpu(), CudaRuntime::CpuBuildLoaded).unwrap();
        assert_eq!(c.target, Target::Cpu);
        assert!(c.note.unwrap().contains("CPU build"));
    }

    #[test]
    fn ordinals_count_the_devices_this_process_sees() {
        assert_eq!(cuda_ordinal("2", None), Some(2));
        assert_eq!(cuda_ordinal("2", Some("")), Some(2));
        assert_eq!(cuda_ordinal("3", Some("1,3")), Some(1));
        assert_eq!(cuda_ordinal("GPU-abc", Some("GPU-xyz, GPU-abc")), Some(1));
        assert_eq!(cuda_ordinal("GPU-abc", None), None);
        assert_eq!(cuda_ordinal("4", Some("1,3")), None);
    }
}
