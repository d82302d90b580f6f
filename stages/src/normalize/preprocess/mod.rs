//! [`Preprocess`]: what `normalize` learned from the train split (per-column statistics,
//! category lists, class names, the feature order), saved as the `preprocess` JSON artifact, and
//! [`Preprocess::apply`], which turns one raw row into the feature vector the model was trained on.
//!
//! The stage itself encodes every split through the same [`Preprocess::encode`] after reading
//! the artifact back from its JSON text, so that any consumer that parses the file and applies it
//! gets the very same float32 values as `features.npy`.
//!
//! [`ImagePreprocess`] is the artifact of `normalize` on image folders, with
//! [`ImagePreprocess::apply`] turning one encoded image into the model's input the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::repair::{Clip, Fence, Fill, Impute};

/// The artifact layout; bumped when a field changes meaning.
pub const FORMAT: u32 = 1;

/// What the label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Labels are class names, encoded as their index in `classes` (int64).
    Classification,
    /// Labels are numbers, kept as float32.
    Regression,
}

impl Task {
    pub(crate) const NAMES: [&'static str; 2] = ["classification", "regression"];

    pub(crate) fn parse(s: &str) -> Option<Task> {
        match s {
            "classification" => Some(Task::Classification),
            "regression" => Some(Task::Regression),
            _ => None,
        }
    }
}

/// How a numeric column is scaled: `(x - center) / scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Mean and population standard deviation.
    Zscore,
    /// Minimum and range.
    Minmax,
    /// Median and interquartile range.
    Robust,
    /// Passed through unchanged.
    None,
}

impl Scaling {
    pub(crate) const NAMES: [&'static str; 4] = ["zscore", "minmax", "robust", "none"];

    pub(crate) fn parse(s: &str) -> Option<Scaling> {
        match s {
            "zscore" => Some(Scaling::Zscore),
            "minmax" => Some(Scaling::Minmax),
            "robust" => Some(Scaling::Robust),
            "none" => Some(Scaling::None),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// How a categorical column becomes numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One feature per category, 1 for the row's category and 0 elsewhere.
    Onehot,
    /// One feature: the category's index.
    Ordinal,
}

impl Encoding {
    pub(crate) const NAMES: [&'static str; 2] = ["onehot", "ordinal"];

    pub(crate) fn parse(s: &str) -> Option<Encoding> {
        match s {
            "onehot" => Some(Encoding::Onehot),
            "ordinal" => Some(Encoding::Ordinal),
            _ => None,
        }
    }
}

/// What a category not seen in the train split becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// An error naming the value.
    Error,
    /// All zeros (one-hot) or -1 (ordinal).
    Ignore,
}

impl Unknown {
    pub(crate) const NAMES: [&'static str; 2] = ["error", "ignore"];

    pub(crate) fn parse(s: &str) -> Option<Unknown> {
        match s {
            "error" => Some(Unknown::Error),
            "ignore" => Some(Unknown::Ignore),
            _ => None,
        }
    }
}

/// A raw column of the train table and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputColumn {
    pub name: String,
    /// The Arrow type it was read as (`Float64`, `Int64`, `Utf8`, ...).
    #[serde(rename = "type")]
    pub data_type: String,
    /// `numeric`, `categorical`, `label` or `dropped`.
    pub role: String,
}

/// A fitted numeric column. `stats` holds what the method was fitted from (`mean`/`std`,
/// `min`/`max`, `median`/`q1`/`q3`), for people; `center` and `scale` are what `apply` uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericColumn {
    pub name: String,
    pub method: Scaling,
    pub center: f64,
    pub scale: f64,
    pub stats: std::collections::BTreeMap<String, f64>,
    /// What a missing value becomes; absent (artifacts before `impute`, or none asked for):
    /// a missing value is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Fill<f64>>,
    /// The fences a value is clipped to after filling and before scaling; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<Clip>,
}

/// A fitted categorical column: its categories, sorted, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    pub name: String,
    pub method: Encoding,
    pub categories: Vec<String>,
    /// What a missing value becomes, as for [`NumericColumn::fill`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Fill<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub column: String,
    pub task: Task,
    /// Classification only: the class names, sorted; a label's code is its index here.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub classes: Option<Vec<String>>,
}

/// The `preprocess` artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub format: u32,
    pub inputs: Vec<InputColumn>,
    /// In table order; their features come first, one each.
    pub numeric: Vec<NumericColumn>,
    /// In table order; their features follow the numeric ones.
    pub categorical: Vec<CategoricalColumn>,
    /// The feature names in column order of `features.npy`: numeric columns, then `col=value`
    /// per one-hot category and `col` per ordinal column.
    pub features: Vec<String>,
    pub label: Label,
    pub unknown_category: Unknown,
}

