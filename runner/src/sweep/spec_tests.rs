use super::*;
use crate::spec::raw::Problems;
use crate::spec::yaml::read_yaml;
use crate::spec::Seg;
use crate::spec::YPath;

/// Parses `text` (a whole document with a `sweep:` key) and returns the spec and each problem as
/// `path: message`.
fn read(text: &str) -> (Option<SweepSpec>, Vec<String>) {
    let (doc, _) = read_yaml(text).expect("test YAML parses");
    let mut problems = Problems::default();
    let root = YPath::root().k("sweep");
    let spec = parse(&doc["sweep"], &root, &mut problems);
    let shown = problems
        .0
        .iter()
        .map(|p| {
            let path = p.path.as_ref().expect("every sweep problem has a path");
            let segs: Vec<String> = path
                .segs
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => k.clone(),
                    Seg::Index(i) => i.to_string(),
                })
                .collect();
            let key = if path.key { " (key)" } else { "" };
            format!("{}{key}: {}", segs.join("."), p.diag.message)
        })
        .collect();
    (spec, shown)
}

fn problems(text: &str) -> Vec<String> {
    let (spec, shown) = read(text);
    assert!(spec.is_none(), "a spec with problems is refused");
    shown
}

#[test]
fn full_section_reads_in_written_order() {
    let (spec, shown) = read(
        "sweep:
  method: random
  params:
    lr: [0.1, 0.01]
    hidden: {choice: [8, 16, 32]}
    dropout: {uniform: [0.0, 0.5]}
    wd: {loguniform: [1.0e-5, 1.0e-2]}
    layers: {int: [1, 4]}
    act: [relu, tanh, true]
  trials: 64
  seed: 7
  metric: evaluate.accuracy
  prune: {rule: median, metric: val_accuracy, min_trials: 2, warmup_epochs: 1}
  skip: [publish]
",
    );
    assert!(shown.is_empty(), "{shown:?}");
    let spec = spec.unwrap();
    assert_eq!(spec.method, Method::Random);
    assert_eq!(
        spec.varied(),
        ["lr", "hidden", "dropout", "wd", "layers", "act"]
    );
    assert_eq!(
        spec.params[0].1,
        Dist::Values(vec![0.1.into(), 0.01.into()])
    );
    assert_eq!(spec.params[3].1, Dist::LogUniform(1.0e-5, 1.0e-2));
    assert_eq!(spec.params[4].1, Dist::Int(1, 4));
    assert_eq!(
        spec.params[5].1,
        Dist::Values(vec!["relu".into(), "tanh".into(), true.into()])
    );
    assert_eq!((spec.trials, spec.seed), (Some(64), 7));
    assert_eq!(spec.metric.to_string(), "evaluate.accuracy");
    assert_eq!(spec.direction, Direction::Max);
    let prune = spec.prune.unwrap();
    assert_eq!(prune.metric, "val_accuracy");
    assert_eq!(
        prune.direction,
        Direction::Max,
        "accuracy: larger is better"
    );
    assert_eq!((prune.min_trials, prune.warmup_epochs), (2, 1));
    assert_eq!(spec.skip, ["publish"]);
}

#[test]
fn defaults_grid_min_for_losses_and_median() {
    let (spec, shown) =
        read("sweep: {params: {lr: [0.1, 0.01]}, metric: evaluate.rmse, prune: median}");
    assert!(shown.is_empty(), "{shown:?}");
    let spec = spec.unwrap();
    assert_eq!(spec.method, Method::Grid);
    assert_eq!(spec.direction, Direction::Min);
    assert_eq!(spec.prune, Some(PruneSpec::default()));
    assert_eq!(
        spec.prune.as_ref().unwrap().direction,
        Direction::Min,
        "val_loss"
    );
    assert_eq!(spec.planned_trials(), 2);
    let (spec, _) = read("sweep: {params: {d: {uniform: [0, 1]}}, trials: 3, metric: e.f1}");
    assert_eq!(spec.unwrap().method, Method::Random, "a range means random");
    let (spec, _) = read("sweep: {params: {d: [1, 2, 3]}, trials: 2, metric: e.f1}");
    assert_eq!(
        spec.unwrap().method,
        Method::Random,
        "so does a trial count"
    );
}

#[test]
fn direction_from_name() {
    for (name, d) in [
        ("accuracy", Direction::Max),
        ("f1_macro", Direction::Max),
        ("val_loss", Direction::Min),
        ("RMSE", Direction::Min),
        ("mean_absolute_error", Direction::Min),
        ("r2", Direction::Max),
    ] {
        assert_eq!(Direction::default_for(name), d, "{name}");
    }
}

