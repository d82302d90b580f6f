//! Permutation feature importance: [`Group`]s of feature columns (one per raw column: a one-hot
//! column's indicator features move together), a [`Scorer`] that turns model outputs into the
//! metric (accuracy or R², plus per-class recall), and [`permutation_importance`], which shuffles
//! one group's values across the test rows at a time and records how far the metric falls.
//!
//! The model itself is a closure here, so the arithmetic is tested without ONNX Runtime.

use crate::evaluate::metrics;
use crate::preprocess::{Encoding, Preprocess};
use crate::rng::SplitMix64;
use sluice_runner::StageError;

/// A raw table column and the feature columns (indices into a row of `features.npy`) it became.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub name: String,
    pub columns: Vec<usize>,
}

/// The groups in feature order: numeric columns one feature each, then each categorical column
/// with its one-hot indicators (or its single ordinal code), as `normalize` lays them out.
pub(crate) fn groups(preprocess: &Preprocess) -> Vec<Group> {
    let mut out = Vec::new();
    let mut next = 0;
    for c in &preprocess.numeric {
        out.push(Group {
            name: c.name.clone(),
            columns: vec![next],
        });
        next += 1;
    }
    for c in &preprocess.categorical {
        let width = match c.method {
            Encoding::Onehot => c.categories.len(),
            Encoding::Ordinal => 1,
        };
        out.push(Group {
            name: c.name.clone(),
            columns: (next..next + width).collect(),
        });
        next += width;
    }
    out
}

/// One group per feature column, named by its index, for features without a preprocess artifact.
pub(crate) fn unnamed_groups(width: usize) -> Vec<Group> {
    (0..width)
        .map(|i| Group {
            name: format!("feature_{i}"),
            columns: vec![i],
        })
        .collect()
}

/// The metric of one set of predictions: the overall figure and, for classification, the recall
/// of each class (`None` for a class with no test rows).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Score {
    pub overall: f64,
    pub per_class: Vec<Option<f64>>,
}

/// Scores model outputs against the test labels.
pub(crate) enum Scorer {
    /// `width` outputs per row: `classes.len()` logits, or one logit for two classes.
    Classification {
        labels: Vec<usize>,
        classes: Vec<String>,
        width: usize,
    },
    Regression {
        targets: Vec<f32>,
    },
}

impl Scorer {
    /// `accuracy` or `r2`.
    pub(crate) fn metric(&self) -> &'static str {
        match self {
            Scorer::Classification { .. } => "accuracy",
            Scorer::Regression { .. } => "r2",
        }
    }

    pub(crate) fn score(&self, outputs: &[f32]) -> Score {
        match self {
            Scorer::Classification {
                labels,
                classes,
                width,
            } => {
                let k = classes.len();
                // The same probabilities evaluate computes, so the baseline is its accuracy.
                let probs = if *width == k {
                    metrics::softmax(outputs, k)
                } else {
                    metrics::sigmoid_pairs(outputs)
                };
                let predicted = metrics::argmax(&probs, k);
                let mut right = vec![0usize; k];
                let mut seen = vec![0usize; k];
                for (&l, &p) in labels.iter().zip(&predicted) {
                    seen[l] += 1;
                    if l == p {
                        right[l] += 1;
                    }
                }
                let total: usize = right.iter().sum();
                Score {
                    overall: total as f64 / labels.len().max(1) as f64,
                    per_class: (0..k)
                        .map(|c| (seen[c] > 0).then(|| right[c] as f64 / seen[c] as f64))
                        .collect(),
                }
            }
            Scorer::Regression { targets } => Score {
                overall: metrics::regression(targets, outputs)["metrics"]["r2"]
                    .as_f64()
                    .unwrap_or(0.0),
                per_class: Vec::new(),
            },
        }
    }
}

/// Mean and (population) standard deviation of a group's metric drops over the repeats.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spread {
    pub mean: f64,
    pub std: f64,
    pub drops: Vec<f64>,
}

