//! `MedianRule`: a sweep's median stopping rule, and `Curves`, the per-epoch values it judges.
//! A trial whose value at epoch k is worse than the median of the completed trials' values at
//! epoch k is given up on (Optuna's `MedianPruner`, with early-stopped trials counted at their
//! last value). `Curves` is saved as `curves.json` in the sweep's directory, so a resumed sweep
//! still knows the curves of trials that now restore from the cache instead of running.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `curves.json` larger than this is refused, when read and when written. A value takes about
/// 25 bytes, so this holds some 2.7 million: 50,000 trials of 50 epochs, or 10,000 of 250.
pub const MAX_CURVES_BYTES: u64 = 64 * 1024 * 1024;

/// Bumped when `curves.json` changes shape; a file of another version is refused.
const CURVES_VERSION: u32 = 1;

/// The median stopping rule's settings (`prune: {rule: median, ...}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianRule {
    /// No trial is pruned until this many completed trials have a value to compare with.
    pub min_trials: usize,
    /// No trial is pruned at an epoch up to this one: early epochs are too noisy to judge.
    pub warmup_epochs: u64,
    /// Whether the metric is a loss (`min`) rather than a score (`max`).
    pub lower_is_better: bool,
}

/// Why a trial is pruned: its value at `epoch` and the median it was worse than, over
/// `completed` trials. A value that is not finite (NaN, infinite) is pruned whatever the median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub epoch: u64,
    pub value: f64,
    pub median: f64,
    pub completed: usize,
}

impl Verdict {
    /// The verdict in words, for the pruned stage's message: `val_loss 0.91 at epoch 5 is worse
    /// than the median 0.42 of 4 completed trials`.
    pub fn describe(&self, metric: &str) -> String {
        let Verdict {
            epoch,
            value,
            median,
            completed,
        } = *self;
        let trials = if completed == 1 { "trial" } else { "trials" };
        if value.is_finite() {
            format!(
                "{metric} {} at epoch {epoch} is worse than the median {} of {completed} completed {trials}",
                short(value),
                short(median)
            )
        } else {
            format!("{metric} is {value} at epoch {epoch}")
        }
    }
}

/// A value as people read it: at most four decimals, no float noise; tiny values in full.
fn short(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl MedianRule {
    /// Whether `trial` should be pruned at `epoch`, given the value it reported there. `None`
    /// (carry on) during the warm-up, before `min_trials` completed trials have a value at
    /// `epoch`, when the trial reported nothing at `epoch`, and when its value is not worse
    /// than the median (a tie is not worse).
    pub fn check(&self, curves: &Curves, trial: usize, epoch: u64) -> Option<Verdict> {
        if epoch <= self.warmup_epochs {
            return None;
        }
        let value = *curves.trials.get(&trial)?.values.get(&epoch)?;
        let mut peers: Vec<f64> = curves
            .trials
            .iter()
            .filter(|(&n, c)| n != trial && c.complete)
            .filter_map(|(_, c)| c.as_of(epoch))
            .filter(|v| v.is_finite())
            .collect();
        if peers.is_empty() || peers.len() < self.min_trials {
            return None;
        }
        let median = median(&mut peers);
        let worse = if self.lower_is_better {
            value > median
        } else {
            value < median
        };
        (!value.is_finite() || worse).then_some(Verdict {
            epoch,
            value,
            median,
            completed: peers.len(),
        })
    }
}

/// The median of non-empty finite values (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One trial's values by epoch, and whether it has finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Curve {
    #[serde(with = "finite_or_null")]
    values: BTreeMap<u64, f64>,
    complete: bool,
}

impl Curve {
    /// The trial's value as of `epoch`: at the last epoch it reported up to then. A trial that
    /// stopped early (early stopping) thus counts with its last value at every later epoch.
    fn as_of(&self, epoch: u64) -> Option<f64> {
        self.values.range(..=epoch).next_back().map(|(_, &v)| v)
    }
}

/// The per-epoch values of a sweep's trials, by trial number, and which trials completed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    trials: BTreeMap<usize, Curve>,
}

/// `curves.json` as read.
#[derive(Deserialize)]
struct CurvesFile {
    version: u32,
    trials: BTreeMap<usize, Curve>,
}

/// `curves.json` as written, borrowing the curves rather than copying them.
#[derive(Serialize)]
struct CurvesFileOut<'a> {
    version: u32,
    trials: &'a BTreeMap<usize, Curve>,
}

