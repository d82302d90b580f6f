use super::*;
use serde_json::json;

#[test]
fn zscore_uses_the_population_std() {
    let (center, scale, stats) = fit(Scaling::Zscore, &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(center, 2.5);
    assert_eq!(scale, 1.25f64.sqrt());
    assert_eq!(stats, [("mean", 2.5), ("std", 1.25f64.sqrt())]);
}

#[test]
fn minmax_and_robust_fit_their_statistics() {
    assert_eq!(fit(Scaling::Minmax, &[3.0, -1.0, 7.0]).0, -1.0);
    assert_eq!(fit(Scaling::Minmax, &[3.0, -1.0, 7.0]).1, 8.0);
    // NumPy: np.percentile([1, 2, 3, 4, 10], [25, 50, 75]) == [2, 3, 4].
    let (center, scale, stats) = fit(Scaling::Robust, &[10.0, 1.0, 3.0, 2.0, 4.0]);
    assert_eq!((center, scale), (3.0, 2.0));
    assert_eq!(stats, [("median", 3.0), ("q1", 2.0), ("q3", 4.0)]);
    // Interpolated: np.percentile([1, 2, 3, 4], 25) == 1.75.
    assert_eq!(
        fit(Scaling::Robust, &[4.0, 2.0, 3.0, 1.0]).2[1],
        ("q1", 1.75)
    );
    assert_eq!(
        fit(Scaling::Robust, &[5.0]).2,
        [("median", 5.0), ("q1", 5.0), ("q3", 5.0)]
    );
    assert_eq!(fit(Scaling::None, &[5.0, 6.0]).0, 0.0);
}

#[test]
fn a_constant_column_gets_scale_1() {
    assert_eq!(fit(Scaling::Zscore, &[2.0, 2.0]).1, 1.0);
    assert_eq!(fit(Scaling::Minmax, &[2.0, 2.0]).1, 1.0);
    assert_eq!(fit(Scaling::Robust, &[2.0, 2.0, 2.0]).1, 1.0);
    // In pieces: the same bits as whole.
    let whole: Vec<f64> = (0..1000)
        .map(|i| (i as f64 * 0.37).sin() * 1e3 + 0.1)
        .collect();
    let pieces = [&whole[..3], &whole[3..3], &whole[3..700], &whole[700..]];
    for method in [Scaling::Zscore, Scaling::Minmax, Scaling::Robust] {
        let (a, b) = (fit(method, &whole), fit_pieces(method, &pieces));
        assert_eq!(
            (a.0.to_bits(), a.1.to_bits()),
            (b.0.to_bits(), b.1.to_bits())
        );
    }
}

fn artifact(unknown: Unknown) -> Preprocess {
    Preprocess {
        format: FORMAT,
        inputs: Vec::new(),
        numeric: vec![NumericColumn {
            name: "x".into(),
            method: Scaling::Zscore,
            center: 2.0,
            scale: 4.0,
            stats: Default::default(),
            fill: None,
            clip: None,
        }],
        categorical: vec![
            CategoricalColumn {
                name: "c".into(),
                method: Encoding::Onehot,
                categories: vec!["a".into(), "b".into(), "c".into()],
                fill: None,
            },
            CategoricalColumn {
                name: "d".into(),
                method: Encoding::Ordinal,
                categories: vec!["1".into(), "2".into()],
                fill: None,
            },
        ],
        features: vec![
            "x".into(),
            "c=a".into(),
            "c=b".into(),
            "c=c".into(),
            "d".into(),
        ],
        label: Label {
            column: "y".into(),
            task: Task::Regression,
            classes: None,
        },
        unknown_category: unknown,
    }
}

fn row(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn apply_scales_and_encodes_a_raw_row() {
    let p = artifact(Unknown::Ignore);
    let out = p
        .apply(&row(json!({"x": 4, "c": "b", "d": 2, "y": 9})))
        .unwrap();
    assert_eq!(out, [0.5, 0.0, 1.0, 0.0, 1.0]);
    let out = p.apply(&row(json!({"x": 0, "c": "z", "d": "7"}))).unwrap();
    assert_eq!(out, [-0.5, 0.0, 0.0, 0.0, -1.0]);
}

#[test]
fn apply_errors_name_the_column() {
    let p = artifact(Unknown::Error);
    let e = p
        .apply(&row(json!({"x": 0, "c": "z", "d": "1"})))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "column `c` has the category `z`, which the train split does not have"
    );
    let e = p.apply(&row(json!({"c": "a", "d": "1"}))).unwrap_err();
    assert_eq!(e.to_string(), "column `x` is missing");
    let e = p
        .apply(&row(json!({"x": "1", "c": "a", "d": "1"})))
        .unwrap_err();
    assert_eq!(e.to_string(), "column `x` must be a number, not \"1\"");
}

#[test]
fn the_artifact_round_trips_through_sorted_json() {
    let p = artifact(Unknown::Ignore);
    let text = p.to_json();
    assert!(text.starts_with("{\n  \"categorical\": ["), "{text}");
    assert_eq!(Preprocess::from_json(&text).unwrap(), p);
    let e = Preprocess::from_json(&text.replace("\"format\": 1", "\"format\": 2"));
    assert_eq!(e.unwrap_err(), ApplyError::Format(2));
}

#[test]
fn an_artifact_whose_features_do_not_match_its_columns_is_refused() {
    // Edited by hand, such an artifact would make rows of the wrong width at serve time.
    let mut p = artifact(Unknown::Ignore);
    p.features.pop();
    let e = Preprocess::from_json(&p.to_json()).unwrap_err().to_string();
    let width = p.features.len();
    assert!(
        e.contains(&format!(
            "it names {width} features, but its numeric and categorical columns make {}",
            width + 1
        )),
        "{e}"
    );
}
