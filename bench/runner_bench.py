#!/usr/bin/env python3
"""Runner-core benchmark for sluice (Python 3.11+, standard library only).

Generates pipelines of trivial `run:` stages in three shapes and times `sluice run` on them:

  chain    s0 <- s1 <- ... : every stage reads the previous stage's output (s0 reads in/c0.txt)
  wide     N independent stages; stage i reads in/shared.txt and its own in/w{i}.txt
  layered  layers of width ceil(sqrt(N)); a stage reads stages j and j+1 (mod width) of the
           layer above; layer 0 reads in/l{j}.txt

Every stage is one `sh -c` of shell builtins only (`read`, `$((..))`, `echo`), writing a number
that depends on everything it read, so a changed input really propagates downstream, nothing
short-circuits on equal content, and no stage's work is more than a process spawn.

Scenarios, per shape and size: cold (empty workspace: no lock, no cache, no outputs), the first
no-op rerun right after it, the steady no-op rerun (everything up to date, hash memo settled),
and the rerun after one input changes:
  chain    in/c0.txt changes            -> all N stages rerun
  wide     in/w{N/2}.txt changes        -> 1 stage reruns (N-1 checked)
  wide     in/shared.txt changes        -> all N rerun ("wide-shared", sizes <= --shared-max)
  layered  in/l0.txt changes            -> the cone below l0 reruns (about half the stages)
Each sluice run's JSON events are parsed to check that exactly the expected stages ran.

Wall time is measured around a fresh child process per run. Peak RSS is per run too, reported by
GNU time wrapped around the command (the largest of sluice and the processes it waited for; in
practice sluice itself); see run_timed for why not os.wait4's own figure.

Also: spawn-cost baselines (the same commands through `xargs -P1` and `xargs -P2`), GNU make and
Snakemake / DVC (where installed) on the same DAGs, and a 1 GiB input hashing benchmark.

    cargo build --release && python3 bench/runner_bench.py            # full run (~12 min on 2 cores)
    python3 bench/runner_bench.py --quick                              # smoke test (~2 min)
    SLUICE=/path/to/sluice python3 bench/runner_bench.py --json out.json --markdown out.md
    python3 bench/runner_bench.py --render out.json                   # tables of a saved run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MOD = 1_000_000_007
RACY_WAIT_S = 2.2  # sluice's hash memo does not persist entries for files changed < 2 s ago


# --------------------------------------------------------------------------------------------
# Timing a child process


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # user + sys seconds of the child and everything it waited for
    rss_kb: int  # ru_maxrss of the child (largest of it and its waited-for descendants)
    rc: int


def _gnu_time() -> str | None:
    """GNU time, which reports its child's own peak RSS (see run_timed)."""
    t = "/usr/bin/time"
    if os.access(t, os.X_OK):
        r = subprocess.run([t, "-f", "%M", "-o", "/dev/stdout", "true"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip().isdigit():
            return t
    return None


GNU_TIME = _gnu_time()
_SCRATCH: list[str] = []


def scratch() -> str:
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="sluice-bench-rusage-"))
    return _SCRATCH[0]


def run_timed(argv: list[str], cwd: Path, stdout_path: Path | None = None, timeout: float | None = None,
              env: dict | None = None, stdin_path: Path | None = None) -> Sample:
    """Runs one fresh child; wall time around fork..reap, CPU and peak RSS of that one run.

    Peak RSS comes from GNU time wrapped around the command: the ru_maxrss of a direct child of
    this Python process would never be below Python's own RSS (Linux carries the pre-exec memory
    of a forked child into its maxrss), which hides everything under ~20 MiB. The wrapper adds
    one small fork+exec to the wall time (calibrated in the run's metadata)."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    inp = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    err_path = os.path.join(scratch(), "stderr")
    rss_path = os.path.join(scratch(), "rss")
    err = open(err_path, "wb") if stdout_path is None else out
    full = [GNU_TIME, "-f", "%M", "-o", rss_path, *argv] if GNU_TIME else argv
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(full, cwd=cwd, stdout=out, stderr=err, stdin=inp, env=env, start_new_session=True)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, lambda: _killpg(p.pid))
            timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if timer:
            timer.cancel()
        rss = ru.ru_maxrss
        if GNU_TIME:
            try:
                rss = int(Path(rss_path).read_text().split()[-1])
            except (OSError, ValueError, IndexError):
                pass
        if p.returncode != 0 and stdout_path is None:
            err.flush()
            sys.stderr.write(Path(err_path).read_text(errors="replace")[-2000:])
        return Sample(wall, ru.ru_utime + ru.ru_stime, rss, p.returncode)
    finally:
        if stdout_path:
            out.close()
        else:
            err.close()
        if stdin_path:
            inp.close()


def calibrate() -> dict:
    """What the measuring itself costs: `true` bare and under the GNU time wrapper."""
    global GNU_TIME
    saved = GNU_TIME
    GNU_TIME = None
    bare = [run_timed(["true"], Path("/")) for _ in range(30)]
    GNU_TIME = saved
    wrapped = [run_timed(["true"], Path("/")) for _ in range(30)]
    return {"rss_method": "GNU time %M" if GNU_TIME else "os.wait4 ru_maxrss (floor: this Python's RSS)",
            "true_wall_ms": med([s.wall for s in bare]) * 1e3,
            "wrapped_true_wall_ms": med([s.wall for s in wrapped]) * 1e3,
            "true_rss_kb": int(med([s.rss_kb for s in wrapped]))}


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------
# Pipeline model and generators


@dataclass
class Stage:
    name: str
    idx: int
    srcs: list[tuple[str, str]]  # ("in", path) or ("stage", name)
    out: str


@dataclass
class Dag:
    shape: str
    n: int
    stages: list[Stage]
    inputs: dict[str, str]  # path -> initial content
    change: str  # the input the "one input changes" scenario edits
    extra_changes: dict[str, str] = field(default_factory=dict)  # label -> input path

    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}


def command(i: int, srcs: list[str], out: str) -> str:
    """The stage's shell command given concrete (or templated) paths."""
    if not srcs:
        return f"echo {i} > {out}"
    names = "abcdefgh"
    reads = "; ".join(f"read {names[k]} < {p}" for k, p in enumerate(srcs))
    coef = [31, 17, 13, 11, 7, 5, 3, 2]
    expr = " + ".join(f"{names[k]} * {coef[k]}" for k in range(len(srcs)))
    return f"{reads}; echo $(( ({expr} + {i}) % {MOD} )) > {out}"


