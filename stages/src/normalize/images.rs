//! `normalize` on ImageFolders (train, and optionally val and test, as `split` writes them):
//! every image is decoded, converted, resized and scaled in parallel, the per-channel mean and
//! standard deviation are taken from `with:` or fitted on the train split, and each split becomes
//! `features.npy` (float32 `[N, C, H, W]`) and `labels.npy` (int64 `[N]`, the index of the class
//! folder in the train split's sorted classes), and `files.json`, each row's source file as a
//! JSON list of workspace-relative paths, for `evaluate`'s `source_file` column. Images come in
//! sorted order: class, then name; decoding in parallel keeps it (an indexed collect).

use super::preprocess::{Color, Filter, ImagePreprocess, IMAGE_FORMAT};
use super::{relative, write, NormalizeError, FEATURES, FILES, LABELS, PREPROCESS, SPLITS};
use crate::clean::parse_size;
use crate::fields::{Field, Reader, Type, Wording};
use crate::image_folder::{self, Folder};
use crate::npy;
use crate::problems::problem;
use crate::staged::Staged;
use rayon::prelude::*;
use serde_json::{json, Value};
use sluice_runner::stage::ConfigProblem;
use sluice_runner::StageContext;
use std::path::Path;

/// The options of `normalize` on images: what the parser reads and the schema editors get.
pub(super) const FIELDS: &[Field] = &[
    Field::new(
        "size",
        Type::Custom(crate::clean::size_schema),
        "The size every image is resized to, `[width, height]` in pixels.",
    )
    .default("[32, 32]"),
    Field::new(
        "filter",
        Type::Choice {
            names: &Filter::NAMES,
            wording: Wording::ValueFor,
        },
        "The resampling filter of the resize.",
    )
    .default("\"triangle\""),
    Field::new(
        "color",
        Type::Choice {
            names: &Color::NAMES,
            wording: Wording::ValueFor,
        },
        "rgb gives 3 channels, grayscale 1.",
    )
    .default("\"rgb\""),
    Field::new(
        "mean",
        Type::Custom(mean_schema),
        "Per-channel mean, one number per channel; with `std`, or neither to fit both on the train split.",
    ),
    Field::new(
        "std",
        Type::Custom(std_schema),
        "Per-channel standard deviation, one positive number per channel; with `mean`.",
    ),
];

/// Full image-mode `with:` blocks that `normalize` accepts, for the schema's examples.
pub(super) const EXAMPLES: &[&str] = &[
    r#"{"size": [28, 28], "color": "grayscale", "filter": "lanczos3", "mean": [0.5], "std": [0.25]}"#,
    r#"{"size": [32, 32], "color": "rgb", "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}"#,
];

fn mean_schema() -> Value {
    channels(json!({"type": "number"}))
}

fn std_schema() -> Value {
    channels(json!({"type": "number", "exclusiveMinimum": 0}))
}

/// One value per channel: 3 for rgb, 1 for grayscale.
fn channels(item: Value) -> Value {
    json!({"type": "array", "items": item, "minItems": 1, "maxItems": 3})
}

fn is_image_key(key: &str) -> bool {
    FIELDS.iter().any(|f| f.name == key)
}
const STEPS: f64 = 5.0;

/// The `with:` block of `normalize` in image mode.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ImageNormalizeConfig {
    pub(super) size: [u32; 2],
    pub(super) filter: Filter,
    pub(super) color: Color,
    /// Given `mean` and `std`; fitted on train when absent.
    pub(super) stats: Option<(Vec<f64>, Vec<f64>)>,
}

