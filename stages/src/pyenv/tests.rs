#[cfg(test)]
use super::runtime::{gpu_runtime_in, CUDA_LIBRARIES};
use super::*;

/// A stand-in for `python` that acts like `python -m pip install`: the shell script `body`.
fn fake_python(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn pip_output_goes_to_the_log_and_the_progress_and_a_failure_is_false() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(
        dir.path(),
        "echo 'Collecting numpy==2.4.6 (from -r req.txt (line 7))'\n\
         echo 'Collecting onnx==1.0 (from -r req.txt (line 8))'\n\
         echo 'ERROR: no matching distribution' >&2\n\
         exit 1",
    );
    let log = dir.path().join("pip.log");
    let mut seen = Vec::new();
    let ok = pip(
        &python,
        &["install".into()],
        &log,
        2,
        &CancelToken::default(),
        &mut |step| {
            if let Step::Packages { done, total, line } = step {
                seen.push((done, total, line.to_string()));
            }
        },
    )
    .unwrap();
    assert!(!ok);
    assert!(
        seen.contains(&(1, 2, "Collecting numpy==2.4.6".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(2, 2, "Collecting onnx==1.0".into())),
        "{seen:?}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ERROR: no matching distribution"),
        "{logged}"
    );
    assert!(logged.contains("Collecting onnx==1.0 (from"), "{logged}");
}

#[test]
fn a_cancelled_pip_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    // A build backend left running in pip's group would keep the pipes open for a minute.
    let python = fake_python(dir.path(), "sleep 60 &\necho 'Collecting x'\nsleep 60");
    let cancel = CancelToken::default();
    let result = pip(
        &python,
        &[],
        &dir.path().join("pip.log"),
        1,
        &cancel,
        &mut |_| cancel.cancel(sluice_runner::cancel::CancelReason::Interrupt),
    );
    assert!(matches!(result, Err(EnvError::Cancelled)), "{result:?}");
}

#[test]
fn the_cuda_build_is_the_release_the_cpu_library_is() {
    let pins: Vec<&str> = REQUIREMENTS_ORT_CUDA
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        pins.contains(&format!("onnxruntime-gpu=={ORT_VERSION}").as_str()),
        "{pins:?}"
    );
    assert!(pins.iter().all(|p| p.contains("==")), "{pins:?}");
}

#[test]
fn a_gpu_runtime_needs_every_required_library_and_lists_them_in_load_order() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |rel: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    };
    touch(&format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"));
    for (rel, required) in CUDA_LIBRARIES {
        if *required {
            touch(&format!("nvidia/{rel}"));
        }
    }
    let r = gpu_runtime_in(dir.path()).unwrap();
    let names: Vec<String> = r
        .cuda_libraries
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("libcudart.so.13"));
    assert_eq!(names.last().map(String::as_str), Some("libcudnn.so.9"));
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("libcublasLt.so.13") < pos("libcublas.so.13"));
    assert!(pos("libcudnn_graph.so.9") < pos("libcudnn_ops.so.9"));

    std::fs::remove_file(dir.path().join("nvidia/cudnn/lib/libcudnn_ops.so.9")).unwrap();
    let missing = gpu_runtime_in(dir.path()).unwrap_err();
    assert!(missing.ends_with("libcudnn_ops.so.9"), "{missing:?}");
}
