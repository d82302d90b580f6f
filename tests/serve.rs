//! `sluice serve` through the real binary, on an iris bundle trained by the repo's pipeline (once
//! per test binary), with a real third-party client: Triton's `tritonclient[http]` from PyPI,
//! installed once into a virtual environment under the target directory (concurrent tests wait
//! on its lock). Covers: predictions equal to what `evaluate` computed for the same raw rows,
//! over binary tensors (the client's default) and plain JSON; malformed requests answered with
//! 4xx while the server keeps serving; health, metadata and version routes; a new version picked
//! up without a restart; graceful shutdown; and each bad start's message.
//! One crate over ~700 lines on purpose: each test crate is another ~300 MB binary to link, and
//! would train the bundle and install the client again.

mod common;
use common::*;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};

const COLUMNS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// A workspace where the iris pipeline ran through `deploy`: `models/iris/1`.
fn trained() -> &'static Ws {
    static WS: OnceLock<Ws> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = Ws::new();
        for rel in ["examples/data/iris.csv", "pipelines/iris.yaml"] {
            ws.copy_from_repo(rel);
        }
        ws.run(&["pipelines/iris.yaml"]).assert_ok();
        assert!(ws.exists("models/iris/1/model.onnx"));
        ws
    })
}

/// A copy of the trained registry that a test may change.
fn registry_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&trained().path("models"), &dir.path().join("models"));
    dir
}

/// The Python of a virtual environment holding `tritonclient[http]` (pinned in
/// tests/serve-client-requirements.txt), created once.
fn client_python() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-client");
    std::fs::create_dir_all(&root).unwrap();
    let venv = root.join("venv");
    let python = venv.join("bin/python");
    let ready = root.join("ready");
    if ready.exists() {
        return python;
    }
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is dropped.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(ok.success(), "python3 -m venv failed");
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve-client-requirements.txt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install -r tests/serve-client-requirements.txt failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, "").unwrap();
    }
    python
}

