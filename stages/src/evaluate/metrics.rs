//! The metrics `evaluate` reports, computed from labels and model outputs. Definitions follow
//! scikit-learn's, so figures can be checked against it: macro averages over the classes of the
//! label set, a class never predicted has precision 0 (`zero_division=0`), log loss clips
//! probabilities to [1e-15, 1 - 1e-15], ROC-AUC (two classes) counts ties as half.

use serde_json::{json, Map, Value};

/// Softmax of each row of `logits` ([n, k]), computed stably.
pub fn softmax(logits: &[f32], k: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(k) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let exps: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
    }
    out
}

/// Two-class probabilities `[1 - p, p]` from one logit per row (`bce_with_logits`).
pub fn sigmoid_pairs(logits: &[f32]) -> Vec<f64> {
    logits
        .iter()
        .flat_map(|&x| {
            let p = 1.0 / (1.0 + (-(x as f64)).exp());
            [1.0 - p, p]
        })
        .collect()
}

/// The predicted class of each row: the most probable one (the first on ties).
pub fn argmax(probs: &[f64], k: usize) -> Vec<usize> {
    probs
        .chunks_exact(k)
        .map(|row| {
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
        })
        .collect()
}

/// Classification metrics. `labels` are class ids below `classes.len()`, `probs` is [n, k].
pub fn classification(labels: &[usize], probs: &[f64], classes: &[String]) -> Value {
    let k = classes.len();
    let n = labels.len();
    let pred = argmax(probs, k);
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in labels.iter().zip(&pred) {
        confusion[t][p] += 1;
    }
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let mut per_class = Map::new();
    let (mut p_sum, mut r_sum, mut f_sum, mut present) = (0.0, 0.0, 0.0, 0usize);
    for (c, name) in classes.iter().enumerate() {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        p_sum += precision;
        r_sum += recall;
        f_sum += f1;
        if support > 0 {
            present += 1;
        }
        per_class.insert(
            name.clone(),
            json!({"precision": precision, "recall": recall, "f1": f1, "support": support}),
        );
    }
    // Balanced accuracy: mean recall over the classes that occur in the labels.
    let balanced = if present > 0 {
        (0..k)
            .filter(|&c| confusion[c].iter().sum::<u64>() > 0)
            .map(|c| confusion[c][c] as f64 / confusion[c].iter().sum::<u64>() as f64)
            .sum::<f64>()
            / present as f64
    } else {
        0.0
    };
    let eps = 1e-15;
    let log_loss = labels
        .iter()
        .enumerate()
        .map(|(i, &t)| -(probs[i * k + t].clamp(eps, 1.0 - eps)).ln())
        .sum::<f64>()
        / n.max(1) as f64;
    let mut metrics = json!({
        "accuracy": correct as f64 / n.max(1) as f64,
        "balanced_accuracy": balanced,
        "precision_macro": p_sum / k as f64,
        "recall_macro": r_sum / k as f64,
        "f1_macro": f_sum / k as f64,
        "log_loss": log_loss,
    });
    if k == 2 {
        let scores: Vec<f64> = (0..n).map(|i| probs[i * 2 + 1]).collect();
        let positive: Vec<bool> = labels.iter().map(|&t| t == 1).collect();
        if let Some(auc) = roc_auc(&scores, &positive) {
            metrics["roc_auc"] = json!(auc);
        }
        let curve: Vec<[f64; 2]> = roc_curve(&scores, &positive)
            .into_iter()
            .map(|(x, y)| [x, y])
            .collect();
        return json!({
            "metrics": metrics,
            "per_class": per_class,
            "confusion_matrix": {"labels": classes, "matrix": confusion},
            "roc_curve": {"positive": classes[1], "points": curve},
        });
    }
    json!({
        "metrics": metrics,
        "per_class": per_class,
        "confusion_matrix": {"labels": classes, "matrix": confusion},
    })
}

/// Area under the ROC curve by the rank statistic (Mann–Whitney U), ties counted as half.
/// `None` when only one class occurs.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// The ROC curve's points (false positive rate, true positive rate), thresholds descending.
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = positive.iter().filter(|&&p| p).count().max(1) as f64;
    let neg = (positive.len() - positive.iter().filter(|&&p| p).count()).max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for (idx, &o) in order.iter().enumerate() {
        if positive[o] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order
            .get(idx + 1)
            .is_none_or(|&next| scores[next] != scores[o]);
        if last_of_tie {
            points.push((fp / neg, tp / pos));
        }
    }
    points
}