def gen_chain(n: int) -> Dag:
    stages = [Stage("s0", 0, [("in", "in/c0.txt")], "out/s0.txt")]
    for i in range(1, n):
        stages.append(Stage(f"s{i}", i, [("stage", f"s{i-1}")], f"out/s{i}.txt"))
    return Dag("chain", n, stages, {"in/c0.txt": "1\n"}, "in/c0.txt")


def gen_wide(n: int) -> Dag:
    stages = [Stage(f"s{i}", i, [("in", "in/shared.txt"), ("in", f"in/w{i}.txt")], f"out/s{i}.txt") for i in range(n)]
    inputs = {"in/shared.txt": "1\n"}
    inputs.update({f"in/w{i}.txt": f"{i}\n" for i in range(n)})
    return Dag("wide", n, stages, inputs, f"in/w{n // 2}.txt", {"shared": "in/shared.txt"})


def gen_layered(n: int) -> Dag:
    w = max(1, math.ceil(math.sqrt(n)))
    stages = []
    inputs = {}
    for k in range(n):
        layer, j = divmod(k, w)
        if layer == 0:
            srcs = [("in", f"in/l{j}.txt")]
            inputs[f"in/l{j}.txt"] = f"{j}\n"
        else:
            a = (layer - 1) * w + j
            b = (layer - 1) * w + (j + 1) % w
            srcs = [("stage", f"s{a}")] if a == b else [("stage", f"s{a}"), ("stage", f"s{b}")]
        stages.append(Stage(f"s{k}", k, srcs, f"out/s{k}.txt"))
    return Dag("layered", n, stages, inputs, "in/l0.txt")


GENERATORS = {"chain": gen_chain, "wide": gen_wide, "layered": gen_layered}


def affected(dag: Dag, path: str) -> int:
    """How many stages a change of input `path` makes rerun."""
    hit: set[str] = set()
    for s in dag.stages:  # stages are generated in topological order
        if any((k == "in" and v == path) or (k == "stage" and v in hit) for k, v in s.srcs):
            hit.add(s.name)
    return len(hit)


def write_inputs(dag: Dag, root: Path) -> None:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for p, content in dag.inputs.items():
        (root / p).write_text(content)


def write_sluice(dag: Dag, root: Path) -> Path:
    outs = {s.name: s.out for s in dag.stages}
    lines = [f"name: bench-{dag.shape}-{dag.n}", "stages:"]
    for s in dag.stages:
        refs, ins = [], []
        for k, v in s.srcs:
            if k == "in":
                ins.append((f"i{len(ins)}", v))
                refs.append("${{ inputs.%s }}" % ins[-1][0])
            else:
                refs.append("${{ stages.%s.outputs.o }}" % v)
        lines.append(f"  {s.name}:")
        lines.append(f"    run: {json.dumps(command(s.idx, refs, '${{ outputs.o }}'))}")
        if ins:
            lines.append("    inputs: {" + ", ".join(f"{k}: {v}" for k, v in ins) + "}")
        lines.append(f"    outputs: {{o: {outs[s.name]}}}")
    path = root / "sluice.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def concrete_cmd(dag: Dag, s: Stage, outs: dict[str, str]) -> str:
    return command(s.idx, [v if k == "in" else outs[v] for k, v in s.srcs], s.out)


def write_makefile(dag: Dag, root: Path) -> None:
    outs = {s.name: s.out for s in dag.stages}
    lines = ["MAKEFLAGS += -r", ".SUFFIXES:", ".PHONY: all", "all: " + " ".join(outs.values()), ""]
    for s in dag.stages:
        deps = [v if k == "in" else outs[v] for k, v in s.srcs]
        lines.append(f"{s.out}: {' '.join(deps)}")
        lines.append("\t@" + concrete_cmd(dag, s, outs).replace("$", "$$"))
    (root / "Makefile").write_text("\n".join(lines) + "\n")
    (root / "out").mkdir(exist_ok=True)