/// A running `sluice serve`, killed when dropped.
struct Server {
    child: Option<Child>,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(dir: &Path, args: &[&str]) -> Server {
        let mut all = vec!["serve", "--addr", "127.0.0.1:0", "--poll", "0.2"];
        all.extend_from_slice(args);
        let mut child = Command::new(BIN)
            .args(&all)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(LONG)
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
        Server {
            child: Some(child),
            addr,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 request over a fresh connection: `(status, headers, body)`.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn post_json(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = http(addr, "POST", path, &[], body.to_string().as_bytes());
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The raw test rows (`out/iris/test.parquet`), column → values.
fn test_rows(ws: &Ws) -> serde_json::Map<String, Value> {
    let file = std::fs::File::open(ws.path("out/iris/test.parquet")).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder.build().unwrap().map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let mut out = serde_json::Map::new();
    for name in COLUMNS {
        let col = batch.column(schema.index_of(name).unwrap());
        let c = arrow::compute::cast(col, &DataType::Float64).unwrap();
        let values: Vec<Value> = (0..c.len())
            .map(|r| json!(c.as_primitive::<Float64Type>().value(r)))
            .collect();
        out.insert(name.into(), values.into());
    }
    out
}

/// `predictions.csv`: per row, the predicted class and the probabilities (the columns after
/// `predicted`; a table's predictions start with `source_row`, an image folder's do not).
fn evaluated(ws: &Ws, predictions: &str) -> Vec<(String, Vec<f64>)> {
    let text = ws.read(predictions);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == "predicted").unwrap();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[at].to_string(),
                f[at + 1..].iter().map(|p| p.parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// Sends `rows` with tritonclient (`binary` tensors or JSON) and returns its view of the answer.
const CLIENT: &str = r#"
import json, sys
import numpy as np
import tritonclient.http as httpclient

url, mode, rows = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
meta = client.get_model_metadata("iris")
binary = mode == "binary"
inputs = []
for spec in meta["inputs"]:
    values = np.array(rows[spec["name"]], dtype=np.float64)
    t = httpclient.InferInput(spec["name"], list(values.shape), spec["datatype"])
    t.set_data_from_numpy(values, binary_data=binary)
    inputs.append(t)
outputs = None if binary else [
    httpclient.InferRequestedOutput("probabilities", binary_data=False),
    httpclient.InferRequestedOutput("class", binary_data=False),
]
result = client.infer("iris", inputs, outputs=outputs)
classes = [c.decode() if isinstance(c, bytes) else c for c in result.as_numpy("class").tolist()]
print(json.dumps({
    "meta": meta,
    # As repr() text: exact, and parsed exactly on the Rust side.
    "probabilities": [[repr(p) for p in row] for row in result.as_numpy("probabilities").tolist()],
    "class": classes,
    "binary_response": result.get_output("class").get("parameters", {}).get("binary_data_size") is not None,
}))
"#;

fn tritonclient(addr: &str, mode: &str, rows: &serde_json::Map<String, Value>) -> Value {
    python_client(CLIENT, addr, mode, &Value::Object(rows.clone()))
}

/// Runs a client `script` with `addr` and `mode` as arguments and `input` as JSON on stdin;
/// returns what it printed, as JSON.
fn python_client(script: &str, addr: &str, mode: &str, input: &Value) -> Value {
    let mut child = Command::new(client_python())
        .args(["-c", script, addr, mode])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The client's classes and probabilities (printed with `repr`, so exact) equal `expected`, the
/// rows of evaluate's predictions.csv.
fn assert_served(got: &Value, expected: &[(String, Vec<f64>)], what: &str) {
    for (i, (class, probs)) in expected.iter().enumerate() {
        assert_eq!(got["class"][i], *class, "{what} {i}");
        let served: Vec<f64> = got["probabilities"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(served, *probs, "{what} {i}");
    }
}

#[test]
fn tritonclient_gets_the_predictions_evaluate_computed() {
    let ws = trained();
    let server = Server::start(ws.root(), &["models"]);
    let rows = test_rows(ws);
    let expected = evaluated(ws, "out/iris/predictions.csv");
    assert_eq!(
        rows["sepal_length"].as_array().unwrap().len(),
        expected.len()
    );
    for mode in ["binary", "json"] {
        let got = tritonclient(&server.addr, mode, &rows);
        assert_eq!(got["binary_response"], mode == "binary", "{mode}");
        let meta = &got["meta"];
        assert_eq!(meta["name"], "iris");
        assert_eq!(meta["versions"], json!(["1"]));
        let names: Vec<&str> = meta["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, COLUMNS);
        // The same float32 features and the same f64 softmax as `evaluate`: equal values.
        assert_served(&got, &expected, &format!("{mode} row"));
    }
    assert!(
        server
            .log()
            .contains("path=/v2/models/iris/infer model=\"iris\" status=200"),
        "{}",
        server.log()
    );
}

/// One valid JSON request body for `n` rows of iris.
fn good_request(n: usize) -> Value {
    let inputs: Vec<Value> = COLUMNS
        .iter()
        .map(|c| json!({"name": c, "shape": [n], "datatype": "FP64", "data": vec![5.0; n]}))
        .collect();
    json!({"inputs": inputs})
}

#[test]
fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let ws = trained();
    let server = Server::start(ws.root(), &["models", "--max-body", "4096"]);
    let addr = server.addr.as_str();
    let infer = "/v2/models/iris/infer";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good_request(2);
        f(&mut v);
        v
    };
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "wrong datatype",
            infer,
            with(&|v| {
                v["inputs"][0]["datatype"] = json!("BYTES");
                v["inputs"][0]["data"] = json!(["5", "5"]);
            }),
            400,
            "input `sepal_length` is BYTES",
        ),
        (
            "strings as FP64",
            infer,
            with(&|v| v["inputs"][0]["data"] = json!(["a", "b"])),
            400,
            "\"a\" is not a FP64 value",
        ),
        (
            "wrong shape",
            infer,
            with(&|v| v["inputs"][1]["shape"] = json!([1, 2])),
            400,
            "has shape [1, 2]",
        ),
        (
            "shape and data disagree",
            infer,
            with(&|v| v["inputs"][1]["shape"] = json!([3])),
            400,
            "the shape says 3 elements",
        ),
        (
            "rows disagree",
            infer,
            with(&|v| {
                v["inputs"][1]["shape"] = json!([1]);
                v["inputs"][1]["data"] = json!([1.0]);
            }),
            400,
            "has 1 rows",
        ),
        (
            "unknown input",
            infer,
            with(&|v| v["inputs"][0]["name"] = json!("sepal")),
            400,
            "the model has no input `sepal`",
        ),
        (
            "missing input",
            infer,
            with(&|v| {
                v["inputs"].as_array_mut().unwrap().pop();
            }),
            400,
            "input `petal_width` is missing",
        ),
        (
            "unknown output",
            infer,
            with(&|v| v["outputs"] = json!([{"name": "logits"}])),
            400,
            "no output `logits`",
        ),
        (
            "unknown model",
            "/v2/models/tulip/infer",
            good_request(1),
            404,
            "unknown model `tulip`; this server has: iris",
        ),
        (
            "unknown version",
            "/v2/models/iris/versions/9/infer",
            good_request(1),
            404,
            "has no version 9",
        ),
    ];
    for (what, path, body, status, message) in cases {
        let (got, answer) = post_json(addr, path, &body);
        assert_eq!(got, status, "{what}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {answer}"));
        assert!(error.contains(message), "{what}: {error}");
    }

    let (status, _, body) = http(
        addr,
        "POST",
        infer,
        &[],
        br#"{"inputs": [{"name": "sepal_length", "shape": [1], "dat"#,
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not valid JSON"));
    let big = vec![b' '; 8192];
    let (status, _, body) = http(addr, "POST", infer, &[], &big);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("limit of 4096 bytes"));
    let (status, _, _) = http(
        addr,
        "POST",
        infer,
        &[("Inference-Header-Content-Length", "999".into())],
        b"{}",
    );
    assert_eq!(status, 400);
    let (status, _, _) = http(addr, "GET", infer, &[], b"");
    assert_eq!(status, 405);
    let (status, _, _) = http(addr, "GET", "/v1/models", &[], b"");
    assert_eq!(status, 404);

    // Still serving.
    let (status, answer) = post_json(addr, infer, &good_request(3));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][1]["name"], "class");
    assert_eq!(answer["outputs"][1]["data"].as_array().unwrap().len(), 3);
    assert_eq!(answer["outputs"][0]["shape"], json!([3, 3]));
}

#[test]
fn routes_answer_and_a_new_version_is_picked_up_without_a_restart() {
    let _ = trained();
    let dir = registry_copy();
    let server = Server::start(dir.path(), &["models"]);
    let addr = server.addr.as_str();
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris/ready",
        "/v2/models/iris/versions/1/ready",
    ] {
        assert_eq!(http(addr, "GET", path, &[], b"").0, 200, "{path}");
    }
    assert_eq!(http(addr, "GET", "/v2/models/tulip/ready", &[], b"").0, 404);
    let (_, _, body) = http(addr, "GET", "/v2", &[], b"");
    let meta: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta["extensions"], json!(["binary_tensor_data"]));
    let metadata = |path: &str| -> Value {
        serde_json::from_slice(&http(addr, "GET", path, &[], b"").2).unwrap()
    };
    let m = metadata("/v2/models/iris");
    assert_eq!(
        m["outputs"][0],
        json!({"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]})
    );
    assert_eq!(
        m["parameters"]["classes"],
        json!(["setosa", "versicolor", "virginica"])
    );

    // A deploy publishes a version by renaming a complete directory, then moves `latest`.
    let models = dir.path().join("models/iris");
    copy_dir(&models.join("1"), &dir.path().join("models/.tmp-2"));
    std::fs::rename(dir.path().join("models/.tmp-2"), models.join("2")).unwrap();
    std::fs::write(models.join("latest.tmp"), "2\n").unwrap();
    std::fs::rename(models.join("latest.tmp"), models.join("latest")).unwrap();
    assert!(
        wait_for(LONG, || metadata("/v2/models/iris")["versions"]
            == json!(["1", "2"])),
        "{}",
        server.log()
    );
    let (status, answer) = post_json(addr, "/v2/models/iris/infer", &good_request(1));
    assert_eq!((status, &answer["model_version"]), (200, &json!("2")));
    let (status, answer) = post_json(addr, "/v2/models/iris/versions/1/infer", &good_request(1));
    assert_eq!((status, &answer["model_version"]), (200, &json!("1")));
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let ws = trained();
    let mut server = Server::start(ws.root(), &["models"]);
    let (status, _) = post_json(&server.addr, "/v2/models/iris/infer", &good_request(1));
    assert_eq!(status, 200);
    let child = server.child.take().unwrap();
    send_signal(&child, libc::SIGTERM);
    let run = wait_child(child, LONG);
    assert_eq!(run.code, 0, "{}", server.log());
    assert!(
        wait_for(LONG, || server.log().contains("shutting down")),
        "{}",
        server.log()
    );
}

#[test]
fn bad_starts_are_named() {
    let ws = trained();
    let run = ws.sluice(&["serve", "out/iris/normalized"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "`out/iris/normalized` is neither a model registry (no `.sluice-registry`) nor a bundle"
        ),
        "{}",
        run.stderr
    );
    let run = ws.sluice(&["serve", "nowhere"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`nowhere` is not a directory"),
        "{}",
        run.stderr
    );

    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().to_string();
    let run = ws.sluice(&["serve", "models", "--addr", &port]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("cannot listen on {port}: the address is in use")),
        "{}",
        run.stderr
    );

    // A bundle whose artifact names four classes for a three-class model.
    let dir = registry_copy();
    let bundle = dir.path().join("models/iris/1");
    let pre = bundle.join("preprocess.json");
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&pre).unwrap()).unwrap();
    p["label"]["classes"]
        .as_array_mut()
        .unwrap()
        .push(json!("tulip"));
    std::fs::write(&pre, p.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "models/iris/1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("answers 3 values per row in `logits`, but its preprocess artifact expects 4 (one per class: setosa, versicolor, virginica, tulip)"), "{stderr}");
}

