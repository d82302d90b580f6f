//! [`check`]: what `deploy` proves about a model bundle before publishing it. The preprocess
//! artifact must parse with the parsers `sluice serve` uses, and `model.onnx` must load in the
//! real ONNX Runtime, take the artifact's rows and answer one value per class (or one for a
//! regression) for a probe row of zeros, as `sluice serve` checks each version it loads. A
//! registry then never holds a version that a server would refuse.

use crate::infer::{self, Build, Library, Model};
use crate::preprocess::{ImagePreprocess, Preprocess, Task};
use serde_json::Value;
use sluice_runner::StageError;
use std::path::Path;

/// What the artifact says about the model's input and output.
struct Expected {
    /// One row's shape: `[features]`, or `[channels, height, width]` for images.
    row: Vec<usize>,
    /// Class names; `None` for a regression.
    classes: Option<Vec<String>>,
}

const HINT: &str = "give `deploy` the `model` of the `train` stage and the `preprocess` output of the `normalize` stage that prepared its training data";

/// Parses `preprocess` (the text of the file `shown_pre`) and loads and probes the model at
/// `model_path` (shown as `shown_model`). `runtime` yields the ONNX Runtime library to load when
/// the process has not loaded one yet.
pub(crate) fn check(
    model_path: &Path,
    shown_model: &str,
    preprocess: &[u8],
    shown_pre: &str,
    runtime: impl FnOnce() -> Result<Library, StageError>,
) -> Result<(), StageError> {
    let expected = parse_artifact(preprocess, shown_pre)?;
    if infer::loaded().is_none() {
        infer::init_library(&runtime()?)?;
    }
    let model = Model::load(model_path, 1).map_err(|e| {
        let prefix = format!("cannot load the model `{}`: ", model_path.display());
        StageError::new(format!(
            "`{shown_model}` does not load in ONNX Runtime: {}",
            e.message.strip_prefix(&prefix).unwrap_or(&e.message)
        ))
        .hint(HINT)
    })?;
    let declared = &model.input_shape;
    let fits = declared.len() == expected.row.len() + 1
        && declared[1..]
            .iter()
            .zip(&expected.row)
            .all(|(&d, &e)| d < 0 || d as usize == e);
    if !fits {
        return Err(StageError::new(format!(
            "the model `{shown_model}` takes `{}` with shape {declared:?}, but `{shown_pre}` makes rows of shape {:?}",
            model.input, expected.row
        ))
        .hint(HINT));
    }
    let mut shape = vec![1];
    shape.extend(&expected.row);
    let zeros = vec![0.0; expected.row.iter().product()];
    let out = model
        .run(&shape, zeros)
        .map_err(|e| format!("the model `{shown_model}` fails on a row of zeros: {e}"))?;
    let first = out
        .first()
        .ok_or_else(|| format!("the model `{shown_model}` has no outputs"))?;
    let width: usize = first.shape.iter().skip(1).product();
    let (ok, wanted) = match &expected.classes {
        Some(c) => (
            width == c.len() || (width == 1 && c.len() == 2),
            format!("{} (one per class: {})", c.len(), c.join(", ")),
        ),
        None => (width == 1, "1 (a regression target)".to_string()),
    };
    if !ok {
        return Err(StageError::new(format!(
            "the model `{shown_model}` answers {width} values per row in `{}`, but `{shown_pre}` expects {wanted}",
            first.name
        ))
        .hint(HINT));
    }
    Ok(())
}

/// The row shape and classes of a table or image preprocess artifact, read as `sluice serve`
/// reads it.
fn parse_artifact(text: &[u8], shown: &str) -> Result<Expected, StageError> {
    let bad = |e: &dyn std::fmt::Display| {
        StageError::new(format!("`{shown}` is not a preprocess artifact: {e}")).hint(HINT)
    };
    let text = std::str::from_utf8(text).map_err(|e| bad(&e))?;
    let kind: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    if kind.get("kind").and_then(Value::as_str) == Some("images") {
        let pre = ImagePreprocess::from_json(text).map_err(|e| bad(&e))?;
        let [w, h] = pre.size;
        return Ok(Expected {
            row: vec![pre.color.channels(), h as usize, w as usize],
            classes: Some(pre.classes),
        });
    }
    let pre = Preprocess::from_json(text).map_err(|e| bad(&e))?;
    let classes = match (pre.label.task, pre.label.classes) {
        (Task::Classification, Some(classes)) => Some(classes),
        (Task::Classification, None) => {
            return Err(bad(&"a classification label without `classes`"))
        }
        (Task::Regression, _) => None,
    };
    Ok(Expected {
        row: vec![pre.features.len()],
        classes,
    })
}

/// The library `deploy` loads when nothing in the process has: `ORT_DYLIB_PATH`, else the CUDA
/// build when it is installed (it runs CPU sessions too, so a later CUDA `evaluate` in the same
/// run can still use it), else the CPU build, fetched first when needed.
pub(crate) fn runtime_library(
    fetch_cpu: impl FnOnce() -> Result<std::path::PathBuf, StageError>,
) -> Result<Library, StageError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return Ok(Library {
            path: path.into(),
            build: Build::Custom,
            cuda_libraries: Vec::new(),
        });
    }
    if let Some(gpu) = crate::pyenv::find_gpu_runtime() {
        return Ok(Library {
            path: gpu.library,
            build: Build::Cuda,
            cuda_libraries: gpu.cuda_libraries,
        });
    }
    Ok(Library {
        path: fetch_cpu()?,
        build: Build::Cpu,
        cuda_libraries: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_that_serve_would_refuse_are_named() {
        let e = parse_artifact(b"{\"format\": 1", "out/pre.json")
            .err()
            .unwrap();
        assert!(
            e.message
                .starts_with("`out/pre.json` is not a preprocess artifact: EOF while parsing"),
            "{e}"
        );
        assert!(!e.message.contains("hint"), "{e}");
        assert!(e.hint.unwrap().starts_with("give `deploy`"));
        let e = parse_artifact(b"{\"format\": 99}", "p.json").err().unwrap();
        assert!(
            e.message
                .starts_with("`p.json` is not a preprocess artifact: "),
            "{e}"
        );
        let e = parse_artifact(b"\xff\xfe", "p.json").err().unwrap();
        assert!(e.message.contains("invalid utf-8"), "{e}");
    }
}
