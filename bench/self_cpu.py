#!/usr/bin/env python3
"""sluice's own CPU in a cold run, per thread, its children excluded, binaries alternated.

    python3 bench/self_cpu.py --size 1000 --shape wide --rounds 7 BIN [BIN...]

On 2 cores a cold run of small stages is CPU-bound, so what sluice spends beside its stages'
commands is what separates it from make; `time` mixes it with the children's CPU. Here each
thread's time on CPU is read from /proc/<pid>/task/<tid>/schedstat while the run goes, and once
more as it ends: sluice's `exit_group` is held for 0.2 s by `strace` (which stops at nothing
else), so that nothing is lost at the end. Threads that end before the run does are counted up
to their last reading (every 5 ms). Needs strace. The workspace is runner_bench.py's (same
generator as cold_ab.py), made once under --workdir.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_bench as rb  # noqa: E402
from cold_ab import cold  # noqa: E402


def on_cpu_ms(path: str) -> float:
    return int(open(path).read().split()[0]) / 1e6


def one(binary: str, root: Path, jobs: int) -> list[float]:
    """Milliseconds on CPU of each thread of one cold run, largest first."""
    cold(root)
    sp = subprocess.Popen(
        ["strace", "-qq", "-e", "trace=exit_group", "-e", "inject=exit_group:delay_enter=200000",
         "-o", "/dev/null", binary, "run", "-q", "--jobs", str(jobs)],
        cwd=root,
    )
    pid, threads = None, {}
    while sp.poll() is None:
        if pid is None:
            try:
                for c in open(f"/proc/{sp.pid}/task/{sp.pid}/children").read().split():
                    if os.readlink(f"/proc/{c}/exe") == os.path.realpath(binary):
                        pid = int(c)
            except OSError:
                time.sleep(0.001)
            continue
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                try:
                    threads[t] = on_cpu_ms(f"/proc/{pid}/task/{t}/schedstat")
                except OSError:
                    pass
        except OSError:
            pass
        time.sleep(0.005)
    if sp.returncode != 0:
        sys.exit(f"{binary} run failed in {root}")
    return sorted(threads.values(), reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--shape", default="wide", choices=sorted(rb.GENERATORS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = ap.parse_args()
    dag = rb.GENERATORS[args.shape](args.size)
    root = Path(args.workdir) / f"sluice-self-cpu-{os.getpid()}"
    root.mkdir(parents=True)
    try:
        rb.write_inputs(dag, root)
        rb.write_sluice(dag, root)
        (root / "out").mkdir()
        runs: dict[str, list[list[float]]] = {b: [] for b in args.binaries}
        for r in range(args.rounds):
            for b in args.binaries:
                threads = one(b, root, args.jobs)
                runs[b].append(threads)
                print(f"round {r + 1} {Path(b).name:20} {sum(threads):7.1f} ms  threads: "
                      + " ".join(f"{t:.1f}" for t in threads[:6]), flush=True)
        print(f"\nmedians of {args.rounds} rounds, {args.shape} {args.size}, sluice's own CPU (ms)")
        print("| binary | all threads | busiest two (the workers) | the rest |\n|---|---:|---:|---:|")
        for b, samples in runs.items():
            total = statistics.median(sum(s) for s in samples)
            top = statistics.median(sum(s[:2]) for s in samples)
            rest = statistics.median(sum(s[2:]) for s in samples)
            print(f"| {Path(b).name} | {total:.1f} | {top:.1f} | {rest:.1f} |")
    finally:
        rb.rm(root)


if __name__ == "__main__":
    main()
