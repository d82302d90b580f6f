//! `clean` on an ImageFolder: every file is read and decoded (in parallel), and dropped when it
//! cannot be decoded, when it is smaller than `min_size`, or when its bytes repeat an earlier
//! file's (BLAKE3; the first by sorted path is kept). The kept files are copied into the
//! cleaned folder; the report lists each dropped file with its reason.

use super::{relative, sort, CleanError};
use crate::fields::{Field, Reader, Type};
use crate::image_folder::{self, Entry};
use crate::problems::problem;
use crate::staged::Staged;
use rayon::prelude::*;
use serde_json::{json, Value};
use sluice_runner::stage::ConfigProblem;
use sluice_runner::StageContext;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The options of `clean` on images: what the parser reads and the schema editors get.
pub(super) const FIELDS: &[Field] = &[Field::new(
    "min_size",
    Type::Custom(size_schema),
    "Images smaller than `[width, height]` in either side are dropped.",
)
.default("[1, 1]")];

/// Full image-mode `with:` blocks that `clean` accepts, for the schema's examples.
pub(super) const EXAMPLES: &[&str] = &[r#"{"min_size": [8, 8]}"#];
const STEPS: f64 = 4.0;

/// The `with:` block of `clean` in image mode.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ImageCleanConfig {
    /// Smallest width and height kept, in pixels.
    pub(super) min_size: [u32; 2],
}

/// `[w, h]` of positive whole numbers, for `key`.
/// The JSON Schema of what [`parse_size`] reads.
pub(crate) fn size_schema() -> Value {
    let side = serde_json::json!({"type": "integer", "minimum": 1, "maximum": 65535});
    serde_json::json!({"type": "array", "items": side, "minItems": 2, "maxItems": 2})
}

pub(crate) fn parse_size(
    key: &str,
    value: &Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<[u32; 2]> {
    let pair = value.as_array().filter(|a| a.len() == 2).and_then(|a| {
        let w = a[0].as_u64().filter(|&w| w > 0 && w <= 65_535)?;
        let h = a[1].as_u64().filter(|&h| h > 0 && h <= 65_535)?;
        Some([w as u32, h as u32])
    });
    if pair.is_none() {
        problems.push(problem(
            &[key],
            format!(
                "`{key}` must be `[width, height]` in pixels, each from 1 to 65535, not {value}"
            ),
            Some(format!("write e.g. `{key}: [32, 32]`")),
        ));
    }
    pair
}

impl ImageCleanConfig {
    pub(super) fn is_image_key(key: &str) -> bool {
        FIELDS.iter().any(|f| f.name == key)
    }

    /// Parses `with`, collecting every problem rather than stopping at the first.
    pub(super) fn parse(with: &Value) -> Result<ImageCleanConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open_mode(
            with,
            FIELDS,
            "`clean` on images",
            " for images",
            "with: {min_size: [8, 8]}",
        )?;
        let min_size = match r.get("min_size") {
            None => Some([1, 1]),
            Some(v) => parse_size("min_size", v, r.problems_mut()),
        };
        let problems = r.finish();
        match min_size {
            Some(min_size) if problems.is_empty() => Ok(ImageCleanConfig { min_size }),
            _ => Err(problems),
        }
    }
}

/// What reading one file found.
enum Look {
    Unreadable(String),
    Image {
        width: u32,
        height: u32,
        hash: blake3::Hash,
    },
}

fn look(entry: &Entry) -> Look {
    let bytes = match std::fs::read(&entry.path) {
        Ok(b) => b,
        Err(e) => return Look::Unreadable(format!("cannot read: {e}")),
    };
    match image::load_from_memory(&bytes) {
        Ok(img) => Look::Image {
            width: img.width(),
            height: img.height(),
            hash: blake3::hash(&bytes),
        },
        Err(e) => Look::Unreadable(format!("cannot decode: {e}")),
    }
}

pub(super) fn run(
    ctx: &StageContext<'_>,
    input: &Path,
    config: &Result<ImageCleanConfig, Vec<ConfigProblem>>,
) -> Result<(), CleanError> {
    let config = config
        .as_ref()
        .map_err(|problems| CleanError::Config(crate::problems::one_line(problems)))?;
    let source = relative(&ctx.workspace, input);
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(CleanError::Cancelled)
        } else {
            Ok(())
        }
    };
    let folder = image_folder::read(input, &source, false)?;
    step(
        1.0,
        format!(
            "found {} files in {} classes in {source}",
            folder.files.len(),
            folder.classes.len()
        ),
    )?;

    let looks: Vec<Look> = folder
        .files
        .par_iter()
        .map(|entry| {
            if ctx.cancel.is_cancelled() {
                Look::Unreadable("cancelled".into())
            } else {
                look(entry)
            }
        })
        .collect();
    step(2.0, format!("decoded {} files", folder.files.len()))?;

    let [min_w, min_h] = config.min_size;
    let mut first: HashMap<blake3::Hash, String> = HashMap::new();
    let mut kept: Vec<&Entry> = Vec::new();
    let mut dropped = Vec::new();
    for (entry, look) in folder.files.iter().zip(looks) {
        let shown = entry.shown(&folder.classes);
        let (reason, detail) = match look {
            Look::Unreadable(why) => ("unreadable", why),
            Look::Image { width, height, .. } if width < min_w || height < min_h => (
                "too_small",
                format!("{width}×{height} is below min_size {min_w}×{min_h}"),
            ),
            Look::Image { hash, .. } => match first.get(&hash) {
                Some(original) => ("duplicate", format!("same bytes as `{original}`")),
                None => {
                    first.insert(hash, shown);
                    kept.push(entry);
                    continue;
                }
            },
        };
        dropped.push(json!({"file": shown, "reason": reason, "detail": detail}));
    }
    let mut counts: BTreeMap<&str, usize> =
        folder.classes.iter().map(|c| (c.as_str(), 0)).collect();
    for entry in &kept {
        *counts
            .entry(folder.classes[entry.class].as_str())
            .or_default() += 1;
    }

    let mut staged = Staged::new(&ctx.scratch);
    let dest = ctx
        .outputs
        .get(super::TABLE)
        .ok_or(CleanError::NoOutput(super::TABLE))?;
    let dir = staged.dir_for(super::TABLE, dest)?;
    image_folder::write(&dir, &folder.classes, kept.iter().copied())?;
    step(3.0, format!("kept {} images", kept.len()))?;

    let report = json!({
        "input": source,
        "images_in": folder.files.len(),
        "images_out": kept.len(),
        "min_size": config.min_size,
        "classes": counts,
        "dropped": dropped,
    });
    let dest = ctx
        .outputs
        .get(super::REPORT)
        .ok_or(CleanError::NoOutput(super::REPORT))?;
    let mut text =
        serde_json::to_string_pretty(&sort(report)).expect("JSON values always serialize");
    text.push('\n');
    staged.write(super::REPORT, dest, text.as_bytes())?;
    step(STEPS, "wrote the report".into())?;
    staged.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_size_defaults_to_one_pixel_and_rejects_bad_shapes() {
        assert_eq!(
            ImageCleanConfig::parse(&Value::Null).unwrap().min_size,
            [1, 1]
        );
        assert_eq!(
            ImageCleanConfig::parse(&json!({"min_size": [8, 4]}))
                .unwrap()
                .min_size,
            [8, 4]
        );
        let problems =
            ImageCleanConfig::parse(&json!({"min_size": [0, 4], "filter": "x"})).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("unknown option `filter`"));
        assert!(messages[1].starts_with("`min_size` must be `[width, height]`"));
    }
}
