#!/usr/bin/env python3
"""Data-stage benchmark (issue 3): sluice clean -> split -> normalize against the same operations
written in pandas and in Python Polars, plus the image normalize throughput.

Python 3.11 standard library only for the driver. The CSV generator and the pandas / Polars
reference pipelines run under `--ref-python` (a Python with numpy, pandas, polars and pyarrow).

    SLUICE=/tmp/bench3-target/release/sluice python3 bench/tables_bench.py \
        --ref-python /tmp/bench3-venv/bin/python --runs 3

Each tool runs end to end as its own process under `/usr/bin/time -f %M` (peak RSS, KiB); the
wall time is measured around that process. Tools alternate within each round (sluice, pandas,
polars, sluice, ...) so that load from other work on the machine hits them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

NUM = [f"x{i}" for i in range(8)]
CAT = ["color", "shape"]
LABEL = "label"

# ---------------------------------------------------------------------------------------------
# Generator (runs under the reference Python: numpy + polars)
GEN = r'''
import sys, numpy as np, polars as pl
rows, seed, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(seed)
base = int(rows / 1.01)                       # ~1 % of the final rows are duplicates
cols = {}
for i in range(8):
    v = rng.normal(50.0 + 10 * i, 5.0 + i, base)
    out = rng.random(base) < 0.002            # ~0.2 % gross outliers per column
    v[out] *= rng.choice([-4.0, 6.0], out.sum())
    v = np.round(v, 4)
    cols[f"x{i}"] = pl.Series(f"x{i}", v).set(pl.Series(rng.random(base) < 0.01), None)  # ~1 % missing
colors = np.array(["red", "green", "blue", "yellow", "purple"])
shapes = np.array(["circle", "square", "triangle"])
labels = np.array(["class_a", "class_b", "class_c"])
df = pl.DataFrame([
    *cols.values(),
    pl.Series("color", colors[rng.integers(0, 5, base)]),
    pl.Series("shape", shapes[rng.integers(0, 3, base)]),
    pl.Series("label", labels[rng.choice(3, base, p=[0.5, 0.3, 0.2])]),
])
dup_idx = np.sort(rng.choice(base, rows - base, replace=False))
df = pl.concat([df, df[dup_idx]])
perm = rng.permutation(rows)                   # scatter the duplicates through the file
df = df[perm]
df.write_csv(path)
'''

# ---------------------------------------------------------------------------------------------
# Shared helpers for the references: split assignment and .npy writing use numpy in both.
COMMON = r'''
import sys, os, numpy as np
NUM = [f"x{i}" for i in range(8)]
CAT = ["color", "shape"]
LABEL = "label"
RATIOS = (0.7, 0.15, 0.15)
NAMES = ("train", "val", "test")

def counts(n):
    exact = [n * r for r in RATIOS]
    c = [int(e) for e in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - c[i]), i))
    for i in order[: n - sum(c)]:
        c[i] += 1
    return c

def assign(labels_as_codes, n_classes, seed):
    """Stratified split: per class shuffle, cut by largest remainder; returns split id per row."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels_as_codes), np.int8)
    order = np.argsort(labels_as_codes, kind="stable")
    bounds = np.searchsorted(labels_as_codes[order], np.arange(n_classes + 1))
    for k in range(n_classes):
        idx = order[bounds[k]:bounds[k + 1]].copy()
        rng.shuffle(idx)
        c = counts(len(idx))
        out[idx[: c[0]]] = 0
        out[idx[c[0]: c[0] + c[1]]] = 1
        out[idx[c[0] + c[1]:]] = 2
    return out
'''

PANDAS = COMMON + r'''
import pandas as pd
src, outdir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
df = pd.read_csv(src, engine="pyarrow")
df = df.dropna()
df = df.drop_duplicates()
q1 = df[NUM].quantile(0.25); q3 = df[NUM].quantile(0.75); iqr = q3 - q1
lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
df = df[((df[NUM] >= lo) & (df[NUM] <= hi)).all(axis=1)].reset_index(drop=True)
classes = np.sort(df[LABEL].unique())
codes = np.searchsorted(classes, df[LABEL].to_numpy())
sid = assign(codes, len(classes), seed)
parts = {n: df[sid == i] for i, n in enumerate(NAMES)}
for n, p in parts.items():
    p.to_parquet(os.path.join(outdir, n + ".parquet"), compression="snappy", index=False)
