//! The plugin protocol, with the example plugin in examples/plugins/featurize.py: request on
//! stdin, progress / log / metric / result on stdout, failures, timeouts, protocol violations.

mod common;

use common::*;
use std::path::Path;

fn ws_with_plugin(with: &str, extra: &str) -> Ws {
    let ws = Ws::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(ws.path("plugins")).unwrap();
    std::fs::copy(
        repo.join("examples/plugins/featurize.py"),
        ws.path("plugins/featurize.py"),
    )
    .unwrap();
    std::fs::copy(repo.join("examples/data/iris.csv"), ws.path("iris.csv")).unwrap();
    ws.pipeline(&format!(
        r#"
plugins:
  featurize: {{command: [python3, plugins/featurize.py]}}
stages:
  features:
    uses: featurize
    inputs: {{table: iris.csv}}
    outputs: {{table: out/features.csv}}
    with: {with}
{extra}
"#
    ));
    ws
}

#[test]
fn example_plugin_reports_progress_metrics_and_writes_its_output() {
    let ws = ws_with_plugin(
        "{columns: [petal_length, petal_width], ratio: [petal_length, petal_width]}",
        "",
    );
    let r = ws.run(&[]);
    r.assert_ok();
    let ev = r.events();
    let progress: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "stage_progress")
        .collect();
    assert!(!progress.is_empty());
    let last = progress.last().unwrap();
    assert_eq!(last["done"], 150.0);
    assert_eq!(last["total"], 150.0);
    assert_eq!(last["unit"], "rows");
    let metric = |name: &str| {
        ev.iter()
            .find(|e| e["event"] == "stage_metric" && e["name"] == name)
            .map(|e| e["value"].as_f64().unwrap())
    };
    assert_eq!(metric("rows"), Some(150.0));
    assert_eq!(metric("features"), Some(8.0));
    let table = ws.read("out/features.csv");
    assert!(table.starts_with("sepal_length,sepal_width,petal_length,petal_width,species,petal_length_sq,petal_width_sq,petal_length_over_petal_width\n"));
    assert_eq!(table.lines().count(), 151);
    // Protocol log messages land in the stage's log file.
    let log_dir = std::fs::read_dir(ws.path(".sluice/logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(log_dir.join("features.log")).unwrap();
    assert!(log.contains("[info] 150 rows, deriving from"), "{log}");
}

#[test]
fn the_plugins_own_files_are_part_of_the_key() {
    let ws = ws_with_plugin("{}", "");
    ws.run(&[]).assert_ok();
    let mut code = ws.read("plugins/featurize.py");
    code.push_str("\n# a comment changes the implementation\n");
    ws.write("plugins/featurize.py", &code);
    let s = ws.sluice(&["status"]);
    assert!(
        s.stdout
            .contains("plugin file `plugins/featurize.py` changed"),
        "{}",
        s.stdout
    );
}

#[test]
fn a_plugin_error_fails_the_stage_with_its_message_and_log() {
    let ws = ws_with_plugin("{fail: the table is empty}", "");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1);
    let f = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished")
        .unwrap();
    assert_eq!(f["outcome"], "failed");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("the table is empty"),
        "{f}"
    );
    assert!(
        f["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("asked to fail")),
        "{f}"
    );
    assert!(!ws.exists("out/features.csv"));
}

#[test]
fn a_plugin_that_runs_too_long_is_stopped() {
    let ws = ws_with_plugin("{sleep: 1}", "    timeout: 1s");
    let r = ws.run(&["--kill-grace", "1"]);
    assert_eq!(r.code, 1);
    let f = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished")
        .unwrap();
    assert_eq!(f["outcome"], "timed_out");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{f}"
    );
    assert!(!ws.exists("out/features.csv"));
    let scratch = ws.path(".sluice/tmp");
    let leftovers = walk(&scratch);
    assert!(
        leftovers.is_empty(),
        "the partial file in scratch must be cleaned up: {leftovers:?}"
    );
}

#[test]
fn protocol_violations_are_reported() {
    let ws = Ws::new();
    ws.write(
        "silent.py",
        "import json, sys\nreq = json.load(sys.stdin)\nopen(req['outputs']['o'], 'w').write('x')\nprint('{\"type\": \"metric\", \"name\": \"no value\"}')\n",
    )
    .pipeline(
        r#"
plugins:
  silent: {command: [python3, silent.py]}
stages:
  s: {uses: silent, outputs: [o]}
"#,
    );
    let r = ws.run(&[]);
    assert_eq!(r.code, 1);
    let ev = r.events();
    assert!(ev.iter().any(|e| e["event"] == "warning"
        && e["message"]
            .as_str()
            .unwrap()
            .contains("malformed protocol message")));
    let f = ev.iter().find(|e| e["event"] == "stage_finished").unwrap();
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("without sending its final `result` message"),
        "{f}"
    );
}