/// Why a raw row could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("the artifact has format {0}, and this build reads format {FORMAT}")]
    Format(u32),
    #[error("the artifact is not valid: {0}")]
    Invalid(String),
    #[error("column `{0}` is missing")]
    Missing(String),
    #[error("column `{column}` must be {expected}, not {value}")]
    Type {
        column: String,
        expected: &'static str,
        value: String,
    },
    #[error("column `{column}` has the category `{value}`, which the train split does not have")]
    UnknownCategory { column: String, value: String },
}

impl Preprocess {
    /// Reads an artifact from its JSON text.
    pub fn from_json(text: &str) -> Result<Preprocess, ApplyError> {
        let p: Preprocess =
            serde_json::from_str(text).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if p.format != FORMAT {
            return Err(ApplyError::Format(p.format));
        }
        if p.features.len() != p.width() {
            return Err(ApplyError::Invalid(format!(
                "it names {} features, but its numeric and categorical columns make {}",
                p.features.len(),
                p.width()
            )));
        }
        Ok(p)
    }

    /// The number of features its columns make: one per numeric column, one per category of a
    /// one-hot column, one per ordinal column.
    fn width(&self) -> usize {
        let categorical = self.categorical.iter().map(|c| match c.method {
            Encoding::Onehot => c.categories.len(),
            Encoding::Ordinal => 1,
        });
        self.numeric.len() + categorical.sum::<usize>()
    }

    /// The JSON text, keys sorted, ending in a newline.
    pub fn to_json(&self) -> String {
        // Through `Value`, whose objects are sorted maps, so the key order never depends on the
        // order of the struct fields.
        let value = serde_json::to_value(self).expect("the artifact always serializes");
        let mut text = serde_json::to_string_pretty(&value).expect("JSON values always serialize");
        text.push('\n');
        text
    }

    /// The feature vector for one raw row given as a JSON object of column → value: numbers
    /// for numeric columns; strings (or numbers and booleans, compared by their text) for
    /// categorical ones. Other keys (the label, dropped columns) are ignored.
    pub fn apply(&self, row: &serde_json::Map<String, Value>) -> Result<Vec<f32>, ApplyError> {
        let mut numbers = Vec::with_capacity(self.numeric.len());
        for c in &self.numeric {
            let value = match row.get(&c.name) {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| ApplyError::Type {
                    column: c.name.clone(),
                    expected: "a number",
                    value: v.to_string(),
                })?),
            };
            match (value.filter(|x| !x.is_nan()), &c.fill) {
                (Some(x), _) => numbers.push(x),
                (None, Some(fill)) => numbers.push(fill.value),
                (None, None) => return Err(ApplyError::Missing(c.name.clone())),
            }
        }
        let mut texts = Vec::with_capacity(self.categorical.len());
        for c in &self.categorical {
            match row.get(&c.name) {
                None | Some(Value::Null) => match &c.fill {
                    Some(fill) => texts.push(fill.value.clone()),
                    None => return Err(ApplyError::Missing(c.name.clone())),
                },
                Some(Value::String(s)) => texts.push(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => texts.push(v.to_string()),
                Some(v) => {
                    return Err(ApplyError::Type {
                        column: c.name.clone(),
                        expected: "a string",
                        value: v.to_string(),
                    })
                }
            }
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(self.features.len());
        self.encode(&numbers, &texts, &mut out)?;
        Ok(out)
    }

    /// Appends the features of one row: `numbers` in the order of `self.numeric`, `texts` in the
    /// order of `self.categorical`.
    pub(crate) fn encode(
        &self,
        numbers: &[f64],
        texts: &[&str],
        out: &mut Vec<f32>,
    ) -> Result<(), ApplyError> {
        let mut codes = Vec::with_capacity(texts.len());
        for (c, text) in self.categorical.iter().zip(texts) {
            let found = c.categories.binary_search_by(|k| k.as_str().cmp(text)).ok();
            if found.is_none() && self.unknown_category == Unknown::Error {
                return Err(ApplyError::UnknownCategory {
                    column: c.name.clone(),
                    value: text.to_string(),
                });
            }
            codes.push(found);
        }
        let start = out.len();
        out.resize(start + self.width(), 0.0);
        self.write_row(|i| numbers[i], |i| codes[i], &mut out[start..]);
        Ok(())
    }

    /// Writes the features of one row into `out` (one slot per feature): `number(i)` is the
    /// value of the `i`-th numeric column, `code(i)` the index of the `i`-th categorical column's
    /// value among its categories (`None` for an unknown one). The one place where features are
    /// computed, for `normalize` (which looks up categories a column at a time) and for raw rows
    /// at serve time alike.
    pub(crate) fn write_row(
        &self,
        number: impl Fn(usize) -> f64,
        code: impl Fn(usize) -> Option<usize>,
        out: &mut [f32],
    ) {
        let mut at = 0;
        for (i, c) in self.numeric.iter().enumerate() {
            let x = match c.clip {
                Some(clip) => number(i).clamp(clip.low, clip.high),
                None => number(i),
            };
            out[at] = ((x - c.center) / c.scale) as f32;
            at += 1;
        }
        for (i, c) in self.categorical.iter().enumerate() {
            let found = code(i);
            match c.method {
                Encoding::Onehot => {
                    let n = c.categories.len();
                    out[at..at + n].fill(0.0);
                    if let Some(k) = found {
                        out[at + k] = 1.0;
                    }
                    at += n;
                }
                Encoding::Ordinal => {
                    out[at] = found.map_or(-1.0, |k| k as f32);
                    at += 1;
                }
            }
        }
    }
}