impl Spread {
    fn of(drops: Vec<f64>) -> Spread {
        let n = drops.len().max(1) as f64;
        let mean = drops.iter().sum::<f64>() / n;
        let var = drops.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n;
        Spread {
            mean,
            std: var.sqrt(),
            drops,
        }
    }
}

/// What permuting one group did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Importance {
    pub group: Group,
    pub overall: Spread,
    /// Per class, for classification: the drop in that class's recall (`None`: no test rows).
    pub per_class: Vec<Option<Spread>>,
}

/// The seed of group `g`'s shuffles: each group gets its own stream, so adding a column to the
/// table leaves the other columns' shuffles, and so their figures, as they were.
fn group_seed(seed: u64, g: usize) -> u64 {
    let mut mix = SplitMix64::new(seed ^ (g as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    mix.next_u64()
}

/// Permutation importance of every group: for each of `repeats` seeded shuffles of the test rows,
/// the group's columns take the values of another row (all of a group's columns from the same
/// row, so a one-hot group stays one-hot) and the metric is computed again; the importance is the
/// baseline minus that. `predict` runs the model on row-major `rows`×`width` features. `progress`
/// hears after each shuffle; returning false from it stops the work (cancellation).
#[allow(clippy::too_many_arguments)]
pub(crate) fn permutation_importance(
    features: &[f32],
    rows: usize,
    width: usize,
    groups: &[Group],
    scorer: &Scorer,
    baseline: &Score,
    repeats: usize,
    seed: u64,
    predict: &mut dyn FnMut(Vec<f32>) -> Result<Vec<f32>, StageError>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<Importance>, StageError> {
    let total = groups.len() * repeats;
    let mut out = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter().enumerate() {
        let mut rng = SplitMix64::new(group_seed(seed, g));
        let mut drops = Vec::with_capacity(repeats);
        let mut class_drops: Vec<Vec<f64>> = vec![Vec::new(); baseline.per_class.len()];
        for r in 0..repeats {
            let mut order: Vec<usize> = (0..rows).collect();
            rng.shuffle(&mut order);
            let mut shuffled = features.to_vec();
            for (to, &from) in order.iter().enumerate() {
                for &c in &group.columns {
                    shuffled[to * width + c] = features[from * width + c];
                }
            }
            let score = scorer.score(&predict(shuffled)?);
            drops.push(baseline.overall - score.overall);
            for (c, (base, now)) in baseline.per_class.iter().zip(&score.per_class).enumerate() {
                if let (Some(base), Some(now)) = (base, now) {
                    class_drops[c].push(base - now);
                }
            }
            if !progress(g * repeats + r + 1, total) {
                return Err("cancelled".into());
            }
        }
        out.push(Importance {
            group: group.clone(),
            overall: Spread::of(drops),
            per_class: class_drops
                .into_iter()
                .map(|d| (!d.is_empty()).then(|| Spread::of(d)))
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{CategoricalColumn, Label, NumericColumn, Scaling, Task, Unknown};

    fn regression(targets: Vec<f32>) -> Scorer {
        Scorer::Regression { targets }
    }

    #[test]
    fn onehot_columns_form_one_group_after_the_numeric_ones() {
        let numeric = |name: &str| NumericColumn {
            name: name.into(),
            method: Scaling::Zscore,
            center: 0.0,
            scale: 1.0,
            stats: Default::default(),
            fill: None,
            clip: None,
        };
        let p = Preprocess {
            format: 1,
            inputs: Vec::new(),
            numeric: vec![numeric("a"), numeric("b")],
            categorical: vec![
                CategoricalColumn {
                    name: "color".into(),
                    method: Encoding::Onehot,
                    categories: vec!["blue".into(), "green".into(), "red".into()],
                    fill: None,
                },
                CategoricalColumn {
                    name: "size".into(),
                    method: Encoding::Ordinal,
                    categories: vec!["l".into(), "s".into()],
                    fill: None,
                },
            ],
            features: Vec::new(),
            label: Label {
                column: "y".into(),
                task: Task::Regression,
                classes: None,
            },
            unknown_category: Unknown::Error,
        };
        let g = groups(&p);
        let shown: Vec<(&str, Vec<usize>)> = g
            .iter()
            .map(|g| (g.name.as_str(), g.columns.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", vec![0]),
                ("b", vec![1]),
                ("color", vec![2, 3, 4]),
                ("size", vec![5])
            ]
        );
    }

    /// A "model" that predicts column 0 exactly: only that column matters.
    fn first_column(features: Vec<f32>) -> Result<Vec<f32>, StageError> {
        Ok(features.chunks(3).map(|r| r[0]).collect())
    }

    #[test]
    fn only_the_column_the_model_uses_loses_r2_and_seeds_repeat() {
        let rows = 200;
        let mut features = Vec::new();
        let mut targets = Vec::new();
        for i in 0..rows {
            let x = i as f32 / rows as f32;
            features.extend([x, (i % 7) as f32, (i % 3) as f32]);
            targets.push(x);
        }
        let scorer = regression(targets);
        let baseline = scorer.score(&first_column(features.clone()).unwrap());
        assert!((baseline.overall - 1.0).abs() < 1e-9);
        let run = |seed| {
            permutation_importance(
                &features,
                rows,
                3,
                &unnamed_groups(3),
                &scorer,
                &baseline,
                4,
                seed,
                &mut first_column,
                &mut |_, _| true,
            )
            .unwrap()
        };
        let a = run(1);
        // Shuffling an independent column's values against the target costs about 2 (R² of a
        // shuffled copy of the target: 1 - 2·var/var).
        assert!(a[0].overall.mean > 1.5, "{:?}", a[0].overall);
        assert_eq!(a[0].overall.drops.len(), 4);
        assert!(a[0].overall.std > 0.0);
        for i in [1, 2] {
            assert_eq!(a[i].overall.mean, 0.0);
            assert_eq!(a[i].overall.std, 0.0);
        }
        assert_eq!(a, run(1));
        assert_ne!(a[0].overall.drops, run(2)[0].overall.drops);
    }

    #[test]
    fn a_group_is_shuffled_by_whole_rows_and_stays_one_hot() {
        let rows = 50;
        let mut features = Vec::new();
        for i in 0..rows {
            let mut row = [0.0f32; 3];
            row[i % 3] = 1.0;
            features.extend(row);
        }
        let group = Group {
            name: "color".into(),
            columns: vec![0, 1, 2],
        };
        let scorer = regression(vec![0.0; rows]);
        let baseline = Score {
            overall: 0.0,
            per_class: Vec::new(),
        };
        let mut check = |f: Vec<f32>| {
            for row in f.chunks(3) {
                assert_eq!(row.iter().sum::<f32>(), 1.0, "{row:?}");
            }
            Ok(vec![0.0; rows])
        };
        permutation_importance(
            &features,
            rows,
            3,
            &[group],
            &scorer,
            &baseline,
            3,
            9,
            &mut check,
            &mut |_, _| true,
        )
        .unwrap();
    }

    #[test]
    fn accuracy_and_per_class_recall_from_logits() {
        let scorer = Scorer::Classification {
            labels: vec![0, 0, 1, 1],
            classes: vec!["a".into(), "b".into(), "c".into()],
            width: 3,
        };
        // Predicted: 0, 1, 1, 1.
        let s = scorer.score(&[5.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0, 0.0]);
        assert_eq!(s.overall, 0.75);
        assert_eq!(s.per_class, [Some(0.5), Some(1.0), None]);
        let binary = Scorer::Classification {
            labels: vec![0, 1],
            classes: vec!["no".into(), "yes".into()],
            width: 1,
        };
        assert_eq!(binary.score(&[-2.0, 3.0]).overall, 1.0);
    }
}
