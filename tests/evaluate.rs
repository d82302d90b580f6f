//! `evaluate` and `deploy` through the real binary, with the real ONNX Runtime library (fetched
//! into the user cache on first use): the iris pipeline end to end, metrics that agree with the
//! predictions written beside them, gates that fail the stage and block deploy, registry
//! versions that change only with the model, and the bad inputs' messages.

mod common;
use common::*;

use serde_json::Value;
use std::path::PathBuf;

fn iris_ws(edit: impl Fn(String) -> String) -> Ws {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/iris.csv");
    let yaml = std::fs::read_to_string(repo().join("pipelines/iris.yaml")).unwrap();
    ws.write("pipelines/iris.yaml", &edit(yaml));
    ws
}

fn versions(ws: &Ws) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(ws.path("models/iris"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<u64>().is_ok())
        .collect();
    v.sort();
    v
}

#[test]
fn iris_runs_to_a_deployed_bundle_and_redeploys_only_on_change() {
    let ws = iris_ws(|y| y);
    ws.run(&["pipelines/iris.yaml"]).assert_ok();

    // Metrics agree with the per-row predictions written beside them.
    let m = ws.json("out/iris/metrics.json");
    assert_eq!(m["task"], "classification");
    let csv = ws.read("out/iris/predictions.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "source_row,row,label,predicted,p_setosa,p_versicolor,p_virginica"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, m["rows"].as_u64().unwrap());
    let right = rows.iter().filter(|r| r[2] == r[3]).count();
    let accuracy = m["metrics"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - right as f64 / rows.len() as f64).abs() < 1e-12);
    for r in &rows {
        let sum: f64 = r[4..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{r:?}");
    }
    // Through clean (which drops iris's duplicate row) and split, the ids still name raw rows.
    traces_back(
        &ws,
        "out/iris/preprocess.json",
        "out/iris/normalized/test",
        "out/iris/predictions.csv",
    );
    let matrix = &m["confusion_matrix"]["matrix"];
    let total: u64 = matrix
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()))
        .sum();
    assert_eq!(total as usize, rows.len());

    // The plots are PNG files.
    for f in ["confusion_matrix.png", "training_curves.png"] {
        let bytes = std::fs::read(ws.path(&format!("out/iris/plots/{f}"))).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 2000,
            "{f}"
        );
    }

    // The bundle: everything serving needs, and lineage.
    for f in [
        "model.onnx",
        "preprocess.json",
        "metrics.json",
        "bundle.json",
    ] {
        assert!(ws.exists(&format!("models/iris/1/{f}")), "{f}");
    }
    assert!(ws.exists("models/.sluice-registry"));
    assert_eq!(ws.read("models/iris/latest").trim(), "1");
    let bundle = ws.json("models/iris/1/bundle.json");
    assert_eq!(bundle["pipeline"], "iris");
    assert_eq!(bundle["version"], 1);
    assert_eq!(
        bundle["inputs"]["model"]["path"], "out/iris/model.onnx",
        "{bundle}"
    );
    assert_eq!(
        std::fs::read(ws.path("models/iris/1/model.onnx")).unwrap(),
        std::fs::read(ws.path("out/iris/model.onnx")).unwrap()
    );

    // Deploying the same model again adds no version.
    ws.run(&["pipelines/iris.yaml", "--force", "deploy"])
        .assert_ok();
    assert_eq!(versions(&ws), vec!["1"]);

    // Another seed, another split and model: version 2 becomes latest.
    ws.run(&["pipelines/iris.yaml", "--set", "seed=7"])
        .assert_ok();
    assert_eq!(versions(&ws), vec!["1", "2"]);
    assert_eq!(ws.read("models/iris/latest").trim(), "2");

    // `sluice metrics --diff` shows the new figures next to the previous evaluation's.
    let first = m["metrics"].clone();
    let now = ws.json("out/iris/metrics.json")["metrics"].clone();
    let out = ws.sluice(&["metrics", "pipelines/iris.yaml", "--json", "--diff"]);
    out.assert_ok();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["evaluate"]["metrics"], now);
    if now != first {
        assert_eq!(doc["evaluate"]["previous"], first);
        let text = ws.sluice(&["metrics", "pipelines/iris.yaml", "--diff"]);
        assert!(text.stdout.contains("was "), "{}", text.stdout);
    }

    // Going back to the first seed restores every stage from the cache, deploy included, and
    // `latest` follows the restored deploy back to version 1.
    let back = ws.run(&["pipelines/iris.yaml"]);
    back.assert_ok();
    assert_eq!(back.outcomes()["deploy"], "restored", "{}", back.stderr);
    assert_eq!(ws.read("models/iris/latest").trim(), "1");
    assert!(back.events().iter().any(|e| e["event"] == "stage_log"
        && e["message"].as_str().unwrap_or("")
            == "restored the deploy of models/iris/1; `latest` points to it again"));
    // A registry that lost the recorded version makes deploy run instead of restoring.
    ws.run(&["pipelines/iris.yaml", "--set", "seed=7"])
        .assert_ok();
    std::fs::remove_dir_all(ws.path("models/iris/1")).unwrap();
    let rebuilt = ws.run(&["pipelines/iris.yaml"]);
    rebuilt.assert_ok();
    assert_eq!(rebuilt.outcomes()["deploy"], "ran", "{}", rebuilt.stderr);
    assert!(rebuilt.events().iter().any(|e| {
        e["event"] == "stage_started"
        && e["reason"].as_str().unwrap_or("")
            == "cached result not usable: the registry no longer holds models/iris/1 as recorded"
    }));
    assert_eq!(versions(&ws), vec!["2", "3"]);
    assert_eq!(ws.read("models/iris/latest").trim(), "3");
}