/// Regression metrics.
pub fn regression(targets: &[f32], predictions: &[f32]) -> Value {
    let n = targets.len().max(1) as f64;
    let mean = targets.iter().map(|&t| t as f64).sum::<f64>() / n;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (&t, &p) in targets.iter().zip(predictions) {
        let d = t as f64 - p as f64;
        se += d * d;
        ae += d.abs();
        tot += (t as f64 - mean).powi(2);
    }
    json!({"metrics": {
        "rmse": (se / n).sqrt(),
        "mae": ae / n,
        "r2": if tot > 0.0 { 1.0 - se / tot } else { 0.0 },
    }})
}

/// Every metric name `evaluate` can report, for checking `require:` when the pipeline loads.
pub const NAMES: &[&str] = &[
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "log_loss",
    "roc_auc",
    "rmse",
    "mae",
    "r2",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Value, b: f64) {
        let a = a.as_f64().unwrap();
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn one_hot(preds: &[usize], k: usize) -> Vec<f64> {
        preds
            .iter()
            .flat_map(|&p| (0..k).map(move |c| if c == p { 0.8 } else { 0.2 / (k - 1) as f64 }))
            .collect()
    }

    #[test]
    fn classification_by_hand() {
        // labels:  0 0 0 1 1 2
        // preds:   0 0 1 1 2 2
        // confusion: [2 1 0; 0 1 1; 0 0 1]
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let labels = [0, 0, 0, 1, 1, 2];
        let probs = one_hot(&[0, 0, 1, 1, 2, 2], 3);
        let m = classification(&labels, &probs, &classes);
        assert_eq!(
            m["confusion_matrix"]["matrix"],
            json!([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
        );
        close(&m["metrics"]["accuracy"], 4.0 / 6.0);
        // recalls 2/3, 1/2, 1 → balanced (2/3 + 1/2 + 1)/3
        close(
            &m["metrics"]["balanced_accuracy"],
            (2.0 / 3.0 + 0.5 + 1.0) / 3.0,
        );
        // precisions 1, 1/2, 1/2
        close(&m["metrics"]["precision_macro"], (1.0 + 0.5 + 0.5) / 3.0);
        close(&m["metrics"]["recall_macro"], (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        close(
            &m["metrics"]["f1_macro"],
            (f1(1.0, 2.0 / 3.0) + f1(0.5, 0.5) + f1(0.5, 1.0)) / 3.0,
        );
        // p(true) is 0.8 for the 4 right rows, 0.1 for the 2 wrong ones
        close(
            &m["metrics"]["log_loss"],
            -(4.0 * 0.8f64.ln() + 2.0 * 0.1f64.ln()) / 6.0,
        );
        close(&m["per_class"]["b"]["precision"], 0.5);
        assert_eq!(m["per_class"]["c"]["support"], 1);
        assert!(m["metrics"].get("roc_auc").is_none());
    }

    #[test]
    fn a_class_never_predicted_has_precision_zero() {
        let classes: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let m = classification(&[0, 1], &one_hot(&[0, 0], 2), &classes);
        close(&m["per_class"]["b"]["precision"], 0.0);
        close(&m["per_class"]["b"]["f1"], 0.0);
    }

    #[test]
    fn roc_auc_by_hand() {
        // scikit-learn's example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12);
        // ties count half
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.6], &[true, true]), None);
        let curve = roc_curve(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert_eq!(
            curve,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn regression_by_hand() {
        // errors 1, -1, 0, 2 → mse 1.5, mae 1; targets mean 2.5, total 5
        let m = regression(&[1.0, 2.0, 3.0, 4.0], &[0.0, 3.0, 3.0, 2.0]);
        close(&m["metrics"]["rmse"], 1.5f64.sqrt());
        close(&m["metrics"]["mae"], 1.0);
        close(&m["metrics"]["r2"], 1.0 - 6.0 / 5.0);
    }

    #[test]
    fn softmax_and_sigmoid() {
        let p = softmax(&[0.0, 0.0, 1000.0, 0.0], 2);
        assert_eq!(p[..2], [0.5, 0.5]);
        assert!((p[2] - 1.0).abs() < 1e-12 && p[3] < 1e-300);
        let s = sigmoid_pairs(&[0.0]);
        assert_eq!(s, vec![0.5, 0.5]);
        assert_eq!(argmax(&[0.2, 0.8, 0.5, 0.5], 2), vec![1, 0]);
    }
}