def write_snakefile(dag: Dag, root: Path) -> None:
    """One wildcard rule with input functions: how a Snakemake user would write a generated DAG."""
    outs = {s.name: s.out for s in dag.stages}
    table = {s.name: {"inputs": [v if k == "in" else outs[v] for k, v in s.srcs], "cmd": concrete_cmd(dag, s, outs)}
             for s in dag.stages}
    (root / "stages.json").write_text(json.dumps(table))
    (root / "Snakefile").write_text(
        "import json\n"
        "S = json.load(open('stages.json'))\n"
        "rule all:\n"
        "    input: [f'out/{name}.txt' for name in S]\n"
        "rule stage:\n"
        "    input: lambda w: S[w.name]['inputs']\n"
        "    output: 'out/{name}.txt'\n"
        "    params: cmd=lambda w: S[w.name]['cmd']\n"
        "    shell: '{params.cmd}'\n"
    )


def write_dvc(dag: Dag, root: Path) -> None:
    outs = {s.name: s.out for s in dag.stages}
    lines = ["stages:"]
    for s in dag.stages:
        deps = [v if k == "in" else outs[v] for k, v in s.srcs]
        lines.append(f"  {s.name}:")
        lines.append(f"    cmd: {json.dumps(concrete_cmd(dag, s, outs))}")
        lines.append("    deps: [" + ", ".join(deps) + "]")
        lines.append(f"    outs: [{s.out}]")
    (root / "dvc.yaml").write_text("\n".join(lines) + "\n")
    (root / "out").mkdir(exist_ok=True)


def write_cmds(dag: Dag, root: Path) -> Path:
    outs = {s.name: s.out for s in dag.stages}
    p = root / "cmds.txt"
    p.write_text("".join(concrete_cmd(dag, s, outs) + "\n" for s in dag.stages))
    (root / "out").mkdir(exist_ok=True)
    return p


# --------------------------------------------------------------------------------------------
# Tools


def rm(*paths: Path) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()


def chmod_w(root: Path) -> None:
    # sluice hard-links outputs from its cache read-only; make the tree removable.
    for d, _, files in os.walk(root):
        for f in files:
            try:
                os.chmod(os.path.join(d, f), 0o644)
            except OSError:
                pass


def parse_finished(path: Path) -> dict:
    last = {}
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b'{"event":"run_finished"'):
                last = json.loads(line)
    return last


class Result:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row) -> dict:
        self.rows.append(row)
        return row


def summarize(samples: list[Sample]) -> dict:
    return {
        "runs": len(samples),
        "wall_med": med([s.wall for s in samples]),
        "wall_min": min(s.wall for s in samples),
        "wall_max": max(s.wall for s in samples),
        "cpu_med": med([s.cpu for s in samples]),
        "rss_kb_med": int(med([s.rss_kb for s in samples])),
        "rss_kb_max": max(s.rss_kb for s in samples),
        "walls": [round(s.wall, 5) for s in samples],
    }


def reps_for(n: int, args) -> dict:
    if args.quick:
        return {"cold": 1, "noop": 3, "change": 1}
    if n <= 100:
        return {"cold": 5, "noop": 10, "change": 5}
    if n <= 1000:
        return {"cold": 3, "noop": 7, "change": 3}
    return {"cold": 1, "noop": 5, "change": 1}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bump(root: Path, path: str, k: int) -> None:
    (root / path).write_text(f"{1000 + k}\n")


def bench_sluice(dag: Dag, base: Path, sluice: str, args, res: Result) -> None:
    root = base / "sluice"
    root.mkdir(parents=True, exist_ok=True)
    pipe = write_sluice(dag, root)
    reps = reps_for(dag.n, args)
    argv = [sluice, "run", str(pipe.name), "--json", "--color", "never"]
    ev = base / "events.jsonl"
    n = dag.n
    tag = f"sluice {dag.shape:8} N={n:>6}"

    def one(expect_ran: int, what: str) -> Sample:
        s = run_timed(argv, root, ev, timeout=args.timeout)
        fin = parse_finished(ev)
        if s.rc != 0 or not fin.get("ok"):
            raise SystemExit(f"{tag} {what}: sluice failed (rc={s.rc}); see {ev}")
        if fin.get("ran") != expect_ran:
            raise SystemExit(f"{tag} {what}: expected {expect_ran} stages to run, {fin.get('ran')} ran ({fin})")
        return s

    write_inputs(dag, root)
    # Inputs older than sluice's 2 s racy window, as they would be in real use.
    time.sleep(RACY_WAIT_S)
    cold = []
    for r in range(reps["cold"]):
        chmod_w(root)
        rm(root / "out", root / ".sluice", root / "sluice.lock")
        cold.append(one(n, "cold"))
    t_cold_end = time.time()
    first_noop = one(0, "first no-op")
    # Steady state: once outputs are older than 2 s, one run settles the memo; then time reruns.
    time.sleep(max(0.0, RACY_WAIT_S - (time.time() - t_cold_end)))
    one(0, "settling no-op")
    noop = [one(0, "no-op") for _ in range(reps["noop"])]
    status = [run_timed([sluice, "status", pipe.name, "--color", "never"], root, timeout=args.timeout)
              for _ in range(3)]
    changes = {"one": dag.change}
    if dag.n <= args.shared_max:
        changes.update(dag.extra_changes)
    for label, path in changes.items():
        expect = affected(dag, path)
        ch = []
        for r in range(reps["change"]):
            bump(root, path, r + (100 if label != "one" else 0))
            ch.append(one(expect, f"change {path}"))
        res.add(tool="sluice", shape=dag.shape if label == "one" else f"{dag.shape}-{label}", n=n,
                scenario="change", changed=path, reran=expect, **summarize(ch))
        log(f"{tag} change {path:14} reran {expect:>6}: {med([s.wall for s in ch]) * 1e3:9.1f} ms")
    res.add(tool="sluice", shape=dag.shape, n=n, scenario="cold", **summarize(cold))
    res.add(tool="sluice", shape=dag.shape, n=n, scenario="first-noop", **summarize([first_noop]))
    res.add(tool="sluice", shape=dag.shape, n=n, scenario="noop", **summarize(noop))
    res.add(tool="sluice", shape=dag.shape, n=n, scenario="status", **summarize(status))
    log(f"{tag} cold {med([s.wall for s in cold]):8.3f} s  first-noop {first_noop.wall * 1e3:8.1f} ms  "
        f"noop {med([s.wall for s in noop]) * 1e3:8.1f} ms  status {med([s.wall for s in status]) * 1e3:8.1f} ms  "
        f"rss {max(s.rss_kb for s in cold) / 1024:.1f} MiB")
    if not args.keep:
        chmod_w(root)
        rm(root)


