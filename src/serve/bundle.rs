//! [`Bundle`]: one loaded model version — its preprocessing artifact, a pool of ONNX Runtime
//! sessions, and what its inputs and outputs look like on the wire — and [`Bundle::infer`],
//! which turns raw request tensors into features, runs them as one batch, and turns the
//! model's output into probabilities and class names.
//!
//! Tables take one input per raw column the artifact uses (numbers as FP64/FP32/integers, shape
//! `[N]` or `[N, 1]`; categories as BYTES); images take one UINT8 input `image`, `[N, H, W, C]`.
//! Classifiers answer `probabilities` (FP64 `[N, K]`: the softmax is computed in f64, as
//! `evaluate` computes it, so both give the same numbers) and `class` (BYTES `[N]`); regressors
//! answer `prediction` (FP32 `[N]`).

use super::error::ServeError;
use super::protocol::{DataType, Elements, OutTensor, OutValues, Tensor};
use serde_json::{json, Map, Value};
use sluice_runner::StageError;
use sluice_stages::evaluate::metrics;
use sluice_stages::infer::Model;
use sluice_stages::preprocess::{ImagePreprocess, Preprocess, Task};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The most feature values given to one model run; larger requests run in pieces.
const RUN_VALUES: usize = 1 << 20;

/// What a raw table column is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Numeric,
    Categorical,
}

/// How requests become features.
enum Features {
    Table {
        pre: Preprocess,
        columns: Vec<(String, ColumnKind)>,
    },
    Image {
        pre: ImagePreprocess,
    },
}

/// What the model's first output means.
enum Head {
    /// `K` logits per row (or one, for two classes with a sigmoid).
    Classes(Arc<[String]>),
    Regression,
}

/// A loaded model version.
pub(crate) struct Bundle {
    pub name: String,
    pub version: u64,
    features: Features,
    head: Head,
    /// The model's input shape (batch first) for one row.
    row_shape: Vec<usize>,
    /// Sessions, each behind a lock taken with `try_lock` first, so concurrent requests spread
    /// over idle sessions instead of queueing on one.
    pool: Vec<(Mutex<()>, Model)>,
    next: AtomicUsize,
}

/// What to do about a model and an artifact that do not fit each other.
const BUNDLE_HINT: &str =
    "deploy the model together with the preprocess.json of the normalize run that trained it";

fn read(dir: &Path, file: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(file))
        .map_err(|e| format!("cannot read `{}`: {e}", dir.join(file).display()))
}