tr = parts["train"]
mean = tr[NUM].mean(); std = tr[NUM].std(ddof=0).replace(0, 1)
cats = {c: np.sort(tr[c].unique()) for c in CAT}
tclasses = np.sort(tr[LABEL].unique())
for n, p in parts.items():
    feats = [((p[NUM] - mean) / std).to_numpy(np.float32)]
    for c in CAT:
        feats.append(pd.get_dummies(pd.Categorical(p[c], categories=cats[c])).to_numpy(np.float32))
    X = np.ascontiguousarray(np.hstack(feats), dtype=np.float32)
    y = np.searchsorted(tclasses, p[LABEL].to_numpy()).astype(np.int64)
    d = os.path.join(outdir, n); os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "features.npy"), X); np.save(os.path.join(d, "labels.npy"), y)
print(len(df), {n: len(p) for n, p in parts.items()}, X.shape[1])
'''

POLARS = COMMON + r'''
import polars as pl
src, outdir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
df = pl.read_csv(src)
df = df.drop_nulls()
df = df.unique(maintain_order=True, keep="first")
q = df.select([pl.col(c).quantile(0.25, "linear").alias(c + "_q1") for c in NUM]
              + [pl.col(c).quantile(0.75, "linear").alias(c + "_q3") for c in NUM]).row(0, named=True)
cond = pl.lit(True)
for c in NUM:
    q1, q3 = q[c + "_q1"], q[c + "_q3"]; r = q3 - q1
    cond = cond & pl.col(c).is_between(q1 - 1.5 * r, q3 + 1.5 * r)
df = df.filter(cond)
classes = np.sort(df[LABEL].unique().to_numpy())
codes = np.searchsorted(classes, df[LABEL].to_numpy())
sid = assign(codes, len(classes), seed)
df = df.with_columns(pl.Series("__s", sid))
parts = {n: df.filter(pl.col("__s") == i).drop("__s") for i, n in enumerate(NAMES)}
for n, p in parts.items():
    p.write_parquet(os.path.join(outdir, n + ".parquet"), compression="snappy")
tr = parts["train"]
st = tr.select([pl.col(c).mean().alias(c + "_m") for c in NUM]
               + [pl.col(c).std(ddof=0).alias(c + "_s") for c in NUM]).row(0, named=True)
cats = {c: sorted(tr[c].unique().to_list()) for c in CAT}
tclasses = sorted(tr[LABEL].unique().to_list())
for n, p in parts.items():
    exprs = [((pl.col(c) - st[c + "_m"]) / (st[c + "_s"] or 1.0)).cast(pl.Float32).alias(c) for c in NUM]
    for c in CAT:
        exprs += [(pl.col(c) == v).cast(pl.Float32).alias(f"{c}={v}") for v in cats[c]]
    X = p.select(exprs).to_numpy(order="c")
    y = p.select(pl.col(LABEL).replace_strict(tclasses, list(range(len(tclasses))), return_dtype=pl.Int64)).to_series().to_numpy()
    d = os.path.join(outdir, n); os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "features.npy"), X); np.save(os.path.join(d, "labels.npy"), y)