// Images: a generated ImageFolder through the image modes of the data stages, a small CNN, and
// the raw pixels of the test split's files sent as UINT8 [N, H, W, C].

/// The classes of the generated image folder and the size of its images (deliberately not
/// square, so that a height/width mix-up anywhere shows).
const SHAPES: [&str; 3] = ["bars", "columns", "plain"];
const IMAGE_W: u32 = 8;
const IMAGE_H: u32 = 6;

/// The RGB pixel at `(x, y)` of image `i` of class `c`: a class pattern plus per-image noise (so
/// that `clean` finds no duplicates).
fn shape_pixel(c: usize, i: u32, x: u32, y: u32) -> [u8; 3] {
    let base = match c {
        0 => (y % 2) * 200,
        1 => (x % 2) * 200,
        _ => 100,
    };
    let noise = |k: u32| (i.wrapping_mul(2_654_435_761) ^ (x * 31 + y * 17 + k * 7)) % 40;
    [
        (base + noise(0)) as u8,
        (base / 2 + noise(1)) as u8,
        (255 - base - noise(2)) as u8,
    ]
}

const SHAPES_PIPELINE: &str = r#"
name: shapes
stages:
  clean:
    uses: clean
    inputs: {images: data/shapes}
    outputs: {table: out/shapes/clean, report: out/shapes/clean.json}
  split:
    uses: split
    inputs: {images: "${{ stages.clean.outputs.table }}"}
    outputs:
      train: out/shapes/train
      val: out/shapes/val
      test: out/shapes/test
      summary: out/shapes/split.json
    with: {ratios: {train: 0.5, val: 0.25, test: 0.25}, seed: 7}
  normalize:
    uses: normalize
    inputs:
      train: "${{ stages.split.outputs.train }}"
      val: "${{ stages.split.outputs.val }}"
      test: "${{ stages.split.outputs.test }}"
    outputs:
      train: out/shapes/normalized/train
      val: out/shapes/normalized/val
      test: out/shapes/normalized/test
      preprocess: out/shapes/preprocess.json
    with: {size: [8, 6], color: rgb}
  train:
    uses: train
    inputs:
      train: "${{ stages.normalize.outputs.train }}"
      val: "${{ stages.normalize.outputs.val }}"
      preprocess: "${{ stages.normalize.outputs.preprocess }}"
    outputs:
      model: out/shapes/model.onnx
      history: out/shapes/history.json
      artifacts: out/shapes/artifacts
    with:
      model: {type: cnn, channels: [4], hidden: 8}
      epochs: 3
      batch_size: 8
      seed: 7
      device: cpu
  evaluate:
    uses: evaluate
    inputs:
      model: "${{ stages.train.outputs.model }}"
      test: "${{ stages.normalize.outputs.test }}"
      preprocess: "${{ stages.normalize.outputs.preprocess }}"
    outputs:
      metrics: out/shapes/metrics.json
      predictions: out/shapes/predictions.csv
      plots: out/shapes/plots
  deploy:
    uses: deploy
    inputs:
      model: "${{ stages.train.outputs.model }}"
      preprocess: "${{ stages.normalize.outputs.preprocess }}"
      metrics: "${{ stages.evaluate.outputs.metrics }}"
    outputs: {record: out/shapes/deployed.json}
    with: {registry: models, name: shapes}