impl Bundle {
    /// Loads the bundle in `dir` with `sessions` single-threaded sessions, and checks with one
    /// probe row that the model's input and output fit the preprocessing artifact.
    pub(crate) fn load(
        dir: &Path,
        name: &str,
        version: u64,
        sessions: usize,
    ) -> Result<Bundle, StageError> {
        let text = read(dir, "preprocess.json")?;
        let artifact = dir.join("preprocess.json");
        let kind: Value = serde_json::from_str(&text)
            .map_err(|e| format!("`{}` is not JSON: {e}", artifact.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            format!("`{}` is not a preprocess artifact: {e}", artifact.display())
        };
        let (features, head, row_shape) =
            if kind.get("kind").and_then(Value::as_str) == Some("images") {
                let pre = ImagePreprocess::from_json(&text).map_err(|e| bad(&e))?;
                let [w, h] = pre.size;
                let shape = vec![pre.color.channels(), h as usize, w as usize];
                let head = Head::Classes(pre.classes.clone().into());
                (Features::Image { pre }, head, shape)
            } else {
                let pre = Preprocess::from_json(&text).map_err(|e| bad(&e))?;
                let mut columns: Vec<(String, ColumnKind)> = pre
                    .numeric
                    .iter()
                    .map(|c| (c.name.clone(), ColumnKind::Numeric))
                    .collect();
                columns.extend(
                    pre.categorical
                        .iter()
                        .map(|c| (c.name.clone(), ColumnKind::Categorical)),
                );
                let head = match (pre.label.task, &pre.label.classes) {
                    (Task::Classification, Some(classes)) => Head::Classes(classes.clone().into()),
                    (Task::Classification, None) => {
                        return Err(bad(&"a classification label without `classes`").into())
                    }
                    (Task::Regression, _) => Head::Regression,
                };
                let shape = vec![pre.features.len()];
                (Features::Table { pre, columns }, head, shape)
            };

        let model_path = dir.join("model.onnx");
        let mut pool = Vec::with_capacity(sessions.max(1));
        for _ in 0..sessions.max(1) {
            // No memory arena: a session would otherwise keep the largest batch it ever ran.
            pool.push((Mutex::new(()), Model::load_per_run(&model_path, 1)?));
        }
        let bundle = Bundle {
            name: name.to_string(),
            version,
            features,
            head,
            row_shape,
            pool,
            next: AtomicUsize::new(0),
        };
        bundle.check(&model_path)?;
        Ok(bundle)
    }

    /// Runs one row of zeros: the model must take the artifact's features and answer one value
    /// per class (or one for regression).
    fn check(&self, model_path: &Path) -> Result<(), StageError> {
        let model = &self.pool[0].1;
        let declared = &model.input_shape;
        let expected: Vec<i64> = self.row_shape.iter().map(|&d| d as i64).collect();
        let fits = declared.len() == expected.len() + 1
            && declared[1..]
                .iter()
                .zip(&expected)
                .all(|(&d, &e)| d < 0 || d == e);
        if !fits {
            return Err(StageError::new(format!(
                "the model `{}` takes `{}` with shape {declared:?}, but its preprocess artifact makes rows of shape {expected:?}",
                model_path.display(),
                model.input,
            ))
            .hint(BUNDLE_HINT));
        }
        let mut shape = vec![1];
        shape.extend(&self.row_shape);
        let zeros = vec![0.0; self.row_shape.iter().product()];
        let out = model.run(&shape, zeros)?;
        let first = out.first().ok_or("the model has no outputs")?;
        let width: usize = first.shape.iter().skip(1).product();
        let (ok, wanted) = match &self.head {
            Head::Classes(c) => (
                width == c.len() || (width == 1 && c.len() == 2),
                format!("{} (one per class: {})", c.len(), c.join(", ")),
            ),
            Head::Regression => (width == 1, "1 (a regression target)".to_string()),
        };
        if !ok {
            return Err(StageError::new(format!(
                "the model `{}` answers {width} values per row in `{}`, but its preprocess artifact expects {wanted}",
                model_path.display(),
                first.name
            ))
            .hint(BUNDLE_HINT));
        }
        Ok(())
    }

    /// The inputs as the metadata route lists them: `(name, datatype, shape)`.
    fn input_specs(&self) -> Vec<(String, &'static str, Vec<i64>)> {
        match &self.features {
            Features::Table { columns, .. } => columns
                .iter()
                .map(|(name, kind)| {
                    let t = match kind {
                        ColumnKind::Numeric => "FP64",
                        ColumnKind::Categorical => "BYTES",
                    };
                    (name.clone(), t, vec![-1])
                })
                .collect(),
            Features::Image { pre } => {
                let [w, h] = pre.size;
                vec![(
                    "image".into(),
                    "UINT8",
                    vec![-1, h.into(), w.into(), pre.color.channels() as i64],
                )]
            }
        }
    }

    /// `GET /v2/models/{name}[/versions/{v}]`.
    pub(crate) fn metadata(&self, versions: &[u64]) -> Value {
        let inputs: Vec<Value> = self
            .input_specs()
            .into_iter()
            .map(|(name, datatype, shape)| json!({"name": name, "datatype": datatype, "shape": shape}))
            .collect();
        let outputs = match &self.head {
            Head::Classes(c) => json!([
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, c.len()]},
                {"name": "class", "datatype": "BYTES", "shape": [-1]},
            ]),
            Head::Regression => json!([{"name": "prediction", "datatype": "FP32", "shape": [-1]}]),
        };
        let mut meta = json!({
            "name": self.name,
            "versions": versions.iter().map(u64::to_string).collect::<Vec<_>>(),
            "platform": "onnxruntime_onnx",
            "inputs": inputs,
            "outputs": outputs,
        });
        if let Head::Classes(c) = &self.head {
            meta["parameters"] = json!({ "classes": c.as_ref() });
        }
        meta
    }

    /// Preprocesses, runs and postprocesses one request (one batch). The inputs are taken by
    /// value and dropped once they are features, and the features once the model has run, so
    /// a large request holds at most two of its forms at a time.
    pub(crate) fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<OutTensor>, ServeError> {
        let (rows, features) = match &self.features {
            Features::Table { pre, columns } => table_features(pre, columns, &inputs)?,
            Features::Image { pre } => image_features(pre, &inputs)?,
        };
        drop(inputs);
        let out = if rows == 0 {
            Vec::new()
        } else {
            self.run(rows, features)?
        };
        let width = out.len() / rows.max(1);
        if let Some(at) = out.iter().position(|x| !x.is_finite()) {
            return Err(ServeError::bad_request(format!(
                "row {}: the model's output is {} for these inputs, not a finite number\nhint: send values in the range of the training data",
                at / width.max(1),
                out[at]
            )));
        }
        Ok(match &self.head {
            Head::Regression => vec![OutTensor {
                name: "prediction",
                shape: vec![rows],
                values: OutValues::F32(out),
            }],
            Head::Classes(classes) => {
                let k = classes.len();
                let probs = if out.len() == rows * k {
                    metrics::softmax(&out, k)
                } else {
                    metrics::sigmoid_pairs(&out)
                };
                drop(out);
                let index = probs
                    .chunks_exact(k)
                    .map(|row| argmax(row) as u32)
                    .collect();
                vec![
                    OutTensor {
                        name: "probabilities",
                        shape: vec![rows, k],
                        values: OutValues::F64(probs),
                    },
                    OutTensor {
                        name: "class",
                        shape: vec![rows],
                        values: OutValues::Picked {
                            names: classes.clone(),
                            index,
                        },
                    },
                ]
            }
        })
    }

    /// Runs `rows` rows of features, at most [`RUN_VALUES`] feature values at a time: the
    /// model's intermediate tensors grow with the batch, and a request of millions of rows
    /// would otherwise need them all at once. Rows are independent, so the outputs are those
    /// of one run, concatenated.
    fn run(&self, rows: usize, features: Vec<f32>) -> Result<Vec<f32>, ServeError> {
        let per_row = self.row_shape.iter().product::<usize>().max(1);
        let step = (RUN_VALUES / per_row).max(1);
        let model = self.session();
        let _turn = model.0.lock().unwrap_or_else(|p| p.into_inner());
        let run = |n: usize, values: Vec<f32>| {
            let mut shape = vec![n];
            shape.extend(&self.row_shape);
            model
                .1
                .run(&shape, values)
                .map(|mut out| out.swap_remove(0).values)
                .map_err(ServeError::internal)
        };
        if rows <= step {
            return run(rows, features);
        }
        let mut out = Vec::new();
        for (i, chunk) in features.chunks(step * per_row).enumerate() {
            let n = chunk.len() / per_row;
            let values = run(n, chunk.to_vec())?;
            if i == 0 {
                out.reserve_exact(values.len() / n * rows);
            }
            out.extend_from_slice(&values);
        }
        Ok(out)
    }

    /// An idle session if there is one, else the next in turn.
    fn session(&self) -> &(Mutex<()>, Model) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.pool.len();
        for i in 0..n {
            let s = &self.pool[(start + i) % n];
            if s.0.try_lock().is_ok() {
                return s;
            }
        }
        &self.pool[start % n]
    }
}

