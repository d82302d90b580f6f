//! Choosing where training runs. Pure logic, kept apart from the I/O so that every case has a
//! unit test: `device:` as written, the GPUs the scheduler gave the stage, and whether the CUDA
//! training environment is installed decide the environment and the device the worker gets. A
//! fall-back to the CPU is never silent: `note` says why, and the stage logs it.

use super::config::Device;
use crate::pyenv::Flavor;
use sluice_runner::StageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub flavor: Flavor,
    /// `"cuda"` or `"cpu"`, as the worker reads it.
    pub device: &'static str,
    /// The worker may still fall back to the CPU (saying so) if the CUDA provider cannot load.
    pub auto: bool,
    /// Why the CPU was chosen where a GPU might have been used.
    pub note: Option<String>,
}

pub(crate) fn choose(
    requested: Device,
    gpus: &[String],
    cuda_env_ready: bool,
) -> Result<Choice, StageError> {
    let cpu = |note: Option<String>| Choice {
        flavor: Flavor::Cpu,
        device: "cpu",
        auto: requested == Device::Auto,
        note,
    };
    match requested {
        Device::Cpu => Ok(cpu(None)),
        Device::Cuda if gpus.is_empty() => Err(StageError::new(
            "`device: cuda` but this stage has no GPU: none was detected (CUDA_VISIBLE_DEVICES, nvidia-smi)",
        )
        .hint("use `device: auto` to train on the CPU where there is no GPU")),
        Device::Cuda => Ok(Choice {
            flavor: Flavor::Cuda,
            device: "cuda",
            auto: false,
            note: None,
        }),
        Device::Auto if gpus.is_empty() => Ok(cpu(Some(
            "no GPU is available to this stage; training on the CPU (a stage gets one with `resources: {gpus: 1}` on a machine that has one)".into(),
        ))),
        Device::Auto if !cuda_env_ready => Ok(cpu(Some(format!(
            "GPU {} is assigned, but the CUDA training environment is not installed; training on the CPU (`sluice setup --cuda` installs it once, as does `device: cuda` on the next run)",
            gpus.join(",")
        )))),
        Device::Auto => Ok(Choice {
            flavor: Flavor::Cuda,
            device: "cuda",
            auto: true,
            note: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Vec<String> {
        vec!["0".into()]
    }

    #[test]
    fn cpu_is_cpu_everywhere() {
        for (gpus, ready) in [(vec![], false), (gpu(), true)] {
            let c = choose(Device::Cpu, &gpus, ready).unwrap();
            assert_eq!(
                (c.flavor, c.device, c.auto, c.note),
                (Flavor::Cpu, "cpu", false, None)
            );
        }
    }

    #[test]
    fn cuda_needs_a_gpu_and_installs_its_environment() {
        let e = choose(Device::Cuda, &[], true).unwrap_err();
        assert!(
            e.message
                .contains("`device: cuda` but this stage has no GPU"),
            "{e}"
        );
        assert!(e.hint.unwrap().contains("`device: auto`"));
        let c = choose(Device::Cuda, &gpu(), false).unwrap();
        assert_eq!((c.flavor, c.device, c.auto), (Flavor::Cuda, "cuda", false));
    }

    #[test]
    fn auto_uses_cuda_only_with_a_gpu_and_the_environment() {
        let c = choose(Device::Auto, &gpu(), true).unwrap();
        assert_eq!(
            (c.flavor, c.device, c.auto, c.note),
            (Flavor::Cuda, "cuda", true, None)
        );

        let c = choose(Device::Auto, &[], true).unwrap();
        assert_eq!((c.flavor, c.device), (Flavor::Cpu, "cpu"));
        assert!(c.note.unwrap().contains("no GPU is available"));

        let c = choose(Device::Auto, &gpu(), false).unwrap();
        assert_eq!((c.flavor, c.device), (Flavor::Cpu, "cpu"));
        assert!(c.note.unwrap().contains("sluice setup --cuda"));
    }
}