def bench_make(dag: Dag, base: Path, args, res: Result) -> None:
    root = base / "make"
    root.mkdir(parents=True, exist_ok=True)
    write_makefile(dag, root)
    reps = reps_for(dag.n, args)
    argv = ["make", "-s", "-j2"]
    tag = f"make   {dag.shape:8} N={dag.n:>6}"

    def one(what):
        s = run_timed(argv, root, timeout=args.timeout)
        if s.rc != 0:
            raise SystemExit(f"{tag} {what}: make failed (rc={s.rc})")
        return s

    cold = []
    for _ in range(reps["cold"]):
        rm(root / "out")
        (root / "out").mkdir()
        write_inputs(dag, root)
        cold.append(one("cold"))
    noop = [one("no-op") for _ in range(reps["noop"])]
    changes = {"one": dag.change}
    if dag.n <= args.shared_max:
        changes.update(dag.extra_changes)
    for label, path in changes.items():
        ch = []
        for r in range(reps["change"]):
            bump(root, path, r + (100 if label != "one" else 0))
            ch.append(one("change"))
        res.add(tool="make", shape=dag.shape if label == "one" else f"{dag.shape}-{label}", n=dag.n,
                scenario="change", changed=path, reran=affected(dag, path), **summarize(ch))
    res.add(tool="make", shape=dag.shape, n=dag.n, scenario="cold", **summarize(cold))
    res.add(tool="make", shape=dag.shape, n=dag.n, scenario="noop", **summarize(noop))
    log(f"{tag} cold {med([s.wall for s in cold]):8.3f} s  noop {med([s.wall for s in noop]) * 1e3:8.1f} ms")
    if not args.keep:
        rm(root)


def bench_snakemake(dag: Dag, base: Path, snakemake: str, args, res: Result) -> None:
    root = base / "snakemake"
    root.mkdir(parents=True, exist_ok=True)
    write_snakefile(dag, root)
    reps = {"cold": 1, "noop": 2, "change": 1} if dag.n >= 1000 or args.quick else {"cold": 2, "noop": 3, "change": 2}
    argv = [snakemake, "--cores", "2", "--quiet", "all"]
    tag = f"snakemake {dag.shape:8} N={dag.n:>6}"

    def one(what):
        s = run_timed(argv, root, timeout=args.timeout)
        if s.rc != 0:
            raise SystemExit(f"{tag} {what}: snakemake failed (rc={s.rc})")
        return s

    cold = []
    for _ in range(reps["cold"]):
        rm(root / "out", root / ".snakemake")
        write_inputs(dag, root)
        cold.append(one("cold"))
    noop = [one("no-op") for _ in range(reps["noop"])]
    ch = []
    for r in range(reps["change"]):
        bump(root, dag.change, r)
        ch.append(one("change"))
    res.add(tool="snakemake", shape=dag.shape, n=dag.n, scenario="cold", **summarize(cold))
    res.add(tool="snakemake", shape=dag.shape, n=dag.n, scenario="noop", **summarize(noop))
    res.add(tool="snakemake", shape=dag.shape, n=dag.n, scenario="change", changed=dag.change,
            reran=affected(dag, dag.change), **summarize(ch))
    log(f"{tag} cold {med([s.wall for s in cold]):8.3f} s  noop {med([s.wall for s in noop]) * 1e3:8.1f} ms  "
        f"change {med([s.wall for s in ch]) * 1e3:8.1f} ms  rss {max(s.rss_kb for s in cold) / 1024:.0f} MiB")
    if not args.keep:
        rm(root)


