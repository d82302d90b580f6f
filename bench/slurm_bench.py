#!/usr/bin/env python3
"""sluice on Slurm next to Snakemake's Slurm executor plugin (issue 17; Python 3.11+, stdlib only).

Runs on the local test cluster (tests/slurm/start.sh). Two pipelines, each cold (fresh workspace,
nothing cached) and timed end to end around a fresh child process:

  layered  N short `run:` stages (default 100) in layers of width ceil(sqrt(N)), each reading two
           stages of the layer above; the generator of bench/runner_bench.py, so the same DAG and
           the same one-line shell command per stage
  iris     pipelines/iris.yaml (clean, split, normalize, train, evaluate, deploy)

Tools:
  sluice-local   `sluice run`
  sluice-slurm   `sluice run --executor slurm` (skipped, with a visible line, where this sluice
                 does not have the flag)
  snakemake-slurm  Snakemake 9 with snakemake-executor-plugin-slurm on an equivalent Snakefile:
                 for layered the one wildcard rule of bench/runner_bench.py; for iris one rule per
                 stage whose job is `sluice run iris.yaml STAGE` (the same work; the upstream
                 stages are already up to date there). Run with the flags a fair user sets on a
                 cluster without accounting (FAIR_FLAGS below): status by squeue (the default,
                 sacct, never sees a job finish when accounting storage is disabled), first
                 status check after 1 s instead of 40 s, status every 1 s instead of 10 s.
  snakemake-slurm-defaults  (--smk-defaults) the plugin's defaults, bounded by --smk-timeout: on
                 this cluster it never registers a completion (status by sacct fails).
  snakemake-slurm-squeue-only  (--smk-defaults) the defaults but `--slurm-status-command squeue`:
                 what the 40 s first wait and the 10 s status interval cost.

Snakemake is run from a virtual environment (--snakemake, default .venv-snakemake/bin/snakemake);
create it with
    python3 -m venv .venv-snakemake && .venv-snakemake/bin/pip install 'snakemake>=9,<10' snakemake-executor-plugin-slurm

    cargo build && tests/slurm/start.sh && python3 bench/slurm_bench.py [--runs 3] [--only layered]

Prints a markdown table (medians of --runs, ratios to sluice-slurm, or to sluice-local where
sluice-slurm is skipped) and writes JSON to bench/results/slurm-<date>.json (or --json FILE).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_bench as rb  # noqa: E402  (the DAG generator and its Snakefile writer)

# Before the target: --default-resources takes every following word.
FAIR_FLAGS = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
    "--slurm-no-account",
    "--default-resources", "slurm_partition=debug", "runtime=10", "mem_mb=256",
]
IRIS_STAGES = ["clean", "split", "normalize", "train", "evaluate", "deploy"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(argv: list[str], cwd: Path, timeout: float, logfile: Path) -> tuple[float, int]:
    """Wall seconds and exit code of one child (its whole process group killed at the timeout)."""
    with open(logfile, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
        return time.perf_counter() - t0, rc


def queued() -> dict[str, str]:
    """Job id -> job name of everything in the queue."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def scancel_ours(before: dict[str, str]) -> None:
    """Leave nothing of a killed run in the queue (a timed-out Snakemake leaves its jobs).

    Only jobs that appeared during the run and are not another sluice's (others test against
    the same cluster): Snakemake names its jobs by its run's UUID, sluice by `sluice:PIPELINE:`."""
    mine = [i for i, name in queued().items() if i not in before
            and (not name.startswith("sluice:") or name.startswith(("sluice:bench-", "sluice:iris:")))]
    if mine:
        subprocess.run(["scancel", *mine], capture_output=True)


# --------------------------------------------------------------------------------------------
# Workspaces


def ws_layered(root: Path, n: int) -> None:
    dag = rb.gen_layered(n)
    rb.write_inputs(dag, root)
    rb.write_sluice(dag, root)
    rb.write_snakefile(dag, root)
    (root / "out").mkdir(exist_ok=True)