#[test]
fn problems_at_their_paths() {
    let shown = problems(
        "sweep:
  methd: grid
  params:
    lr: []
    a: [1, [2]]
    b: {uniform: [0.5, 0.5]}
    c: {loguniform: [0, 1]}
    d: {int: [4, 1]}
    e: {unifrom: [0, 1]}
    f: 3
    g: [x, x]
    h: {uniform: [0, .inf]}
  trials: 0
  metric: accuracy
  direction: up
  prune: {rule: mean, min_trial: 2}
  skip: [1]
",
    );
    let expected = [
        "sweep.methd (key): unknown sweep key `methd`",
        "sweep.params.lr: the list of values is empty",
        "sweep.params.a.1: a swept value must be text, a number or a boolean, found a list",
        "sweep.params.b.uniform: `uniform`'s low end must be below its high end, found [0.5, 0.5]",
        "sweep.params.c.loguniform: `loguniform` needs a low end above 0, found 0",
        "sweep.params.d.int: `int`'s low end must not be above its high end, found [4, 1]",
        "sweep.params.e.unifrom (key): unknown distribution `unifrom`",
        "sweep.params.f: a swept param takes a list of values or a distribution, found `3`",
        "sweep.params.g.1: `\"x\"` is listed twice",
        "sweep.params.h.uniform.1: `uniform` takes numbers, found `.inf`",
        "sweep.trials: `trials` must be a whole number from 1 to 100000, found `0`",
        "sweep.metric: `metric`: `accuracy` is not `STAGE.METRIC`, e.g. `evaluate.accuracy` or `evaluate.rmse`",
        "sweep.direction: `direction` must be `max` or `min`, found the text `up`",
        "sweep.prune.min_trial (key): unknown prune key `min_trial`",
        "sweep.prune.rule: the only pruning rule is `median`, found the text `mean`",
        "sweep.skip.0: a stage name must be text, found a number",
    ];
    for e in expected {
        assert!(shown.iter().any(|s| s == e), "missing `{e}` in {shown:#?}");
    }
    assert_eq!(shown.len(), expected.len(), "{shown:#?}");
}

#[test]
fn did_you_mean_for_keys() {
    let (_, shown) = read("sweep: {params: {a: [1]}, metric: e.m, trails: 3}");
    assert_eq!(shown, ["sweep.trails (key): unknown sweep key `trails`"]);
    let (doc, _) = read_yaml("sweep: {params: {a: [1]}, metric: e.m, trails: 3}").unwrap();
    let mut p = Problems::default();
    parse(&doc["sweep"], &YPath::root().k("sweep"), &mut p);
    assert_eq!(p.0[0].diag.help.as_deref(), Some("did you mean `trials`?"));
}

#[test]
fn whole_section_problems() {
    assert_eq!(
        problems("sweep: {method: random, params: {a: [1, 2]}, metric: e.m}"),
        ["sweep.method: a random sweep needs `trials`"]
    );
    assert_eq!(
        problems("sweep: {params: {a: {int: [1, 3]}}, metric: e.m}"),
        ["sweep (key): a random sweep needs `trials`"],
        "random because of the range: no `method` to point at"
    );
    assert_eq!(
        problems("sweep: {method: grid, params: {a: {int: [1, 3]}}, metric: e.m}"),
        ["sweep.params.a: a grid sweep takes lists of values, and `a` has a range"]
    );
    assert_eq!(
        problems("sweep: {method: grid, params: {a: [1, 2]}, trials: 4, metric: e.m}"),
        ["sweep.trials: `trials` is for random sweeps; a grid runs every combination"]
    );
    let many: Vec<String> = (0..400).map(|i| i.to_string()).collect();
    let list = many.join(", ");
    assert_eq!(
        problems(&format!(
            "sweep: {{params: {{a: [{list}], b: [{list}]}}, metric: e.m}}"
        )),
        ["sweep.params: the grid has 160000 combinations, more than the 100000 a sweep may run"]
    );
    assert_eq!(
        problems("sweep: [1]"),
        ["sweep: `sweep` must be a mapping, found a list"]
    );
    assert_eq!(
        problems("sweep: {metric: e.m}"),
        ["sweep (key): the sweep has no `params`"]
    );
}

