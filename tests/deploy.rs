//! `deploy`'s guards, through the real binary and the real ONNX Runtime: the registry stays in
//! the workspace unless the stage opts out (`allow_outside_workspace: true`), a symbolic link
//! cannot carry it out, and a bundle that `sluice serve` would refuse (a model that does not load
//! or does not fit the preprocess artifact, an artifact that does not parse) publishes nothing.
//! The models are small MLPs made by the training environment's own Python.

mod common;
use common::*;

use std::path::Path;

/// Seven features (`x`, three cities, three sizes, one-hot) and two classes.
const TRAIN: &str = "x,city,size,y\n1,b,S,no\n3,a,M,yes\n5,b,L,no\n7,c,S,yes\n";

/// An MLP taking `inputs` features and answering `outputs` values, written to `rel`.
fn model(ws: &Ws, rel: &str, inputs: usize, outputs: usize) {
    ws.sluice(&["setup"]).assert_ok();
    let python = sluice_stages::pyenv::find(sluice_stages::pyenv::Flavor::Cpu)
        .expect("the environment is installed")
        .python;
    std::fs::create_dir_all(ws.path(rel).parent().unwrap()).unwrap();
    let out = std::process::Command::new(python)
        .arg(repo().join("stages/python/tests/make_user_model.py"))
        .arg(ws.path(rel))
        .args([
            "--inputs",
            &inputs.to_string(),
            "--outputs",
            &outputs.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workspace whose `deploy` publishes `models/net.onnx` with normalize's artifact;
/// `with` is the deploy stage's `with:` block.
fn deploy_ws(with: &str) -> Ws {
    let ws = Ws::new();
    ws.write("data/train.csv", TRAIN).pipeline(&format!(
        "name: d\nstages:\n  n: {{uses: normalize, inputs: {{train: data/train.csv}}, with: {{label: y}}}}\n  deploy:\n    uses: deploy\n    inputs: {{model: models/net.onnx, preprocess: \"${{{{ stages.n.outputs.preprocess }}}}\"}}\n    with: {with}\n"
    ));
    ws
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_registry_outside_the_workspace_is_a_config_error_at_its_line() {
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("reg").display().to_string();
    for registry in ["../../outside_reg", "models/../../outside_reg", &absolute] {
        let ws = deploy_ws(&format!("{{registry: '{registry}', name: m}}"));
        let r = ws.run(&[]);
        assert_eq!(r.code, 2, "{registry}: {}", r.stderr);
        for needle in [
            format!("stage `deploy`: `registry` `{registry}` is outside the workspace"),
            "sluice.yaml:6:".to_string(),
            "keep the registry inside the workspace (e.g. `registry: models`), or add `allow_outside_workspace: true`".to_string(),
        ] {
            assert!(r.stderr.contains(&needle), "{needle:?} in {}", r.stderr);
        }
        assert!(r.started().is_empty());
    }
    assert!(entries(outside.path()).is_empty());
    let ws = deploy_ws("{registry: models, name: m, allow_outside_workspace: 'yes'}");
    let r = ws.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`allow_outside_workspace` must be `true` or `false`, not \"yes\""),
        "{}",
        r.stderr
    );
}

#[test]
fn an_opted_in_registry_outside_the_workspace_is_published_to() {
    let outside = tempfile::tempdir().unwrap();
    let shared = outside.path().join("shared-registry");
    let ws = deploy_ws(&format!(
        "{{registry: '{}', name: m, allow_outside_workspace: true}}",
        shared.display()
    ));
    model(&ws, "models/net.onnx", 7, 2);
    ws.run(&[]).assert_ok();
    assert_eq!(
        entries(&shared.join("m")),
        ["1", "latest"],
        "{:?}",
        entries(&shared)
    );
    assert!(shared.join(".sluice-registry").is_file());
    assert_eq!(
        std::fs::read(shared.join("m/1/model.onnx")).unwrap(),
        std::fs::read(ws.path("models/net.onnx")).unwrap()
    );
    // The relative spelling climbs out the same way when opted in.
    let ws = deploy_ws("{registry: ../elsewhere, name: m, allow_outside_workspace: true}");
    model(&ws, "models/net.onnx", 7, 2);
    ws.run(&[]).assert_ok();
    let elsewhere = ws.root().parent().unwrap().join("elsewhere");
    let published = entries(&elsewhere.join("m"));
    std::fs::remove_dir_all(&elsewhere).unwrap();
    assert_eq!(published, ["1", "latest"]);
}

#[test]
fn a_symbolic_link_does_not_carry_the_registry_out() {
    let outside = tempfile::tempdir().unwrap();
    let ws = deploy_ws("{registry: models/reg, name: m}");
    model(&ws, "models/net.onnx", 7, 2);
    std::os::unix::fs::symlink(outside.path(), ws.path("models/reg")).unwrap();
    let m = ws.run(&[]).failure("deploy");
    assert_eq!(
        m,
        "the registry `models/reg` resolves outside the workspace through a symbolic link\n  = help: point `registry` at a directory inside the workspace, or add `allow_outside_workspace: true` to publish there on purpose"
    );
    assert!(entries(outside.path()).is_empty());
    // Opting in follows the link.
    ws.pipeline(&ws.read("sluice.yaml").replace(
        "{registry: models/reg, name: m}",
        "{registry: models/reg, name: m, allow_outside_workspace: true}",
    ));
    ws.run(&[]).assert_ok();
    assert_eq!(entries(&outside.path().join("m")), ["1", "latest"]);
}

#[test]
fn a_bundle_that_would_not_serve_publishes_nothing() {
    let hint = "  = help: give `deploy` the `model` of the `train` stage and the `preprocess` output of the `normalize` stage that prepared its training data";
    // Not a model at all.
    let ws = deploy_ws("{registry: models, name: m}");
    ws.write("models/net.onnx", "not an onnx file");
    let m = ws.run(&[]).failure("deploy");
    assert!(
        m.starts_with("`models/net.onnx` does not load in ONNX Runtime: ") && m.ends_with(hint),
        "{m}"
    );
    assert!(!ws.exists("models/m"), "{:?}", entries(&ws.path("models")));
    // A model for five features, an artifact making seven.
    model(&ws, "models/net.onnx", 5, 2);
    let m = ws.run(&[]).failure("deploy");
    assert_eq!(
        m,
        format!("the model `models/net.onnx` takes `input` with shape [-1, 5], but `out/d/n/preprocess.json` makes rows of shape [7]\n{hint}")
    );
    // Three answers for two classes.
    model(&ws, "models/net.onnx", 7, 3);
    let m = ws.run(&[]).failure("deploy");
    assert_eq!(
        m,
        format!("the model `models/net.onnx` answers 3 values per row in `output`, but `out/d/n/preprocess.json` expects 2 (one per class: no, yes)\n{hint}")
    );
    assert!(!ws.exists("models/m"));
    // An artifact that does not parse, with a model that loads.
    model(&ws, "models/net.onnx", 7, 2);
    ws.write("pre.json", "{\"format\": 1, \"numeric\": []}\n").pipeline(
        "name: d\nstages:\n  deploy: {uses: deploy, inputs: {model: models/net.onnx, preprocess: pre.json}, with: {name: m}}\n",
    );
    let m = ws.run(&[]).failure("deploy");
    assert!(
        m.starts_with("`pre.json` is not a preprocess artifact: ") && m.ends_with(hint),
        "{m}"
    );
    assert!(!ws.exists("models/m"));
    // And the good pair publishes.
    let ws = deploy_ws("{registry: models, name: m}");
    model(&ws, "models/net.onnx", 7, 2);
    ws.run(&[]).assert_ok();
    assert_eq!(ws.read("models/m/latest").trim(), "1");
}

#[test]
fn a_sweep_publishes_nothing_until_promotion_then_one_version() {
    // pipelines/iris-sweep.yaml, narrowed to two trials from the command line.
    let ws = Ws::new();
    ws.copy_from_repo("pipelines/iris-sweep.yaml")
        .copy_from_repo("examples/data/iris.csv");
    let r = ws.sluice(&[
        "sweep",
        "pipelines/iris-sweep.yaml",
        "--param",
        "lr=0.03,0.01",
        "--param",
        "hidden=8",
        "-j",
        "2",
        "--json",
    ]);
    r.assert_ok();
    let o = r.outcomes();
    assert_eq!(
        o.len(),
        3 + 2 * 2,
        "clean/split/normalize once, train/evaluate per trial: {o:?}"
    );
    assert!(!o.keys().any(|s| s.starts_with("deploy")), "{o:?}");
    assert!(!ws.exists("models"), "a sweep publishes nothing");
    // Epochs are counted from train's per-epoch metrics, pruning or not.
    let done = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "sweep_finished")
        .unwrap();
    for t in done["trials"].as_array().unwrap() {
        assert_eq!(t["epochs"], 60, "{t}");
    }
    let p = ws.sluice(&["sweep", "promote", "--json"]);
    p.assert_ok();
    let o = p.outcomes();
    for s in ["clean", "split", "normalize", "train", "evaluate"] {
        assert_eq!(o[s], "restored", "{s} in {o:?}");
    }
    assert_eq!(o["deploy"], "ran");
    assert_eq!(entries(&ws.path("models/iris-sweep")), ["1", "latest"]);
    // A plain run afterwards keeps the promoted params: nothing to do, no second version.
    ws.run(&["pipelines/iris-sweep.yaml"]).assert_ok();
    assert_eq!(entries(&ws.path("models/iris-sweep")), ["1", "latest"]);
}
