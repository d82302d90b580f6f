//! The `train` stage through the real binary and the real ONNX Runtime training runtime (the
//! Python environment is installed on first use into the user cache, as for a user; concurrent
//! tests wait on its lock). Covers: the iris MLP and the digits CNN reaching their accuracy,
//! seeded repeatability, resuming a killed training from its checkpoint (and not from an older
//! worker's), a user's ONNX model, where the weight decay goes in the training graph, and each bad
//! input's message. The CUDA path runs only where a GPU is present and says
//! visibly that it was skipped elsewhere.

mod common;
use common::*;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A workspace holding the iris CSV and the repo's iris pipeline.
fn iris_ws() -> Ws {
    let ws = Ws::new();
    ws.copy_from_repo("examples/data/iris.csv")
        .copy_from_repo("pipelines/iris.yaml");
    ws
}

/// The iris data stages plus a `train` stage with the given `with:` lines (and extra stage keys).
fn iris_with(ws: &Ws, train: &str) {
    let base = std::fs::read_to_string(repo().join("pipelines/iris.yaml")).unwrap();
    let upto = base.split("\n  train:").next().unwrap().to_string();
    ws.write(
        "sluice.yaml",
        &format!(
            "{upto}
  train:
    uses: train
    inputs:
      train: \"${{{{ stages.normalize.outputs.train }}}}\"
      val: \"${{{{ stages.normalize.outputs.val }}}}\"
      preprocess: \"${{{{ stages.normalize.outputs.preprocess }}}}\"
    outputs: {{model: out/model.onnx, history: out/history.json, artifacts: out/artifacts}}
{train}
"
        ),
    );
}

fn epochs(h: &Value) -> &Vec<Value> {
    h["epochs"].as_array().expect("history has epochs")
}

fn column(h: &Value, key: &str) -> Vec<f64> {
    epochs(h).iter().map(|e| e[key].as_f64().unwrap()).collect()
}

fn best_accuracy(h: &Value) -> f64 {
    column(h, "val_accuracy").into_iter().fold(0.0, f64::max)
}

#[test]
fn the_iris_mlp_trains_to_093_and_is_then_up_to_date() {
    let ws = iris_ws();
    let run = ws.run(&["pipelines/iris.yaml"]);
    run.assert_ok();
    let h = ws.json("out/iris/history.json");
    assert_eq!(h["provider"], "CPUExecutionProvider");
    assert_eq!(h["task"], "classification");
    let acc = best_accuracy(&h);
    assert!(acc >= 0.93, "val accuracy {acc} < 0.93: {h}");
    // The exported model and the training artifacts are there.
    let model = std::fs::read(ws.path("out/iris/model.onnx")).unwrap();
    assert!(model.len() > 100);
    for f in [
        "training_model.onnx",
        "eval_model.onnx",
        "optimizer_model.onnx",
        "checkpoint",
    ] {
        assert!(ws.exists(&format!("out/iris/artifacts/{f}")), "{f} missing");
    }
    // The live metrics reached the event stream, one per epoch.
    let metrics = run
        .events()
        .into_iter()
        .filter(|e| {
            e["event"] == "stage_metric" && e["name"] == "val_accuracy" && e["step"].is_u64()
        })
        .count();
    assert_eq!(metrics, epochs(&h).len());
    // The checkpoints of a finished training are gone.
    let resume = ws.path(".sluice/resume");
    assert!(!resume.exists() || std::fs::read_dir(&resume).unwrap().next().is_none());

    let again = ws.run(&["pipelines/iris.yaml"]);
    again.assert_ok();
    assert_eq!(again.outcomes()["train"], "up_to_date");
}

