#!/usr/bin/env python3
"""Sweep benchmark for sluice (issue 16). Python 3.11+ and PyYAML.

Three parts; the grid part runs by default, `--scale` and `--prune` add the others (`--all`: all).

grid   The 16-trial grid of pipelines/iris-sweep.yaml (lr x hidden, 4 x 4), three ways, each cold
       (a fresh temporary copy of the workspace: no .sluice/, no outputs, no lock file):
         sweep       `sluice sweep pipelines/iris-sweep.yaml --jobs 2 --json`
         sequential  the same 16 assignments, in the sweep's order (first param outermost), as 16
                     `sluice run pipelines/iris-sweep.yaml evaluate --set lr=.. --set hidden=..`
                     one after the other. Up to `evaluate` because a sweep never runs deploy:
                     both do the same work (clean, split, normalize, then train + evaluate per
                     assignment).
         dvc         `dvc exp run --queue -S lr=.. -S hidden=..` x16, then `dvc queue start -j 2`,
                     waiting until `dvc queue status` shows nothing queued or running (polled
                     every 0.5 s), in a fresh git repository holding an equivalent dvc.yaml.
       The sweep's `--json` events give how many times each base stage ran (`stage_finished` with
       outcome `ran`; an instance `train@trial=3` counts for `train`): clean, split and normalize
       should run once, train and evaluate 16 times. The sequential runs are counted the same way;
       DVC's stages append their name to a log file outside the repository when they run.

       Why the DVC side is fair: every DVC stage runs the *same* sluice built-in stage on the same
       files (`sluice run stages/S.yaml --set ...`, where stages/S.yaml is the pipeline's stage S
       alone, its `${{ stages.X.outputs.Y }}` inputs replaced by the literal paths), so the ML work
       (Parquet, z-scores, ONNX Runtime training, evaluation) is byte for byte the same and only
       the orchestration differs: DVC decides what to run from deps/outs/params (params.yaml holds
       seed, lr, hidden; a stage lists only the params it uses, so clean/split/normalize do not
       depend on lr or hidden and DVC's run cache may skip them), runs each queued experiment in
       its own temporary copy of the repository, and caches outs in .dvc/cache: the costs it adds
       (its start-up per command, a repository copy per experiment, the queue's workers) are the
       costs of its design, which is what is compared. DVC is not handicapped by the wrapping
       either: the inner `sluice run` of one stage costs what a stage costs inside any sluice
       run (process start, hashing, caching a few small files: about 10 ms here), the same as in
       the sequential row. Experiments that fail (DVC's parallel workers can race on the run
       cache, treeverse/dvc#10673) are counted and reported; the wall time still covers the
       whole queue.

scale  Planning at scale (issue 16's targets): a generated 6-stage chain of `run:` stages whose
       last four read two swept params, with a random sweep of 1,000 trials: `sluice sweep P
       --dry-run` (expand, validate, plan; nothing runs), median of --scale-runs. And a
       1,000-instance `matrix:` stage (a, b, c each 1..10) of one cheap `run:` stage: after a cold
       run, the no-op rerun `sluice run P` (everything up to date), median of 10.

prune  A 64-trial random sweep on iris-sweep (lr loguniform 1e-3..0.3, hidden choice 8/16/32/64,
       seed 0), once with `--prune none` and once with `--prune median`, each in a fresh workspace
       (a shared cache would restore the second one's trials): epochs run (sum of results.json's
       `epochs`, or of the trial's history.json where results.json has none), the fraction
       saved, wall time, and whether the best trial is the same.

Wall time is measured around each child process (or the whole sequence of them). The Python
environment of the train stage (~/.cache/sluice) is installed beforehand and shared by all
(run `sluice setup` first); nothing else is warm.

Until `sluice sweep` exists in the binary, the sweep rows (and scale's sweep, and prune) are
skipped with a visible line, and the pipeline's `sweep:` section is cut from the workspace copy so
that the sequential and DVC rows still run.

    cargo build --release && python3 bench/sweep_bench.py --dvc .venv-dvc/bin/dvc
    python3 bench/sweep_bench.py --all --runs 3 --dvc .venv-dvc/bin/dvc
    SLUICE=/path/to/sluice python3 bench/sweep_bench.py --scale --no-grid

Prints a markdown table on stdout and writes the samples to bench/results/sweep-DATE-COMMIT.json
(or --json FILE).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    raise SystemExit("sweep_bench.py needs PyYAML (pip install pyyaml)")

REPO = Path(__file__).resolve().parent.parent
PIPELINE = "pipelines/iris-sweep.yaml"
DATA = "examples/data/iris.csv"
HISTORY = "out/iris-sweep/history.json"  # train's history in iris-sweep: one entry per epoch
RACY_WAIT_S = 2.2  # sluice's hash memo does not persist entries for files changed < 2 s ago


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def run(argv: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> tuple[float, str]:
    """Runs one child to completion; returns (wall seconds, stdout). Raises Failed on a non-zero
    exit when `check`, with the end of its stderr."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise Failed(f"`{' '.join(map(str, argv))}` exited {p.returncode}:\n{p.stderr[-3000:]}")
    return wall, p.stdout