/// The batch size of an input: its first dimension, with `[N]` and `[N, 1]` both allowed.
fn rows_of(t: &Tensor) -> Result<usize, ServeError> {
    match t.shape.as_slice() {
        [n] | [n, 1] => Ok(*n),
        other => Err(ServeError::bad_request(format!(
            "input `{}` has shape {other:?}; a column takes [N] or [N, 1]",
            t.name
        ))),
    }
}

fn table_features(
    pre: &Preprocess,
    columns: &[(String, ColumnKind)],
    inputs: &[Tensor],
) -> Result<(usize, Vec<f32>), ServeError> {
    for t in inputs {
        if !columns.iter().any(|(c, _)| *c == t.name) {
            let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
            return Err(ServeError::bad_request(format!(
                "the model has no input `{}`; it takes: {}",
                t.name,
                names.join(", ")
            )));
        }
    }
    let mut found = Vec::with_capacity(columns.len());
    let mut rows = None;
    for (name, kind) in columns {
        let t = inputs
            .iter()
            .find(|t| t.name == *name)
            .ok_or_else(|| ServeError::bad_request(format!("input `{name}` is missing")))?;
        let n = rows_of(t)?;
        match rows {
            None => rows = Some(n),
            Some(r) if r != n => {
                return Err(ServeError::bad_request(format!(
                    "input `{name}` has {n} rows, but `{}` has {r}",
                    columns[0].0
                )))
            }
            Some(_) => {}
        }
        let ok = match (kind, &t.data) {
            (ColumnKind::Numeric, Elements::Numbers(_)) => t.datatype != DataType::Bool,
            (ColumnKind::Numeric, Elements::U8(_)) => true,
            (ColumnKind::Categorical, Elements::Bytes(_)) => true,
            _ => false,
        };
        if !ok {
            let wanted = match kind {
                ColumnKind::Numeric => "a number type (FP64, FP32 or an integer type)",
                ColumnKind::Categorical => "BYTES (category names)",
            };
            return Err(ServeError::bad_request(format!(
                "input `{name}` is {}, but the column takes {wanted}",
                t.datatype.name()
            )));
        }
        found.push(t);
    }
    let rows = rows.unwrap_or(0);
    let mut row = Map::new();
    let mut features = Vec::with_capacity(rows * pre.features.len());
    for i in 0..rows {
        for t in &found {
            let value = match &t.data {
                Elements::Numbers(v) if v[i].is_nan() => {
                    let filled = pre
                        .numeric
                        .iter()
                        .any(|c| c.name == t.name && c.fill.is_some());
                    if !filled {
                        return Err(ServeError::bad_request(format!(
                            "input `{}` row {i} is missing (NaN), and the model has no fill for it\nhint: fill missing values from the train split with `normalize`'s `impute:`, or send a value",
                            t.name
                        )));
                    }
                    Value::Null
                }
                Elements::Numbers(v) => serde_json::Number::from_f64(v[i])
                    .map(Value::Number)
                    .ok_or_else(|| {
                        ServeError::bad_request(format!(
                            "input `{}` row {i}: {} is not a finite number",
                            t.name, v[i]
                        ))
                    })?,
                Elements::U8(v) => Value::from(v[i]),
                Elements::Bytes(v) => {
                    Value::String(String::from_utf8(v.get(i).to_vec()).map_err(|_| {
                        ServeError::bad_request(format!(
                            "input `{}` row {i} is not UTF-8 text",
                            t.name
                        ))
                    })?)
                }
            };
            row.insert(t.name.clone(), value);
        }
        let x = pre
            .apply(&row)
            .map_err(|e| ServeError::bad_request(format!("row {i}: {e}")))?;
        // Numeric features come first, one per numeric column; the categorical ones are codes
        // and always finite. A finite value can still leave FP32's range once scaled (`1e40`).
        if let Some((c, f)) = pre.numeric.iter().zip(&x).find(|(_, f)| !f.is_finite()) {
            let raw = row.get(&c.name).map(Value::to_string).unwrap_or_default();
            return Err(ServeError::bad_request(format!(
                "input `{}` row {i}: {raw} scales to {f}, which is outside the range of FP32 features\nhint: send values in the range of the training data",
                c.name
            )));
        }
        features.extend(x);
    }
    Ok((rows, features))
}

