//! [`Fence`]: how outlier fences are computed from a column's values, shared by `clean`'s
//! `outliers` rule (fitted on the rows it reads) and `normalize`'s `clip:` (fitted on the train
//! split, recorded in the preprocessing artifact), so both read, name and compute them alike.

use crate::fields::Reader;
use crate::quantile;
use serde::{Deserialize, Serialize};

/// How fences are fitted; serialised as `{"method": "iqr", "k": 1.5}` in `preprocess.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum Fence {
    /// `[Q1 − k·IQR, Q3 + k·IQR]`.
    Iqr { k: f64 },
    /// `mean ± threshold·sd` (population standard deviation).
    Zscore { threshold: f64 },
}

impl Fence {
    pub(crate) const NAMES: [&'static str; 2] = ["iqr", "zscore"];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fence::Iqr { .. } => "iqr",
            Fence::Zscore { .. } => "zscore",
        }
    }

    /// Reads `method` with its own parameter (`k` for iqr, `threshold` for zscore) from a
    /// section that declares all three, reporting the other method's parameter where given.
    pub(crate) fn read(s: &mut Reader<'_>) -> Fence {
        if s.choice("method").unwrap_or("iqr") == "iqr" {
            if s.has("threshold") {
                s.report(
                    &["threshold"],
                    "`threshold` applies to `method: zscore`; `iqr` takes `k`".into(),
                    None,
                );
            }
            Fence::Iqr {
                k: s.number("k").unwrap_or(1.5),
            }
        } else {
            if s.has("k") {
                s.report(
                    &["k"],
                    "`k` applies to `method: iqr`; `zscore` takes `threshold`".into(),
                    None,
                );
            }
            Fence::Zscore {
                threshold: s.number("threshold").unwrap_or(3.0),
            }
        }
    }

    /// The fences over the values of `parts`; `None` where there are none.
    pub(crate) fn bounds(self, parts: &[quantile::Part<'_>]) -> Option<(f64, f64)> {
        match self {
            Fence::Iqr { k } => {
                let q = quantile::quantiles(parts, &[0.25, 0.75])?;
                let (q1, q3) = (q[0], q[1]);
                Some((q1 - k * (q3 - q1), q3 + k * (q3 - q1)))
            }
            Fence::Zscore { threshold } => {
                let (n, mean) = quantile::count_and_mean(parts)?;
                let mut squares = 0.0;
                quantile::each(parts, |x| squares += (x - mean).powi(2));
                let sd = (squares / n as f64).sqrt();
                Some((mean - threshold * sd, mean + threshold * sd))
            }
        }
    }
}