#[test]
fn seeded_cpu_training_repeats_its_loss_curve() {
    let ws = iris_ws();
    iris_with(
        &ws,
        "    with: {model: {type: mlp, hidden: [16, 16], dropout: 0.1}, epochs: 8, batch_size: 8, seed: 7, device: cpu,\n           optimizer: {type: adamw, lr: 0.01}, schedule: {warmup_epochs: 1, decay: linear}}",
    );
    ws.run(&[]).assert_ok();
    let first = ws.json("out/history.json");
    ws.run(&["--force", "train"]).assert_ok();
    let second = ws.json("out/history.json");
    for key in ["train_loss", "val_loss", "val_accuracy", "lr"] {
        assert_eq!(column(&first, key), column(&second, key), "{key} differs");
    }
    // The schedule did warm up and decay.
    let lr = column(&first, "lr");
    assert!(lr[0] < lr[1] || lr[1] > *lr.last().unwrap(), "{lr:?}");
}

#[test]
fn a_killed_training_resumes_from_its_checkpoint() {
    killed_training_resumes(&[]);
}

#[test]
fn a_training_run_as_its_own_process_stops_on_ctrl_c_and_resumes() {
    // The worker is then a grandchild of sluice, started by `sluice __stage`: the signal has to
    // travel through it, and the checkpoints must survive as they do in-process.
    killed_training_resumes(&[("SLUICE_EXECUTOR", "local-remote")]);
}

/// Interrupts a training at epoch 4 or later with Ctrl-C, then checks that nothing is left (no
/// output, no process) and that the next run resumes from the checkpoint. `env` is added to
/// both runs.
fn killed_training_resumes(env: &[(&str, &str)]) {
    let ws = iris_ws();
    let stopped_at = interrupt_training(&ws, env);

    let out = ws
        .command(&["run", "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let run = run_of(out);
    run.assert_ok();
    let h = ws.json("out/history.json");
    let resumed = h["resumed_from_epoch"]
        .as_u64()
        .expect("resumed_from_epoch");
    assert!(
        resumed >= 3 && resumed <= stopped_at,
        "resumed from {resumed}, stopped at {stopped_at}"
    );
    // The history is whole: the epochs before the interruption come from the checkpoint.
    let numbers: Vec<u64> = epochs(&h)
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    assert!(run.events().iter().any(|e| e["event"] == "stage_log"
        && e["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("resuming from the checkpoint of epoch {resumed}"))));
}

#[test]
fn a_resume_state_of_an_older_worker_is_not_resumed() {
    // Format 2 decayed the weights after each optimizer step, from Python; its checkpoints would
    // continue under another update rule.
    let ws = iris_ws();
    interrupt_training(&ws, &[]);
    let mut rewritten = 0;
    for dir in std::fs::read_dir(ws.path(".sluice/resume")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("state-") && name.ends_with(".json") {
                let mut state: Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                state["format"] = 2.into();
                std::fs::write(&path, state.to_string()).unwrap();
                rewritten += 1;
            }
        }
    }
    assert!(
        rewritten > 0,
        "the interrupted training left no resume state"
    );

    let run = run_of(ws.command(&["run", "--json"]).output().unwrap());
    run.assert_ok();
    assert!(ws.json("out/history.json")["resumed_from_epoch"].is_null());
    let logs = logs(&run);
    assert!(
        logs.iter().any(
            |l| l.contains("written by another version of the train worker (format 2")
                && l.contains("training starts afresh")
        ),
        "{logs:?}"
    );
}

/// Starts the iris training of `killed_training_resumes` in `ws` and interrupts it with Ctrl-C at
/// epoch 4 or later; checks that it left no output and no process, and returns the last epoch
/// it reported.
fn interrupt_training(ws: &Ws, env: &[(&str, &str)]) -> u64 {
    // Small batches and many epochs make the run long enough (a few seconds) to interrupt in
    // the middle even on a loaded machine: with 150 the whole training took under a second,
    // and a Ctrl-C that landed after it ended found no checkpoint left to resume from.
    iris_with(
        ws,
        "    with: {model: {type: mlp, hidden: [32]}, epochs: 1000, batch_size: 1, seed: 3, device: cpu}",
    );
    // A grace period far beyond the wait below: the training must stop on the SIGTERM itself
    // (sent on by `sluice __stage` when it runs there), not on the SIGKILL that follows it.
    let mut child = ws
        .command(&["run", "--json", "--kill-grace", "600"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(0u64));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(e) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if e["event"] == "stage_metric" && e["name"] == "train_loss" {
                    if let Some(step) = e["step"].as_u64() {
                        *seen.lock().unwrap() = step;
                    }
                }
            }
        })
    };
    // An epoch's metrics are reported just before its checkpoint is saved, so epoch 3's
    // checkpoint is certain to exist only once epoch 4 has been reported.
    assert!(
        wait_for(Duration::from_secs(300), || *seen.lock().unwrap() >= 4),
        "training never reached epoch 4"
    );
    send_signal(&child, libc::SIGINT);
    let stopped = wait_child(child, LONG);
    reader.join().unwrap();
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    assert!(
        !ws.exists("out/history.json") && !ws.exists("out/model.onnx"),
        "an interrupted training left its output"
    );
    let stopped_at = *seen.lock().unwrap();
    let left = stage_processes(ws.root());
    assert!(left.is_empty(), "stage processes outlived sluice: {left:?}");
    stopped_at
}

/// Live processes whose environment names `root` as their workspace: every stage process of a
/// run there (sluice sets `SLUICE_WORKSPACE` for each, `sluice __stage` and the training worker
/// included), and nothing else. Not guardians (`sluice __guard`, which `__stage` starts with its
/// environment): one ends by itself when the end of its owner closes its pipe, after killing
/// what the owner left.
fn stage_processes(root: &Path) -> Vec<i32> {
    let want = format!(
        "SLUICE_WORKSPACE={}",
        std::fs::canonicalize(root).unwrap().display()
    );
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.trim_start().chars().next())
            })
            .is_some_and(|state| state != 'Z')
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
                && alive(p)
                && !std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).nth(1) == Some(b"__guard"))
        })
        .collect()
}