"#;

/// A workspace where the image pipeline ran through `deploy`: `models/shapes/1`.
fn trained_images() -> &'static Ws {
    static WS: OnceLock<Ws> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = Ws::new();
        for (c, class) in SHAPES.iter().enumerate() {
            for i in 0..12 {
                let path = ws.path(&format!("data/shapes/{class}/{i:02}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let bytes = png(IMAGE_W, IMAGE_H, |x, y| shape_pixel(c, i, x, y));
                std::fs::write(path, bytes).unwrap();
            }
        }
        ws.pipeline(SHAPES_PIPELINE);
        ws.run(&[]).assert_ok();
        assert!(ws.exists("models/shapes/1/model.onnx"));
        ws
    })
}

/// The test split's images in the order `normalize` wrote their rows (class folders sorted, then
/// file names sorted), each as its raw `[H, W, C]` pixels, regenerated from the file's name.
fn test_images(ws: &Ws) -> Vec<Vec<u8>> {
    let mut images = Vec::new();
    let sorted = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let test = ws.path("out/shapes/test");
    for class in sorted(&test) {
        let c = SHAPES.iter().position(|s| *s == class).unwrap();
        for file in sorted(&test.join(&class)) {
            let i: u32 = file.trim_end_matches(".png").parse().unwrap();
            let mut pixels = Vec::new();
            for y in 0..IMAGE_H {
                for x in 0..IMAGE_W {
                    pixels.extend(shape_pixel(c, i, x, y));
                }
            }
            images.push(pixels);
        }
    }
    images
}