def ran_per_base(stdout: str, into: Counter | None = None) -> Counter:
    """Counts `stage_finished` events with outcome `ran`, per base stage (the name before `@`)."""
    c = into if into is not None else Counter()
    for line in stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == "stage_finished" and ev.get("outcome") == "ran":
            c[ev["stage"].split("@", 1)[0]] += 1
    return c


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def strip_top_level(text: str, key: str) -> str:
    """The YAML text without the top-level section `key:` (up to the next top-level key)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        top = bool(line.strip()) and not line[0].isspace() and not line.startswith("#")
        if top:
            skipping = line.startswith(f"{key}:")
        if not skipping:
            out.append(line)
    return "".join(out)


def has_sweep(sluice: str) -> bool:
    return subprocess.run([sluice, "sweep", "--help"], capture_output=True).returncode == 0


def grid_assignments(pipeline_text: str) -> list[dict]:
    """The grid's trials in the design's order: cartesian product, first param outermost."""
    spec = yaml.safe_load(pipeline_text)["sweep"]
    names = list(spec["params"])
    lists = []
    for n in names:
        v = spec["params"][n]
        lists.append(v if isinstance(v, list) else v["choice"])
    return [dict(zip(names, combo)) for combo in itertools.product(*lists)]


def fmt_val(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def best_of(results: dict) -> dict | None:
    """The best trial of a results.json (none when no trial finished)."""
    for t in results["trials"]:
        if t["trial"] == results.get("best"):
            return {"trial": t["trial"], "params": t["params"], "metric": t["metric"]}
    return None


class Workspace:
    """A fresh temporary copy of what the iris-sweep pipeline reads."""

    def __init__(self, base: Path, tag: str, sweep_supported: bool):
        self.root = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=base))
        (self.root / "pipelines").mkdir()
        (self.root / "examples" / "data").mkdir(parents=True)
        shutil.copy(REPO / DATA, self.root / DATA)
        text = (REPO / PIPELINE).read_text()
        if not sweep_supported:
            text = strip_top_level(text, "sweep")
        (self.root / PIPELINE).write_text(text)

    def results(self) -> dict:
        """The sweep's results.json, each trial's `epochs` filled from its history.json where the
        sweep left it empty (it counts epochs from the curves it keeps for pruning only)."""
        found = sorted((self.root / ".sluice" / "sweeps").glob("*/results.json"))
        if len(found) != 1:
            raise Failed(f"expected one results.json under {self.root}/.sluice/sweeps, found {len(found)}")
        res = json.loads(found[0].read_text())
        for t in res["trials"]:
            history = found[0].parent / "trials" / str(t["trial"]) / HISTORY
            if t.get("epochs") is None and history.exists():
                t["epochs"] = len(json.loads(history.read_text()).get("epochs", []))
                t["epochs_from"] = "history.json"
        return res

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# grid


def bench_sweep(sluice: str, base: Path, jobs: int, runs: int, trials: int) -> dict:
    walls, counts, best = [], [], None
    for i in range(runs):
        ws = Workspace(base, "sweep", True)
        try:
            wall, out = run([sluice, "sweep", PIPELINE, "--jobs", str(jobs), "--json"], ws.root)
            c = ran_per_base(out)
            res = ws.results()
            states = Counter(t["state"] for t in res["trials"])
            if states.get("done") != trials:
                raise Failed(f"sweep run {i + 1}: trial states {dict(states)}, expected {trials} done")
            best = best_of(res)
        finally:
            ws.remove()
        walls.append(wall)
        counts.append(dict(c))
        log(f"sweep      run {i + 1}/{runs}: {wall:7.2f} s  ran {dict(c)}")
    return {"walls": walls, "median": median(walls), "ran": counts, "best": best}


def bench_sequential(sluice: str, base: Path, assignments: list[dict], runs: int,
                     sweep_supported: bool) -> dict:
    walls, counts = [], []
    for i in range(runs):
        ws = Workspace(base, "seq", sweep_supported)
        c: Counter = Counter()
        try:
            t0 = time.perf_counter()
            for a in assignments:
                argv = [sluice, "run", PIPELINE, "evaluate", "--json"]
                for k, v in a.items():
                    argv += ["--set", f"{k}={fmt_val(v)}"]
                _, out = run(argv, ws.root)
                ran_per_base(out, c)
            wall = time.perf_counter() - t0
        finally:
            ws.remove()
        walls.append(wall)
        counts.append(dict(c))
        log(f"sequential run {i + 1}/{runs}: {wall:7.2f} s  ran {dict(c)}")
    return {"walls": walls, "median": median(walls), "ran": counts}


def single_stage_pipelines(pipeline: dict) -> dict[str, dict]:
    """Each stage of `pipeline` (deploy excepted) as a pipeline of its own, its references to other
    stages' outputs replaced by the literal paths: what one DVC stage runs."""
    stages = pipeline["stages"]
    ref = re.compile(r"\$\{\{\s*stages\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}")

    def subst(v):
        if isinstance(v, str):
            return ref.sub(lambda m: stages[m.group(1)]["outputs"][m.group(2)], v)
        if isinstance(v, list):
            return [subst(x) for x in v]
        if isinstance(v, dict):
            return {k: subst(x) for k, x in v.items()}
        return v

    out = {}
    for name, spec in stages.items():
        if spec.get("uses") == "deploy":
            continue
        used = sorted(set(re.findall(r"params\.(\w+)", json.dumps(spec))))
        out[name] = {
            "name": f"dvc-{name}",
            "params": {p: pipeline["params"][p] for p in used},
            "stages": {name: subst(spec)},
        }
    return out