fn image_features(
    pre: &ImagePreprocess,
    inputs: &[Tensor],
) -> Result<(usize, Vec<f32>), ServeError> {
    let [t] = inputs else {
        return Err(ServeError::bad_request(format!(
            "an image model takes one input, `image`, not {}",
            inputs.len()
        )));
    };
    if t.name != "image" {
        return Err(ServeError::bad_request(format!(
            "the model has no input `{}`; it takes: image",
            t.name
        )));
    }
    let [w, h] = pre.size;
    let c = pre.color.channels();
    let want = [h as usize, w as usize, c];
    let rows = match t.shape.as_slice() {
        [n, rest @ ..] if rest == want => *n,
        other => {
            return Err(ServeError::bad_request(format!(
                "input `image` has shape {other:?}, but the model takes [N, {h}, {w}, {c}] (height, width, channels)"
            )))
        }
    };
    let Elements::U8(pixels) = &t.data else {
        return Err(ServeError::bad_request(format!(
            "input `image` is {}, but the model takes UINT8 pixels",
            t.datatype.name()
        )));
    };
    let per = pre.values();
    let mut out = vec![0.0f32; rows * per];
    for (src, dst) in pixels.chunks_exact(per).zip(out.chunks_exact_mut(per)) {
        pre.normalize(src, dst);
    }
    // Pixels are finite; only an artifact with a zero `std` could make them otherwise.
    if let Some(at) = out.iter().position(|x| !x.is_finite()) {
        return Err(ServeError::bad_request(format!(
            "input `image` image {}: pixels normalize to {}, not a finite number",
            at / per.max(1),
            out[at]
        )));
    }
    Ok((rows, out))
}