/// Sends images (`{"images": [[pixels]], "shape": [N, H, W, C]}` on stdin) as one UINT8 input
/// with tritonclient, binary or JSON.
const IMAGE_CLIENT: &str = r#"
import json, sys
import numpy as np
import tritonclient.http as httpclient

url, mode = sys.argv[1], sys.argv[2]
request = json.loads(sys.stdin.read())
client = httpclient.InferenceServerClient(url=url)
meta = client.get_model_metadata("shapes")
binary = mode == "binary"
pixels = np.array(request["images"], dtype=np.uint8).reshape(request["shape"])
image = httpclient.InferInput("image", list(pixels.shape), "UINT8")
image.set_data_from_numpy(pixels, binary_data=binary)
outputs = [
    httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    httpclient.InferRequestedOutput("class", binary_data=binary),
]
result = client.infer("shapes", [image], outputs=outputs)
classes = [c.decode() if isinstance(c, bytes) else c for c in result.as_numpy("class").tolist()]
print(json.dumps({
    "meta": meta,
    "probabilities": [[repr(p) for p in row] for row in result.as_numpy("probabilities").tolist()],
    "class": classes,
    "binary_response": result.get_output("class").get("parameters", {}).get("binary_data_size") is not None,
}))
"#;

#[test]
fn tritonclient_gets_the_image_predictions_evaluate_computed() {
    let ws = trained_images();
    let server = Server::start(ws.root(), &["models"]);
    let images = test_images(ws);
    let expected = evaluated(ws, "out/shapes/predictions.csv");
    assert_eq!(images.len(), expected.len());
    let (h, w) = (IMAGE_H as usize, IMAGE_W as usize);
    // The model tells the images apart: the test compares real predictions, not a constant.
    let distinct: std::collections::BTreeSet<String> =
        expected.iter().map(|(c, _)| c.clone()).collect();
    assert!(distinct.len() > 1, "{expected:?}");
    let request = json!({"images": images, "shape": [images.len(), h, w, 3]});
    for mode in ["binary", "json"] {
        let got = python_client(IMAGE_CLIENT, &server.addr, mode, &request);
        assert_eq!(got["binary_response"], mode == "binary", "{mode}");
        assert_eq!(
            got["meta"]["inputs"],
            json!([{"name": "image", "datatype": "UINT8", "shape": [-1, h, w, 3]}])
        );
        assert_eq!(got["meta"]["parameters"]["classes"], json!(SHAPES));
        // The same pixels normalized by the same function, the same model and softmax.
        assert_served(&got, &expected, &format!("{mode} image"));
    }
}