impl ImageNormalizeConfig {
    pub(super) fn is_image_key(key: &str) -> bool {
        is_image_key(key)
    }

    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(super) fn parse(with: &Value) -> Result<ImageNormalizeConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open_mode(
            with,
            FIELDS,
            "`normalize` on images",
            " for images",
            "with: {size: [32, 32], color: grayscale}",
        )?;
        let size = match r.get("size") {
            None => Some([32, 32]),
            Some(v) => parse_size("size", v, r.problems_mut()),
        };
        let filter = r.choice("filter").and_then(Filter::parse);
        let color = r.choice("color").and_then(Color::parse);
        let (mean_value, std_value) = (r.get("mean"), r.get("std"));
        let mut problems = r.finish();
        let channels = color.map(Color::channels);
        let mut list = |key: &str, positive: bool| -> Option<Vec<f64>> {
            let v = if key == "mean" { mean_value } else { std_value }?;
            let values: Option<Vec<f64>> = v.as_array().and_then(|a| {
                a.iter()
                    .map(|x| {
                        x.as_f64()
                            .filter(|x| x.is_finite() && (!positive || *x > 0.0))
                    })
                    .collect()
            });
            match (values, channels) {
                (Some(values), Some(c)) if values.len() == c => Some(values),
                (_, channels) => {
                    let what = if positive {
                        "positive numbers"
                    } else {
                        "numbers"
                    };
                    let count = channels.map(|c| format!("{c} ")).unwrap_or_default();
                    problems.push(problem(
                        &[key],
                        format!(
                            "`{key}` must be a list of {count}{what}, one per channel, not {v}"
                        ),
                        Some("rgb has 3 channels, grayscale 1".into()),
                    ));
                    None
                }
            }
        };
        let mean = list("mean", false);
        let std = list("std", true);
        let stats = match (mean_value.is_some(), std_value.is_some()) {
            (true, true) => mean.zip(std),
            (false, false) => None,
            (given, _) => {
                let (has, lacks) = if given {
                    ("mean", "std")
                } else {
                    ("std", "mean")
                };
                problems.push(problem(
                    &[has],
                    format!("`{has}` needs `{lacks}` too"),
                    Some("give both, or neither to fit them on the train split".into()),
                ));
                None
            }
        };
        match (size, filter, color) {
            (Some(size), Some(filter), Some(color)) if problems.is_empty() => {
                Ok(ImageNormalizeConfig {
                    size,
                    filter,
                    color,
                    stats,
                })
            }
            _ => Err(problems),
        }
    }
}

