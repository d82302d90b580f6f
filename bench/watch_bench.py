#!/usr/bin/env python3
"""`sluice watch` benchmark (Python 3.11+, standard library only).

Latency: a pipeline of one trivial `run:` stage (`cat` its input into its output) under
`sluice watch --json` at the default debounce. Each of N edits rewrites the input with new bytes,
then the script waits for the stage's `stage_started` event and for the end of the round
(`waiting`). Reported: median, p95 and max of the time from the write to each, as this script sees
the events (through a pipe, so a reader's view).

Idle CPU: a pipeline whose one stage reads a directory of 10,000 files (10 folders of 1,000).
After the first round, the watcher's CPU time (utime + stime from /proc/PID/stat) is read over an
idle window. Once with native watches (inotify), once with `SLUICE_WATCH_POLL=1` (the polling
fallback) for comparison. Also: time from start to the end of the first round, and RSS.

    cargo build --release && python3 bench/watch_bench.py
    SLUICE=/path/to/sluice python3 bench/watch_bench.py --edits 50 --idle 30 --json out.json

`--baseline OTHER_SLUICE` measures a second binary the same way, alternating with the first:
latency in `--rounds` blocks of edits (each block a fresh watch), then the idle windows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Watch:
    """A running `sluice watch --json` and its events, each stamped when read."""

    def __init__(self, ws: Path, sluice: str, extra_env: dict[str, str] | None = None):
        env = dict(os.environ, NO_COLOR="1")
        env.pop("RUST_LOG", None)
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sluice, "watch", "--json", "--jobs", "1"],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.events: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            ev = json.loads(line)
            with self.cond:
                self.events.append((now, ev))
                self.cond.notify_all()

    def wait(self, start: int, pred, timeout: float = 60.0) -> int:
        """Index of the first event at or after `start` that satisfies `pred`."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.events)):
                    if pred(self.events[i][1]):
                        return i
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching event after {timeout}s: {self.events[-5:]}")
                self.cond.wait(left)

    def count(self) -> int:
        with self.cond:
            return len(self.events)

    def stop(self) -> int:
        self.proc.send_signal(2)
        return self.proc.wait(timeout=60)