#[test]
fn param_spec_syntax() {
    assert_eq!(
        parse_param_spec("0.1,0.01, 1").unwrap(),
        Dist::Values(vec![0.1.into(), 0.01.into(), 1.into()])
    );
    assert_eq!(
        parse_param_spec("logistic,mlp,\"3\"").unwrap(),
        Dist::Values(vec!["logistic".into(), "mlp".into(), "3".into()])
    );
    assert_eq!(
        parse_param_spec("choice:8,16").unwrap(),
        Dist::Values(vec![8.into(), 16.into()])
    );
    assert_eq!(
        parse_param_spec("uniform:0,0.5").unwrap(),
        Dist::Uniform(0.0, 0.5)
    );
    assert_eq!(
        parse_param_spec("loguniform:1e-5,1e-2").unwrap(),
        Dist::LogUniform(1e-5, 1e-2)
    );
    assert_eq!(parse_param_spec("int:1,4").unwrap(), Dist::Int(1, 4));
    for (bad, why) in [
        ("1,,2", "an empty value"),
        ("uniform:1", "takes two values"),
        ("uniform:1,0", "below the high end"),
        ("loguniform:0,1", "above 0"),
        ("int:1.5,3", "whole numbers"),
        ("int:3,1", "not be above"),
        ("[1],2", "text, a number or a boolean"),
        ("a,a", "listed twice"),
        ("uniform:x,1", "takes numbers"),
    ] {
        let e = parse_param_spec(bad).unwrap_err();
        assert!(e.contains(why), "`{bad}`: {e}");
    }
}

fn base() -> SweepSpec {
    read("sweep: {params: {lr: [0.1, 0.01], hidden: [8, 16]}, metric: evaluate.accuracy}")
        .0
        .unwrap()
}

#[test]
fn overrides_replace_and_add() {
    let mut spec = base();
    spec.apply(&SweepOverrides {
        params: vec![
            ("lr".into(), "loguniform:1e-4,1e-1".into()),
            ("layers".into(), "int:1,3".into()),
        ],
        method: Some(Method::Random),
        trials: Some(10),
        seed: Some(3),
        metric: Some("evaluate.loss".into()),
        prune: Some(PruneChoice::Median),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(spec.varied(), ["lr", "hidden", "layers"]);
    assert_eq!(spec.params[0].1, Dist::LogUniform(1e-4, 1e-1));
    assert_eq!(
        (spec.method, spec.trials, spec.seed),
        (Method::Random, Some(10), 3)
    );
    assert_eq!(spec.direction, Direction::Min, "the new metric's default");
    assert!(spec.prune.is_some());

    let mut grid = spec.clone();
    let e = grid
        .apply(&SweepOverrides {
            method: Some(Method::Grid),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.contains("`lr` has a range"), "{e}");
    assert!(e.contains("hint: "), "{e}");

    let mut s = base();
    let e = s
        .apply(&SweepOverrides {
            trials: Some(200_000),
            method: Some(Method::Random),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.contains("200000"), "{e}");
}

#[test]
fn from_overrides_needs_params_and_metric() {
    let e = SweepSpec::from_overrides(&SweepOverrides::default()).unwrap_err();
    assert!(e.contains("--param"), "{e}");
    let e = SweepSpec::from_overrides(&SweepOverrides {
        params: vec![("lr".into(), "0.1,0.2".into())],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("--metric"), "{e}");
    let spec = SweepSpec::from_overrides(&SweepOverrides {
        params: vec![("lr".into(), "0.1,0.2".into())],
        metric: Some("evaluate.val_loss".into()),
        direction: Some(Direction::Max),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(spec.method, Method::Grid);
    assert_eq!(spec.direction, Direction::Max, "an explicit direction wins");
    let e = SweepSpec::from_overrides(&SweepOverrides {
        params: vec![("lr".into(), "uniform:0,1".into())],
        metric: Some("evaluate.acc".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("needs `trials`"), "{e}");
}

#[test]
fn id_is_stable_and_follows_the_spec() {
    let a = base();
    let id = a.id("iris");
    assert!(
        id.starts_with("iris-") && id.len() == "iris-".len() + 8,
        "{id}"
    );
    assert_eq!(id, base().id("iris"));
    let mut seeded = base();
    seeded.seed = 9;
    assert_eq!(seeded.id("iris"), id, "a grid's seed plays no part");
    let mut other = base();
    other.params.swap(0, 1);
    assert_ne!(other.id("iris"), id, "the order numbers the trials");
    assert_ne!(base().id("wine"), id);
}

#[test]
fn serde_form_spells_distributions_as_written() {
    let spec = read(
        "sweep: {params: {a: [1, x], b: {loguniform: [0.001, 1]}, c: {int: [1, 4]}}, trials: 5, metric: e.m}",
    )
    .0
    .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        json["params"],
        serde_json::json!([
            ["a", {"values": [1, "x"]}],
            ["b", {"loguniform": [0.001, 1.0]}],
            ["c", {"int": [1, 4]}],
        ])
    );
    let back: SweepSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}
