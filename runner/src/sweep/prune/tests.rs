//! The median rule's cases one by one, on small hand-made curves, and `curves.json` round trips.

use super::*;

const LOSS: MedianRule = MedianRule {
    min_trials: 3,
    warmup_epochs: 2,
    lower_is_better: true,
};

const ACCURACY: MedianRule = MedianRule {
    lower_is_better: false,
    ..LOSS
};

/// Completed trials 1..=n, trial t reporting `value(t, epoch)` at epochs 1..=epochs.
fn completed(n: usize, epochs: u64, value: impl Fn(usize, u64) -> f64) -> Curves {
    let mut c = Curves::default();
    for t in 1..=n {
        for e in 1..=epochs {
            c.report(t, e, value(t, e));
        }
        c.complete(t);
    }
    c
}

#[test]
fn a_loss_worse_than_the_median_is_pruned_and_one_better_is_not() {
    // Losses at epoch 5: 0.5, 0.6, 0.7 -> median 0.6.
    let mut c = completed(3, 10, |t, _| 0.4 + 0.1 * t as f64);
    c.report(9, 5, 0.9);
    c.report(10, 5, 0.55);
    let v = LOSS.check(&c, 9, 5).expect("0.9 is worse than 0.6");
    assert_eq!((v.epoch, v.value, v.completed), (5, 0.9, 3));
    assert!((v.median - 0.6).abs() < 1e-12, "{v:?}");
    assert_eq!(
        v.describe("val_loss"),
        "val_loss 0.9 at epoch 5 is worse than the median 0.6 of 3 completed trials"
    );
    assert_eq!(LOSS.check(&c, 10, 5), None);
}

#[test]
fn for_a_score_lower_is_worse() {
    let mut c = completed(3, 10, |t, _| 0.4 + 0.1 * t as f64);
    c.report(9, 5, 0.9);
    c.report(10, 5, 0.55);
    assert_eq!(ACCURACY.check(&c, 9, 5), None);
    let v = ACCURACY.check(&c, 10, 5).expect("0.55 is below 0.6");
    assert_eq!(v.value, 0.55);
}

#[test]
fn a_tie_with_the_median_is_not_worse() {
    let mut c = completed(3, 10, |t, _| t as f64);
    c.report(9, 5, 2.0);
    assert_eq!(LOSS.check(&c, 9, 5), None);
    assert_eq!(ACCURACY.check(&c, 9, 5), None);
}

#[test]
fn an_even_count_takes_the_mean_of_the_middle_two() {
    let mut c = completed(4, 10, |t, _| t as f64);
    c.report(9, 5, 2.6);
    let v = LOSS.check(&c, 9, 5).expect("2.6 is above 2.5");
    assert_eq!((v.median, v.completed), (2.5, 4));
}

#[test]
fn nothing_is_pruned_during_the_warmup() {
    let mut c = completed(3, 10, |_, _| 0.1);
    for e in 1..=3 {
        c.report(9, e, 5.0);
    }
    assert_eq!(LOSS.check(&c, 9, 1), None);
    assert_eq!(LOSS.check(&c, 9, 2), None, "epoch 2 is still warm-up");
    assert!(LOSS.check(&c, 9, 3).is_some(), "the first epoch past it");
}

#[test]
fn nothing_is_pruned_before_min_trials_have_completed() {
    let mut c = completed(2, 10, |_, _| 0.1);
    c.report(9, 5, 5.0);
    // A running trial with good values is no yardstick: only completed ones are.
    c.report(3, 5, 0.1);
    assert_eq!(LOSS.check(&c, 9, 5), None);
    c.complete(3);
    assert!(LOSS.check(&c, 9, 5).is_some());
}

#[test]
fn the_trial_judged_is_never_its_own_yardstick() {
    // Trial 3 completed, then is checked again (a resumed sweep replaying its curve): the
    // others alone are two, under `min_trials`.
    let c = completed(3, 10, |t, _| t as f64);
    assert_eq!(LOSS.check(&c, 3, 5), None);
}

#[test]
fn an_early_stopped_trial_counts_with_its_last_value() {
    // Trials 1 and 2 ran 10 epochs at 0.5; trial 3 stopped after epoch 4 at 0.1 (early
    // stopping: it was good). At epoch 8 the median is over 0.5, 0.5 and 0.1.
    let mut c = completed(2, 10, |_, _| 0.5);
    for e in 1..=4 {
        c.report(3, e, 0.1);
    }
    c.complete(3);
    c.report(9, 8, 0.45);
    let rule = MedianRule {
        min_trials: 3,
        ..LOSS
    };
    assert_eq!(rule.check(&c, 9, 8), None, "0.45 beats the median 0.5");
    c.report(9, 8, 0.6);
    let v = rule.check(&c, 9, 8).expect("0.6 is worse than 0.5");
    assert_eq!((v.median, v.completed), (0.5, 3));
}

#[test]
fn a_completed_trial_that_reported_nothing_yet_at_that_epoch_does_not_count() {
    // Trial 3 reports only from epoch 6 on: at epoch 5 it has no value, so two peers remain.
    let mut c = completed(2, 10, |_, _| 0.5);
    for e in 6..=10 {
        c.report(3, e, 0.5);
    }
    c.complete(3);
    c.report(9, 5, 0.9);
    assert_eq!(LOSS.check(&c, 9, 5), None);
    c.report(9, 6, 0.9);
    assert_eq!(LOSS.check(&c, 9, 6).map(|v| v.completed), Some(3));
}