def is_(kind):
    return lambda e: e.get("event") == kind


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency(sluice: str, edits: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as d:
        ws = Path(d)
        (ws / "in").mkdir()
        (ws / "in/x.txt").write_text("start\n")
        (ws / "sluice.yaml").write_text(
            'stages:\n  t: {run: "cat ${{ inputs.i }} > ${{ outputs.o }}", '
            "inputs: {i: in/x.txt}, outputs: [o]}\n"
        )
        w = Watch(ws, sluice)
        pos = w.wait(0, is_("waiting")) + 1
        to_start, to_end = [], []
        for i in range(edits):
            time.sleep(0.2)  # pacing between edits, outside the measurement
            t0 = time.monotonic()
            with open(ws / "in/x.txt", "w") as f:
                f.write(f"edit {i}\n")
            s = w.wait(pos, lambda e: e.get("event") == "stage_started" and e.get("stage") == "t")
            e = w.wait(s, is_("waiting"))
            to_start.append((w.events[s][0] - t0) * 1000)
            to_end.append((w.events[e][0] - t0) * 1000)
            pos = e + 1
        changes = sum(1 for _, ev in w.events if ev.get("event") == "changed")
        code = w.stop()
    return latency_summary(edits, changes, code, to_start, to_end)


def latency_summary(edits: int, changes: int, code: int, to_start: list, to_end: list) -> dict:
    summary = lambda xs: {
        "median_ms": round(statistics.median(xs), 1),
        "p95_ms": round(pct(xs, 0.95), 1),
        "max_ms": round(max(xs), 1),
        "min_ms": round(min(xs), 1),
    }
    return {
        "edits": edits,
        "changes_seen": changes,
        "exit_code": code,
        "to_stage_start": summary(to_start),
        "to_round_end": summary(to_end),
        "samples_start_ms": [round(x, 1) for x in to_start],
        "samples_end_ms": [round(x, 1) for x in to_end],
    }


def merged(blocks: list[dict]) -> dict:
    """Latency blocks of one binary as one result."""
    return latency_summary(
        sum(b["edits"] for b in blocks),
        sum(b["changes_seen"] for b in blocks),
        max(b["exit_code"] for b in blocks),
        [x for b in blocks for x in b["samples_start_ms"]],
        [x for b in blocks for x in b["samples_end_ms"]],
    )


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle(sluice: str, files: int, window: float, poll: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="watch-bench-idle-") as d:
        ws = Path(d)
        folders = 10
        for c in range(folders):
            p = ws / "data/images" / f"c{c}"
            p.mkdir(parents=True)
            for i in range(files // folders):
                (p / f"{i:05}.txt").write_text(f"{c} {i}\n")
        (ws / "sluice.yaml").write_text(
            'stages:\n  count: {run: "find ${{ inputs.i }} -type f | wc -l > ${{ outputs.o }}", '
            "inputs: {i: data/images}, outputs: [o]}\n"
        )
        t0 = time.monotonic()
        w = Watch(ws, sluice, {"SLUICE_WATCH_POLL": "1"} if poll else None)
        first = w.wait(0, is_("waiting"), timeout=300)
        ready_s = w.events[first][0] - t0
        watching = next(ev for _, ev in w.events if ev.get("event") == "watching")
        time.sleep(1.0)  # let the first round's own events drain before the window
        hz = os.sysconf("SC_CLK_TCK")
        a = cpu_ticks(w.proc.pid)
        ta = time.monotonic()
        time.sleep(window)
        b = cpu_ticks(w.proc.pid)
        tb = time.monotonic()
        rss = rss_kib(w.proc.pid)
        events_during = w.count() - first - 1
        code = w.stop()
    return {
        "files": files,
        "mode": "polling" if poll else "native",
        "watching": watching,
        "start_to_idle_s": round(ready_s, 2),
        "window_s": round(tb - ta, 1),
        "cpu_s": (b - a) / hz,
        "cpu_percent": round(100.0 * (b - a) / hz / (tb - ta), 3),
        "rss_mib": round(rss / 1024, 1),
        "events_while_idle": events_during,
        "exit_code": code,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--idle", type=float, default=30.0, help="idle window in seconds")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--baseline", help="a second sluice binary, measured alternately with the first")
    ap.add_argument("--rounds", type=int, default=1, help="latency blocks per binary (with --baseline)")
    ap.add_argument("--no-polling", action="store_true", help="skip the polling fallback's idle window")
    args = ap.parse_args()
    sluice = os.environ.get("SLUICE", str(REPO / "target/release/sluice"))
    # Absolute: each watch runs in its own temporary workspace.
    binaries = {"sluice": os.path.abspath(sluice), **({"baseline": os.path.abspath(args.baseline)} if args.baseline else {})}
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "kernel": platform.release()},
    }
    blocks: dict[str, list] = {name: [] for name in binaries}
    rounds = max(1, args.rounds)
    for r in range(rounds):
        for name, path in binaries.items():
            blocks[name].append(latency(path, args.edits // rounds))
    for name, path in binaries.items():
        result[name] = {"path": path, "latency": merged(blocks[name])}
    for poll in (False,) if args.no_polling else (False, True):
        for name, path in binaries.items():
            result[name]["idle_polling" if poll else "idle_native"] = idle(path, args.files, args.idle, poll=poll)
    result["machine"]["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for name in binaries:
        res = result[name]
        lat = res["latency"]
        print(f"{name} ({res['path']}): latency over {lat['edits']} edits (changes seen: {lat['changes_seen']}):")
        for k in ("to_stage_start", "to_round_end"):
            v = lat[k]
            print(f"  {k:15} median {v['median_ms']} ms  p95 {v['p95_ms']} ms  max {v['max_ms']} ms")
        for k in ("idle_native", "idle_polling"):
            if k not in res:
                continue
            v = res[k]
            print(
                f"  {k}: {v['files']} files, {v['cpu_percent']}% CPU over {v['window_s']} s "
                f"({v['cpu_s']} s), RSS {v['rss_mib']} MiB, first round done after {v['start_to_idle_s']} s, "
                f"watching {v['watching']}"
            )
    sys.exit(0)


if __name__ == "__main__":
    main()