#[test]
fn an_image_of_the_wrong_size_or_channels_is_a_400_naming_the_shape() {
    let ws = trained_images();
    let server = Server::start(ws.root(), &["models"]);
    let infer = "/v2/models/shapes/infer";
    let image = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        json!({"inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", "data": vec![7; n]}]})
    };
    for (what, shape) in [
        ("height and width swapped", [1, 8, 6, 3]),
        ("larger", [2, 12, 16, 3]),
        ("grayscale", [1, 6, 8, 1]),
        ("RGBA", [1, 6, 8, 4]),
    ] {
        let (status, answer) = post_json(&server.addr, infer, &image(&shape));
        assert_eq!(status, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("input `image` has shape {shape:?}"))
                && error.contains("takes [N, 6, 8, 3] (height, width, channels)"),
            "{what}: {error}"
        );
    }
    let (status, answer) = post_json(
        &server.addr,
        infer,
        &json!({"inputs": [{"name": "image", "shape": [1, 6, 8, 3], "datatype": "FP32", "data": vec![0.5; 144]}]}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("UINT8"),
        "{answer}"
    );
    let (status, answer) = post_json(&server.addr, infer, &image(&[2, 6, 8, 3]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 3]));
}

/// `name`'s value in kB from the server's /proc status (`VmRSS`, `VmHWM`).
fn proc_kb(server: &Server, name: &str) -> u64 {
    let pid = server.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Everything the server sends until it closes the connection, read with a generous timeout;
/// `None` when it did not close in time.
fn read_until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
    }
}

/// One binary-tensor request body of iris rows: `(body, json length)`.
fn binary_request(columns: &[(&str, Vec<f64>)], binary_output: bool) -> (Vec<u8>, usize) {
    let inputs: Vec<Value> = columns
        .iter()
        .map(|(c, v)| {
            json!({"name": c, "shape": [v.len()], "datatype": "FP64",
                   "parameters": {"binary_data_size": v.len() * 8}})
        })
        .collect();
    let mut body =
        json!({"inputs": inputs, "parameters": {"binary_data_output": binary_output}}).to_string();
    let head = body.len();
    let mut bytes = std::mem::take(&mut body).into_bytes();
    for (_, v) in columns {
        v.iter()
            .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
    }
    (bytes, head)
}

#[test]
fn a_huge_declared_element_count_is_a_400_and_the_server_stays_up() {
    let ws = trained();
    let server = Server::start(ws.root(), &["models"]);
    let infer = "/v2/models/iris/infer";
    // About 100 bytes each, declaring 2^32 elements: the server used to reserve room for them
    // and abort.
    let json_body =
        br#"{"inputs":[{"name":"sepal_length","shape":[4294967296],"datatype":"BYTES","data":["x"]}]}"#;
    let (status, _, body) = http(&server.addr, "POST", infer, &[], json_body);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("input `sepal_length`: the shape says 4294967296 elements"),
        "{text}"
    );
    let head = br#"{"inputs":[{"name":"sepal_length","shape":[4294967296],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}"#;
    let mut binary = head.to_vec();
    binary.extend_from_slice(b"\x01\0\0\0");
    let (status, _, body) = http(
        &server.addr,
        "POST",
        infer,
        &[("Inference-Header-Content-Length", head.len().to_string())],
        &binary,
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("holds at most 1"), "{text}");
    let (status, answer) = post_json(&server.addr, infer, &good_request(2));
    assert_eq!(status, 200, "{answer}\n{}", server.log());
}