#[test]
fn a_plugins_hint_is_shown_apart_from_its_message() {
    let ws = Ws::new();
    // One fails by its exit code, the other by its result's status: both carry a hint.
    ws.write(
        "picky.py",
        "import json, sys\nreq = json.load(sys.stdin)\n\
         print(json.dumps({'type': 'result', 'status': 'error', 'message': 'no column `y`', \
         'hint': 'name the label column with `with: {label: ...}`'}))\n\
         sys.exit(int((req.get('with') or {}).get('code', 0)))\n",
    )
    .pipeline(
        r#"
plugins:
  picky: {command: [python3, picky.py]}
stages:
  by_code: {uses: picky, with: {code: 2}, outputs: [o]}
  by_status: {uses: picky, outputs: [o]}
"#,
    );
    let r = ws.run(&["--keep-going"]);
    assert_eq!(
        r.failure("by_code"),
        "exited with code 2: no column `y`\n  = help: name the label column with `with: {label: ...}`"
    );
    assert_eq!(
        r.failure("by_status"),
        "the plugin reported an error: no column `y`\n  = help: name the label column with `with: {label: ...}`"
    );
    let human = ws.sluice(&["run", "--keep-going"]);
    assert!(
        human
            .stderr
            .contains("  = help: name the label column with `with: {label: ...}`"),
        "{}",
        human.stderr
    );
}

#[test]
fn the_request_carries_paths_config_params_and_devices() {
    let ws = Ws::new();
    ws.write("dump.py", "import json, sys, shutil\nreq = json.load(sys.stdin)\njson.dump(req, open(req['outputs']['o'], 'w'))\nprint(json.dumps({'type': 'result', 'status': 'ok'}))\n")
        .write("in.txt", "x")
        .pipeline(
            r#"
params: {lr: 0.1}
plugins:
  dump: {command: "python3 dump.py"}
stages:
  s: {uses: dump, inputs: {data: in.txt}, outputs: [o], with: {lr: "${{ params.lr }}", tag: "run-${{ params.lr }}"}}
"#,
        );
    ws.run(&[]).assert_ok();
    let req: serde_json::Value = serde_json::from_str(&ws.read("out/sluice/s/o")).unwrap();
    let root = std::fs::canonicalize(ws.root()).unwrap();
    assert_eq!(req["protocol"], 1);
    assert_eq!(req["stage"], "s");
    assert_eq!(req["kind"], "dump");
    assert_eq!(req["workspace"], root.to_str().unwrap());
    assert_eq!(req["inputs"]["data"], root.join("in.txt").to_str().unwrap());
    assert_eq!(
        req["outputs"]["o"],
        root.join("out/sluice/s/o").to_str().unwrap()
    );
    assert_eq!(req["with"]["lr"], 0.1, "a whole-value param keeps its type");
    assert_eq!(req["with"]["tag"], "run-0.1");
    assert_eq!(req["params"]["lr"], 0.1);
    assert_eq!(req["devices"]["gpus"], serde_json::json!([]));
    assert!(req["scratch"].as_str().unwrap().contains(".sluice/tmp/"));
}

#[test]
fn chatty_output_is_capped_in_the_log() {
    let ws = Ws::new();
    // 40 MiB of output; the log keeps at most 16 MiB.
    ws.pipeline("stages:\n  chatty: {run: 'head -c 41943040 /dev/zero | tr \"\\\\0\" \"x\" | fold -w 1000; echo > ${{ outputs.o }}', outputs: [o]}\n");
    ws.run(&[]).assert_ok();
    let log_dir = std::fs::read_dir(ws.path(".sluice/logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let meta = std::fs::metadata(log_dir.join("chatty.log")).unwrap();
    assert!(
        meta.len() <= 16 * 1024 * 1024 + 4096,
        "log is {} bytes",
        meta.len()
    );
    assert!(std::fs::read_to_string(log_dir.join("chatty.log"))
        .unwrap()
        .contains("log truncated"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn the_example_plugin_names_a_misspelt_column() {
    let ws = ws_with_plugin("{ratio: [petal_length, petal_widht]}", "");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let message = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "features")
        .and_then(|e| e["message"].as_str().map(String::from))
        .unwrap();
    assert!(
        message.contains("iris.csv: unknown column(s) ['petal_widht']"),
        "{message}"
    );
    assert!(!message.contains("Traceback"), "{message}");
    assert!(!ws.exists("out/features.csv"));
}

/// What a sweep's pruning reads: one `metric` per epoch with `step` = epoch, arriving as
/// `stage_metric` events in order, a diverged value sent as `"nan"` included (JSON has no NaN;
/// the event carries it as `null`).
#[test]
fn per_epoch_metrics_arrive_with_their_epoch_and_a_nan_is_not_dropped() {
    let ws = Ws::new();
    ws.write(
        "plugins/epochs.py",
        r#"import json, sys
req = json.load(sys.stdin)
for epoch, value in enumerate([0.9, 0.5, "nan"], 1):
    print(json.dumps({"type": "metric", "name": "val_loss", "value": value, "step": epoch}), flush=True)
with open(req["outputs"]["model"], "w") as f:
    f.write("weights")
print(json.dumps({"type": "result"}))
"#,
    );
    ws.pipeline(
        r#"
plugins:
  epochs: {command: [python3, plugins/epochs.py]}
stages:
  fit: {uses: epochs, outputs: {model: out/model.txt}}
"#,
    );
    let r = ws.run(&[]);
    r.assert_ok();
    let ev = r.events();
    let curve: Vec<(u64, serde_json::Value)> = ev
        .iter()
        .filter(|e| e["event"] == "stage_metric" && e["name"] == "val_loss")
        .map(|e| (e["step"].as_u64().unwrap(), e["value"].clone()))
        .collect();
    assert_eq!(
        curve,
        [
            (1, serde_json::json!(0.9)),
            (2, serde_json::json!(0.5)),
            (3, serde_json::Value::Null)
        ]
    );
    assert!(!ev.iter().any(|e| e["event"] == "warning"), "{ev:?}");
}