/// A tiny ONNX model made by the worker's test helper with the environment's own Python.
fn user_model(ws: &Ws, inputs: usize, outputs: usize) {
    ws.sluice(&["setup"]).assert_ok();
    let python = sluice_stages::pyenv::find(sluice_stages::pyenv::Flavor::Cpu)
        .expect("the environment is installed")
        .python;
    let out = std::process::Command::new(python)
        .arg(repo().join("stages/python/tests/make_user_model.py"))
        .arg(ws.path("models/net.onnx"))
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

#[test]
fn weight_decay_in_the_training_graph_waits_for_every_reader_of_the_weight() {
    // The worker's placement of the in-place decay, on hand-made graphs (a weight read on the
    // way to two gradient accumulators, one read where no accumulator follows, one read in a
    // subgraph); the trainings here only reach the usual case.
    python_check("check_weight_decay_graph.py");
}

#[test]
fn the_workers_batch_feed_trains_exactly_like_module_call() {
    // The worker's hot path (ORT tensors made once over gathered rows, the module's binding
    // called directly, the decay factor written in place under a per-step schedule) against
    // ORT's documented loop: same losses, byte-identical weights, for every window size.
    python_check("check_feed.py");
}

/// Runs `stages/python/tests/SCRIPT` with the training environment's Python (installed first),
/// failing with its output unless it succeeds.
fn python_check(script: &str) {
    let ws = Ws::new();
    ws.sluice(&["setup"]).assert_ok();
    let python = sluice_stages::pyenv::find(sluice_stages::pyenv::Flavor::Cpu)
        .expect("the environment is installed")
        .python;
    let out = std::process::Command::new(python)
        .arg(repo().join("stages/python/tests").join(script))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const USER_MODEL: &str = "    inputs:\n      train: \"${{ stages.normalize.outputs.train }}\"\n      val: \"${{ stages.normalize.outputs.val }}\"\n      preprocess: \"${{ stages.normalize.outputs.preprocess }}\"\n      model: models/net.onnx\n    with: {model: {onnx: \"${{ inputs.model }}\"}, epochs: 40, batch_size: 8, optimizer: {lr: 0.01}, device: cpu}";

fn with_user_model(ws: &Ws) {
    // `iris_with` declares inputs itself; this stage declares its own with the model.
    iris_with(ws, "");
    let yaml = ws.read("sluice.yaml");
    let start = yaml
        .find("    inputs:\n      train: \"${{ stages.normalize.outputs.train }}\"")
        .unwrap();
    let end = yaml[start..].find("    outputs:").unwrap() + start;
    let yaml = format!("{}{}\n{}", &yaml[..start], USER_MODEL, &yaml[end..]);
    ws.write("sluice.yaml", &yaml);
}

#[test]
fn a_user_onnx_model_trains() {
    let ws = iris_ws();
    std::fs::create_dir_all(ws.path("models")).unwrap();
    user_model(&ws, 4, 3);
    with_user_model(&ws);
    ws.run(&[]).assert_ok();
    let h = ws.json("out/history.json");
    assert!(best_accuracy(&h) >= 0.8, "{h}");
    assert!(ws.exists("out/model.onnx"));
}

#[test]
fn a_user_model_that_does_not_fit_the_data_is_named() {
    let ws = iris_ws();
    std::fs::create_dir_all(ws.path("models")).unwrap();
    user_model(&ws, 4, 5);
    with_user_model(&ws);
    let run = ws.sluice(&["run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("has 5 values per sample, but it must have 3: there are 3 classes"),
        "{}",
        run.stderr
    );

    user_model(&ws, 6, 3);
    let run = ws.sluice(&["run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Paths are the workspace-relative ones the user wrote.
    assert!(
        run.stderr.contains("has shape [N, 6], but the features have per-sample width 4 (out/iris/normalized/train/features.npy has shape [N, 4])"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/model.onnx"));
}

fn write_split(dir: &Path, features: &[[f32; 2]], labels: &[i64]) {
    std::fs::create_dir_all(dir).unwrap();
    let f: Vec<u8> = features
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(
        dir.join("features.npy"),
        npy(&[features.len(), 2], "<f4", &f),
    )
    .unwrap();
    let l: Vec<u8> = labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir.join("labels.npy"), npy(&[labels.len()], "<i8", &l)).unwrap();
}

#[test]
fn a_nan_loss_stops_naming_the_epoch_and_batch() {
    let ws = Ws::new();
    let mut rows: Vec<[f32; 2]> = (0..16)
        .map(|i| [i as f32 / 16.0, 1.0 - i as f32 / 16.0])
        .collect();
    rows[5][1] = f32::NAN; // batch 2 of 4 rows, unshuffled
    let labels: Vec<i64> = (0..16).map(|i| i % 2).collect();
    write_split(&ws.path("data/train"), &rows, &labels);
    ws.pipeline(
        "name: nan\nstages:\n  train:\n    uses: train\n    inputs: {train: data/train}\n    outputs: {model: out/m.onnx, history: out/h.json, artifacts: out/a}\n    with: {model: logistic, epochs: 2, batch_size: 4, shuffle: false, device: cpu}\n",
    );
    let run = ws.sluice(&["run"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("NaN at epoch 1, batch 2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("lower the learning rate"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("out/m.onnx") && !ws.exists("out/h.json"));
}

#[test]
fn cuda_without_a_gpu_is_an_error_and_auto_says_it_uses_the_cpu() {
    let ws = iris_ws();
    iris_with(&ws, "    with: {model: logistic, epochs: 2, device: cuda}");
    let run = ws.sluice_without_gpus(&["run"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("`device: cuda` but this stage has no GPU"),
        "{}",
        run.stderr
    );

    iris_with(
        &ws,
        "    resources: {gpus: 1}\n    with: {model: logistic, epochs: 2, device: auto}",
    );
    let run = ws.sluice_without_gpus(&["run"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("no GPU is available to this stage"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ws.json("out/history.json")["provider"],
        "CPUExecutionProvider"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU (nvidia-smi -L lists one); run with `cargo test -- --ignored` on a GPU machine"]
fn cuda_training_when_a_gpu_is_present() {
    assert!(
        gpu_present(),
        "nvidia-smi -L found no GPU: this test {NEEDS_GPU}"
    );
    let ws = iris_ws();
    iris_with(&ws, "    resources: {gpus: 1}\n    with: {model: {type: mlp, hidden: [32]}, epochs: 30, batch_size: 16, optimizer: {lr: 0.01}, device: cuda}");
    ws.sluice(&["setup", "--cuda"]).assert_ok();
    ws.run(&[]).assert_ok();
    let h = ws.json("out/history.json");
    assert_eq!(h["provider"], "CUDAExecutionProvider");
    assert!(best_accuracy(&h) >= 0.9, "{h}");
}

#[test]
fn no_python_is_a_clear_error() {
    let ws = iris_ws();
    iris_with(&ws, "    with: {model: logistic, epochs: 2, device: cpu}");
    let cache = tempfile::tempdir().unwrap();
    let out = ws
        .command(&["run"])
        .env("SLUICE_PYTHON", "/nonexistent/python3")
        .env("SLUICE_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training needs Python 3"), "{stderr}");
    assert!(stderr.contains("SLUICE_PYTHON"), "{stderr}");
}

#[test]
fn bad_train_config_is_reported_before_anything_runs() {
    let ws = iris_ws();
    iris_with(
        &ws,
        "    with: {epochs: 0, optimizer: {type: adam}, modle: mlp}",
    );
    let run = ws.sluice(&["run"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for text in [
        "`epochs` must be a whole number of at least 1",
        "unknown type `adam`",
        "unknown option `modle`",
    ] {
        assert!(run.stderr.contains(text), "{text}\n{}", run.stderr);
    }
    assert!(!ws.exists("out/iris/clean.parquet"));
}

#[test]
fn the_digits_cnn_trains_to_095() {
    let ws = Ws::new();
    ws.copy_from_repo("pipelines/digits.yaml");
    let digits = repo().join("examples/data/digits");
    for class in std::fs::read_dir(&digits).unwrap() {
        let class = class.unwrap().path();
        let dest = ws
            .path("examples/data/digits")
            .join(class.file_name().unwrap());
        std::fs::create_dir_all(&dest).unwrap();
        for file in std::fs::read_dir(&class).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dest.join(file.file_name().unwrap())).unwrap();
        }
    }
    ws.run(&["pipelines/digits.yaml"]).assert_ok();
    let h = ws.json("out/digits/history.json");
    let acc = best_accuracy(&h);
    assert!(acc >= 0.95, "val accuracy {acc} < 0.95: {h}");
}

fn logs(run: &Run) -> Vec<String> {
    run.events()
        .into_iter()
        .filter(|e| e["event"] == "stage_log")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn training_artifacts_are_generated_once_per_model_and_reused() {
    let ws = iris_ws();
    iris_with(
        &ws,
        "    with: {model: {type: mlp, hidden: [8]}, epochs: 2, device: cpu}",
    );
    let first = ws.run(&[]);
    first.assert_ok();
    assert!(
        logs(&first)
            .iter()
            .any(|l| l.starts_with("generated training artifacts")),
        "{:?}",
        logs(&first)
    );
    // Other epochs and learning rate: the same model, loss and optimizer graph.
    iris_with(&ws, "    with: {model: {type: mlp, hidden: [8]}, epochs: 3, optimizer: {lr: 0.02}, device: cpu}");
    let second = ws.run(&[]);
    second.assert_ok();
    assert_eq!(second.started(), vec!["train"]);
    assert!(
        logs(&second)
            .iter()
            .any(|l| l.starts_with("reusing training artifacts")),
        "{:?}",
        logs(&second)
    );
    // Another model: new artifacts.
    iris_with(
        &ws,
        "    with: {model: {type: mlp, hidden: [9]}, epochs: 2, device: cpu}",
    );
    let third = ws.run(&[]);
    third.assert_ok();
    assert!(logs(&third)
        .iter()
        .any(|l| l.starts_with("generated training artifacts")));
}

#[test]
fn early_stopping_stops_and_exports_the_best_epoch() {
    let ws = iris_ws();
    // A learning rate this small barely moves val_accuracy, so patience runs out early.
    iris_with(
        &ws,
        "    with: {model: logistic, epochs: 200, optimizer: {lr: 0.0001}, device: cpu,\n           early_stopping: {patience: 2, metric: val_accuracy}}",
    );
    let run = ws.run(&[]);
    run.assert_ok();
    let h = ws.json("out/history.json");
    assert_eq!(h["stopped_early"], true, "{h}");
    let n = epochs(&h).len();
    assert!(n < 200, "ran all {n} epochs");
    let best = h["best_epoch"].as_u64().unwrap() as usize;
    let acc = column(&h, "val_accuracy");
    assert_eq!(acc[best - 1], acc.iter().copied().fold(0.0, f64::max));
    // Patience 2: the run ends two epochs after the last improvement.
    assert_eq!(n, best + 2, "{h}");
    assert!(logs(&run)
        .iter()
        .any(|l| l.starts_with("early stopping after epoch")));
}

// Built-in stages as their own processes (`sluice __stage JOB.json`), the way a cluster
// executor runs them on a node: `SLUICE_EXECUTOR=local-remote` makes the local executor say it
// is remote, so every built-in stage goes through the job file, the protocol and the exit code.

/// `sluice run --json ARGS...` with every built-in stage run as a `sluice __stage` process.
fn run_as_own_processes(ws: &Ws, args: &[&str]) -> Run {
    let out = ws
        .command(&[&["run", "--json"], args].concat())
        .env("SLUICE_EXECUTOR", "local-remote")
        .output()
        .expect("run sluice");
    run_of(out)
}

fn run_of(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The stages of the runs in `ws` that went through a job file (and so `sluice __stage`), as
/// their logs say (the job files themselves are removed with the run's job directory).
fn stages_run_as_processes(ws: &Ws) -> Vec<String> {
    let Ok(runs) = std::fs::read_dir(ws.path(".sluice/logs")) else {
        return Vec::new();
    };
    let mut stages: Vec<String> = runs
        .flat_map(|r| std::fs::read_dir(r.unwrap().path()).unwrap())
        .map(|s| s.unwrap().path())
        .filter(|s| {
            std::fs::read_to_string(s)
                .is_ok_and(|t| t.contains("[__stage] running as its own process"))
        })
        .map(|s| s.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stages.sort();
    stages.dedup();
    stages
}

/// The lines of `stage`'s entry in a lock file.
fn lock_entry(lock: &str, stage: &str) -> Vec<String> {
    let start = format!("  {stage}:");
    lock.lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::to_string)
        .collect()
}

/// `entry` without the content hash recorded for `path`.
fn without_hash_of(entry: Vec<String>, path: &str) -> Vec<String> {
    let mut skip = false;
    entry
        .into_iter()
        .filter(|l| {
            let keep = !(skip && l.trim_start().starts_with("hash:"));
            skip = l.trim_start() == format!("path: {path}");
            keep
        })
        .collect()
}

/// The iris pipeline up to `normalize` (the data stages: no Python needed).
fn iris_data_stages(ws: &Ws) {
    let base = std::fs::read_to_string(repo().join("pipelines/iris.yaml")).unwrap();
    ws.write("sluice.yaml", base.split("\n  train:").next().unwrap());
}

#[test]
fn data_stages_as_their_own_processes_write_the_same_outputs_under_the_same_keys() {
    let (here, apart) = (iris_ws(), iris_ws());
    iris_data_stages(&here);
    iris_data_stages(&apart);
    here.run(&[]).assert_ok();
    assert!(stages_run_as_processes(&here).is_empty());
    let run = run_as_own_processes(&apart, &[]);
    run.assert_ok();
    assert_eq!(
        stages_run_as_processes(&apart),
        ["clean", "normalize", "split"],
        "not every built-in stage ran as `sluice __stage`"
    );
    // The lock holds every key and the content hash of every output: identical means the same
    // keys and byte-identical outputs.
    let lock = here.read("sluice.lock");
    assert!(lock.contains("normalize:"), "{lock}");
    assert_eq!(lock, apart.read("sluice.lock"));
    // The stages' own events came through the protocol.
    assert!(
        run.events()
            .iter()
            .any(|e| e["event"] == "stage_progress" && e["stage"] == "clean"),
        "{}",
        run.stdout
    );
    // Nothing to do the second time, and nothing submitted for it.
    let again = run_as_own_processes(&apart, &[]);
    again.assert_ok();
    assert!(again.started().is_empty(), "{:?}", again.started());
}

#[test]
fn a_failing_built_in_as_its_own_process_says_what_it_says_in_process() {
    let failing = |ws: &Ws| {
        ws.write(
            "sluice.yaml",
            "name: bad
stages:
  clean:
    uses: clean
    inputs: {table: examples/data/iris.csv}
    outputs: {table: out/clean.parquet, report: out/clean.json}
    with: {drop_columns: [petal_lenght]}
",
        );
    };
    let (here, apart) = (iris_ws(), iris_ws());
    failing(&here);
    failing(&apart);
    let in_process = here.run(&[]);
    let own_process = run_as_own_processes(&apart, &[]);
    assert_eq!(stages_run_as_processes(&apart), ["clean"]);
    let text = in_process.failure("clean");
    assert!(text.contains("no column `petal_lenght`"), "{text}");
    assert!(text.contains("= help: its columns are"), "{text}");
    assert_eq!(own_process.failure("clean"), text);
    // The same tail, besides the line that says where the stage ran.
    let tail = |r: &Run| -> Vec<serde_json::Value> {
        r.finished("clean")["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| !l.as_str().unwrap().starts_with("[__stage]"))
            .cloned()
            .collect()
    };
    assert_eq!(tail(&own_process), tail(&in_process));
    assert!(!apart.exists("out/clean.parquet") && !apart.exists("out/clean.json"));
}

#[test]
fn train_and_evaluate_as_their_own_processes_match_in_process() {
    let (here, apart) = (iris_ws(), iris_ws());
    for ws in [&here, &apart] {
        let text = ws
            .read("pipelines/iris.yaml")
            .replace("epochs: 60", "epochs: 4");
        ws.write("pipelines/iris.yaml", &text);
    }
    here.run(&["pipelines/iris.yaml"]).assert_ok();
    let run = run_as_own_processes(&apart, &["pipelines/iris.yaml"]);
    run.assert_ok();
    assert_eq!(
        stages_run_as_processes(&apart),
        ["clean", "deploy", "evaluate", "normalize", "split", "train"]
    );
    let (a, b) = (
        here.read("pipelines/iris.lock"),
        apart.read("pipelines/iris.lock"),
    );
    // The training worker ran on the "node": same key, same model, same checkpoints and
    // artifacts. `history.json` records each epoch's seconds, so it (and evaluate's key, which
    // hashes it) differs between any two trainings; what evaluate computed does not.
    for stage in ["clean", "split", "normalize"] {
        assert_eq!(lock_entry(&a, stage), lock_entry(&b, stage), "{stage}");
    }
    let train = |lock: &str| without_hash_of(lock_entry(lock, "train"), "out/iris/history.json");
    assert!(train(&a).iter().any(|l| l.contains("model.onnx")), "{a}");
    assert_eq!(train(&a), train(&b));
    assert_ne!(
        train(&a),
        lock_entry(&a, "train"),
        "the history's hash was not left out"
    );
    for f in ["out/iris/metrics.json", "out/iris/predictions.csv"] {
        assert_eq!(here.read(f), apart.read(f), "{f} differs");
    }
    // Per-epoch metrics reached the event stream live, as in-process.
    let steps = run
        .events()
        .into_iter()
        .filter(|e| e["event"] == "stage_metric" && e["name"] == "val_loss" && e["step"].is_u64())
        .count();
    assert_eq!(steps, 4);
}
