#!/usr/bin/env python3
"""Training benchmark: throughput of sluice's train worker (`python -m sluice_train`) against a
bare onnxruntime-training loop over the same artifacts and batches, and against a PyTorch eager
loop of the same network.

Python 3.11 standard library only for the driver. The worker and the bare loop run under
`--python` (the worker's venv: stages/python/requirements.txt); the PyTorch loop under
`--torch-python` (a Python with torch and numpy), skipped when not given.

    python3 bench/train_bench.py --python ~/.cache/sluice/python/cpu-<hash>/bin/python \
        --torch-python /tmp/torch-venv/bin/python --runs 3

Workloads: `digits-cnn` (the normalize stage's digits arrays, 1×32×32, conv 16-32, FC 64,
batch 32) and `iris-mlp` (iris, MLP [64], batch 16), both AdamW, no augmentation, shuffled.
Throughput is samples per second of the training phase of each epoch (forward, backward,
optimizer step; not validation or checkpoints), median over epochs 2.. of a run, then median
over runs. The worker's figure is the `samples_per_sec` of its history.json, timed from the
epoch's shuffle to its last optimizer step like the bare loop's; its overhead is
(bare - worker) / bare. The bare loop runs three times: training steps only, over artifacts
generated without weight decay; steps over the worker's own artifacts, whose training graph
decays the weights (not the biases) by the requested AdamW weight_decay, with the factor
1 - lr*weight_decay as an input; and steps with the worker's per-epoch validation pass and checkpoint between epochs (untimed, but it
leaves the next epoch starting with cold caches). The last two separate sluice's own cost from
that of the work it is asked to do. Two lean loops (without and with the decay) feed the steps
the way the worker does, through the module's binding with ORT tensors made once per run: the
documented `Module.__call__` converts every output by iterating ORT's output vector, ~40 µs a
step, which the worker skips; against them the worker's remaining cost shows. `--baseline-worker DIR` runs a second worker (another
checkout's stages/python) in every round, for A/B comparisons of worker changes. Wall is each process end to end (start-up, artifact reuse, validation and checkpoints for
the worker). Tools alternate within each round so that load from other work on the machine hits
them alike. PyTorch uses one intra-op thread per available core, as ONNX Runtime does.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "digits-cnn": {
        "data": "out/digits/normalized",
        "model": {"type": "cnn", "channels": [16, 32], "hidden": 64, "kernel": 3, "dropout": 0.0},
        "batch_size": 32,
        "lr": 0.003,
        "epochs": 4,
    },
    "iris-mlp": {
        "data": "out/iris/normalized",
        "model": {"type": "mlp", "hidden": [64], "activation": "relu", "dropout": 0.0},
        "batch_size": 16,
        "lr": 0.01,
        "epochs": 60,
    },
}

# The bare loop: what the worker does per batch, minus the protocol, checks and bookkeeping. With
# `full` it also does the worker's per-epoch work between epochs, outside the timed training
# phase: a validation pass (module.eval(), batches of 1024, module.train()) and a checkpoint with
# the optimizer state, each to a new file. That work leaves the caches cold for the next epoch's
# first batches, which on ~1 ms epochs (iris) is a visible share of the training phase itself.
WEIGHT_DECAY = 0.01

BARE_LOOP = f"WEIGHT_DECAY = {WEIGHT_DECAY}\n" + r"""
import json, os, sys, tempfile, time, types
import numpy as np
import onnxruntime as ort
pkg = types.ModuleType("onnxruntime.training")
pkg.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
sys.modules["onnxruntime.training"] = pkg
from onnxruntime.training import api