/// The statistics of one numeric column for `method`: `(center, scale, stats)`. A scale of 0
/// (a constant column) becomes 1, so the column maps to 0 (zscore, robust) rather than NaN.
/// `values` must not be empty.
#[cfg(test)]
pub(crate) fn fit(method: Scaling, values: &[f64]) -> (f64, f64, Vec<(&'static str, f64)>) {
    fit_pieces(method, &[values])
}

/// [`fit`] of a column read in pieces: the same sums in the same order, so the same bits as
/// over the joined column.
pub(crate) fn fit_pieces(
    method: Scaling,
    pieces: &[&[f64]],
) -> (f64, f64, Vec<(&'static str, f64)>) {
    let nonzero = |s: f64| if s == 0.0 { 1.0 } else { s };
    let values = || pieces.iter().flat_map(|p| p.iter().copied());
    match method {
        Scaling::Zscore => {
            let n = pieces.iter().map(|p| p.len()).sum::<usize>() as f64;
            let mean = values().sum::<f64>() / n;
            let std = (values().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
            (mean, nonzero(std), vec![("mean", mean), ("std", std)])
        }
        Scaling::Minmax => {
            let min = values().fold(f64::INFINITY, f64::min);
            let max = values().fold(f64::NEG_INFINITY, f64::max);
            (min, nonzero(max - min), vec![("min", min), ("max", max)])
        }
        Scaling::Robust => {
            let parts: Vec<_> = pieces
                .iter()
                .map(|p| crate::quantile::Part::new(p, None))
                .collect();
            let q = crate::quantile::quantiles(&parts, &[0.25, 0.5, 0.75])
                .expect("`values` is not empty and has no NaN");
            let (q1, median, q3) = (q[0], q[1], q[2]);
            (
                median,
                nonzero(q3 - q1),
                vec![("median", median), ("q1", q1), ("q3", q3)],
            )
        }
        Scaling::None => (0.0, 1.0, Vec::new()),
    }
}

/// The image artifact layout; bumped when a field changes meaning. Separate from [`FORMAT`]:
/// the two artifacts change independently, and `kind` tells them apart.
pub const IMAGE_FORMAT: u32 = 1;

/// The colour channels an image is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Three channels, red, green, blue.
    Rgb,
    /// One channel of luma (ITU-R BT.709 weights, as the `image` crate converts).
    Grayscale,
}

impl Color {
    pub(crate) const NAMES: [&'static str; 2] = ["rgb", "grayscale"];

    pub(crate) fn parse(s: &str) -> Option<Color> {
        match s {
            "rgb" => Some(Color::Rgb),
            "grayscale" => Some(Color::Grayscale),
            _ => None,
        }
    }

    pub fn channels(self) -> usize {
        match self {
            Color::Rgb => 3,
            Color::Grayscale => 1,
        }
    }
}

/// The resampling filter images are resized with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Nearest,
    /// Bilinear.
    Triangle,
    /// Bicubic (Catmull-Rom).
    Catmullrom,
    Lanczos3,
}

impl Filter {
    pub(crate) const NAMES: [&'static str; 4] = ["nearest", "triangle", "catmullrom", "lanczos3"];

    pub(crate) fn parse(s: &str) -> Option<Filter> {
        match s {
            "nearest" => Some(Filter::Nearest),
            "triangle" => Some(Filter::Triangle),
            "catmullrom" => Some(Filter::Catmullrom),
            "lanczos3" => Some(Filter::Lanczos3),
            _ => None,
        }
    }

    fn image(self) -> image::imageops::FilterType {
        match self {
            Filter::Nearest => image::imageops::FilterType::Nearest,
            Filter::Triangle => image::imageops::FilterType::Triangle,
            Filter::Catmullrom => image::imageops::FilterType::CatmullRom,
            Filter::Lanczos3 => image::imageops::FilterType::Lanczos3,
        }
    }
}

/// The `preprocess` artifact of `normalize` on images: decode, convert to `color`, resize to
/// `size` with `filter` (8-bit, as decoded), scale to `[0, 1]` by `/ 255`, then per channel
/// `(x - mean) / std`, laid out channel-first (`[C, H, W]` per image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocess {
    pub format: u32,
    /// Always `images`: tells this artifact from the table one.
    pub kind: String,
    /// Label `i` is `classes[i]`, the train split's class folders in sorted order.
    pub classes: Vec<String>,
    /// `[width, height]` in pixels.
    pub size: [u32; 2],
    pub color: Color,
    pub filter: Filter,
    /// Per channel, on the `[0, 1]` scale.
    pub mean: Vec<f64>,
    /// Per channel; a channel that does not vary on the train split gets 1.
    pub std: Vec<f64>,
    /// Whether `mean` and `std` were fitted on the train split (or given in `with:`).
    pub fitted: bool,
    /// Always `NCHW`.
    pub layout: String,
}

impl ImagePreprocess {
    /// Reads an artifact from its JSON text.
    pub fn from_json(text: &str) -> Result<ImagePreprocess, ApplyError> {
        let p: ImagePreprocess =
            serde_json::from_str(text).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if p.format != IMAGE_FORMAT {
            return Err(ApplyError::Format(p.format));
        }
        let c = p.color.channels();
        if p.kind != "images" || p.mean.len() != c || p.std.len() != c {
            return Err(ApplyError::Invalid(format!(
                "an image artifact needs `kind: images` and {c} means and standard deviations"
            )));
        }
        Ok(p)
    }

    /// The JSON text, keys sorted, ending in a newline.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("the artifact serializes");
        let mut text = serde_json::to_string_pretty(&value).expect("JSON values serialize");
        text.push('\n');
        text
    }

    /// Floats per image: `C × H × W`.
    pub fn values(&self) -> usize {
        self.color.channels() * self.size[0] as usize * self.size[1] as usize
    }

    /// Decodes an encoded image (PNG or JPEG) into its converted, resized 8-bit pixels, row-major
    /// with interleaved channels (`[H, W, C]`).
    pub fn pixels(&self, bytes: &[u8]) -> Result<Vec<u8>, image::ImageError> {
        let decoded = image::load_from_memory(bytes)?;
        let [w, h] = self.size;
        let filter = self.filter.image();
        Ok(match self.color {
            Color::Rgb => {
                let img = decoded.to_rgb8();
                if img.dimensions() == (w, h) {
                    img.into_raw()
                } else {
                    image::imageops::resize(&img, w, h, filter).into_raw()
                }
            }
            Color::Grayscale => {
                let img = decoded.to_luma8();
                if img.dimensions() == (w, h) {
                    img.into_raw()
                } else {
                    image::imageops::resize(&img, w, h, filter).into_raw()
                }
            }
        })
    }

    /// Scales and normalizes `pixels` (from [`ImagePreprocess::pixels`]) into `out`, channel
    /// first. Computed in f64 and rounded once to f32.
    pub fn normalize(&self, pixels: &[u8], out: &mut [f32]) {
        let c = self.color.channels();
        let plane = self.size[0] as usize * self.size[1] as usize;
        debug_assert_eq!(pixels.len(), c * plane);
        debug_assert_eq!(out.len(), c * plane);
        for ch in 0..c {
            let (mean, std) = (self.mean[ch], self.std[ch]);
            let dest = &mut out[ch * plane..(ch + 1) * plane];
            for (i, d) in dest.iter_mut().enumerate() {
                *d = ((f64::from(pixels[i * c + ch]) / 255.0 - mean) / std) as f32;
            }
        }
    }

    /// One encoded image → the `C × H × W` floats the model was trained on.
    pub fn apply(&self, bytes: &[u8]) -> Result<Vec<f32>, image::ImageError> {
        let pixels = self.pixels(bytes)?;
        let mut out = vec![0.0; self.values()];
        self.normalize(&pixels, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