def ws_iris(root: Path, _n: int) -> None:
    (root / "examples/data").mkdir(parents=True)
    shutil.copy(REPO / "examples/data/iris.csv", root / "examples/data/iris.csv")
    shutil.copy(REPO / "pipelines/iris.yaml", root / "sluice.yaml")
    rules = ["rule all:", "    input: 'out/iris/deployed.json'", ""]
    # Each rule's output is the stage's JSON/ONNX file that the next rule reads; the job runs the
    # stage through sluice itself, so the work done is the same as in the sluice runs.
    files = {"clean": "out/iris/clean.json", "split": "out/iris/split.json",
             "normalize": "out/iris/preprocess.json", "train": "out/iris/model.onnx",
             "evaluate": "out/iris/metrics.json", "deploy": "out/iris/deployed.json"}
    prev = "examples/data/iris.csv"
    for s in IRIS_STAGES:
        rules += [f"rule {s}:", f"    input: '{prev}'", f"    output: '{files[s]}'",
                  f"    shell: '{SLUICE} run sluice.yaml {s} --no-wait >/dev/null'", ""]
        prev = files[s]
    (root / "Snakefile").write_text("\n".join(rules))


PIPELINES = {"layered": ws_layered, "iris": ws_iris}


def complete(pipe: str, root: Path, n: int) -> bool:
    """Every final output is there (a run that exits 0 without them does not count)."""
    if pipe == "layered":
        return all((root / f"out/s{i}.txt").is_file() for i in range(n))
    return (root / "out/iris/deployed.json").is_file() and (root / "out/iris/metrics.json").is_file()


# --------------------------------------------------------------------------------------------


def has_executor_flag(sluice: str) -> bool:
    r = subprocess.run([sluice, "run", "--help"], capture_output=True, text=True)
    return "--executor" in r.stdout


def tools(args) -> dict[str, list[str] | str]:
    """name -> argv, or name -> the reason it is skipped."""
    t: dict[str, list[str] | str] = {"sluice-local": [SLUICE, "run", "sluice.yaml"]}
    t["sluice-slurm"] = ([SLUICE, "run", "sluice.yaml", "--executor", "slurm"] if has_executor_flag(SLUICE)
                         else f"`{SLUICE} run --executor slurm` is refused (no Slurm executor in this build)")
    smk = args.snakemake
    if not smk or not os.access(smk, os.X_OK):
        t["snakemake-slurm"] = f"no snakemake at {smk!r} (see the docstring to create the venv)"
    else:
        t["snakemake-slurm"] = [smk, "--executor", "slurm", "--jobs", "100", *FAIR_FLAGS, "--quiet", "all"]
        if args.smk_defaults:
            # The plugin's defaults (status by sacct, first check after 40 s, then every 10 s), and
            # the same with only the status command switched, the least a user here must change.
            t["snakemake-slurm-defaults"] = [smk, "--executor", "slurm", "--jobs", "100", "--quiet", "all"]
            t["snakemake-slurm-squeue-only"] = [smk, "--executor", "slurm", "--jobs", "100",
                                                "--slurm-status-command", "squeue", "--quiet", "all"]
    return t


