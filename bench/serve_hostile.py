#!/usr/bin/env python3
"""`sluice serve` under hostile load, on loopback: valid requests from 64 keep-alive clients,
each answer compared byte for byte with the answer to the same body on the quiet server; at the
same time a stream of every kind of bad request (each must get its 4xx), slow clients that
stall in their headers or body (each must be closed), a few large valid requests, and 10,000
idle connections kept open (re-opened as the server's header timeout closes them). Reports
requests done, wrong answers, 5xx, whether the server stayed up, and its RSS (sampled every
100 ms from /proc). Bounded: runs `--duration` seconds and stops by itself.

    cargo build --release
    python3 bench/serve_hostile.py [--sluice target/release/sluice] [--duration 30] [--idle 10000]

Needs nothing outside the standard library. The iris pipeline is run into a temporary
workspace for a fresh bundle. Results: bench/results/serve_hostile.json and a Markdown table
on stdout; exit 1 when an assertion fails (a wrong answer, a 5xx, the server down).
"""

import argparse
import http.client
import json
import os
import random
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
INFER = "/v2/models/iris/infer"


def json_body(rows):
    return json.dumps({"inputs": [
        {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
        for i, c in enumerate(COLUMNS)
    ]}).encode()


def binary_body(rows, binary_output, dtype="FP64", override=None):
    """(body, json length) of a binary-tensor request; `override` replaces one column's values."""
    fmt, size = ("<d", 8) if dtype == "FP64" else ("<f", 4)
    cols = [[r[i] for r in rows] for i in range(len(COLUMNS))]
    if override:
        cols[override[0]] = override[1]
    head = json.dumps({"inputs": [
        {"name": c, "shape": [len(rows)], "datatype": dtype,
         "parameters": {"binary_data_size": len(rows) * size}} for c in COLUMNS
    ], "parameters": {"binary_data_output": binary_output}}).encode()
    data = b"".join(struct.pack(fmt, v) for col in cols for v in col)
    return head + data, len(head)


def raw_request(method, path, body=b"", headers=(), length=None):
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def bad_requests():
    """(kind, raw request, expected status)."""
    one = [[5.1, 3.5, 1.4, 0.2]]

    def with_input(change):
        body = json.loads(json_body(one * 2))
        change(body)
        return json.dumps(body).encode()

    huge_json = (b'{"inputs":[{"name":"sepal_length","shape":[4294967296],"datatype":"BYTES",'
                 b'"data":["x"]}]}')
    huge_head = (b'{"inputs":[{"name":"sepal_length","shape":[4294967296],"datatype":"BYTES",'
                 b'"parameters":{"binary_data_size":4}}]}')
    nan_body, nan_head = binary_body(one * 2, False, override=(1, [5.0, float("nan")]))
    kinds = [
        ("huge declared count (JSON)", raw_request("POST", INFER, huge_json), 400),
        ("huge declared count (binary)", raw_request(
            "POST", INFER, huge_head + b"\x01\0\0\0",
            [("Inference-Header-Content-Length", len(huge_head))]), 400),
        ("FP64 1e40", raw_request("POST", INFER, with_input(
            lambda b: b["inputs"][2].update(data=[1.0, 1e40]))), 400),
        ("FP32 1e40", raw_request("POST", INFER, with_input(
            lambda b: b["inputs"][0].update(datatype="FP32", data=[1.0, 1e40]))), 400),
        ("NaN in binary FP64", raw_request(
            "POST", INFER, nan_body, [("Inference-Header-Content-Length", nan_head)]), 400),
        ("input given twice", raw_request("POST", INFER, with_input(
            lambda b: b["inputs"].append(b["inputs"][0]))), 400),
        ("truncated JSON", raw_request("POST", INFER, json_body(one)[:40]), 400),
        ("nested 100,000 deep", raw_request("POST", INFER, b'{"inputs":' + b"[" * 100_000), 400),
        ("shape of 100,000 dimensions", raw_request("POST", INFER, with_input(
            lambda b: b["inputs"][0].update(shape=[1] * 100_000))), 400),
        ("wrong element count", raw_request("POST", INFER, with_input(
            lambda b: b["inputs"][1].update(shape=[3]))), 400),
        ("header length past the body", raw_request(
            "POST", INFER, b"{}", [("Inference-Header-Content-Length", 999)]), 400),
        ("body over --max-body (declared)", raw_request("POST", INFER, b"", length=1 << 30), 413),
        ("unknown model", raw_request("POST", "/v2/models/tulip/infer", json_body(one)), 404),
        ("wrong method", raw_request("GET", INFER), 405),
    ]
    return kinds


def exchange(addr, raw, timeout):
    """Sends `raw` on a fresh connection; returns (status or None, bytes) once the server closes."""
    with socket.create_connection(addr, timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass  # the server may answer and close before reading all of a refused body
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return status, got


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.failures = []

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def fail(self, text):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(text)
            self.c["wrong answers"] = self.c.get("wrong answers", 0) + 1


def valid_client(addr, bodies, reference, stop, stats, seed):
    rng = random.Random(seed)
    conn = None
    while not stop.is_set():
        k = rng.randrange(len(bodies))
        body, headers = bodies[k]
        try:
            if conn is None:
                conn = http.client.HTTPConnection(*addr, timeout=60)
            conn.request("POST", INFER, body, headers)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            stats.add("valid: connection errors")
            stats.fail(f"valid request {k}: {e!r}")
            conn = None
            continue
        stats.add("valid requests")
        if r.status >= 500:
            stats.add("5xx")
        if r.status != 200 or data != reference[k]:
            stats.fail(f"valid request {k}: {r.status} {data[:200]!r}")


def bad_client(addr, kinds, stop, stats, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        kind, raw, expected = rng.choice(kinds)
        try:
            status, got = exchange(addr, raw, 60)
        except OSError as e:
            stats.fail(f"{kind}: {e!r}")
            continue
        stats.add("bad requests")
        if status is not None and status >= 500:
            stats.add("5xx")
        if status != expected:
            stats.fail(f"{kind}: expected {expected}, got {status}: {got[:200]!r}")


def slow_client(addr, stop, stats, limit):
    """Stalls in a request's head or body; the server must close it within `limit` seconds."""
    stalls = [
        ("stalled head", b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"),
        ("stalled body", b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\":"),
    ]
    i = 0
    while not stop.is_set():
        kind, raw = stalls[i % 2]
        i += 1
        try:
            with socket.create_connection(addr, timeout=limit) as s:
                s.sendall(raw)
                got = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
        except socket.timeout:
            stats.fail(f"{kind}: still open after {limit} s")
            continue
        except ConnectionResetError:
            got = b""
        stats.add("slow clients closed")
        if got.startswith(b"HTTP/1.1 5"):
            stats.add("5xx")
            stats.fail(f"{kind}: {got[:200]!r}")


def large_client(addr, stop, stats, rows):
    """Large valid requests (binary tensors in and out), one at a time."""
    base = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    body, head = binary_body([base[i % 3] for i in range(rows)], True)
    headers = {"Inference-Header-Content-Length": str(head)}
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection(*addr, timeout=120)
            conn.request("POST", INFER, body, headers)
            r = conn.getresponse()
            data = r.read()
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            stats.fail(f"large request: {e!r}")
            continue
        stats.add("large requests")
        stats.add("large request bytes", len(body))
        if r.status >= 500:
            stats.add("5xx")
        n = int(r.getheader("Inference-Header-Content-Length", "0"))
        ok = r.status == 200 and n > 0
        if ok:
            meta = json.loads(data[:n])
            classes = next(o for o in meta["outputs"] if o["name"] == "class")
            ok = classes["shape"] == [rows]
        if not ok:
            stats.fail(f"large request: {r.status} {data[:200]!r}")


def idle_keeper(addr, target, stop, stats, held):
    """Keeps `target` connections open that never send a byte, re-opening those the server
    closes; `held` records the most open at once."""
    sel = selectors.DefaultSelector()
    open_now = 0

    def open_some(n):
        nonlocal open_now
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            sel.register(s, selectors.EVENT_READ)
            open_now += 1
            stats.add("idle connections opened")

    while not stop.is_set():
        if open_now < target:
            open_some(min(500, target - open_now))
        held[0] = max(held[0], open_now)
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 503"):
                stats.add("idle: 503 (over the cap)")
            elif data.startswith(b"HTTP/1.1 5"):
                stats.add("5xx")
            sel.unregister(s)
            s.close()
            open_now -= 1
            stats.add("idle connections closed by the server")
    for key in list(sel.get_map().values()):
        key.fileobj.close()


def rss_sampler(pid, stop, samples):
    while not stop.is_set():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        kb = {l.split(":")[0]: int(l.split()[1]) for l in text.splitlines()
              if l.startswith(("VmRSS", "VmHWM"))}
        samples.append(kb)
        stop.wait(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=str(REPO / "target/release/sluice"))
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--bad-clients", type=int, default=4)
    ap.add_argument("--slow-clients", type=int, default=4)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--large-rows", type=int, default=500_000,
                    help="rows of each large valid request (32 bytes each)")
    ap.add_argument("--server-args", default="--max-connections 12000",
                    help="extra `sluice serve` flags")
    args = ap.parse_args()
    args.sluice = str(Path(args.sluice).resolve())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + args.clients + 256:
        raise SystemExit(f"the open-file limit ({hard}) is too low for {args.idle} idle connections")

    ws = Path(tempfile.mkdtemp(prefix="serve-hostile-"))
    for rel in ["examples/data/iris.csv", "pipelines/iris.yaml"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, ws / rel)
    subprocess.run([args.sluice, "run", "pipelines/iris.yaml"], cwd=ws, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = [args.sluice, "-q", "serve", "models", "--addr", "127.0.0.1:0", *args.server_args.split()]
    server = subprocess.Popen(cmd, cwd=ws, stderr=subprocess.PIPE, text=True)
    log = []
    addr = None
    for line in server.stderr:
        log.append(line)
        if line.startswith("listening on http://"):
            host, port = line.strip()[len("listening on http://"):].rsplit(":", 1)
            addr = (host, int(port))
            break
    if addr is None:
        raise SystemExit("the server did not start:\n" + "".join(log))
    threading.Thread(target=lambda: [log.append(l) for l in server.stderr], daemon=True).start()

    stats = Stats()
    try:
        # The reference: each valid body's answer from the quiet server.
        rng = random.Random(7)
        bodies = []
        for i in range(32):
            rows = [[round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1),
                     round(rng.uniform(1, 7), 1), round(rng.uniform(0.1, 2.5), 1)]
                    for _ in range(1 + i % 8)]
            if i % 2:
                body, head = binary_body(rows, i % 4 == 1)
                bodies.append((body, {"Inference-Header-Content-Length": str(head)}))
            else:
                bodies.append((json_body(rows), {"Content-Type": "application/json"}))
        reference = []
        for body, headers in bodies:
            conn = http.client.HTTPConnection(*addr, timeout=30)
            conn.request("POST", INFER, body, headers)
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, (r.status, data)
            reference.append(data)
            conn.close()
        quiet_rss = int(next(l for l in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                             if l.startswith("VmRSS")).split()[1])

        stop = threading.Event()
        samples = []
        held = [0]
        threads = [threading.Thread(target=rss_sampler, args=(server.pid, stop, samples)),
                   threading.Thread(target=idle_keeper, args=(addr, args.idle, stop, stats, held))]
        threads += [threading.Thread(target=valid_client,
                                     args=(addr, bodies, reference, stop, stats, i))
                    for i in range(args.clients)]
        kinds = bad_requests()
        threads += [threading.Thread(target=bad_client, args=(addr, kinds, stop, stats, i))
                    for i in range(args.bad_clients)]
        threads += [threading.Thread(target=slow_client, args=(addr, stop, stats, 60))
                    for _ in range(args.slow_clients)]
        threads.append(threading.Thread(target=large_client,
                                        args=(addr, stop, stats, args.large_rows)))
        started = time.monotonic()
        for t in threads:
            t.daemon = True
            t.start()
        stop.wait(args.duration)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - started
        stuck = sum(t.is_alive() for t in threads)

        up = server.poll() is None
        try:
            conn = http.client.HTTPConnection(*addr, timeout=30)
            conn.request("GET", "/v2/health/ready")
            live = conn.getresponse().status == 200
        except OSError:
            live = False
        after_rss = int(next(l for l in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                             if l.startswith("VmRSS")).split()[1]) if up else None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(ws, ignore_errors=True)

    c = stats.c
    max_rss = max((s.get("VmRSS", 0) for s in samples), default=0)
    hwm = max((s.get("VmHWM", 0) for s in samples), default=0)
    result = {
        "command": " ".join(sys.argv),
        "server": " ".join(cmd[1:]),
        "duration_s": round(elapsed, 1),
        "valid_requests": c.get("valid requests", 0),
        "valid_per_s": round(c.get("valid requests", 0) / elapsed),
        "bad_requests": c.get("bad requests", 0),
        "slow_clients_closed": c.get("slow clients closed", 0),
        "large_requests": c.get("large requests", 0),
        "large_request_mb": round(c.get("large request bytes", 0) / max(1, c.get("large requests", 0)) / 1e6, 1),
        "idle_held_at_once": held[0],
        "idle_opened": c.get("idle connections opened", 0),
        "idle_closed_by_server": c.get("idle connections closed by the server", 0),
        "idle_503": c.get("idle: 503 (over the cap)", 0),
        "wrong_answers": c.get("wrong answers", 0),
        "5xx": c.get("5xx", 0),
        "server_up": up and live,
        "stuck_threads": stuck,
        "rss_quiet_mb": round(quiet_rss / 1024),
        "rss_max_mb": round(max_rss / 1024),
        "hwm_mb": round(hwm / 1024),
        "rss_after_mb": round(after_rss / 1024) if after_rss else None,
        "failures": stats.failures,
    }
    out = REPO / "bench/results/serve_hostile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for k, v in result.items():
        if k not in ("failures", "command"):
            print(f"| {k} | {v} |")
    for f in stats.failures:
        print("failure:", f)
    ok = result["wrong_answers"] == 0 and result["5xx"] == 0 and result["server_up"] and stuck == 0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
