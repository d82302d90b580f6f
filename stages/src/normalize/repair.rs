//! What `normalize` fits to repair a raw value before scaling it, recorded in the `preprocess`
//! artifact: [`Fill`] (a missing value's replacement, by an [`Impute`] method) and [`Clip`]
//! (outlier fences, by a [`Fence`] method). Both are fitted on the train split only.

use serde::{Deserialize, Serialize};

/// How a feature column's missing values (empty, null, NaN) are filled: with a statistic of the
/// train split's values, so that no val or test row shapes the fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impute {
    /// Not filled: a missing value is an error.
    None,
    /// The median of the train values (numeric columns).
    Median,
    /// The mean of the train values (numeric columns).
    Mean,
    /// The most frequent train value, ties to the smallest.
    Mode,
}

impl Impute {
    pub(crate) const NAMES: [&'static str; 4] = ["none", "median", "mean", "mode"];

    pub(crate) fn parse(s: &str) -> Option<Impute> {
        match s {
            "none" => Some(Impute::None),
            "median" => Some(Impute::Median),
            "mean" => Some(Impute::Mean),
            "mode" => Some(Impute::Mode),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A fitted fill: the method and the value it gave on the train split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fill<T> {
    pub method: Impute,
    pub value: T,
}

pub use crate::fence::Fence;

/// Fitted clipping fences: a value below `low` becomes `low`, one above `high` becomes `high`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    #[serde(flatten)]
    pub fence: Fence,
    pub low: f64,
    pub high: f64,
}