def main() -> None:
    global SLUICE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", default=os.environ.get("SLUICE", str(REPO / "target/debug/sluice")))
    ap.add_argument("--snakemake", default=str(REPO / ".venv-snakemake/bin/snakemake"))
    ap.add_argument("--runs", type=int, default=3, help="runs per tool and pipeline (median reported)")
    ap.add_argument("--stages", type=int, default=100, help="stages of the layered pipeline")
    ap.add_argument("--only", default="layered,iris", help="comma-separated: layered, iris")
    ap.add_argument("--tools", default="", help="comma-separated subset of the tools")
    ap.add_argument("--smk-defaults", action="store_true", help="also Snakemake with the plugin's defaults")
    ap.add_argument("--smk-timeout", type=float, default=1800, help="seconds before a Snakemake run is killed")
    ap.add_argument("--json", default="", help="JSON output (default bench/results/slurm-DATE.json)")
    args = ap.parse_args()
    SLUICE = str(Path(args.sluice).resolve())
    if not os.access(SLUICE, os.X_OK):
        raise SystemExit(f"no sluice at {SLUICE} (cargo build, or --sluice)")
    if subprocess.run([str(REPO / "tests/slurm/start.sh"), "--check"]).returncode != 0:
        raise SystemExit("the test cluster is not up: tests/slurm/start.sh (as root) first")

    ts = tools(args)
    if args.tools:
        keep = set(args.tools.split(","))
        ts = {k: v for k, v in ts.items() if k in keep}
    rows = []
    base = Path(tempfile.mkdtemp(prefix="sluice-slurm-bench-"))
    for pipe in args.only.split(","):
        for tool, argv in ts.items():
            if isinstance(argv, str):
                print(f"SKIPPED: {tool} on {pipe}: {argv}", flush=True)
                rows.append({"pipeline": pipe, "tool": tool, "skipped": argv})
                continue
            walls, rcs = [], []
            for i in range(args.runs):
                ws = base / f"{pipe}-{tool}-{i}"
                ws.mkdir()
                PIPELINES[pipe](ws, args.stages)
                timeout = args.smk_timeout if tool.startswith("snakemake") else 1800
                before = queued()
                wall, rc = timed(argv, ws, timeout, ws / "bench.log")
                if rc == 0 and not complete(pipe, ws, args.stages):
                    rc = -1  # exited 0 without its outputs: not a valid run
                if rc != 0:
                    scancel_ours(before)
                log(f"{pipe:8} {tool:26} run {i + 1}/{args.runs}: {wall:7.2f} s rc={rc}"
                    + ("" if rc == 0 else f" (log: {ws / 'bench.log'})"))
                walls.append(wall)
                rcs.append(rc)
            ok = [w for w, rc in zip(walls, rcs) if rc == 0]
            rows.append({"pipeline": pipe, "tool": tool, "argv": argv[1:], "walls_s": walls, "rcs": rcs,
                         "median_s": statistics.median(ok) if ok else None,
                         "failed": sum(rc != 0 for rc in rcs)})

    meta = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": os.uname().nodename, "cpus": os.cpu_count(), "runs": args.runs, "stages": args.stages,
            "sluice": SLUICE,
            "snakemake": subprocess.run([args.snakemake, "--version"], capture_output=True, text=True).stdout.strip()
            if os.access(args.snakemake, os.X_OK) else None,
            "slurm": subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip(),
            "snakemake_fair_flags": FAIR_FLAGS}
    print(markdown(rows, meta))
    out = Path(args.json) if args.json else REPO / "bench/results" / f"slurm-{meta['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    log(f"wrote {out}")
    if all(r.get("failed", 0) == 0 for r in rows):
        shutil.rmtree(base, ignore_errors=True)
    else:
        log(f"kept {base} for the logs of the failed runs")


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Slurm: {meta['slurm']}, single node ({meta['cpus']} CPUs); Snakemake {meta['snakemake']}; "
             f"median of {meta['runs']} cold runs.", "",
             "| pipeline | tool | median wall | runs failed | × sluice-slurm (or local) |", "|---|---|---|---|---|"]
    for pipe in dict.fromkeys(r["pipeline"] for r in rows):
        mine = {r["tool"]: r for r in rows if r["pipeline"] == pipe}
        ref = next((mine[t]["median_s"] for t in ("sluice-slurm", "sluice-local")
                    if t in mine and mine[t].get("median_s")), None)
        for t, r in mine.items():
            if "skipped" in r:
                lines.append(f"| {pipe} | {t} | skipped | | |")
                continue
            m = r["median_s"]
            ratio = f"{m / ref:.1f}×" if m and ref else ""
            lines.append(f"| {pipe} | {t} | {f'{m:.2f} s' if m else 'failed'} | {r['failed']}/{len(r['rcs'])} | {ratio} |")
    return "\n".join(lines)


SLUICE = ""
if __name__ == "__main__":
    main()