/// The first index of the largest value (as `evaluate` breaks ties).
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 {
                (i, p)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, datatype: DataType, shape: &[usize], data: Elements) -> Tensor {
        Tensor {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn images_are_normalized_channel_first() {
        let pre = ImagePreprocess::from_json(
            r#"{"format": 1, "kind": "images", "classes": ["a", "b"], "size": [2, 1],
                "color": "rgb", "filter": "triangle", "mean": [0, 0, 0], "std": [1, 1, 0.5],
                "fitted": true, "layout": "NCHW"}"#,
        )
        .unwrap();
        // One image, 1 × 2 pixels, RGB interleaved.
        let pixels = vec![255, 0, 51, 0, 255, 102];
        let input = tensor("image", DataType::U8, &[1, 1, 2, 3], Elements::U8(pixels));
        let (rows, x) = image_features(&pre, &[input]).unwrap();
        assert_eq!(rows, 1);
        assert_eq!(x, vec![1.0, 0.0, 0.0, 1.0, 0.4, 0.8]);
        let wrong = tensor(
            "image",
            DataType::U8,
            &[1, 2, 1, 3],
            Elements::U8(vec![0; 6]),
        );
        let e = image_features(&pre, &[wrong]).unwrap_err();
        assert!(e.message.contains("takes [N, 1, 2, 3]"), "{}", e.message);
        let floats = tensor(
            "image",
            DataType::F32,
            &[1, 1, 2, 3],
            Elements::Numbers(vec![0.0; 6]),
        );
        assert!(image_features(&pre, &[floats])
            .unwrap_err()
            .message
            .contains("UINT8"));
    }

    #[test]
    fn softmax_and_ties_follow_evaluate() {
        assert_eq!(metrics::softmax(&[0.0, 0.0], 2), vec![0.5, 0.5]);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(metrics::sigmoid_pairs(&[0.0]), vec![0.5, 0.5]);
    }
}