#[test]
fn nan_and_infinite_values_prune_past_the_gates() {
    let mut c = completed(3, 10, |t, _| t as f64);
    c.report(9, 5, f64::NAN);
    c.report(10, 5, f64::INFINITY);
    c.report(11, 5, f64::NEG_INFINITY);
    for t in [9, 10, 11] {
        assert!(LOSS.check(&c, t, 5).is_some(), "trial {t} for a loss");
        assert!(ACCURACY.check(&c, t, 5).is_some(), "trial {t} for a score");
    }
    assert_eq!(
        LOSS.check(&c, 9, 5).unwrap().describe("val_loss"),
        "val_loss is NaN at epoch 5"
    );
    // The gates come first, as in Optuna: not during the warm-up, not without peers.
    c.report(9, 1, f64::NAN);
    assert_eq!(LOSS.check(&c, 9, 1), None);
    let mut alone = Curves::default();
    alone.report(9, 5, f64::NAN);
    assert_eq!(LOSS.check(&alone, 9, 5), None);
}

#[test]
fn a_completed_trials_nan_is_no_yardstick() {
    let mut c = completed(3, 10, |t, _| t as f64);
    c.report(4, 5, f64::NAN);
    c.complete(4);
    c.report(9, 5, 2.5);
    let v = LOSS.check(&c, 9, 5).expect("2.5 is worse than 2");
    assert_eq!((v.median, v.completed), (2.0, 3));
}

#[test]
fn an_epoch_the_trial_did_not_report_is_not_judged() {
    let c = completed(3, 10, |t, _| t as f64);
    assert_eq!(LOSS.check(&c, 9, 5), None);
}

#[test]
fn reporting_again_replaces_and_forget_drops() {
    let mut c = completed(3, 10, |t, _| t as f64);
    c.report(9, 5, 9.0);
    c.report(9, 5, 1.0);
    assert_eq!(c.values(9).collect::<Vec<_>>(), [(5, 1.0)]);
    assert_eq!(LOSS.check(&c, 9, 5), None);
    c.forget(9);
    assert_eq!(c.values(9).count(), 0);
    assert!(c.is_complete(1) && !c.is_complete(9));
}

#[test]
fn verdicts_read_well_for_small_and_large_values() {
    let v = Verdict {
        epoch: 3,
        value: 0.000012,
        median: 1234.56789,
        completed: 1,
    };
    assert_eq!(
        v.describe("val_rmse"),
        "val_rmse 1.2e-5 at epoch 3 is worse than the median 1234.5679 of 1 completed trial"
    );
}

#[test]
fn curves_round_trip_through_json_with_nan_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep").join("curves.json");
    let mut c = completed(2, 3, |t, e| t as f64 + e as f64 / 10.0);
    c.report(3, 1, 0.5);
    c.report(3, 2, f64::NAN);
    c.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(r#""3":{"values":{"1":0.5,"2":null},"complete":false}"#),
        "{text}"
    );
    let back = Curves::load(&path).unwrap();
    assert_eq!(back.trials.len(), 3);
    assert_eq!(back.trials[&1], c.trials[&1]);
    assert!(back.is_complete(2) && !back.is_complete(3));
    let v3: Vec<(u64, f64)> = back.values(3).collect();
    assert_eq!(v3[0], (1, 0.5));
    assert!(v3[1].1.is_nan());
    // No temporary left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["curves.json"]);
}

#[test]
fn a_missing_curves_file_is_an_empty_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let c = Curves::load(&dir.path().join("curves.json")).unwrap();
    assert_eq!(c, Curves::default());
}

#[test]
fn broken_curves_files_are_refused_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.json");
    std::fs::write(&path, "{\"version\": 1, \"trials\": [").unwrap();
    let e = Curves::load(&path).unwrap_err();
    assert!(matches!(e, CurvesError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("is not a curves file"), "{e}");
    assert!(e.help().unwrap().starts_with("delete it"));
    std::fs::write(&path, r#"{"version": 99, "trials": {}}"#).unwrap();
    let e = Curves::load(&path).unwrap_err();
    assert!(e.to_string().ends_with("has format 99, not 1"), "{e}");
}

#[test]
fn a_curves_file_over_the_bound_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.json");
    // Sparse: the size is there without writing 64 MiB.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_CURVES_BYTES + 1).unwrap();
    let e = Curves::load(&path).unwrap_err();
    assert!(matches!(e, CurvesError::TooLarge { .. }), "{e}");
    assert!(e.to_string().ends_with("is larger than 64 MiB"), "{e}");
}

#[test]
fn curves_over_the_bound_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.json");
    let small = completed(1, 2, |_, _| 0.5);
    small.save(&path).unwrap();
    // The bound scaled down to 1 MiB, which about 40,000 values pass.
    let big = completed(1_000, 50, |t, e| {
        (t as u64 * 1000 + e) as f64 + 0.123_456_789
    });
    let e = big.save_within(&path, 1 << 20).unwrap_err();
    assert!(matches!(e, CurvesError::TooLargeToWrite { .. }), "{e}");
    assert!(e.to_string().contains("MiB, over the 1 MiB limit"), "{e}");
    // What was there before is intact.
    assert_eq!(Curves::load(&path).unwrap(), small);
    big.save_within(&path, 4 << 20).unwrap();
    assert_eq!(Curves::load(&path).unwrap(), big);
}