impl Curves {
    /// Records `trial`'s value at `epoch`, replacing one reported there before (a trial that
    /// started again reports its epochs again).
    pub fn report(&mut self, trial: usize, epoch: u64, value: f64) {
        self.trials
            .entry(trial)
            .or_default()
            .values
            .insert(epoch, value);
    }

    /// Marks `trial` as completed: from now on its values are what others are compared with.
    pub fn complete(&mut self, trial: usize) {
        self.trials.entry(trial).or_default().complete = true;
    }

    /// Drops what is known of `trial` (it is about to run again from the start).
    pub fn forget(&mut self, trial: usize) {
        self.trials.remove(&trial);
    }

    pub fn is_complete(&self, trial: usize) -> bool {
        self.trials.get(&trial).is_some_and(|c| c.complete)
    }

    /// `trial`'s values by epoch (empty when it reported none).
    pub fn values(&self, trial: usize) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.trials
            .get(&trial)
            .into_iter()
            .flat_map(|c| c.values.iter().map(|(&e, &v)| (e, v)))
    }

    /// Reads `curves.json`; a file that does not exist is a sweep with no curves yet.
    pub fn load(path: &Path) -> Result<Curves, CurvesError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Curves::default()),
            Err(source) => return Err(CurvesError::read(path, source)),
        };
        // Bounded by what is read, not by the size `stat` gave: the file may be growing.
        let mut bytes = Vec::new();
        file.take(MAX_CURVES_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| CurvesError::read(path, source))?;
        if bytes.len() as u64 > MAX_CURVES_BYTES {
            return Err(CurvesError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let file: CurvesFile =
            serde_json::from_slice(&bytes).map_err(|source| CurvesError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if file.version != CURVES_VERSION {
            return Err(CurvesError::Version {
                path: path.to_path_buf(),
                found: file.version,
            });
        }
        Ok(Curves {
            trials: file.trials,
        })
    }

    /// Writes `curves.json` atomically: a killed sweep leaves the old curves or the new ones.
    /// Curves over `MAX_CURVES_BYTES` are not written, since `load` would refuse them.
    pub fn save(&self, path: &Path) -> Result<(), CurvesError> {
        self.save_within(path, MAX_CURVES_BYTES)
    }

    fn save_within(&self, path: &Path, limit: u64) -> Result<(), CurvesError> {
        let file = CurvesFileOut {
            version: CURVES_VERSION,
            trials: &self.trials,
        };
        let bytes = serde_json::to_vec(&file).expect("curves always serialize");
        if bytes.len() as u64 > limit {
            return Err(CurvesError::TooLargeToWrite {
                path: path.to_path_buf(),
                bytes: bytes.len() as u64,
                limit,
            });
        }
        crate::atomic::write(path, &bytes).map_err(|source| CurvesError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CurvesError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is larger than {} MiB", path.display(), MAX_CURVES_BYTES >> 20)]
    TooLarge { path: PathBuf },
    #[error(
        "not writing `{}`: the curves take {} MiB, over the {} MiB limit",
        path.display(),
        bytes.div_ceil(1 << 20),
        limit >> 20
    )]
    TooLargeToWrite {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },
    #[error("`{}` is not a curves file: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{}` has format {found}, not {CURVES_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CurvesError {
    fn read(path: &Path, source: std::io::Error) -> CurvesError {
        CurvesError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            CurvesError::TooLarge { .. }
            | CurvesError::Parse { .. }
            | CurvesError::Version { .. } => Some(
                "delete it: the sweep then prunes only against trials that run from now on".into(),
            ),
            CurvesError::TooLargeToWrite { .. } => Some(
                "the file keeps the curves written before, which a resumed sweep prunes against; \
                 a sweep of fewer trials or epochs stays under the limit"
                    .into(),
            ),
            CurvesError::Read { .. } | CurvesError::Write { .. } => None,
        }
    }
}

/// JSON has no NaN or infinity, and a NaN is exactly what pruning must remember (it prunes), so
/// values that are not finite are written as `null` and read back as NaN. An infinite value
/// prunes like a NaN, so nothing is lost.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<S: Serializer>(
        values: &BTreeMap<u64, f64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let shown: BTreeMap<u64, Option<f64>> = values
            .iter()
            .map(|(&e, &v)| (e, v.is_finite().then_some(v)))
            .collect();
        shown.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u64, f64>, D::Error> {
        let read = BTreeMap::<u64, Option<f64>>::deserialize(d)?;
        Ok(read
            .into_iter()
            .map(|(e, v)| (e, v.unwrap_or(f64::NAN)))
            .collect())
    }
}

#[cfg(test)]
mod tests;
