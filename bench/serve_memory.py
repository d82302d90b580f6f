#!/usr/bin/env python3
"""Memory of `sluice serve` for one large valid request, sent `--requests` times: the server's
VmHWM (peak) and VmRSS (resident, 0.5 s after each answer) from /proc, next to the body and
answer sizes. The default is the issue's case: 3.3 million iris rows as JSON, a 53 MB body.

    cargo build --release
    python3 bench/serve_memory.py [--sluice target/release/sluice] [--rows 3300000] [--output json|binary] [--requests 8]
"""

import argparse
import http.client
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=str(REPO / "target/release/sluice"))
    ap.add_argument("--rows", type=int, default=3_300_000)
    ap.add_argument("--output", choices=["json", "binary"], default="json")
    ap.add_argument("--requests", type=int, default=8)
    args = ap.parse_args()
    sluice = str(Path(args.sluice).resolve())
    ws = Path(tempfile.mkdtemp(prefix="serve-memory-"))
    for rel in ["examples/data/iris.csv", "pipelines/iris.yaml"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, ws / rel)
    subprocess.run([sluice, "run", "pipelines/iris.yaml"], cwd=ws, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([sluice, "-q", "serve", "models", "--addr", "127.0.0.1:0"], cwd=ws,
                              stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if line.startswith("listening on http://"):
                host, port = line.strip()[len("listening on http://"):].rsplit(":", 1)
                break

        def mb():
            text = Path(f"/proc/{server.pid}/status").read_text()
            return {k: int(re.search(k + r":\s+(\d+)", text).group(1)) // 1024
                    for k in ("VmHWM", "VmRSS")}

        n = args.rows
        body = '{"inputs":[' + ",".join(
            '{"name":"%s","shape":[%d],"datatype":"FP64","data":[%s]}' % (c, n, ",".join([v] * n))
            for c, v in zip(COLUMNS, ["5.1", "3.5", "1.4", "0.2"])) + "]"
        if args.output == "binary":
            body += ',"parameters":{"binary_data_output":true}'
        body = (body + "}").encode()
        print(f"body {len(body) / 1e6:.1f} MB; before: {mb()}")
        for i in range(args.requests):
            conn = http.client.HTTPConnection(host, int(port), timeout=600)
            conn.request("POST", "/v2/models/iris/infer", body)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            # The server gives memory back once the answer is sent, just after the client has it.
            time.sleep(0.5)
            print(f"request {i + 1}: {r.status}, answer {len(data) / 1e6:.1f} MB; {mb()}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
