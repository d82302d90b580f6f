#!/usr/bin/env python3
"""Per-stage overhead of sluice's Slurm executor over Slurm's own submit-to-finish latency.

A chain of N `run:` stages (each reads the previous one's output) through
`sluice run --executor slurm`, against N bare jobs submitted one after the other with
`sbatch --wrap true` and watched with `squeue` every 50 ms until each is gone (what any client
must at least wait for). Runs on the local test cluster (tests/slurm/start.sh).

    python3 bench/slurm_overhead.py [--sluice target/release/sluice] [--stages 20] [--runs 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time


def raw_chain(n: int) -> float:
    t0 = time.monotonic()
    for _ in range(n):
        out = subprocess.run(
            ["sbatch", "--parsable", "--no-requeue", "-o", "/dev/null", "--wrap", "true"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        job = out.split(";")[0]
        while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"],
                             capture_output=True, text=True).stdout.strip():
            time.sleep(0.05)
    return (time.monotonic() - t0) / n


def sluice_chain(sluice: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        lines = ["name: chain", "stages:",
                 '  s0: {run: "echo 0 > ${{ outputs.o }}", outputs: [o]}']
        for i in range(1, n):
            lines.append(f'  s{i}: {{run: "cat ${{{{ stages.s{i - 1}.outputs.o }}}} > '
                         f'${{{{ outputs.o }}}}", outputs: [o]}}')
        with open(os.path.join(d, "sluice.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        t0 = time.monotonic()
        subprocess.run([sluice, "run", "--executor", "slurm", "-q"], cwd=d, check=True)
        return (time.monotonic() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--stages", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    sluice = os.path.abspath(a.sluice)
    if not shutil.which("sbatch"):
        raise SystemExit("no sbatch: start the test cluster (tests/slurm/start.sh --install)")
    raw, ours = [], []
    for _ in range(a.runs):  # alternated, so both see the same cluster load
        raw.append(raw_chain(a.stages))
        ours.append(sluice_chain(sluice, a.stages))
    r, s = statistics.median(raw), statistics.median(ours)
    print(f"bare sbatch + squeue, per job: {r:.3f} s  {[round(x, 3) for x in raw]}")
    print(f"sluice --executor slurm, per stage: {s:.3f} s  {[round(x, 3) for x in ours]}")
    print(f"overhead per stage: {1000 * (s - r):.0f} ms")


if __name__ == "__main__":
    main()