art, data, batch, epochs, lr, seed, threads, mode = sys.argv[1:9]
batch, epochs, lr, seed, full = int(batch), int(epochs), float(lr), int(seed), mode == "full"
# `decay`: `art` holds the worker's artifacts, whose training graph decays the weights in place
# (regularize.py) by the factor it takes as its last input; other modes get artifacts without.
decay = (np.array([1.0 - lr * WEIGHT_DECAY], dtype=np.float32),) if mode in ("decay", "lean-decay") else ()
# `lean`: the steps the way the worker feeds them (data.py `Feed`): the epoch's rows gathered into
# one buffer, ORT tensors made once over its batches, the module's binding called directly and
# only the loss converted. It skips Module.__call__'s conversion of every output, which iterates
# ORT's output vector (~40 µs a step); the other modes are the loop as the API documents it.
lean = mode.startswith("lean")
options = ort.SessionOptions()
options.intra_op_num_threads = int(threads)  # 0: ONNX Runtime's default, one per core (the worker's)
x = np.load(os.path.join(data, "train", "features.npy"))
y = np.load(os.path.join(data, "train", "labels.npy")).astype(np.int64)
vx = np.load(os.path.join(data, "val", "features.npy"))
vy = np.load(os.path.join(data, "val", "labels.npy")).astype(np.int64)
state = api.CheckpointState.load_checkpoint(os.path.join(art, "checkpoint"))
module = api.Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"),
                    session_options=options)
optimizer = api.Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
optimizer.set_learning_rate(lr)
module.train()
if lean:
    from onnxruntime import OrtValue
    from onnxruntime.capi.onnxruntime_pybind11_state import OrtValueVector
    xs, ys = np.empty_like(x), np.empty_like(y)
    keep = [OrtValue.ortvalue_from_numpy(a) for a in decay]
    vectors = []
    for start in range(0, len(x), batch):
        values = [OrtValue.ortvalue_from_numpy(xs[start:start + batch]),
                  OrtValue.ortvalue_from_numpy(ys[start:start + batch]), *keep[:len(decay)]]
        keep += values
        vector = OrtValueVector()
        for value in values:
            vector.push_back(value._ortvalue)
        vectors.append(vector)
    train_step = module._model.train_step_with_ort_values
scratch = tempfile.mkdtemp()
rates = []
for epoch in range(1, epochs + 1):
    started = time.monotonic()
    order = np.random.default_rng([seed, epoch]).permutation(len(x))
    if lean:
        np.take(x, order, axis=0, out=xs, mode="clip")
        np.take(y, order, axis=0, out=ys, mode="clip")
        for vector in vectors:
            fetches = OrtValueVector()
            train_step(vector, fetches)
            float(fetches[0].numpy())  # the loss, which the worker checks and sums
            optimizer.step()
            module.lazy_reset_grad()
    else:
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            module(x[idx], y[idx], *decay)
            optimizer.step()
            module.lazy_reset_grad()
    rates.append(len(x) / (time.monotonic() - started))
    if full:
        module.eval()
        for start in range(0, len(vx), 1024):
            module(vx[start:start + 1024], vy[start:start + 1024])
        module.train()
        path = os.path.join(scratch, f"epoch-{epoch}.ckpt")
        api.CheckpointState.save_checkpoint(state, path, include_optimizer_state=True)
        if epoch > 1:
            os.remove(os.path.join(scratch, f"epoch-{epoch - 1}.ckpt"))
for name in os.listdir(scratch):
    os.remove(os.path.join(scratch, name))
os.rmdir(scratch)
print(json.dumps(rates))
"""

# The same networks in PyTorch eager mode, same initial scheme, optimizer and batches.
TORCH_LOOP = r"""
import json, os, sys, time
import numpy as np
import torch
from torch import nn

kind, data, batch, epochs, lr, seed, threads = sys.argv[1:8]
batch, epochs, lr, seed = int(batch), int(epochs), float(lr), int(seed)
# By default one intra-op thread per core available, as ONNX Runtime's default pool has.
torch.set_num_threads(int(threads) or len(os.sched_getaffinity(0)))
torch.manual_seed(seed)
x = torch.from_numpy(np.load(os.path.join(data, "train", "features.npy")))
y = torch.from_numpy(np.load(os.path.join(data, "train", "labels.npy")).astype(np.int64))
k = int(y.max()) + 1
if kind == "digits-cnn":
    c, h, w = x.shape[1:]
    model = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), 64), nn.ReLU(), nn.Linear(64, k))