#[test]
fn a_registry_that_cannot_be_listed_keeps_its_models() {
    let _ = trained();
    let dir = registry_copy();
    let server = Server::start(dir.path(), &["models"]);
    let infer = "/v2/models/iris/infer";
    assert_eq!(post_json(&server.addr, infer, &good_request(1)).0, 200);
    // A file where the registry was: listing it fails (as it would for an unreadable directory,
    // which root can still read).
    let models = dir.path().join("models");
    let moved = dir.path().join("models.moved");
    std::fs::rename(&models, &moved).unwrap();
    std::fs::write(&models, "").unwrap();
    assert!(
        wait_for(LONG, || server.log().contains("cannot list `models`")),
        "{}",
        server.log()
    );
    let (status, answer) = post_json(&server.addr, infer, &good_request(1));
    assert_eq!(status, 200, "{answer}\n{}", server.log());
    assert_eq!(answer["model_version"], "1");
    assert!(
        server
            .log()
            .contains("still serving the models already loaded"),
        "{}",
        server.log()
    );
    std::fs::remove_file(&models).unwrap();
    std::fs::rename(&moved, &models).unwrap();
    assert!(
        wait_for(LONG, || server
            .log()
            .contains("the registry can be listed again")),
        "{}",
        server.log()
    );
    assert_eq!(post_json(&server.addr, infer, &good_request(1)).0, 200);
}

#[test]
fn connections_over_the_cap_get_a_503_and_the_server_recovers() {
    let ws = trained();
    let server = Server::start(
        ws.root(),
        &[
            "models",
            "--max-connections",
            "4",
            "--header-timeout",
            "120",
        ],
    );
    assert!(
        server.log().contains("at most 4 connections"),
        "{}",
        server.log()
    );
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // Accepted in order: the four idle ones hold every slot when this one arrives.
    let (status, _, body) = http(&server.addr, "GET", "/v2/health/live", &[], b"");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("`--max-connections`"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A slot comes back when a connection closes.
    drop(idle.pop());
    assert!(
        wait_for(LONG, || http(
            &server.addr,
            "GET",
            "/v2/health/live",
            &[],
            b""
        )
        .0 == 200),
        "{}",
        server.log()
    );
    drop(idle);
    let (status, answer) = post_json(&server.addr, "/v2/models/iris/infer", &good_request(1));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    let ws = trained();
    let server = Server::start(
        ws.root(),
        &["models", "--header-timeout", "1", "--idle-timeout", "1"],
    );
    // Nothing sent.
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    // Half a request head.
    let mut half_head = TcpStream::connect(&server.addr).unwrap();
    half_head
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Headers promising 100 bytes of body, and 10 of them.
    let mut half_body = TcpStream::connect(&server.addr).unwrap();
    half_body
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\":")
        .unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("half a head", &mut half_head),
        ("half a body", &mut half_body),
    ] {
        let got = read_until_closed(s);
        assert!(got.is_some(), "{what}: still open\n{}", server.log());
        let got = got.unwrap();
        // Closed without an answer, or with a 4xx; never a 200 or a 5xx.
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
            "{what}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    let (status, answer) = post_json(&server.addr, "/v2/models/iris/infer", &good_request(1));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_missing_value_gets_the_fill_the_artifact_recorded() {
    let _ = trained();
    let dir = registry_copy();
    // As `normalize` with `impute:` records it: `sepal_width` is filled, the others are not.
    let path = dir.path().join("models/iris/1/preprocess.json");
    let mut pre: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for c in pre["numeric"].as_array_mut().unwrap() {
        if c["name"] == "sepal_width" {
            c["fill"] = json!({"method": "median", "value": 3.25});
        }
    }
    std::fs::write(&path, serde_json::to_string(&pre).unwrap()).unwrap();
    let server = Server::start(dir.path(), &["models"]);
    let infer = "/v2/models/iris/infer";
    // A JSON null is a missing value: the same answer as the fill sent as a value.
    let mut request = good_request(2);
    request["inputs"][1]["data"] = json!([null, 3.25]);
    let (status, answer) = post_json(&server.addr, infer, &request);
    assert_eq!(status, 200, "{answer}");
    let p = answer["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(p.len(), 6, "{answer}");
    assert_eq!(p[..3], p[3..], "{answer}");
    // A column without a fill still refuses a missing value, naming it.
    let mut request = good_request(1);
    request["inputs"][0]["data"] = json!([null]);
    let (status, answer) = post_json(&server.addr, infer, &request);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains(
            "input `sepal_length` row 0 is missing (NaN), and the model has no fill for it"
        ),
        "{answer}"
    );
}