def bench_dvc(dag: Dag, base: Path, dvc: str, args, res: Result) -> None:
    root = base / "dvc"
    root.mkdir(parents=True, exist_ok=True)
    write_dvc(dag, root)
    tag = f"dvc    {dag.shape:8} N={dag.n:>6}"
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    if run_timed([dvc, "init", "--no-scm", "-q", "-f"], root, env=env).rc != 0:
        log(f"{tag}: dvc init failed; skipped")
        return
    run_timed([dvc, "config", "core.analytics", "false"], root, env=env)
    argv = [dvc, "repro", "-q"]

    def one(what):
        s = run_timed(argv, root, timeout=args.timeout, env=env)
        if s.rc != 0:
            raise SystemExit(f"{tag} {what}: dvc failed (rc={s.rc})")
        return s

    reps = {"cold": 1, "noop": 2, "change": 1} if dag.n > 10 or args.quick else {"cold": 2, "noop": 3, "change": 2}
    cold = []
    for _ in range(reps["cold"]):
        chmod_w(root)
        rm(root / "out", root / "dvc.lock", root / ".dvc" / "cache", root / ".dvc" / "tmp")
        (root / "out").mkdir()
        write_inputs(dag, root)
        cold.append(one("cold"))
    noop = [one("no-op") for _ in range(reps["noop"])]
    ch = []
    for r in range(reps["change"]):
        bump(root, dag.change, r)
        ch.append(one("change"))
    res.add(tool="dvc", shape=dag.shape, n=dag.n, scenario="cold", **summarize(cold))
    res.add(tool="dvc", shape=dag.shape, n=dag.n, scenario="noop", **summarize(noop))
    res.add(tool="dvc", shape=dag.shape, n=dag.n, scenario="change", changed=dag.change,
            reran=affected(dag, dag.change), **summarize(ch))
    log(f"{tag} cold {med([s.wall for s in cold]):8.3f} s  noop {med([s.wall for s in noop]) * 1e3:8.1f} ms  "
        f"change {med([s.wall for s in ch]) * 1e3:8.1f} ms")
    if not args.keep:
        chmod_w(root)
        rm(root)


def bench_spawn_baseline(dag: Dag, base: Path, args, res: Result) -> None:
    """The same commands with no runner: one `sh -c` each through xargs, sequential and -P2."""
    root = base / "baseline"
    root.mkdir(parents=True, exist_ok=True)
    write_inputs(dag, root)
    cmds = write_cmds(dag, root)
    reps = 1 if args.quick or dag.n >= 10000 else 3
    # xargs ignores the DAG: -P2 is a lower bound for chain and layered (a stage may start before
    # its upstream finished; the commands still do the same work). chain uses -P1 as the reference.
    ps = (1,) if dag.shape == "chain" else (2,) if dag.n >= 10000 else (1, 2)
    for p in ps:
        samples = []
        for _ in range(reps):
            rm(root / "out")
            (root / "out").mkdir()
            s = run_timed(["xargs", "-d", "\\n", "-n", "1", "-P", str(p), "sh", "-c"], root, stdin_path=cmds,
                          timeout=args.timeout)
            if s.rc != 0:
                raise SystemExit(f"xargs baseline failed (rc={s.rc})")
            samples.append(s)
        res.add(tool=f"xargs -P{p}", shape=dag.shape, n=dag.n, scenario="cold", **summarize(samples))
        log(f"xargs -P{p} {dag.shape:8} N={dag.n:>6} {med([s.wall for s in samples]):8.3f} s")
    if not args.keep:
        rm(root)


# --------------------------------------------------------------------------------------------
# Hashing a big input


