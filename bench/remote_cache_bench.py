#!/usr/bin/env python3
"""Remote cache benchmark for sluice (issue 19). Python 3.9+, standard library only.

Three parts, all against local servers, every figure a median of --runs rounds, the compared
commands interleaved within each round (their order alternating from round to round) so that the
load of a shared machine falls on both sides alike:

digits   pipelines/digits.yaml (clean, split, normalize, train, evaluate, deploy) in a fresh clone
         of the sources (pipelines/digits.yaml and examples/data/digits copied into an empty
         directory: no .sluice/, no outputs, no lock file):
           restore    `sluice run pipelines/digits.yaml --json` with SLUICE_REMOTE_CACHE set to a
                      prefix that an earlier run (not timed) filled; every stage must be restored
           recompute  `sluice run pipelines/digits.yaml --json --no-remote`; every stage must run
         The train stage's Python environment (~/.cache/sluice) is shared and set up by the first,
         untimed run: neither side pays for it.

big      A one-stage pipeline whose `run:` stage writes a 1 GiB file (--size-mib), restored into a
         fresh clone from the remote vs recomputed there with --no-remote. The bytes come from a
         deterministic generator, the AES-128-CTR keystream of a zero key
         (`openssl enc -aes-128-ctr -K 0.. -iv 0.. -in /dev/zero | head -c SIZE`): incompressible
         like real model weights, and the same bytes every time. Where openssl is missing,
         `head -c SIZE /dev/urandom` instead (said in the output).

xfer     Throughput of that blob, sluice vs curl, same bytes, same server, each to a fresh prefix:
           push  `sluice cache push pipelines/big.yaml` (HEAD, PUT blob, PUT record)
                 vs `curl -sf -T BLOB URL/objects/..` (one PUT)
           pull  `sluice cache pull pipelines/big.yaml` into an empty local cache (GET record, GET
                 blob, BLAKE3 while downloading, into .sluice/cache)
                 vs `curl -sf -o FILE URL/objects/..` (one GET)
         Wall time of the whole process on both sides (sluice's start, lock and record included).
         MiB/s = blob size / median; ratio = sluice MiB/s / curl MiB/s (target >= 80%).
         With --s3, the same against moto (S3 emulator) on 127.0.0.1:18090, curl signing with
         `--aws-sigv4 aws:amz:us-east-1:s3 --user test:test -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'`.
         There sluice uploads a blob of 64 MiB or more in parts of a sixteenth of it, 16 to
         128 MiB (as it must for large blobs on real S3) while curl sends one PUT; moto assembles parts slowly in Python, so
         the S3 push ratio says more about moto than about a real S3 service.

Servers: the HTTP remote is --http (default http://127.0.0.1:18080, the read-write nginx of
tests/remote/start.sh); when it does not answer and tests/remote/start.sh exists, it is run.
--s3 needs moto on --s3-endpoint with bucket --s3-bucket (tests/remote/start.sh starts both).
Every run uses its own prefix `rbench-<pid>-<time>/...`; what it uploaded is deleted at the end.

    cargo build --release
    tests/remote/start.sh
    python3 bench/remote_cache_bench.py --runs 5 --s3     # ~8 minutes on 2 busy cores

Disk: the clones, the local caches and the servers' copies of the 1 GiB blob take up to ~6 GiB
at once (--tmp for the clones; the servers keep their own data directories).

--curl-only runs just the curl half of `xfer` (no sluice needed): a check of the servers and the
baseline. --parts digits,big,xfer picks parts.

Prints markdown tables with the exact command lines and writes every sample to --out (default
bench/results/remote-cache-DATE-COMMIT.json).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIGITS = "pipelines/digits.yaml"
DIGITS_DATA = "examples/data/digits"
BIG = "pipelines/big.yaml"
BIG_OUT = "out/big.bin"
MIB = 1 << 20
S3_SIGN = ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "test:test",
           "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]
# Every remote variable sluice reads; the child's environment starts without them so that a
# setting of the user's shell cannot redirect or silence a measurement.
REMOTE_VARS = ["SLUICE_REMOTE_CACHE", "SLUICE_REMOTE_CACHE_PUSH", "SLUICE_REMOTE_CACHE_AUTH",
               "SLUICE_REMOTE_CACHE_TOKEN"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def shell_line(argv: list, env: dict | None = None, cwd: Path | None = None) -> str:
    """The command as one could paste it into a shell (env assignments first)."""
    pre = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    cd = f"(cd {shlex.quote(str(cwd))} && " if cwd else ""
    return cd + pre + " ".join(shlex.quote(str(a)) for a in argv) + (")" if cwd else "")


def run(argv: list, cwd: Path | None = None, env: dict | None = None) -> tuple[float, str]:
    """Runs one child to completion with `env` added to a clean copy of ours; returns
    (wall seconds, stdout). Raises Failed on a non-zero exit, with the end of its stderr."""
    full = {k: v for k, v in os.environ.items() if k not in REMOTE_VARS}
    full.update(env or {})
    t0 = time.perf_counter()
    p = subprocess.run([str(a) for a in argv], cwd=cwd, env=full, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise Failed(f"`{shell_line(argv, env, cwd)}` exited {p.returncode}:\n"
                     f"{p.stderr[-3000:]}{p.stdout[-2000:]}")
    return wall, p.stdout


def outcomes(stdout: str) -> tuple[dict, dict | None]:
    """Each stage's `stage_finished` outcome in a `--json` run, and the `run_finished` event's
    remote part."""
    per: dict = {}
    remote = None
    for line in stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        if ev.get("event") == "stage_finished":
            per[str(ev.get("stage"))] = str(ev.get("outcome"))
        elif ev.get("event") == "run_finished":
            remote = ev.get("remote")
    return per, remote


def tally(per: dict) -> dict:
    return dict(Counter(per.values()))


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# Remotes


class Remote:
    """One remote cache root: how sluice names it, how curl reaches an object under it, and
    which environment both need."""

    def __init__(self, kind: str, url: str, http_base: str, env: dict, curl_auth: list):
        self.kind = kind            # "http" or "s3"
        self.url = url              # for SLUICE_REMOTE_CACHE, without a trailing slash
        self.http_base = http_base  # the same root as a plain http URL, for curl
        self.env = env
        self.curl_auth = curl_auth

    def sub(self, prefix: str) -> "Remote":
        return Remote(self.kind, f"{self.url}/{prefix}", f"{self.http_base}/{prefix}",
                      self.env, self.curl_auth)

    def sluice_env(self) -> dict:
        return dict(self.env, SLUICE_REMOTE_CACHE=self.url)

    def object_url(self, rel: str) -> str:
        return f"{self.http_base}/{rel}"

    def delete(self, rel: str) -> None:
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "DELETE", *self.curl_auth,
                        self.object_url(rel)], check=False)


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3)
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means a server is there
    except OSError:
        return False


def ensure_servers(http: str, s3_endpoint: str | None) -> None:
    wanted = [http] + ([s3_endpoint + "/moto-api/"] if s3_endpoint else [])
    if all(answers(u) for u in wanted):
        return
    start = REPO / "tests" / "remote" / "start.sh"
    if start.exists():
        log(f"starting the test servers: {start}")
        subprocess.run([str(start)], check=False)
    missing = [u for u in wanted if not answers(u)]
    if missing:
        raise SystemExit(f"no server at {', '.join(missing)}; start them with tests/remote/start.sh "
                         "(or pass --http / --s3-endpoint)")


# ---------------------------------------------------------------------------------------------
# Workspaces


def big_pipeline(size_mib: int) -> tuple[str, str]:
    """The one-stage 1 GiB pipeline and the name of its generator."""
    size = size_mib * MIB
    if shutil.which("openssl"):
        zero = "0" * 32
        gen = (f"openssl enc -aes-128-ctr -K {zero} -iv {zero} -in /dev/zero 2>/dev/null"
               f" | head -c {size} > {BIG_OUT}")
        name = "openssl AES-128-CTR keystream (deterministic)"
    else:
        gen = f"head -c {size} /dev/urandom > {BIG_OUT}"
        name = "/dev/urandom (random; openssl not found)"
    text = ("# Generated by bench/remote_cache_bench.py: one stage writing a large blob.\n"
            "name: big\nstages:\n  blob:\n"
            f"    run: mkdir -p out && {gen}\n"
            f"    outputs: {{blob: {BIG_OUT}}}\n")
    return text, name


class Clones:
    """Fresh clones of a workspace's sources under one temporary directory."""

    def __init__(self, base: Path, big_text: str):
        self.base = Path(tempfile.mkdtemp(prefix="sluice-rbench-", dir=base))
        self.big_text = big_text
        self.n = 0

    def fresh(self, what: str) -> Path:
        self.n += 1
        root = self.base / f"{what}-{self.n}"
        (root / "pipelines").mkdir(parents=True)
        if what == "digits":
            shutil.copy(REPO / DIGITS, root / DIGITS)
            shutil.copytree(REPO / DIGITS_DATA, root / DIGITS_DATA)
        else:
            (root / BIG).write_text(self.big_text)
        return root

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def rm(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cached_blobs(ws: Path) -> list[tuple[str, Path]]:
    """(remote-relative key, local path) of every blob in a workspace's local cache."""
    objs = ws / ".sluice" / "cache" / "objects"
    return [(f"objects/{p.parent.name}/{p.name}", p) for p in sorted(objs.glob("*/*")) if p.is_file()]


def cached_records(ws: Path) -> list[str]:
    recs = ws / ".sluice" / "cache" / "stages"
    return [f"stages/{p.name}" for p in sorted(recs.glob("*.json"))]


# ---------------------------------------------------------------------------------------------
# Parts


class Bench:
    def __init__(self, args, remote: Remote, s3: Remote | None):
        self.a = args
        self.sluice = str(Path(args.sluice).resolve()) if not args.curl_only else args.sluice
        self.remote = remote
        self.s3 = s3
        self.tag = f"rbench-{os.getpid()}-{int(time.time())}"
        self.big_text, self.generator = big_pipeline(args.size_mib)
        self.clones = Clones(Path(args.tmp), self.big_text)
        self.rows: list[dict] = []      # one per measured command
        self.checks: list[str] = []     # what was verified along the way
        self.uploaded: list[tuple[Remote, str]] = []  # (remote, key) to delete at the end

    def row(self, part: str, case: str, argv: list, env: dict, cwd: str, nbytes: int | None = None) -> dict:
        shown_env = {k: v for k, v in env.items() if k.startswith(("SLUICE_", "AWS_"))}
        r = {"part": part, "case": case, "command": shell_line(argv, shown_env) + (f"   # in {cwd}" if cwd else ""),
             "bytes": nbytes, "samples": []}
        self.rows.append(r)
        return r

    # -- digits and big: restore into a fresh clone vs recompute there ---------------------------

    def restore_vs_recompute(self, part: str, pipeline: str) -> None:
        what = "digits" if part == "digits" else "big"
        # deploy publishes into the workspace's registry (models/), which a fresh clone lacks:
        # it runs after its record is restored, as it must (stage.rs `after_restore`).
        may_run = {"deploy"} if part == "digits" else set()
        rem = self.remote.sub(f"{self.tag}/{part}")
        log(f"[{part}] filling {rem.url} (one untimed run that also sets up what the stages need)")
        origin = self.clones.fresh(what)
        _, out = run([self.sluice, "run", pipeline, "--json"], cwd=origin, env=rem.sluice_env())
        per, remote = outcomes(out)
        if not remote or remote.get("failed") or not remote.get("pushed_records"):
            raise Failed(f"[{part}] the filling run pushed nothing: remote summary {remote}")
        self.checks.append(f"{part}: filling run {tally(per)}, remote {remote}")
        for key in cached_records(origin) + [k for k, _ in cached_blobs(origin)]:
            self.uploaded.append((rem, key))
        rm(origin)

        restore_argv = [self.sluice, "run", pipeline, "--json"]
        recompute_argv = [self.sluice, "run", pipeline, "--json", "--no-remote"]
        r_restore = self.row(part, "restore from remote into a fresh clone", restore_argv, rem.sluice_env(), "")
        r_recompute = self.row(part, "recompute in a fresh clone (--no-remote)", recompute_argv, {}, "")
        for i in range(self.a.runs):
            order = [("restore", r_restore), ("recompute", r_recompute)]
            if i % 2:
                order.reverse()
            for name, r in order:
                ws = self.clones.fresh(what)
                try:
                    if name == "restore":
                        wall, out = run(restore_argv, cwd=ws, env=rem.sluice_env())
                        per, remote = outcomes(out)
                        wrong = {s: o for s, o in per.items()
                                 if o != "restored" and not (s in may_run and o == "ran")}
                    else:
                        wall, out = run(recompute_argv, cwd=ws)
                        per, remote = outcomes(out)
                        wrong = {s: o for s, o in per.items() if o != "ran"}
                    if wrong or not per:
                        raise Failed(f"[{part}] {name} round {i}: unexpected outcomes {wrong or per}; "
                                     f"remote {remote}")
                    r["samples"].append(wall)
                    r.setdefault("outcomes", per)
                    if remote:
                        r.setdefault("remote_summary", remote)
                    log(f"[{part}] round {i + 1}/{self.a.runs} {name}: {wall:.2f}s {tally(per)}")
                finally:
                    rm(ws)
        ran = ", ".join(sorted(may_run)) or "none"
        self.checks.append(f"{part}: every restore round restored every stage (ran: {ran}); "
                           "every recompute round ran every stage")

    # -- xfer: sluice cache push/pull vs curl ---------------------------------------------------

    def xfer(self, base: Remote, label: str, curl_only: bool) -> None:
        part = f"xfer-{label}"
        size = self.a.size_mib * MIB
        origin = self.clones.fresh("big")
        if curl_only:
            # No sluice: a file of the same size and kind stands in for the blob.
            blob_rel, blob = "objects/00/curl-only", origin / BIG_OUT
            blob.parent.mkdir(parents=True)
            gen = self.big_text.split("run: mkdir -p out && ", 1)[1].split("\n", 1)[0]
            subprocess.run(["sh", "-c", gen], cwd=origin, check=True)
            src = base.sub(f"{self.tag}/{label}-origin")
            run(["curl", "-sf", "-T", blob, *base.curl_auth, src.object_url(blob_rel)])
        else:
            # Fill the local cache (and nothing remote), then one untimed push makes the origin
            # prefix that every pull reads.
            run([self.sluice, "run", BIG, "--json", "--no-remote"], cwd=origin)
            blobs = [(k, p) for k, p in cached_blobs(origin) if p.stat().st_size == size]
            if len(blobs) != 1:
                raise Failed(f"[{part}] expected one {size}-byte blob in the local cache, found {blobs}")
            blob_rel, blob = blobs[0]
            src = base.sub(f"{self.tag}/{label}-origin")
            run([self.sluice, "cache", "push", BIG], cwd=origin, env=src.sluice_env())
            for key in cached_records(origin):
                self.uploaded.append((src, key))
        self.uploaded.append((src, blob_rel))
        puller = self.clones.fresh("big")
        if not curl_only:
            lock = origin / "pipelines" / "big.lock"
            shutil.copy(lock, puller / "pipelines" / "big.lock")
        dl = puller / "curl-download.bin"

        cases = []
        if not curl_only:
            cases.append(("sluice cache push", "push"))
        cases.append(("curl -T (PUT)", "curl-put"))
        if not curl_only:
            cases.append(("sluice cache pull", "pull"))
        cases.append(("curl -o (GET)", "curl-get"))
        rows = {}
        for name, kind in cases:
            if kind == "push":
                dst = base.sub(f"{self.tag}/{label}-push-N")
                rows[kind] = self.row(part, name, [self.sluice, "cache", "push", BIG], dst.sluice_env(), "origin clone", size)
            elif kind == "curl-put":
                dst = base.sub(f"{self.tag}/{label}-curl-N")
                rows[kind] = self.row(part, name, ["curl", "-sf", "-o", "/dev/null", "-T", "BLOB", *base.curl_auth, dst.object_url(blob_rel)], {}, "", size)
            elif kind == "pull":
                rows[kind] = self.row(part, name, [self.sluice, "cache", "pull", BIG], src.sluice_env(), "clone with the lock file, empty .sluice/cache", size)
            else:
                rows[kind] = self.row(part, name, ["curl", "-sf", "-o", "FILE", *base.curl_auth, src.object_url(blob_rel)], {}, "", size)

        for i in range(self.a.runs):
            order = [k for _, k in cases]
            if i % 2:
                order.reverse()
            for kind in order:
                if kind == "push":
                    dst = base.sub(f"{self.tag}/{label}-push-{i}")
                    wall, _ = run([self.sluice, "cache", "push", BIG], cwd=origin, env=dst.sluice_env())
                    got = self.head_size(dst, blob_rel)
                    for key in cached_records(origin) + [blob_rel]:
                        dst.delete(key)
                elif kind == "curl-put":
                    dst = base.sub(f"{self.tag}/{label}-curl-{i}")
                    wall, _ = run(["curl", "-sf", "-o", "/dev/null", "-T", blob, *base.curl_auth, dst.object_url(blob_rel)])
                    got = self.head_size(dst, blob_rel)
                    dst.delete(blob_rel)
                elif kind == "pull":
                    rm(puller / ".sluice")
                    wall, _ = run([self.sluice, "cache", "pull", BIG], cwd=puller, env=src.sluice_env())
                    pulled = [p for _, p in cached_blobs(puller)]
                    got = sum(p.stat().st_size for p in pulled)
                    rm(puller / ".sluice")
                else:
                    wall, _ = run(["curl", "-sf", "-o", dl, *base.curl_auth, src.object_url(blob_rel)])
                    got = dl.stat().st_size
                    dl.unlink()
                if got != size:
                    raise Failed(f"[{part}] {kind} round {i}: moved {got} bytes, expected {size}")
                rows[kind]["samples"].append(wall)
                log(f"[{part}] round {i + 1}/{self.a.runs} {kind}: {wall:.2f}s = {size / MIB / wall:.0f} MiB/s")
        self.checks.append(f"{part}: every transfer moved exactly {size} bytes "
                           "(HEAD after each PUT, file size after each GET)")
        rm(origin)
        rm(puller)

    def head_size(self, rem: Remote, rel: str) -> int:
        p = subprocess.run(["curl", "-sfI", *rem.curl_auth, rem.object_url(rel)], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if line.lower().startswith("content-length:"):
                return int(line.split(":", 1)[1])
        return -1

    def cleanup(self) -> None:
        for rem, key in self.uploaded:
            rem.delete(key)
        self.clones.remove()


# ---------------------------------------------------------------------------------------------
# Report


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        m = median(r["samples"])
        s = dict(r, median_s=m, min_s=min(r["samples"]) if r["samples"] else None,
                 max_s=max(r["samples"]) if r["samples"] else None)
        if m and r.get("bytes"):
            s["mib_s"] = r["bytes"] / MIB / m
        out.append(s)
    # ratios: restore vs recompute (speed-up), sluice vs curl (throughput share)
    by = {(s["part"], s["case"]): s for s in out}
    for s in out:
        if s["case"].startswith("restore"):
            other = by.get((s["part"], "recompute in a fresh clone (--no-remote)"))
            if other and s["median_s"] and other["median_s"]:
                s["speedup_vs_recompute"] = other["median_s"] / s["median_s"]
        for mine, theirs in (("sluice cache push", "curl -T (PUT)"), ("sluice cache pull", "curl -o (GET)")):
            if s["case"] == mine:
                other = by.get((s["part"], theirs))
                if other and s.get("mib_s") and other.get("mib_s"):
                    s["vs_curl"] = s["mib_s"] / other["mib_s"]
    return out


def table(summary: list[dict]) -> str:
    lines = ["| part | case | median | min–max | MiB/s | ratio |", "|---|---|---|---|---|---|"]
    for s in summary:
        if s["median_s"] is None:
            continue
        ratio = ""
        if "speedup_vs_recompute" in s:
            ratio = f"{s['speedup_vs_recompute']:.1f}× faster than recompute"
        if "vs_curl" in s:
            ratio = f"{100 * s['vs_curl']:.0f}% of curl"
        mib = f"{s['mib_s']:.0f}" if s.get("mib_s") else ""
        lines.append(f"| {s['part']} | {s['case']} | {s['median_s']:.2f} s | "
                     f"{s['min_s']:.2f}–{s['max_s']:.2f} s | {mib} | {ratio} |")
    lines.append("")
    lines.append("Commands:")
    lines.append("")
    for s in summary:
        lines.append(f"- {s['part']} / {s['case']}: `{s['command']}`")
    return "\n".join(lines)


def git(*a: str) -> str:
    p = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
    return p.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sluice", default=os.environ.get("SLUICE", str(REPO / "target/release/sluice")),
                    help="the sluice binary (default target/release/sluice, or $SLUICE)")
    ap.add_argument("--runs", type=int, default=5, help="rounds per comparison; figures are medians (default 5)")
    ap.add_argument("--out", help="write the samples and medians as JSON here "
                                  "(default bench/results/remote-cache-DATE-COMMIT.json)")
    ap.add_argument("--parts", default="digits,big,xfer", help="comma-separated: digits, big, xfer")
    ap.add_argument("--http", default="http://127.0.0.1:18080", help="the read-write WebDAV remote")
    ap.add_argument("--s3", action="store_true", help="also measure xfer against moto (S3)")
    ap.add_argument("--s3-endpoint", default="http://127.0.0.1:18090")
    ap.add_argument("--s3-bucket", default="sluice-cache")
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the big blob (default 1024 = 1 GiB)")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the clones go (needs ~3x the blob size free)")
    ap.add_argument("--curl-only", action="store_true", help="only the curl rows of xfer (checks the servers)")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("digits", "big", "xfer")]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from digits, big, xfer")
    if a.curl_only:
        parts = ["xfer"]
    elif not Path(a.sluice).is_file():
        ap.error(f"no sluice binary at {a.sluice}; build it with `cargo build --release` or pass --sluice")
    for tool in ("curl",):
        if not shutil.which(tool):
            ap.error(f"`{tool}` is not on PATH")

    http = a.http.rstrip("/")
    ensure_servers(http, a.s3_endpoint.rstrip("/") if a.s3 else None)
    remote = Remote("http", http, http, {}, [])
    s3 = None
    if a.s3:
        ep = a.s3_endpoint.rstrip("/")
        env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": ep, "AWS_ALLOW_HTTP": "true"}
        s3 = Remote("s3", f"s3://{a.s3_bucket}", f"{ep}/{a.s3_bucket}", env, S3_SIGN)

    b = Bench(a, remote, s3)
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    version = "" if a.curl_only else subprocess.run([b.sluice, "--version"], capture_output=True, text=True).stdout.strip()
    started = _dt.datetime.now(_dt.timezone.utc)
    log(f"remote cache bench: {a.runs} rounds, parts {parts}, blob {a.size_mib} MiB ({b.generator}), "
        f"HTTP {http}{', S3 ' + a.s3_endpoint if a.s3 else ''}; clones under {b.clones.base}")
    error = None
    try:
        if "digits" in parts:
            b.restore_vs_recompute("digits", DIGITS)
        if "big" in parts:
            b.restore_vs_recompute("big", BIG)
        if "xfer" in parts:
            b.xfer(remote, "http", a.curl_only)
            if s3:
                b.xfer(s3, "s3", a.curl_only)
    except Failed as e:
        error = str(e)
        log(f"FAILED: {e}")
    finally:
        b.cleanup()

    summary = summarize(b.rows)
    print(table(summary))
    if b.checks:
        print("\nChecked:\n" + "\n".join(f"- {c}" for c in b.checks))
    print(f"\nblob generator: {b.generator}")
    result = {
        "bench": "remote_cache_bench.py", "started": started.isoformat(timespec="seconds"),
        "commit": commit, "sluice": b.sluice, "sluice_version": version, "runs": a.runs,
        "size_mib": a.size_mib, "generator": b.generator, "http": http,
        "s3": f"{a.s3_endpoint} bucket {a.s3_bucket}" if a.s3 else None,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "argv": sys.argv, "rows": summary, "checks": b.checks, "error": error,
    }
    out = Path(a.out) if a.out else REPO / "bench" / "results" / f"remote-cache-{started:%Y%m%d}-{commit}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