print(len(df), {n: len(p) for n, p in parts.items()}, X.shape[1])
'''

PIPELINE = """\
name: tables
params:
  seed: 42
stages:
  clean:
    uses: clean
    inputs: {{table: {csv}}}
    outputs: {{table: out/clean.parquet, report: out/clean.json}}
    with:
      missing: {{default: drop}}
      duplicates: drop
      outliers: {{columns: [{num}], method: iqr, k: 1.5, action: drop}}
  split:
    uses: split
    inputs: {{table: "${{{{ stages.clean.outputs.table }}}}"}}
    outputs: {{train: out/train.parquet, val: out/val.parquet, test: out/test.parquet, summary: out/split.json}}
    with:
      method: stratified
      label: label
      ratios: {{train: 0.7, val: 0.15, test: 0.15}}
      seed: ${{{{ params.seed }}}}
  normalize:
    uses: normalize
    inputs:
      train: "${{{{ stages.split.outputs.train }}}}"
      val: "${{{{ stages.split.outputs.val }}}}"
      test: "${{{{ stages.split.outputs.test }}}}"
    outputs: {{train: out/norm/train, val: out/norm/val, test: out/norm/test, preprocess: out/preprocess.json}}
    with:
      label: label
      numeric: {{default: zscore}}
      categorical: {{default: onehot}}
"""


def write_png(path, w, h, rgb_bytes):
    """A minimal 8-bit RGB PNG (stdlib zlib), filter type 0 on every row."""
    import struct, zlib
    raw = b"".join(b"\0" + rgb_bytes[y * w * 3:(y + 1) * w * 3] for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


SHIFT = [bytes((v + k) & 255 for v in range(256)) for k in range(256)]
QUARTER = [bytes((v // 4 + k) & 255 for v in range(256)) for k in range(256)]


def make_images(root, n, size, seed):
    """n PNGs (size x size RGB) in 10 class folders: smooth gradients plus noise, deterministic."""
    import random
    rng = random.Random(seed)
    for i in range(n):
        d = root / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        a, b = rng.randrange(1, 256), rng.randrange(256)
        base = bytes((x * a // size) & 255 for x in range(size) for _ in range(3))
        rows = []
        for y in range(size):
            off = (y * b // size) & 255
            if y % 3 == 0:                     # a noisy row every third row
                rows.append(rng.randbytes(size * 3).translate(QUARTER[off]))
            else:
                rows.append(base.translate(SHIFT[off]))
        px = b"".join(rows)
        write_png(d / f"{i:05d}.png", size, size, px)


IMAGE_PIPELINE = """\
name: images
stages:
  normalize:
    uses: normalize
    inputs: {{train: {folder}}}
    outputs: {{train: out/train, val: out/val, test: out/test, preprocess: out/preprocess.json}}
    with: {{size: [32, 32], color: rgb, filter: triangle}}
"""


def bench_images(sluice, work, n, size, runs, log):
    folder = work / "images"
    if not folder.exists():
        t0 = time.perf_counter()
        make_images(folder, n, size, 42)
        print(f"generated {n} {size}x{size} PNGs in {time.perf_counter() - t0:.0f} s", flush=True)
    walls = []
    for r in range(runs):
        d = work  # the folder must lie inside the workspace; start each run with no cache
        for x in (".sluice", "out"):
            shutil.rmtree(d / x, ignore_errors=True)
        (d / "sluice.yaml").write_text(IMAGE_PIPELINE.format(folder="images"))
        wall, rss, rc, tail = timed([sluice, "run", "sluice.yaml", "-q"], d, log)
        print(f"images run {r + 1}: {wall:.2f} s, {n / wall:,.0f} images/s, peak RSS {rss or 0:.0f} MiB, rc {rc}", flush=True)
        if rc:
            print(textwrap.indent(tail, "    "))
        else:
            walls.append(wall)
    if walls:
        print(f"images: median {statistics.median(walls):.2f} s = {n / statistics.median(walls):,.0f} images/s (end to end, incl. sluice start-up and hashing)")


def timed(cmd, cwd, log):
    """Run cmd under /usr/bin/time; return (wall s, peak RSS MiB, rc, tail of output)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "__RSS__ %M", *cmd], cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    rss = None
    lines = []
    for line in p.stdout.splitlines():
        if line.startswith("__RSS__ "):
            rss = int(line.split()[1]) / 1024
        else:
            lines.append(line)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\nrc={p.returncode} wall={wall:.2f}s rss={rss}MiB\n" + "\n".join(lines) + "\n")
    return wall, rss, p.returncode, "\n".join(lines[-20:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-python", default=sys.executable, help="Python with numpy, pandas, polars, pyarrow")
    ap.add_argument("--rows", type=int, default=11_600_000, help="CSV rows (11.6M is about 1.0 GB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", default=None, help="where the CSV and outputs go (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--tools", default="sluice,pandas,pandas_c,polars",
                    help="pandas: read_csv(engine='pyarrow'); pandas_c: read_csv() with its default C engine")
    ap.add_argument("--json", default=None)
    ap.add_argument("--images", type=int, default=0, help="also time normalize on N generated PNGs (0: skip)")
    ap.add_argument("--image-size", type=int, default=96)
    args = ap.parse_args()

    sluice = os.path.abspath(os.environ.get("SLUICE", "target/release/sluice"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tables-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    csv = work / "data.csv"
    if args.tools and not csv.exists():
        t0 = time.perf_counter()
        subprocess.run([args.ref_python, "-c", GEN, str(args.rows), str(args.seed), str(csv)], check=True)
        print(f"generated {csv} ({csv.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows) in {time.perf_counter() - t0:.0f} s", flush=True)
    (work / "pandas_ref.py").write_text(PANDAS)
    # pandas as most users write it: read_csv with its default C engine (the line above uses the
    # faster, multi-threaded pyarrow engine).
    (work / "pandas_c_ref.py").write_text(PANDAS.replace('pd.read_csv(src, engine="pyarrow")', "pd.read_csv(src)"))
    (work / "polars_ref.py").write_text(POLARS)

    if args.images:
        bench_images(sluice, work, args.images, args.image_size, args.runs, log)
    if not args.tools:
        return
    tools = args.tools.split(",")
    size_mib = csv.stat().st_size / 2**20
    with open(csv, "rb") as f:  # count the rows of the file actually used (it may predate --rows)
        args.rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b"")) - 1
    res = {t: [] for t in tools}
    for r in range(args.runs):
        for t in tools:
            d = work / f"run_{t}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            if t == "sluice":
                os.link(csv, d / "data.csv")   # inputs must lie inside the workspace; a hard link costs nothing
                (d / "sluice.yaml").write_text(PIPELINE.format(csv="data.csv", num=", ".join(NUM)))
                cmd = [sluice, "run", "sluice.yaml", "-q"]
            else:
                cmd = [args.ref_python, str(work / f"{t}_ref.py"), str(csv), str(d), str(args.seed)]
            wall, rss, rc, tail = timed(cmd, d, log)
            res[t].append({"wall_s": wall, "rss_mib": rss, "rc": rc, "tail": tail if rc else ""})
            print(f"run {r + 1} {t:7s} wall {wall:7.2f} s  peak RSS {rss or 0:7.0f} MiB  rc {rc}", flush=True)
            if rc:
                print(textwrap.indent(tail, "    "), flush=True)
            elif t == "sluice":
                print("    clean:", json.loads((d / "out/clean.json").read_text()).get("rows_out"), "rows", flush=True)
            else:
                print("    " + tail.strip().splitlines()[-1], flush=True)
            shutil.rmtree(d / "out", ignore_errors=True)

    print(f"\nCSV: {size_mib:.0f} MiB, {args.rows:,} rows; {args.runs} run(s) each, medians")
    print("| tool | wall (median) | peak RSS (max) | RSS / CSV |")
    print("|---|---|---|---|")
    med = {}
    for t in tools:
        ok = [x for x in res[t] if x["rc"] == 0]
        if not ok:
            print(f"| {t} | failed | | |")
            continue
        w = statistics.median(x["wall_s"] for x in ok)
        m = max(x["rss_mib"] for x in ok)
        med[t] = w
        print(f"| {t} | {w:.1f} s | {m:.0f} MiB | {m / size_mib:.2f}× |")
    if "sluice" in med:
        for t in ("pandas", "pandas_c", "polars"):
            if t in med:
                print(f"{t} / sluice wall: {med[t] / med['sluice']:.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "csv_mib": size_mib, "runs": res}, indent=1))
    if not args.keep and not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