def bench_hash(base: Path, sluice: str, args, res: Result) -> None:
    size = args.hash_mib * 1024 * 1024
    root = base / "hash"
    root.mkdir(parents=True, exist_ok=True)
    big, tiny = root / "big.bin", root / "tiny.bin"
    log(f"hash: writing {args.hash_mib} MiB of random bytes to {big}")
    with open(big, "wb") as f:
        chunk = 16 * 1024 * 1024
        left = size
        while left:
            f.write(os.urandom(min(chunk, left)))
            left -= min(chunk, left)
    tiny.write_bytes(b"tiny\n")
    try:
        for name, inp in (("big", "big.bin"), ("tiny", "tiny.bin")):
            (root / f"{name}.yaml").write_text(
                f"name: hash-{name}\nstages:\n  touch:\n    run: echo done > ${{{{ outputs.o }}}}\n"
                f"    inputs: {{data: {inp}}}\n    outputs: {{o: out/{name}.txt}}\n")
        time.sleep(RACY_WAIT_S)  # the input is older than the racy window, as in real use

        def reset():
            chmod_w(root / "out") if (root / "out").exists() else None
            rm(root / "out", root / ".sluice", root / "big.lock", root / "tiny.lock")

        reps = 2 if args.quick else 5
        out = {}
        for name in ("big", "tiny"):
            argv = [sluice, "run", f"{name}.yaml", "-q", "--color", "never"]
            cold, noop = [], []
            for _ in range(reps):
                reset()
                s = run_timed(argv, root, timeout=args.timeout)
                assert s.rc == 0, f"hash {name} cold failed"
                cold.append(s)
            time.sleep(RACY_WAIT_S)
            run_timed(argv, root)
            for _ in range(reps * 2):
                s = run_timed(argv, root, timeout=args.timeout)
                assert s.rc == 0
                noop.append(s)
            # Memo gone, lock kept: the first hash of the input, then "up to date".
            rehash = []
            if name == "big":
                for _ in range(reps):
                    rm(root / ".sluice" / "hashes.bin")
                    rehash.append(run_timed(argv, root, timeout=args.timeout))
            out[name] = (cold, noop, rehash)
            res.add(tool="sluice", shape=f"hash-{name}", n=1, scenario="cold", bytes=size if name == "big" else 5,
                    **summarize(cold))
            res.add(tool="sluice", shape=f"hash-{name}", n=1, scenario="noop", **summarize(noop))
            if rehash:
                res.add(tool="sluice", shape=f"hash-{name}", n=1, scenario="memo-dropped", **summarize(rehash))
        reset()
        # A file just written (within 2 s): the memo does not keep its hash, so the next run hashes again.
        os.utime(big)  # bump mtime to "now" without rewriting
        argv = [sluice, "run", "big.yaml", "-q", "--color", "never"]
        racy = [run_timed(argv, root, timeout=args.timeout) for _ in range(2)]
        res.add(tool="sluice", shape="hash-big", n=1, scenario="cold-then-noop-within-2s", **summarize(racy))

        cold_d = med([s.wall for s in out["big"][0]]) - med([s.wall for s in out["tiny"][0]])
        rehash_d = med([s.wall for s in out["big"][2]]) - med([s.wall for s in out["tiny"][1]])
        noop_d = med([s.wall for s in out["big"][1]]) - med([s.wall for s in out["tiny"][1]])
        res.add(tool="sluice", shape="hash-derived", n=1, scenario="summary", runs=reps,
                hash_s_from_cold=cold_d, gbps_from_cold=size / 1e9 / cold_d if cold_d > 0 else None,
                hash_s_from_memo_dropped=rehash_d, gbps_from_memo_dropped=size / 1e9 / rehash_d if rehash_d > 0 else None,
                unchanged_check_extra_s=noop_d, racy_walls=[s.wall for s in racy])
        log(f"hash: sluice first hash {cold_d:.3f} s ({size / 1e9 / cold_d:.2f} GB/s, from cold runs); "
            f"{rehash_d:.3f} s (memo dropped); unchanged check +{noop_d * 1e3:.2f} ms over tiny; "
            f"rerun within 2 s of a write: {[round(s.wall, 3) for s in racy]} s")

        # Reference points on the same (page-cached) file.
        refs = []
        if shutil.which("b3sum"):
            refs.append(("b3sum", ["b3sum", "--no-names", str(big)]))
        if shutil.which("sha256sum"):
            refs.append(("sha256sum", ["sha256sum", str(big)]))
        py = args.blake3_python or sys.executable
        probe = subprocess.run([py, "-c", "import blake3"], capture_output=True)
        if probe.returncode == 0:
            refs.append(("python blake3 (all threads, mmap)",
                         [py, "-c", f"import blake3; blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap({str(big)!r}).hexdigest()"]))
            refs.append(("python blake3 (1 thread)",
                         [py, "-c", f"import blake3; blake3.blake3().update_mmap({str(big)!r}).hexdigest()"]))
        else:
            log(f"hash: `{py}` has no blake3 module (pip install blake3, then --blake3-python); skipped")
        for label, argv in refs:
            ss = [run_timed(argv, root, timeout=args.timeout) for _ in range(3)]
            w = med([s.wall for s in ss])
            res.add(tool=label, shape="hash-ref", n=1, scenario="hash", bytes=size, gbps=size / 1e9 / w, **summarize(ss))
            log(f"hash: {label}: {w:.3f} s ({size / 1e9 / w:.2f} GB/s)")
    finally:
        rm(big)
        if not args.keep:
            chmod_w(root)
            rm(root)


# --------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "mem": mem, "kernel": platform.release(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg": os.getloadavg()}