else:
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, k))
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
loss_fn = nn.CrossEntropyLoss()
model.train()
rates = []
for epoch in range(1, epochs + 1):
    started = time.monotonic()
    order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(x)))
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    rates.append(len(x) / (time.monotonic() - started))
print(json.dumps(rates))
"""


def request(work: Path, name: str, spec: dict, data: Path, cache: Path, run: int,
            weight_decay: float = WEIGHT_DECAY) -> dict:
    out = work / f"{name}-{run}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return {
        "protocol": 1, "stage": "train", "kind": "train", "workspace": str(work), "scratch": str(out),
        "inputs": {"train": str(data / "train"), "val": str(data / "val")},
        "outputs": {"model": str(out / "model.onnx"), "history": str(out / "history.json"), "artifacts": str(out / "artifacts")},
        "params": {}, "devices": {"gpus": []},
        "with": {
            "task": "classification", "classes": None, "model": spec["model"], "loss": "cross_entropy",
            "optimizer": {"type": "adamw", "lr": spec["lr"], "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": weight_decay},
            "schedule": {"warmup_epochs": 0.0, "decay": "constant"},
            "epochs": spec["epochs"], "batch_size": spec["batch_size"], "shuffle": True, "seed": 0,
            "augment": {"hflip": False, "crop_padding": 0, "rotate_degrees": 0.0}, "early_stopping": None,
        },
        "train": {"device": "cpu", "auto": False, "resume_dir": str(out / "resume"), "artifacts_cache": str(cache)},
    }


def run_worker(python: str, req: dict, worker: Path = ROOT / "stages" / "python") -> tuple[float, float, str]:
    """Runs the worker in `worker` (the directory holding sluice_train); returns (median
    samples/s over epochs 2.., wall seconds, artifact key prefix)."""
    env = {**os.environ, "PYTHONPATH": str(worker), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.run([python, "-m", "sluice_train"], input=json.dumps(req), capture_output=True, text=True,
                          cwd=req["workspace"], env=env)
    wall = time.monotonic() - started
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = messages[-1] if messages else {}
    if proc.returncode != 0 or result.get("status") != "ok":
        sys.exit(f"the worker failed ({proc.returncode}): {result.get('message')}\n{proc.stderr[-3000:]}")
    key = next(m["message"].split()[3] for m in messages if m["type"] == "log" and "training artifacts" in m["message"])
    with open(req["outputs"]["history"]) as f:
        rates = [e["samples_per_sec"] for e in json.load(f)["epochs"]]
    return statistics.median(rates[1:]), wall, key


def run_script(python: str, script: str, args: list) -> tuple[float, float]:
    started = time.monotonic()
    proc = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{python} loop failed:\n{proc.stderr[-3000:]}")
    rates = json.loads(proc.stdout.strip().splitlines()[-1])
    return statistics.median(rates[1:]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the worker's Python (onnxruntime-training, onnx, numpy)")
    parser.add_argument("--torch-python", help="a Python with torch and numpy; the PyTorch loop is skipped without it")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads of the bare loops and PyTorch (default: one per core, ONNX Runtime's "
                             "default and the worker's); other counts leave the worker out, as it always uses the default")
    parser.add_argument("--baseline-worker", type=Path,
                        help="another worker to compare in every round: a directory holding sluice_train (e.g. "
                             "`git archive main stages/python | tar -x -C /tmp/main`, then /tmp/main/stages/python)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-train-bench-"))
    cache = work / "artifacts-cache"
    try:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]
            data = ROOT / spec["data"]
            if not (data / "train" / "features.npy").exists():
                print(f"{name}: skipped, {data} is missing (run the data pipeline first)")
                continue
            loop_args = [spec["batch_size"], spec["epochs"], spec["lr"], 0, args.threads]
            # Warm-up: generates the artifacts once, so every timed run reuses them; and, from a
            # request without weight decay, artifacts without it for the plain bare loops.
            _, _, key = run_worker(args.python, request(work, name, spec, data, cache, 0))
            artifacts = next(p for p in cache.iterdir() if p.name.startswith(key))
            _, _, plain_key = run_worker(args.python, request(work, name, spec, data, cache, 0, weight_decay=0.0))
            plain = next(p for p in cache.iterdir() if p.name.startswith(plain_key))
            results: dict[str, list] = {"sluice worker": [], "baseline worker": [], "bare ORT loop": [],
                                        "bare + decay": [], "bare + val/ckpt": [], "lean ORT loop": [],
                                        "lean + decay": [], "PyTorch eager": []}
            for run in range(1, args.runs + 1):
                if not args.threads:
                    rate, wall, _ = run_worker(args.python, request(work, name, spec, data, cache, run))
                    results["sluice worker"].append((rate, wall))
                    if args.baseline_worker:
                        rate, wall, _ = run_worker(args.python, request(work, name, spec, data, cache, run),
                                                   args.baseline_worker)
                        results["baseline worker"].append((rate, wall))
                results["bare ORT loop"].append(run_script(args.python, BARE_LOOP, [plain, data, *loop_args, "steps"]))
                results["bare + decay"].append(run_script(args.python, BARE_LOOP, [artifacts, data, *loop_args, "decay"]))
                results["bare + val/ckpt"].append(run_script(args.python, BARE_LOOP, [plain, data, *loop_args, "full"]))
                results["lean ORT loop"].append(run_script(args.python, BARE_LOOP, [plain, data, *loop_args, "lean"]))
                results["lean + decay"].append(run_script(args.python, BARE_LOOP, [artifacts, data, *loop_args, "lean-decay"]))
                if args.torch_python:
                    results["PyTorch eager"].append(run_script(args.torch_python, TORCH_LOOP, [name, data, *loop_args]))
            threads = args.threads or f"{len(os.sched_getaffinity(0))} (one per core)"
            print(f"\n{name}: batch {spec['batch_size']}, {spec['epochs']} epochs, {args.runs} runs, medians; "
                  f"intra-op threads {threads}")
            print(f"  {'tool':<17} {'samples/s':>10} {'wall s':>8}")
            medians = {}
            for tool, rows in results.items():
                if rows:
                    medians[tool] = statistics.median(r[0] for r in rows)
                    print(f"  {tool:<17} {medians[tool]:>10.0f} {statistics.median(r[1] for r in rows):>8.2f}")
            # Two figures per comparison: the ratio of the medians, and the median of the ratios
            # within each round. The machine's speed drifts between rounds when other work runs on
            # it; tools of one round ran minutes apart at most, so the paired figure is the steadier.
            def compare(a: str, b: str) -> tuple[float, float]:
                paired = statistics.median(x[0] / y[0] for x, y in zip(results[a], results[b]))
                return medians[a] / medians[b], paired

            def overhead(worker: str, loop: str, words: str) -> None:
                of_medians, paired = compare(worker, loop)
                print(f"  worker overhead vs {words}: {100 * (1 - of_medians):+.1f}% (medians), {100 * (1 - paired):+.1f}% (paired)")

            def speed(a: str, b: str) -> None:
                of_medians, paired = compare(a, b)
                print(f"  {a} vs {b}: {of_medians:.2f}x the throughput (medians), {paired:.2f}x (paired)")

            if "PyTorch eager" in medians:
                speed("bare ORT loop", "PyTorch eager")
            if "sluice worker" in medians:
                overhead("sluice worker", "bare ORT loop", "the bare loop")
                overhead("sluice worker", "bare + decay", "the bare loop with the same weight decay")
                overhead("sluice worker", "bare + val/ckpt", "the bare loop with validation and checkpoints")
                overhead("sluice worker", "lean ORT loop", "the lean loop (the worker's way of feeding)")
                overhead("sluice worker", "lean + decay", "the lean loop with the same weight decay")
                if "PyTorch eager" in medians:
                    speed("sluice worker", "PyTorch eager")
            if "lean ORT loop" in medians:
                speed("lean ORT loop", "bare ORT loop")
            if "baseline worker" in medians:
                overhead("baseline worker", "bare ORT loop", "the bare loop (baseline worker)")
                overhead("baseline worker", "bare + decay", "the bare loop with the same weight decay (baseline worker)")
                speed("sluice worker", "baseline worker")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