#[test]
fn non_finite_values_and_repeated_inputs_are_400s_naming_the_input() {
    let ws = trained();
    let server = Server::start(ws.root(), &["models"]);
    let infer = "/v2/models/iris/infer";
    let mut huge = good_request(3);
    huge["inputs"][2]["data"] = json!([1.0, 1e40, 2.0]);
    let (status, answer) = post_json(&server.addr, infer, &huge);
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("input `petal_length` row 1") && error.contains("outside the range of FP32"),
        "{error}"
    );
    let mut fp32 = good_request(1);
    fp32["inputs"][0]["datatype"] = json!("FP32");
    fp32["inputs"][0]["data"] = json!([1e40]);
    let (status, answer) = post_json(&server.addr, infer, &fp32);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("input `sepal_length`: 1e+40 is out of the range of FP32"),
        "{answer}"
    );
    let columns: Vec<(&str, Vec<f64>)> = COLUMNS
        .iter()
        .map(|&c| {
            (
                c,
                vec![5.0, if c == "sepal_width" { f64::NAN } else { 1.0 }],
            )
        })
        .collect();
    let (body, head) = binary_request(&columns, false);
    let (status, _, body) = http(
        &server.addr,
        "POST",
        infer,
        &[("Inference-Header-Content-Length", head.to_string())],
        &body,
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains(
            "input `sepal_width` row 1 is missing (NaN), and the model has no fill for it"
        ),
        "{text}"
    );
    let mut twice = good_request(1);
    let first = twice["inputs"][0].clone();
    twice["inputs"].as_array_mut().unwrap().push(first);
    let (status, answer) = post_json(&server.addr, infer, &twice);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("input `sepal_length` is given twice"),
        "{answer}"
    );
}

#[test]
fn a_large_request_stays_within_a_few_times_its_body_and_memory_is_given_back() {
    let ws = trained();
    let server = Server::start(ws.root(), &["models"]);
    let infer = "/v2/models/iris/infer";
    assert_eq!(post_json(&server.addr, infer, &good_request(1)).0, 200);
    let before = proc_kb(&server, "VmRSS");
    // 500,000 rows in binary tensors: a 16 MB body.
    let rows = 500_000;
    let columns: Vec<(&str, Vec<f64>)> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, (0..rows).map(|r| (r % 7 + i) as f64).collect()))
        .collect();
    let (body, head) = binary_request(&columns, true);
    let size_kb = body.len() as u64 / 1024;
    for round in 0..2 {
        let (status, headers, answer) = http(
            &server.addr,
            "POST",
            infer,
            &[("Inference-Header-Content-Length", head.to_string())],
            &body,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("inference-header-content-length"),
            "{headers}"
        );
        // The body, its decoded columns, the features, the probabilities and the response: a
        // few times the body, where one `serde_json::Value` per element alone was eight.
        let peak = proc_kb(&server, "VmHWM");
        assert!(
            peak <= before + 6 * size_kb,
            "round {round}: peak {peak} kB for a {size_kb} kB body, from {before} kB"
        );
        // Memory goes back to the system once the response is sent.
        assert!(
            wait_for(LONG, || proc_kb(&server, "VmRSS") <= before + size_kb / 2),
            "round {round}: {} kB resident after the request, {before} kB before",
            proc_kb(&server, "VmRSS")
        );
    }
}