/// The decoded, resized 8-bit pixels of every image of `folder`, in order.
fn decode_all(
    artifact: &ImagePreprocess,
    folder: &Folder,
    shown: &str,
) -> Result<Vec<Vec<u8>>, NormalizeError> {
    folder
        .files
        .par_iter()
        .map(|entry| {
            let file = format!("{shown}/{}", entry.shown(&folder.classes));
            let bytes = std::fs::read(&entry.path).map_err(|e| NormalizeError::Image {
                path: file.clone(),
                message: e.to_string(),
            })?;
            artifact.pixels(&bytes).map_err(|e| NormalizeError::Image {
                path: file,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Per-channel mean and population standard deviation of `images` on the `[0, 1]` scale, summed
/// in a fixed order so that every run gives the same bits. A constant channel gets std 1.
fn fit(images: &[Vec<u8>], channels: usize) -> (Vec<f64>, Vec<f64>) {
    let mut counts = vec![[0u64; 256]; channels];
    for pixels in images {
        for (i, &v) in pixels.iter().enumerate() {
            counts[i % channels][v as usize] += 1;
        }
    }
    let mut means = Vec::new();
    let mut stds = Vec::new();
    for hist in &counts {
        let n: u64 = hist.iter().sum();
        let n = n.max(1) as f64;
        let mean = hist
            .iter()
            .enumerate()
            .map(|(v, &k)| v as f64 / 255.0 * k as f64)
            .sum::<f64>()
            / n;
        let var = hist
            .iter()
            .enumerate()
            .map(|(v, &k)| (v as f64 / 255.0 - mean).powi(2) * k as f64)
            .sum::<f64>()
            / n;
        means.push(mean);
        stds.push(if var > 0.0 { var.sqrt() } else { 1.0 });
    }
    (means, stds)
}

pub(super) fn run(
    ctx: &StageContext<'_>,
    config: &Result<ImageNormalizeConfig, Vec<ConfigProblem>>,
) -> Result<(), NormalizeError> {
    let config = config
        .as_ref()
        .map_err(|problems| NormalizeError::Config(crate::problems::one_line(problems)))?;
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(NormalizeError::Cancelled)
        } else {
            Ok(())
        }
    };
    let mut folders: Vec<Option<(String, Folder)>> = Vec::new();
    for (i, split) in SPLITS.into_iter().enumerate() {
        folders.push(match ctx.inputs.get(split) {
            Some(path) => {
                let shown = relative(&ctx.workspace, path);
                let folder = image_folder::read(path, &shown, i > 0)?;
                Some((shown, folder))
            }
            None => None,
        });
    }
    let (train_shown, train) = folders[0]
        .as_ref()
        .expect("`train` was checked by the caller");
    let classes = train.classes.clone();
    for (shown, folder) in folders.iter().skip(1).flatten() {
        for class in &folder.classes {
            let holds_files = folder
                .files
                .iter()
                .any(|e| folder.classes[e.class] == *class);
            if !classes.contains(class) && holds_files {
                return Err(NormalizeError::UnknownClass {
                    path: format!("{shown}/{class}"),
                    train: train_shown.clone(),
                });
            }
        }
    }
    step(1.0, format!("found {} classes", classes.len()))?;

    let mut artifact = ImagePreprocess {
        format: IMAGE_FORMAT,
        kind: "images".into(),
        classes,
        size: config.size,
        color: config.color,
        filter: config.filter,
        mean: vec![0.0; config.color.channels()],
        std: vec![1.0; config.color.channels()],
        fitted: config.stats.is_none(),
        layout: "NCHW".into(),
    };
    let train_pixels = decode_all(&artifact, train, train_shown)?;
    if train_pixels.is_empty() {
        return Err(NormalizeError::EmptyTrain {
            path: train_shown.clone(),
        });
    }
    (artifact.mean, artifact.std) = match &config.stats {
        Some((mean, std)) => (mean.clone(), std.clone()),
        None => fit(&train_pixels, config.color.channels()),
    };
    // Encoded by the artifact as read back from its own text, as with tables.
    let text = artifact.to_json();
    let artifact = ImagePreprocess::from_json(&text).expect("the artifact reads back");
    step(2.0, format!("decoded {} train images", train_pixels.len()))?;

    let mut staged = Staged::new(&ctx.scratch);
    let mut train_pixels = Some(train_pixels);
    for (i, split) in SPLITS.into_iter().enumerate() {
        let dest = ctx
            .outputs
            .get(split)
            .ok_or(NormalizeError::NoOutput(SPLITS[i]))?;
        let (pixels, labels, files) = match &folders[i] {
            Some((shown, folder)) => {
                let pixels = match train_pixels.take() {
                    Some(p) if i == 0 => p,
                    _ => decode_all(&artifact, folder, shown)?,
                };
                let labels: Vec<i64> = folder
                    .files
                    .iter()
                    .map(|e| {
                        let name = &folder.classes[e.class];
                        artifact.classes.iter().position(|c| c == name).unwrap_or(0) as i64
                    })
                    .collect();
                // The path of the file decoded, which is the split's copy: a user opens it
                // as it is, and its `class/name` is the name in the folder `split` read.
                let files: Vec<String> = folder
                    .files
                    .iter()
                    .map(|e| relative(&ctx.workspace, &e.path))
                    .collect();
                (pixels, labels, files)
            }
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        let per = artifact.values();
        let mut features = vec![0.0f32; pixels.len() * per];
        features
            .par_chunks_mut(per.max(1))
            .zip(pixels.par_iter())
            .for_each(|(out, p)| artifact.normalize(p, out));
        let [w, h] = artifact.size;
        let shape = [
            pixels.len(),
            artifact.color.channels(),
            h as usize,
            w as usize,
        ];
        let dir = staged.dir_for(split, dest)?;
        write(&dir.join(FEATURES), &npy::f32_array(&shape, &features))?;
        write(&dir.join(LABELS), &npy::i64_vector(&labels))?;
        let mut list = serde_json::to_string_pretty(&files).expect("strings always serialize");
        list.push('\n');
        write(&dir.join(FILES), list.as_bytes())?;
        step(
            3.0 + i as f64 * 0.5,
            format!("wrote {} images of the {split} split", pixels.len()),
        )?;
    }
    let dest = ctx
        .outputs
        .get(PREPROCESS)
        .ok_or(NormalizeError::NoOutput(PREPROCESS))?;
    staged.write(PREPROCESS, dest, text.as_bytes())?;
    step(STEPS, "wrote the preprocess artifact".into())?;
    staged.commit()?;
    Ok(())
}

/// Whether `path` holds images (a directory) rather than a table.
pub(super) fn is_folder(path: &Path) -> bool {
    path.is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_given_statistics() {
        let c = ImageNormalizeConfig::parse(&Value::Null).unwrap();
        assert_eq!(
            (c.size, c.filter, c.color, c.stats),
            ([32, 32], Filter::Triangle, Color::Rgb, None)
        );
        let c = ImageNormalizeConfig::parse(&json!({"color": "grayscale", "mean": [0.5], "std": [0.25], "size": [8, 4], "filter": "nearest"})).unwrap();
        assert_eq!(c.stats, Some((vec![0.5], vec![0.25])));
        let problems =
            ImageNormalizeConfig::parse(&json!({"mean": [0.5], "filter": "bilinear"})).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages
            .iter()
            .any(|m| m.starts_with("unknown value `bilinear`")));
        assert!(messages
            .iter()
            .any(|m| m.starts_with("`mean` must be a list of 3 numbers")));
        assert!(messages.iter().any(|m| m == &"`mean` needs `std` too"));
    }

    #[test]
    fn fit_is_the_population_mean_and_std_per_channel() {
        // Two 1×1 RGB images: red channel 0 and 255, green constant, blue 51 twice.
        let (mean, std) = fit(&[vec![0, 10, 51], vec![255, 10, 51]], 3);
        assert_eq!(mean[0], 0.5);
        assert_eq!(std[0], 0.5);
        assert!((mean[1] - 10.0 / 255.0).abs() < 1e-12);
        assert_eq!(std[1], 1.0);
        assert!((mean[2] - 0.2).abs() < 1e-12);
    }
}