def version_of(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def fmt_ms(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def ratio(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def per_stage_table(out: list, get, shapes: list, sizes: list) -> None:
    out.append("\n### Per-stage cost of a cold run vs. spawning the same commands without a runner\n")
    out.append("| shape | N | sluice cold | xargs -P1 | xargs -P2 | sluice / stage | reference / stage | "
               "sluice overhead / stage | CPU / stage: sluice vs reference |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in [s for s in shapes if "-" not in s]:
        for n in sizes:
            c = get(tool="sluice", shape=shape, n=n, scenario="cold")
            x1 = get(tool="xargs -P1", shape=shape, n=n, scenario="cold")
            x2 = get(tool="xargs -P2", shape=shape, n=n, scenario="cold")
            ref = x1 if shape == "chain" else x2
            if not (c and ref):
                continue
            out.append(f"| {shape} | {n:,} | {fmt_ms(c['wall_med'])} | {fmt_ms(x1['wall_med']) if x1 else '–'} | "
                       f"{fmt_ms(x2['wall_med']) if x2 else '–'} | "
                       f"{c['wall_med'] / n * 1e3:.2f} ms | {ref['wall_med'] / n * 1e3:.2f} ms ({ref['tool'][-3:]}) | "
                       f"**{(c['wall_med'] - ref['wall_med']) / n * 1e3:.2f} ms** | "
                       f"{c['cpu_med'] / n * 1e3:.2f} vs {ref['cpu_med'] / n * 1e3:.2f} ms |")


def markdown(res: Result, meta: dict) -> str:
    rows = res.rows
    get = lambda **kw: next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)  # noqa: E731
    out = []
    m = meta["machine"]
    out.append(f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem']} RAM, Linux {m['kernel']}; {m['date']}; "
               f"load average (1 min) {m['loadavg'][0]:.2f} at start, "
               f"{meta.get('loadavg_end', [float('nan')])[0]:.2f} at the end; whole run {meta.get('total_s', 0) / 60:.1f} min.  ")
    out.append(f"sluice: `{meta['sluice']}` ({meta['sluice_version']}, commit {meta['git']}); "
               f"make: {meta['make']}; snakemake: {meta['snakemake']}; dvc: {meta['dvc']}.  ")
    cal = meta.get("calibration")
    if cal:
        out.append(f"Peak RSS by {cal['rss_method']}; `true` takes {cal['true_wall_ms']:.2f} ms bare and "
                   f"{cal['wrapped_true_wall_ms']:.2f} ms under the wrapper (RSS {cal['true_rss_kb'] / 1024:.1f} MiB): "
                   f"every wall time below includes that difference.\n")
    else:
        out.append("")
    shapes = sorted({r["shape"] for r in rows if r["tool"] == "sluice" and not r["shape"].startswith("hash")},
                    key=lambda s: ["chain", "wide", "layered"].index(s.split("-")[0]) * 10 + len(s))
    sizes = sorted({r["n"] for r in rows if r["tool"] == "sluice" and not r["shape"].startswith("hash")})

    out.append("### sluice: wall time (median) and peak RSS\n")
    out.append("| shape | N | cold | first no-op | no-op | `status` | one input changed (stages rerun) | "
               "peak RSS cold / no-op | runs cold/no-op/change |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for shape in [s for s in shapes if "-" not in s]:
        for n in sizes:
            c = get(tool="sluice", shape=shape, n=n, scenario="cold")
            if not c:
                continue
            f = get(tool="sluice", shape=shape, n=n, scenario="first-noop")
            no = get(tool="sluice", shape=shape, n=n, scenario="noop")
            st = get(tool="sluice", shape=shape, n=n, scenario="status")
            ch = get(tool="sluice", shape=shape, n=n, scenario="change")
            out.append(f"| {shape} | {n:,} | {fmt_ms(c['wall_med'])} | {fmt_ms(f['wall_med'])} | "
                       f"{fmt_ms(no['wall_med'])} | {fmt_ms(st['wall_med'])} | "
                       f"{fmt_ms(ch['wall_med'])} ({ch['reran']:,}) | "
                       f"{c['rss_kb_max'] / 1024:.1f} / {no['rss_kb_max'] / 1024:.1f} MiB | "
                       f"{c['runs']}/{no['runs']}/{ch['runs']} |")
    for shape in [s for s in shapes if "-" in s]:
        for n in sizes:
            ch = get(tool="sluice", shape=shape, n=n, scenario="change")
            if ch:
                out.append(f"| {shape} (`{ch['changed']}` changed) | {n:,} | | | | | {fmt_ms(ch['wall_med'])} "
                           f"({ch['reran']:,}) | {ch['rss_kb_max'] / 1024:.1f} MiB | –/–/{ch['runs']} |")

    if any(r["tool"].startswith("xargs") for r in rows):
        per_stage_table(out, get, shapes, sizes)

    tools = [t for t in ("make", "snakemake", "dvc") if any(r["tool"] == t for r in rows)]
    if tools:
        out.append("\n### Same DAGs with other tools (median wall; ratio = tool / sluice)\n")
        out.append("| shape | N | scenario | sluice | " + " | ".join(tools) + " |")
        out.append("|---|---:|---|---:|" + "---:|" * len(tools))
        for shape in [s for s in shapes if "-" not in s]:
            for n in sizes:
                for sc in ("cold", "noop", "change"):
                    sl = get(tool="sluice", shape=shape, n=n, scenario=sc)
                    if not sl:
                        continue
                    cells = []
                    for t in tools:
                        r = get(tool=t, shape=shape, n=n, scenario=sc)
                        cells.append(f"{fmt_ms(r['wall_med'])} (×{ratio(r['wall_med'] / sl['wall_med'])}, "
                                     f"{r['rss_kb_max'] / 1024:.0f} MiB)" if r else "–")
                    label = {"noop": "no-op", "change": "one input changed"}.get(sc, sc)
                    out.append(f"| {shape} | {n:,} | {label} | {fmt_ms(sl['wall_med'])} ({sl['rss_kb_max'] / 1024:.0f} MiB) | "
                               + " | ".join(cells) + " |")

    hd = get(shape="hash-derived")
    if hd:
        out.append("\n### Hashing a large input\n")
        hb, ht = get(shape="hash-big", scenario="cold"), get(shape="hash-tiny", scenario="cold")
        nb, nt = get(shape="hash-big", scenario="noop"), get(shape="hash-tiny", scenario="noop")
        md = get(shape="hash-big", scenario="memo-dropped")
        size = hb["bytes"]
        out.append(f"Input: {size / 2**30:.2f} GiB ({size / 1e9:.3f} GB) of random bytes, in the page cache.\n")
        out.append("| measurement | median wall | runs | derived |")
        out.append("|---|---:|---:|---|")
        out.append(f"| cold run, {size / 2**30:.2f} GiB input | {fmt_ms(hb['wall_med'])} | {hb['runs']} | "
                   f"first hash ≈ {fmt_ms(hd['hash_s_from_cold'])} → **{hd['gbps_from_cold']:.2f} GB/s**; peak RSS {hb['rss_kb_max'] / 1024:.0f} MiB |")
        out.append(f"| cold run, 5-byte input | {fmt_ms(ht['wall_med'])} | {ht['runs']} | |")
        out.append(f"| lock kept, memo deleted (= hash + no-op) | {fmt_ms(md['wall_med'])} | {md['runs']} | "
                   f"hash ≈ {fmt_ms(hd['hash_s_from_memo_dropped'])} → {hd['gbps_from_memo_dropped']:.2f} GB/s |")
        out.append(f"| no-op, {size / 2**30:.2f} GiB input unchanged | {fmt_ms(nb['wall_med'])} | {nb['runs']} | "
                   f"{hd['unchanged_check_extra_s'] * 1e3:+.2f} ms vs the 5-byte input |")
        out.append(f"| no-op, 5-byte input | {fmt_ms(nt['wall_med'])} | {nt['runs']} | |")
        rw = hd["racy_walls"]
        out.append(f"| run, then rerun, with the input written < 2 s before | {fmt_ms(rw[0])}, then {fmt_ms(rw[1])} | 1 | "
                   "racy window: the memo does not keep the hash, the rerun hashes again |")
        for r in rows:
            if r["shape"] == "hash-ref":
                out.append(f"| reference: `{r['tool']}` | {fmt_ms(r['wall_med'])} | {r['runs']} | {r['gbps']:.2f} GB/s (incl. process start) |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def big(spec: str, n: int, shape: str) -> bool:
    if not spec:
        return False
    size, shapes = spec.split(":")
    return n == int(size) and shape in shapes.split(",")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--shapes", default="chain,wide,layered")
    ap.add_argument("--quick", action="store_true", help="sizes 10,100, one rep: a smoke test")
    ap.add_argument("--no-compare", action="store_true", help="skip make/snakemake/dvc and the xargs baselines")
    ap.add_argument("--no-hash", action="store_true", help="skip the 1 GiB hashing benchmark")
    ap.add_argument("--only-hash", action="store_true")
    ap.add_argument("--hash-mib", type=int, default=1024)
    ap.add_argument("--make-max", type=int, default=10000, help="largest N for make")
    ap.add_argument("--snakemake-max", type=int, default=100, help="largest N for snakemake, all shapes")
    ap.add_argument("--snakemake-big", default="", help="also N:shape,... for snakemake, e.g. 1000:wide (+70 s)")
    ap.add_argument("--dvc-max", type=int, default=10, help="largest N for dvc, all shapes")
    ap.add_argument("--dvc-big", default="", help="also N:shape,... for dvc, e.g. 100:wide (+40 s)")
    ap.add_argument("--shared-max", type=int, default=1000, help="largest N for the wide shared-input change")
    ap.add_argument("--snakemake", default=os.environ.get("SNAKEMAKE", shutil.which("snakemake") or ""))
    ap.add_argument("--dvc", default=os.environ.get("DVC", shutil.which("dvc") or ""))
    ap.add_argument("--blake3-python", default=os.environ.get("BLAKE3_PYTHON", ""),
                    help="a python with the blake3 package, for the reference hash timing")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    ap.add_argument("--json", help="write all samples here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--no-rss-wrapper", action="store_true",
                    help="do not wrap runs in GNU time: exact wall times, but peak RSS never reads below this "
                         "Python's own RSS (~20 MiB)")
    ap.add_argument("--render", metavar="JSON", help="only print the tables of an earlier --json file")
    args = ap.parse_args()
    global GNU_TIME
    if args.no_rss_wrapper:
        GNU_TIME = None
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        res = Result()
        res.rows = saved["rows"]
        print(markdown(res, saved["meta"]))
        return
    if args.quick:
        args.sizes = "10,100"
        args.hash_mib = min(args.hash_mib, 256)
        args.snakemake_big = args.dvc_big = ""

    sluice = os.environ.get("SLUICE", "target/release/sluice")
    sluice = str((REPO / sluice).resolve()) if not os.path.isabs(sluice) else sluice
    if not os.access(sluice, os.X_OK):
        raise SystemExit(f"no sluice binary at {sluice}: run `cargo build --release` or set SLUICE")
    sizes = [int(x) for x in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    # SLUICE_COMMIT: what the binary was built from, when it is not this checkout's working tree.
    git = os.environ.get("SLUICE_COMMIT") or subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    meta = {"machine": machine(), "sluice": sluice, "sluice_version": version_of([sluice, "--version"]), "git": git,
            "make": version_of(["make", "--version"]),
            "snakemake": version_of([args.snakemake, "--version"]) if args.snakemake else "not installed",
            "dvc": version_of([args.dvc, "--version"]) if args.dvc else "not installed",
            "argv": sys.argv}
    meta["calibration"] = calibrate()
    log(json.dumps(meta))
    res = Result()
    base = Path(tempfile.mkdtemp(prefix="sluice-bench-", dir=args.workdir))
    t0 = time.time()
    try:
        if not args.only_hash:
            for n in sizes:
                for shape in shapes:
                    dag = GENERATORS[shape](n)
                    d = base / f"{shape}-{n}"
                    bench_sluice(dag, d, sluice, args, res)
                    if not args.no_compare:
                        bench_spawn_baseline(dag, d, args, res)
                        if n <= args.make_max and shutil.which("make"):
                            bench_make(dag, d, args, res)
                        if args.snakemake and (n <= args.snakemake_max or big(args.snakemake_big, n, shape)):
                            bench_snakemake(dag, d, args.snakemake, args, res)
                        if args.dvc and (n <= args.dvc_max or big(args.dvc_big, n, shape)):
                            bench_dvc(dag, d, args.dvc, args, res)
        if not args.no_hash:
            bench_hash(base, sluice, args, res)
    finally:
        if not args.keep:
            chmod_w(base)
            shutil.rmtree(base, ignore_errors=True)
        for d in _SCRATCH:
            shutil.rmtree(d, ignore_errors=True)
    meta["total_s"] = time.time() - t0
    meta["loadavg_end"] = os.getloadavg()
    log(f"total {meta['total_s']:.0f} s")
    md = markdown(res, meta)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": res.rows}, indent=1))


if __name__ == "__main__":
    main()
