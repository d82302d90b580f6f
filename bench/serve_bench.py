#!/usr/bin/env python3
"""`sluice serve` against a minimal Python server (onnxruntime + FastAPI on uvicorn) doing the
same preprocessing, on the iris bundle, measured with wrk at 16 and 64 connections in one run.

    cargo build --release
    python3 bench/serve_bench.py [--sluice target/release/sluice] [--duration 10] [--runs 3]

Needs `wrk` (Debian: `apt-get install wrk`). The iris pipeline is run into a temporary workspace
to get a fresh bundle; the Python server's packages go into a virtual environment under
~/.cache/sluice/bench-serve. Both servers get the same cores (`taskset`), and the Python server
runs as many uvicorn workers as sluice has threads. Results: bench/results/serve.json and a
Markdown table on stdout.

uvicorn's `--workers N` mode loses TCP_NODELAY on Linux (its supervisor binds the listener with
`proto` 0, and asyncio only sets TCP_NODELAY on accepted sockets whose `proto` is TCP:
Kludex/uvicorn#3149), so every keep-alive request after the first waits ~40 ms for the client's
delayed ACK. The Python server is therefore started through a launcher that sets TCP_NODELAY on
the listener, which accepted sockets inherit; without it the baseline measured a flat 44 ms.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BODY = json.dumps({"inputs": [
    {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
    for c, v in zip(COLUMNS, [6.1, 2.8, 4.7, 1.2])
]})

PY_SERVER = r'''
import json, os
import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

BUNDLE = os.environ["BUNDLE"]
pre = json.load(open(os.path.join(BUNDLE, "preprocess.json")))
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(os.path.join(BUNDLE, "model.onnx"), opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0].name
cols = [(c["name"], c["center"], c["scale"]) for c in pre["numeric"]]
classes = pre["label"]["classes"]
app = FastAPI()

@app.post("/v2/models/iris/infer")
async def infer(request: Request):
    req = json.loads(await request.body())
    by = {t["name"]: t for t in req["inputs"]}
    try:
        x = np.stack([(np.asarray(by[n]["data"], dtype=np.float64) - c) / s for n, c, s in cols], axis=1)
    except KeyError as e:
        return JSONResponse({"error": f"missing input {e}"}, status_code=400)
    logits = sess.run(None, {inp: x.astype(np.float32)})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    n, k = p.shape
    return {"model_name": "iris", "model_version": "1", "outputs": [
        {"name": "probabilities", "datatype": "FP64", "shape": [n, k], "data": p.ravel().tolist()},
        {"name": "class", "datatype": "BYTES", "shape": [n], "data": [classes[i] for i in p.argmax(axis=1)]},
    ]}
'''


# Starts uvicorn with N workers, TCP_NODELAY set on the listening socket (see the module doc).
LAUNCHER = r'''
import socket, sys
import uvicorn, uvicorn.config

_bind = uvicorn.config.Config.bind_socket

def bind_socket(self):
    sock = _bind(self)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock

uvicorn.config.Config.bind_socket = bind_socket
if __name__ == "__main__":  # the workers are spawned and import this module again
    uvicorn.run("pyserver:app", host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]),
                log_level="warning")
'''


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def venv() -> Path:
    root = Path.home() / ".cache/sluice/bench-serve"
    py = root / "bin/python"
    if not (root / "ready").exists():
        sh(sys.executable, "-m", "venv", str(root))
        sh(str(py), "-m", "pip", "install", "--quiet", "onnxruntime", "numpy", "fastapi", "uvicorn")
        (root / "ready").write_text("")
    return py


def wait_ready(url: str, proc: subprocess.Popen):
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            req = urllib.request.Request(url + "/v2/models/iris/infer", data=BODY.encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(url: str, conns: int, duration: int, threads: int, lua: Path) -> dict:
    out = subprocess.run(["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{duration}s", "--latency",
                          "-s", str(lua), url + "/v2/models/iris/infer"],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": int(errors.group(1)) if errors else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=str(REPO / "target/release/sluice"))
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--cpus", default="0,1", help="cores both servers are pinned to")
    ap.add_argument("--wrk-cpus", default=None, help="cores wrk is pinned to (default: any)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    threads = len(args.cpus.split(","))
    py = venv()
    ws = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    for rel in ["examples/data/iris.csv", "pipelines/iris.yaml"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, ws / rel)
    sh(args.sluice, "run", "pipelines/iris.yaml", cwd=ws, stdout=subprocess.DEVNULL)
    bundle = ws / "models/iris/1"
    lua = ws / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = {json.dumps(BODY)}\n")
    (ws / "pyserver.py").write_text(PY_SERVER)
    (ws / "launch.py").write_text(LAUNCHER)

    servers = {
        "sluice serve": ["taskset", "-c", args.cpus, args.sluice, "-q", "serve", "models",
                         "--addr", "127.0.0.1:18080", "--threads", str(threads)],
        "python (onnxruntime + FastAPI/uvicorn)": [
            "taskset", "-c", args.cpus, str(py), "launch.py", "18081", str(threads)],
    }
    ports = {"sluice serve": 18080, "python (onnxruntime + FastAPI/uvicorn)": 18081}
    runs = {name: [] for name in servers}
    # Servers alternate within each round, so that load from other work hits them alike.
    for _ in range(args.runs):
        for name, cmd in servers.items():
            env = dict(os.environ, BUNDLE=str(bundle), OMP_NUM_THREADS="1")
            proc = subprocess.Popen(cmd, cwd=ws, env=env)
            try:
                url = f"http://127.0.0.1:{ports[name]}"
                wait_ready(url, proc)
                wrk(url, 16, 2, threads, lua)  # warm-up
                runs[name].append({c: wrk(url, c, args.duration, threads, lua) for c in (16, 64)})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    shutil.rmtree(ws, ignore_errors=True)
    results = {
        name: {c: {k: statistics.median(r[c][k] for r in rs) for k in rs[0][c]} for c in (16, 64)}
        for name, rs in runs.items()
    }

    out = REPO / "bench/results/serve.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": args.cpus, "duration_s": args.duration, "runs": args.runs,
                               "medians": results, "each_run": runs}, indent=2) + "\n")
    print(f"medians of {args.runs} run(s)")
    print("| server | connections | requests/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|")
    for name, by in results.items():
        for c, r in by.items():
            print(f"| {name} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']:.0f} |")
    s, p = results["sluice serve"], results["python (onnxruntime + FastAPI/uvicorn)"]
    for c in (16, 64):
        print(f"\nthroughput ratio at {c} connections: {s[c]['rps'] / p[c]['rps']:.1f}x")
        per_run = [a[c]["rps"] / b[c]["rps"]
                   for a, b in zip(runs["sluice serve"], runs["python (onnxruntime + FastAPI/uvicorn)"])]
        print(f"  per round: {', '.join(f'{x:.1f}x' for x in per_run)}")

if __name__ == "__main__":
    main()