#[test]
fn a_missed_gate_fails_evaluate_and_blocks_deploy() {
    let ws = iris_ws(|y| {
        y.replace(
            r#"require: {accuracy: ">= 0.8"}"#,
            r#"require: {log_loss: "< 0.000001"}"#,
        )
    });
    let run = ws.sluice(&["run", "pipelines/iris.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the model misses its bar: log_loss is")
            && run.stderr.contains("and `require` asks for < 0.000001")
            && run
                .stderr
                .contains("its metrics on the test split: accuracy 0.")
            && run.stderr.contains(" · log_loss 0."),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/iris/metrics.json"));
    assert!(!ws.exists("models/iris"), "deploy ran after a failed gate");

    // `sluice metrics` still shows the figures, marked as failing the gate.
    let out = ws.sluice(&["metrics", "pipelines/iris.yaml", "--json"]);
    out.assert_ok();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let e = &doc["evaluate"];
    assert_eq!(e["failed_gate"], true, "{doc}");
    assert!(
        e["metrics"]["log_loss"].as_f64().unwrap() > 0.000001,
        "{doc}"
    );
    assert!(e["metrics"]["accuracy"].as_f64().is_some(), "{doc}");
    let missed = e["missed"].as_array().unwrap();
    assert_eq!(missed.len(), 1, "{doc}");
    assert!(missed[0].as_str().unwrap().starts_with("log_loss is 0."));
    let text = ws.sluice(&["metrics", "pipelines/iris.yaml"]);
    text.assert_ok();
    assert!(
        text.stdout.contains("failed its gate")
            && text.stdout.contains("log_loss")
            && !text.stdout.contains("not evaluated yet"),
        "{}",
        text.stdout
    );

    // A passing evaluation afterwards is the current one again, with no failure attached.
    let yaml = ws.read("pipelines/iris.yaml");
    ws.write(
        "pipelines/iris.yaml",
        &yaml.replace(r#"require: {log_loss: "< 0.000001"}"#, "require: {}"),
    );
    ws.run(&["pipelines/iris.yaml"]).assert_ok();
    let out = ws.sluice(&["metrics", "pipelines/iris.yaml", "--json"]);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["evaluate"]["failed_gate"], false, "{doc}");
    assert_eq!(
        doc["evaluate"]["metrics"],
        ws.json("out/iris/metrics.json")["metrics"]
    );
}

#[test]
fn a_gate_on_an_unknown_metric_is_caught_when_the_pipeline_loads() {
    let ws = iris_ws(|y| {
        y.replace(
            r#"require: {accuracy: ">= 0.8"}"#,
            r#"require: {acuracy: ">= 0.8"}"#,
        )
    });
    let run = ws.sluice(&["run", "pipelines/iris.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown metric `acuracy`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("accuracy"), "{}", run.stderr);
    assert!(!ws.exists("out/iris/clean.parquet"));
}

#[test]
fn a_model_whose_output_does_not_match_the_classes_is_named() {
    let ws = iris_ws(|y| y);
    ws.run(&["pipelines/iris.yaml", "train"]).assert_ok();
    // The same model evaluated against an artifact that claims four classes.
    let mut pre = ws.json("out/iris/preprocess.json");
    pre["label"]["classes"] = serde_json::json!(["a", "b", "c", "d"]);
    ws.write("other/preprocess.json", &pre.to_string());
    ws.pipeline(
        "name: wrong\nstages:\n  evaluate:\n    uses: evaluate\n    inputs: {model: out/iris/model.onnx, test: out/iris/normalized/test, preprocess: other/preprocess.json}\n    outputs: {metrics: out/m.json, predictions: out/p.csv}\n",
    );
    let run = ws.sluice(&["run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the model's output `logits` has 3 values per row, but there are 4 classes (a, b, c, d)"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/m.json") && !ws.exists("out/p.csv"));
}

fn split(ws: &Ws, dir: &str, rows: usize, offset: usize) {
    // Two separable classes: x0 below or above 0.
    let mut f = Vec::new();
    let mut l = Vec::new();
    for i in 0..rows {
        let class = (i + offset) % 2;
        let x0 = if class == 1 {
            1.0f32 + (i % 5) as f32 * 0.1
        } else {
            -1.0 - (i % 5) as f32 * 0.1
        };
        f.extend_from_slice(&x0.to_le_bytes());
        f.extend_from_slice(&((i % 3) as f32 * 0.2).to_le_bytes());
        l.extend_from_slice(&(class as i64).to_le_bytes());
    }
    std::fs::create_dir_all(ws.path(dir)).unwrap();
    std::fs::write(
        ws.path(&format!("{dir}/features.npy")),
        npy(&[rows, 2], "<f4", &f),
    )
    .unwrap();
    std::fs::write(
        ws.path(&format!("{dir}/labels.npy")),
        npy(&[rows], "<i8", &l),
    )
    .unwrap();
}

#[test]
fn two_classes_get_roc_auc_and_a_roc_plot() {
    let ws = Ws::new();
    split(&ws, "data/train", 40, 0);
    split(&ws, "data/test", 20, 1);
    ws.pipeline(
        "name: binary\nstages:\n  train:\n    uses: train\n    inputs: {train: data/train}\n    outputs: {model: out/m.onnx, history: out/h.json, artifacts: out/a}\n    with: {model: logistic, epochs: 30, batch_size: 8, device: cpu}\n  evaluate:\n    uses: evaluate\n    inputs: {model: \"${{ stages.train.outputs.model }}\", test: data/test}\n    outputs: {metrics: out/metrics.json, predictions: out/p.csv, plots: out/plots}\n    with: {require: {roc_auc: \">= 0.99\"}}\n",
    );
    ws.run(&[]).assert_ok();
    let m = ws.json("out/metrics.json");
    assert_eq!(m["metrics"]["roc_auc"], 1.0, "{m}");
    assert_eq!(m["metrics"]["accuracy"], 1.0, "{m}");
    assert_eq!(
        m["confusion_matrix"]["labels"],
        serde_json::json!(["0", "1"])
    );
    let roc = std::fs::read(ws.path("out/plots/roc_curve.png")).unwrap();
    assert!(roc.starts_with(b"\x89PNG"));
    assert!(ws.exists("out/plots/confusion_matrix.png"));
    assert!(
        !ws.exists("out/plots/training_curves.png"),
        "no history was given"
    );
}

/// A logistic model on two separable classes (trained once per workspace, then cached), and an
/// evaluate stage with `evaluate` appended to its definition (`with:`, `resources:`).
fn device_ws(ws: &Ws, evaluate: &str) {
    if !ws.exists("data/train") {
        split(ws, "data/train", 40, 0);
        split(ws, "data/test", 20, 1);
    }
    ws.pipeline(&format!(
        "name: device\nstages:\n  train:\n    uses: train\n    inputs: {{train: data/train}}\n    outputs: {{model: out/m.onnx, history: out/h.json, artifacts: out/a}}\n    with: {{model: logistic, epochs: 30, batch_size: 8, device: cpu}}\n  evaluate:\n    uses: evaluate\n    inputs: {{model: \"${{{{ stages.train.outputs.model }}}}\", test: data/test}}\n    outputs: {{metrics: out/metrics.json, predictions: out/p.csv, plots: out/plots}}\n{evaluate}"
    ));
}

/// The user cache sluice uses (as `pyenv::cache_root` finds it).
fn cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("SLUICE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sluice")))
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap()).join(".cache/sluice"))
}

