#!/usr/bin/env python3
"""Cold runs of one or more sluice binaries against `make -j`, alternated round by round.

    python3 bench/cold_ab.py --sizes 1000 --rounds 9 BIN [BIN...]

A cold run is what `runner_bench.py` calls one: `.sluice/`, the outputs and the lock removed, so
nothing is cached and the pipeline is loaded from scratch. On a shared machine whose load moves
by the minute, one tool's runs taken together and the other's an hour later compare the load,
not the tools; here every round runs each binary and then make on the same workspace, back to
back, and the medians of the rounds are compared. The workspaces (the same pipelines and
Makefiles as `runner_bench.py`'s, from its generators) are made once under --workdir.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_bench as rb  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the children's user + system CPU seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cold(root: Path) -> None:
    rb.rm(root / ".sluice", root / "out", root / "sluice.lock")
    (root / "out").mkdir()
    os.sync()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", help="sluice binaries to compare")
    ap.add_argument("--sizes", default="1000")
    ap.add_argument("--shapes", default="chain,wide,layered")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="make -j and sluice --jobs")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--json", help="write every sample here")
    args = ap.parse_args()
    tools = {Path(b).name if Path(b).name not in ("sluice",) else b: str(Path(b).resolve()) for b in args.binaries}
    base = Path(args.workdir) / f"sluice-cold-ab-{os.getpid()}"
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        roots = {}
        for n in (int(s) for s in args.sizes.split(",")):
            for shape in args.shapes.split(","):
                dag = rb.GENERATORS[shape](n)
                root = base / f"{shape}-{n}"
                root.mkdir(parents=True)
                rb.write_inputs(dag, root)
                rb.write_sluice(dag, root)
                rb.write_makefile(dag, root)
                roots[f"{shape} {n}"] = root
        for r in range(args.rounds):
            for case, root in roots.items():
                runs = [(name, [path, "run", "-q", "--jobs", str(args.jobs)]) for name, path in tools.items()]
                runs.append(("make", ["make", "-s", f"-j{args.jobs}"]))
                for name, cmd in runs:
                    cold(root)
                    wall, cpu = timed(cmd, root)
                    samples.setdefault(case, {}).setdefault(name, []).append((wall, cpu))
                    print(f"round {r + 1} {case:14} {name:20} {wall:7.3f} s  cpu {cpu:6.2f} s", flush=True)
    finally:
        rb.rm(base)
    print(f"\nmedians of {args.rounds} rounds (ratio to make -j{args.jobs}):")
    print("| case | tool | wall | / make | user + sys CPU |")
    print("|---|---|---:|---:|---:|")
    for case, by_tool in samples.items():
        make = statistics.median(w for w, _ in by_tool["make"])
        for name, runs in by_tool.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"| {case} | {name} | {wall:.3f} s | {wall / make:.2f}× | {cpu:.2f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