def write_dvc_repo(root: Path, sluice: str, dvc: str, runs_log: Path, pipeline_text: str) -> None:
    pipeline = yaml.safe_load(pipeline_text)
    (root / "examples" / "data").mkdir(parents=True)
    shutil.copy(REPO / DATA, root / DATA)
    (root / "stages").mkdir()
    dvc_stages = {}
    for name, single in single_stage_pipelines(pipeline).items():
        (root / "stages" / f"{name}.yaml").write_text(yaml.safe_dump(single, sort_keys=False))
        spec = single["stages"][name]
        params = list(single["params"])
        sets = " ".join(f"--set {p}=${{{p}}}" for p in params)
        entry = {
            "cmd": f"{sluice} run stages/{name}.yaml {sets} && echo {name} >> {runs_log}",
            "deps": [f"stages/{name}.yaml", *spec.get("inputs", {}).values()],
            "outs": list(spec["outputs"].values()),
        }
        if params:
            entry["params"] = params
        dvc_stages[name] = entry
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": dvc_stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(pipeline["params"], sort_keys=False))
    # sluice's own state in each experiment's copy; DVC tracks the outputs.
    (root / ".gitignore").write_text("/.sluice/\n/stages/*.lock\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    run(["git", "init", "-q"], root, env=env)
    run([dvc, "init", "-q"], root, env=env)
    run([dvc, "config", "core.analytics", "false"], root, env=env)
    run(["git", "add", "-A"], root, env=env)
    run(["git", "commit", "-q", "-m", "bench"], root, env=env)


def queue_state(dvc: str, root: Path, env: dict) -> Counter:
    """The tasks of `dvc queue status` per state, and `workers`: how many are active or idle."""
    _, out = run([dvc, "queue", "status"], root, env=env)
    c: Counter = Counter()
    for line in out.splitlines()[1:]:
        m = re.search(r"Worker status: (\d+) active, (\d+) idle", line)
        if m:
            c["workers"] = int(m.group(1)) + int(m.group(2))
            continue
        for s in ("Queued", "Running", "Success", "Failed"):
            if re.search(rf"\b{s}\b", line):
                c[s] += 1
    return c


def bench_dvc(sluice: str, dvc: str, base: Path, assignments: list[dict], runs: int, jobs: int,
              pipeline_text: str) -> dict:
    walls, run_walls, counts, failed = [], [], [], []
    # DVC's queue workers start `dvc` from PATH: put the one benchmarked first.
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost",
               PATH=f"{Path(dvc).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for i in range(runs):
        root = Path(tempfile.mkdtemp(prefix="dvc-", dir=base))
        runs_log = root.parent / f"{root.name}.runs"
        write_dvc_repo(root, sluice, dvc, runs_log, pipeline_text)
        try:
            t0 = time.perf_counter()
            for a in assignments:
                argv = [dvc, "exp", "run", "--queue", "-q"]
                for k, v in a.items():
                    argv += ["-S", f"{k}={fmt_val(v)}"]
                run(argv, root, env=env)
            t1 = time.perf_counter()
            run([dvc, "queue", "start", "-j", str(jobs)], root, env=env)
            idle_since = None
            while True:
                st = queue_state(dvc, root, env)
                if st["Queued"] == 0 and st["Running"] == 0 and st["Success"] + st["Failed"] >= len(assignments):
                    break
                # Workers that never came up (or died) leave tasks queued for ever.
                if st["workers"] == 0 and st["Running"] == 0:
                    idle_since = idle_since or time.perf_counter()
                    if time.perf_counter() - idle_since > 30:
                        raise Failed(f"dvc run {i + 1}: no queue worker for 30 s with {dict(st)}; "
                                     f"see `dvc queue logs` in {root}")
                else:
                    idle_since = None
                time.sleep(0.5)
            t2 = time.perf_counter()
            if st["Failed"]:
                # Not an error of the benchmark: DVC's parallel workers race on the shared run
                # cache (treeverse/dvc#10673). The wall time stands; the row says so.
                log(f"dvc        run {i + 1}: {st['Failed']} of {len(assignments)} experiments failed "
                    "(`dvc queue logs`: a parallel-worker race, treeverse/dvc#10673)")
            failed.append(st["Failed"])
        finally:
            subprocess.run([dvc, "queue", "stop"], cwd=root, capture_output=True, env=env)
        c = Counter(runs_log.read_text().split()) if runs_log.exists() else Counter()
        shutil.rmtree(root, ignore_errors=True)
        runs_log.unlink(missing_ok=True)
        walls.append(t2 - t0)
        run_walls.append(t2 - t1)
        counts.append(dict(c))
        log(f"dvc        run {i + 1}/{runs}: {t2 - t0:7.2f} s (queueing {t1 - t0:.2f} s)  ran {dict(c)}")
    return {"walls": walls, "median": median(walls), "queue_run_walls": run_walls,
            "queue_run_median": median(run_walls), "ran": counts, "failed": failed}


def part_grid(args, base: Path, sweep_supported: bool) -> dict:
    text = (REPO / PIPELINE).read_text()
    assignments = grid_assignments(text)
    res: dict = {"assignments": assignments, "jobs": args.jobs}
    if sweep_supported:
        res["sweep"] = bench_sweep(args.sluice, base, args.jobs, args.runs, len(assignments))
    else:
        log("sweep: skipped: this sluice has no `sweep` command")
    if args.runs_sequential:
        res["sequential"] = bench_sequential(args.sluice, base, assignments, args.runs_sequential,
                                             sweep_supported)
    if args.dvc:
        res["dvc"] = bench_dvc(args.sluice, args.dvc, base, assignments, args.dvc_runs, args.jobs,
                               text if sweep_supported else strip_top_level(text, "sweep"))
    else:
        log("dvc: skipped: no --dvc (python3 -m venv .venv-dvc && .venv-dvc/bin/pip install dvc)")
    return res


# --------------------------------------------------------------------------------------------
# scale

SCALE_PIPELINE = """\
name: sweep-scale
params: {x: 0.5, y: 3}
sweep:
  method: random
  trials: 1000
  seed: 0
  params:
    x: {uniform: [0.0, 1.0]}
    y: {int: [1, 1000000]}
  metric: s6.score  # only planned: no trial runs, so no metric is read
stages:
  s1: {run: 'echo 1 > ${{ outputs.o }}', outputs: [o]}
  s2: {run: 'cat ${{ stages.s1.outputs.o }} > ${{ outputs.o }}', outputs: [o]}
"""

MATRIX_PIPELINE = """\
name: matrix-scale
stages:
  cell:
    matrix: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
    run: 'echo $((${{ matrix.a }} * 100 + ${{ matrix.b }} * 10 + ${{ matrix.c }})) > ${{ outputs.o }}'
    outputs: [o]
"""


def scale_pipeline() -> str:
    text = SCALE_PIPELINE
    for i in range(3, 7):
        text += (f"  s{i}: {{run: 'echo ${{{{ params.x }}}} ${{{{ params.y }}}} | cat - "
                 f"${{{{ stages.s{i - 1}.outputs.o }}}} > ${{{{ outputs.o }}}}', outputs: [o]}}\n")
    return text


def part_scale(args, base: Path, sweep_supported: bool) -> dict:
    res: dict = {}
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=base))
    try:
        if sweep_supported:
            (root / "sweep.yaml").write_text(scale_pipeline())
            walls = []
            try:
                for _ in range(args.scale_runs):
                    wall, out = run([args.sluice, "sweep", "sweep.yaml", "--dry-run"], root)
                    # A plan of fewer trials (a spec misread) would time the wrong thing.
                    if not re.search(r"\b1000 trial", out):
                        raise Failed(f"the dry run does not plan 1000 trials:\n{out[:2000]}")
                    walls.append(wall)
                res["sweep_dry_run"] = {"trials": 1000, "stages": 6, "walls": walls, "median": median(walls)}
                log(f"scale: 1,000-trial sweep --dry-run: median {median(walls) * 1000:.0f} ms")
            except Failed as e:
                # The matrix half does not depend on it: report and go on.
                log(f"scale: sweep --dry-run failed: {e}")
                res["sweep_dry_run"] = {"error": str(e)}
        else:
            log("scale: sweep --dry-run skipped: this sluice has no `sweep` command")
        (root / "matrix.yaml").write_text(MATRIX_PIPELINE)
        wall, out = run([args.sluice, "run", "matrix.yaml", "--json"], root, check=False)
        cold_ran = sum(ran_per_base(out).values())
        if cold_ran != 1000:
            log(f"scale: matrix cold run ran {cold_ran} instances, expected 1000; skipped "
                "(does this sluice know `matrix:`?)")
            return res
        time.sleep(RACY_WAIT_S)
        _, out = run([args.sluice, "run", "matrix.yaml", "--json"], root)
        if sum(ran_per_base(out).values()) != 0:
            raise Failed("the matrix's first rerun ran stages")
        walls = [run([args.sluice, "run", "matrix.yaml"], root)[0] for _ in range(10)]
        res["matrix_noop"] = {"instances": 1000, "cold": wall, "walls": walls, "median": median(walls)}
        log(f"scale: 1,000-instance matrix no-op rerun: median {median(walls) * 1000:.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------------
# prune


def part_prune(args, base: Path, sweep_supported: bool) -> dict:
    if not sweep_supported:
        log("prune: skipped: this sluice has no `sweep` command")
        return {}
    res: dict = {"trials": 64}
    for rule in ("none", "median"):
        ws = Workspace(base, f"prune-{rule}", True)
        try:
            wall, _ = run([args.sluice, "sweep", PIPELINE, "--method", "random", "--trials", "64",
                           "--seed", "0", "--param", "lr=loguniform:0.001,0.3",
                           "--param", "hidden=choice:8,16,32,64", "--prune", rule,
                           "--jobs", str(args.jobs)], ws.root)
            r = ws.results()
        finally:
            ws.remove()
        states = Counter(t["state"] for t in r["trials"])
        res[rule] = {"wall": wall, "epochs": sum(t.get("epochs") or 0 for t in r["trials"]),
                     "states": dict(states), "best": best_of(r)}
        log(f"prune {rule:6}: {wall:7.2f} s  epochs {res[rule]['epochs']}  states {dict(states)}")
    n, m = res["none"], res["median"]
    res["epochs_saved"] = 1 - m["epochs"] / n["epochs"] if n["epochs"] else None
    res["same_best"] = n["best"] is not None and m["best"] is not None and n["best"]["trial"] == m["best"]["trial"]
    return res


# --------------------------------------------------------------------------------------------
# report


def s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def span(xs: list[int]) -> str:
    """`3`, or `1-2` when the runs differed."""
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def render(res: dict) -> str:
    lines = [f"sluice {res['meta']['sluice']}; dvc {res['meta']['dvc']}; {res['meta']['cpus']} CPUs; "
             f"{res['meta']['date']}", ""]
    g = res.get("grid")
    if g:
        sw, sq, dv = g.get("sweep"), g.get("sequential"), g.get("dvc")
        lines += ["### 16-trial grid on iris-sweep (lr x hidden), cold", "",
                  "| how | runs | wall (median) | vs sweep | clean/split/normalize/train/evaluate ran (per run) |",
                  "|---|---|---|---|---|"]
        order = ["clean", "split", "normalize", "train", "evaluate"]
        base = sw["median"] if sw else None
        for name, r, label in (("sweep", sw, f"`sluice sweep --jobs {g['jobs']}`"),
                               ("sequential", sq, "16 x `sluice run --set` (one after another)"),
                               ("dvc", dv, f"16 x `dvc exp run --queue` + `dvc queue start -j {g['jobs']}`")):
            if not r:
                lines.append(f"| {label} | - | skipped | - | - |")
                continue
            ran = "/".join(span([c.get(k, 0) for c in r["ran"]]) for k in order)
            lines.append(f"| {label} | {len(r['walls'])} | {s(r['median'])} | {ratio(r['median'], base)} | {ran} |")
        if dv:
            lines += ["", f"DVC queue alone (after the 16 `dvc exp run --queue` calls): {s(dv['queue_run_median'])}."]
            if any(dv.get("failed", [])):
                lines.append(f"DVC experiments failed per run: {dv['failed']} (parallel workers racing on the "
                             "run cache, treeverse/dvc#10673).")
        if sq and dv:
            lines += [f"DVC / sequential sluice: {ratio(dv['median'], sq['median'])}."]
        if sw and sw.get("best"):
            lines += [f"Best trial: {sw['best']}."]
        lines.append("")
    sc = res.get("scale")
    if sc:
        lines += ["### Scale", "", "| what | median | target |", "|---|---|---|"]
        if "median" in sc.get("sweep_dry_run", {}):
            lines.append(f"| `sluice sweep --dry-run`, 1,000 random trials, 6 stages | {ms(sc['sweep_dry_run']['median'])} | < 1 s |")
        if "matrix_noop" in sc:
            lines.append(f"| no-op `sluice run`, 1,000-instance matrix | {ms(sc['matrix_noop']['median'])} | < 100 ms |")
            lines.append(f"| (its cold run: 1,000 `sh` processes) | {s(sc['matrix_noop']['cold'])} | |")
        lines.append("")
    p = res.get("prune")
    if p:
        lines += ["### Pruning: 64-trial random sweep on iris-sweep", "",
                  "| prune | wall | epochs run | states | best trial |", "|---|---|---|---|---|"]
        for rule in ("none", "median"):
            r = p[rule]
            b = r["best"]
            best = "-" if b is None else f"{b['trial']} {b['params']} {b['metric']}"
            lines.append(f"| {rule} | {s(r['wall'])} | {r['epochs']} | {r['states']} | {best} |")
        saved = p["epochs_saved"]
        lines += ["", f"Epochs saved: {'-' if saved is None else f'{saved:.0%}'}; "
                      f"same best trial: {'yes' if p['same_best'] else 'no'}.", ""]
    return "\n".join(lines)


def version_of(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sluice", default=os.environ.get("SLUICE", str(REPO / "target" / "release" / "sluice")))
    ap.add_argument("--dvc", default="", help="the dvc executable (e.g. .venv-dvc/bin/dvc); without it DVC is skipped")
    ap.add_argument("--runs", type=int, default=3, help="cold runs of the sweep (median)")
    ap.add_argument("--runs-sequential", type=int, default=None, help="cold runs of the 16 sequential runs (default: --runs; 0 skips)")
    ap.add_argument("--dvc-runs", type=int, default=1, help="cold runs of DVC's queue (several minutes each)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-grid", action="store_true", help="skip the 16-trial grid")
    ap.add_argument("--scale", action="store_true", help="planning a 1,000-trial sweep; no-op rerun of a 1,000-instance matrix")
    ap.add_argument("--scale-runs", type=int, default=10)
    ap.add_argument("--prune", action="store_true", help="64 random trials with and without `prune: median`")
    ap.add_argument("--all", action="store_true", help="grid, scale and prune")
    ap.add_argument("--note", default="", help="a line saved with the samples (which binary, what else ran)")
    ap.add_argument("--json", type=Path, default=None, help="where to save the samples (default bench/results/sweep-DATE-COMMIT.json)")
    args = ap.parse_args()
    if args.runs_sequential is None:
        args.runs_sequential = args.runs
    if args.all:
        args.scale = args.prune = True
    if not os.access(args.sluice, os.X_OK):
        raise SystemExit(f"no sluice binary at {args.sluice}: cargo build --release, or SLUICE=path")
    if args.dvc and not shutil.which(args.dvc):
        log(f"dvc: skipped: {args.dvc} is not an executable")
        args.dvc = ""
    args.dvc = str(Path(shutil.which(args.dvc)).resolve()) if args.dvc else ""
    args.sluice = str(Path(args.sluice).resolve())

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    today = _dt.date.today().isoformat()
    res: dict = {"meta": {"date": today, "commit": commit, "cpus": os.cpu_count(),
                          "platform": platform.platform(), "sluice": version_of([args.sluice, "--version"]),
                          "sluice_path": args.sluice,
                          "dvc": version_of([args.dvc, "--version"]) if args.dvc else "not installed",
                          "argv": sys.argv[1:], "note": args.note}}
    sweep_supported = has_sweep(args.sluice)
    base = Path(tempfile.mkdtemp(prefix="sluice-sweep-bench-"))
    try:
        if not args.no_grid:
            res["grid"] = part_grid(args, base, sweep_supported)
        if args.scale:
            res["scale"] = part_scale(args, base, sweep_supported)
        if args.prune:
            res["prune"] = part_prune(args, base, sweep_supported)
    except Failed as e:
        # The temporary workspaces stay for a look (dvc queue logs, .sluice/logs).
        raise SystemExit(f"error: {e}\n(workspaces kept under {base})")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    shutil.rmtree(base, ignore_errors=True)
    out = args.json or REPO / "bench" / "results" / f"sweep-{today}-{commit}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(render(res))
    log(f"samples: {out}")


if __name__ == "__main__":
    main()