#[test]
fn evaluate_without_a_gpu_runs_on_the_cpu_and_says_so_and_cuda_is_an_error() {
    let ws = Ws::new();
    device_ws(&ws, "    resources: {gpus: 1}\n");
    let run = ws.sluice_without_gpus(&["run"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("evaluate: no GPU is available to this stage; evaluating on the CPU (a stage gets one with `resources: {gpus: 1}` on a machine that has one)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ws.json("out/metrics.json")["provider"],
        "CPUExecutionProvider"
    );

    // `device: cuda` makes the GPU a requirement: the scheduler refuses the stage...
    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: cuda}\n");
    let run = ws.sluice_without_gpus(&["run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("evaluate: needs 1 GPU but 0 are available"),
        "{}",
        run.stderr
    );
    // ... and the stage itself, when it asks for no GPU.
    device_ws(&ws, "    with: {device: cuda}\n");
    let run = ws.sluice_without_gpus(&["run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`device: cuda` but this stage has no GPU"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/metrics.json"));

    device_ws(&ws, "    with: {device: gpu}\n");
    let run = ws.sluice_without_gpus(&["run"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown device `gpu`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_gpu_without_the_cuda_build_falls_back_with_a_warning_or_names_setup_cuda() {
    let ws = Ws::new();
    device_ws(&ws, "");
    ws.run(&[]).assert_ok();
    // A cache that has the CPU library but not the CUDA build; `--gpus 1` hands the stage GPU
    // 0 whether or not the machine has one.
    let cache = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        cache_root().join("onnxruntime"),
        cache.path().join("onnxruntime"),
    )
    .unwrap();
    let run_with_a_gpu = || {
        let out = ws
            .command(&["run", "--gpus", "1"])
            .env("SLUICE_CACHE_DIR", cache.path())
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: auto}\n");
    let (code, stderr) = run_with_a_gpu();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("GPU 0 is assigned, but ONNX Runtime's CUDA build is not installed; evaluating on the CPU"),
        "{stderr}"
    );
    assert_eq!(
        ws.json("out/metrics.json")["provider"],
        "CPUExecutionProvider"
    );

    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: cuda}\n");
    let (code, stderr) = run_with_a_gpu();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("`device: cuda` needs ONNX Runtime's CUDA build, which is not installed")
            && stderr.contains("run `sluice setup --cuda` once"),
        "{stderr}"
    );
    assert!(
        !cache.path().join("onnxruntime-gpu").exists(),
        "evaluate must not fetch the CUDA build itself"
    );
}

#[test]
fn a_cuda_provider_that_does_not_load_fails_cuda_and_warns_with_auto() {
    let ws = Ws::new();
    device_ws(&ws, "");
    ws.run(&[]).assert_ok();
    // `ORT_DYLIB_PATH` at the CPU build: sluice tries the CUDA provider from it, for real.
    let cpu_build =
        cache_root().join("onnxruntime/1.31.1/onnxruntime/capi/libonnxruntime.so.1.31.1");
    assert!(cpu_build.is_file(), "{}", cpu_build.display());
    let run_with_a_gpu = || {
        let out = ws
            .command(&["run", "--gpus", "1"])
            .env("ORT_DYLIB_PATH", &cpu_build)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: cuda}\n");
    let (code, stderr) = run_with_a_gpu();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the CUDA execution provider does not load (CUDA device 0): CUDA execution provider is not enabled in this build\n  = help: `sluice setup --cuda` checks that the CUDA provider loads; `device: auto` falls back to the CPU"),
        "{stderr}"
    );

    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: auto}\n");
    let (code, stderr) = run_with_a_gpu();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: evaluate: the CUDA execution provider does not load (CUDA device 0): CUDA execution provider is not enabled in this build; evaluating on the CPU"),
        "{stderr}"
    );
    assert_eq!(
        ws.json("out/metrics.json")["provider"],
        "CPUExecutionProvider"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU (nvidia-smi -L lists one); run with `cargo test -- --ignored` on a GPU machine"]
fn evaluate_on_cuda_when_a_gpu_is_present() {
    assert!(
        gpu_present(),
        "nvidia-smi -L found no GPU: this test {NEEDS_GPU}"
    );
    let ws = Ws::new();
    device_ws(&ws, "    with: {device: cpu}\n");
    ws.run(&[]).assert_ok();
    let on_cpu = ws.read("out/p.csv");
    let setup = ws.sluice(&["setup", "--cuda"]);
    setup.assert_ok();
    assert!(
        setup
            .stderr
            .contains("the CUDA execution provider loads for inference"),
        "{}",
        setup.stderr
    );
    device_ws(&ws, "    resources: {gpus: 1}\n    with: {device: cuda}\n");
    let run = ws.sluice(&["run", "-v"]);
    run.assert_ok();
    assert!(
        run.stderr
            .contains("running the model on CUDAExecutionProvider"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ws.json("out/metrics.json")["provider"],
        "CUDAExecutionProvider"
    );
    // The same predictions as on the CPU, up to float rounding.
    let on_gpu = ws.read("out/p.csv");
    for (a, b) in on_cpu.lines().zip(on_gpu.lines()).skip(1) {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), b.split(',').collect());
        assert_eq!(a[..3], b[..3], "{a:?} {b:?}");
        for (x, y) in a[3..].iter().zip(&b[3..]) {
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((x - y).abs() < 1e-4, "{a:?} {b:?}");
        }
    }

    // `auto` picks CUDA too.
    device_ws(&ws, "    resources: {gpus: 1}\n");
    ws.run(&[]).assert_ok();
    assert_eq!(
        ws.json("out/metrics.json")["provider"],
        "CUDAExecutionProvider"
    );
}

/// The f32 values of a NumPy 1.0 file.
fn npy_f32s(bytes: &[u8]) -> Vec<f32> {
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Split reads the raw CSV itself, every other stage writes to its default paths.
const TRACED: &str = r#"
name: traced
stages:
  s:
    uses: split
    inputs: {table: examples/data/iris.csv}
    with: {method: stratified, label: species, ratios: {train: 0.7, val: 0.15, test: 0.15}, seed: 3}
  n:
    uses: normalize
    inputs: {train: "${{ stages.s.outputs.train }}", val: "${{ stages.s.outputs.val }}", test: "${{ stages.s.outputs.test }}"}
    with: {label: species}
  t:
    uses: train
    inputs: {train: "${{ stages.n.outputs.train }}", val: "${{ stages.n.outputs.val }}", preprocess: "${{ stages.n.outputs.preprocess }}"}
    with: {model: logistic, epochs: 3, batch_size: 16, device: cpu}
  e:
    uses: evaluate
    inputs: {model: "${{ stages.t.outputs.model }}", test: "${{ stages.n.outputs.test }}", preprocess: "${{ stages.n.outputs.preprocess }}"}
    with: {device: cpu}
"#;

#[test]
fn each_prediction_names_its_row_of_the_raw_table_and_default_paths_have_extensions() {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/iris.csv");
    ws.pipeline(TRACED);
    ws.run(&[]).assert_ok();
    for f in [
        "s/test.parquet",
        "s/summary.json",
        "n/preprocess.json",
        "n/test/rows.npy",
        "t/model.onnx",
        "t/history.json",
        "e/metrics.json",
        "e/predictions.csv",
    ] {
        assert!(ws.exists(&format!("out/traced/{f}")), "{f}");
    }

    traces_back(
        &ws,
        "out/traced/n/preprocess.json",
        "out/traced/n/test",
        "out/traced/e/predictions.csv",
    );
}

/// Every prediction's `source_row` is the raw iris row with its label and (as normalize scaled
/// them) its features; and the ids are not merely the rows' order in the test split.
fn traces_back(ws: &Ws, preprocess: &str, test: &str, predictions: &str) {
    let raw: Vec<Vec<String>> = ws
        .read("examples/data/iris.csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let pre = ws.json(preprocess);
    let features = npy_f32s(&std::fs::read(ws.path(&format!("{test}/features.npy"))).unwrap());
    let csv = ws.read(predictions);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "source_row,row,label,predicted,p_setosa,p_versicolor,p_virginica"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), features.len() / 4);
    let mut moved = 0;
    for r in &rows {
        let (source, row): (usize, usize) = (r[0].parse().unwrap(), r[1].parse().unwrap());
        moved += usize::from(source != row);
        let raw_row = &raw[source];
        // The label, and every feature as normalize scaled it, are the raw row's.
        assert_eq!(raw_row[4], r[2], "row {row} → raw row {source}");
        for (j, column) in pre["numeric"].as_array().unwrap().iter().enumerate() {
            assert_eq!(pre["features"][j], column["name"]);
            let x: f64 = raw_row[j].parse().unwrap();
            let scaled =
                (x - column["center"].as_f64().unwrap()) / column["scale"].as_f64().unwrap();
            let got = features[row * 4 + j] as f64;
            assert!(
                (scaled - got).abs() < 1e-5,
                "row {row} feature {j}: {scaled} vs {got}"
            );
        }
    }
    assert!(
        moved > 0,
        "the test split is in the raw table's order: {csv}"
    );
}
