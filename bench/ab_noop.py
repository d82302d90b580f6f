#!/usr/bin/env python3
"""No-op reruns of one workspace with several sluice binaries, alternating per round (load from
other work on a shared machine hits every binary alike). Prints the median wall time, CPU time
(user + sys) and peak RSS per binary.

    python3 bench/ab_noop.py ROUNDS WORKSPACE OLD_SLUICE NEW_SLUICE [...]

WORKSPACE is a workspace after a cold run (e.g. one of runner_bench.py's with `--keep`). Each
binary gets its own copy of it (`WORKSPACE-abN`, replaced each time): the stored pipeline
(`.sluice/loads/`) is keyed by the binary, so binaries alternating in one workspace would make
every run a miss. Each copy is run twice before timing, so memo and stored pipeline are settled.
"""
import os
import statistics
import subprocess
import sys
import time

rounds, wd, bins = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3:]
res = {b: ([], [], []) for b in bins}
wds = {}
for k, b in enumerate(bins):
    wds[b] = f"{wd}-ab{k}"
    subprocess.run(["rm", "-rf", wds[b]], check=True)
    subprocess.run(["cp", "-a", wd, wds[b]], check=True)
    for _ in range(2):
        subprocess.run([b, "run", "-q"], cwd=wds[b], stdout=subprocess.DEVNULL, check=True)
for r in range(rounds):
    for b in bins if r % 2 == 0 else bins[::-1]:
        t = time.perf_counter()
        p = subprocess.Popen([b, "run", "-q"], cwd=wds[b], stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        assert status == 0, f"{b} failed"
        res[b][0].append(wall * 1000)
        res[b][1].append((ru.ru_utime + ru.ru_stime) * 1000)
        res[b][2].append(ru.ru_maxrss / 1024)
for b, (w, c, m) in res.items():
    print(
        f"{b}: wall {statistics.median(w):.1f} ms  cpu {statistics.median(c):.1f} ms  "
        f"rss {statistics.median(m):.1f} MiB  (n={len(w)})"
    )
