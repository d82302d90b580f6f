#!/usr/bin/env python3
"""Checks that two sluice binaries give the same outputs on the tables pipeline of
`tables_bench.py`: the guard for speed-ups that must not change results.

    python3 bench/compare_outputs.py OLD_SLUICE NEW_SLUICE --csv /tmp/tb3/data.csv \
        --ref-python /tmp/bench3-venv/bin/python

`--csv`: any CSV of the benchmark's generator (`tables_bench.py --rows 3000000 --runs 0 --tools
sluice --workdir /tmp/tb3` makes a 3M-row one in seconds). JSON and `.npy` outputs must be
byte-identical; Parquet outputs must hold equal tables (compared with pyarrow under
`--ref-python`; the files' bytes may differ, e.g. in statistics). Exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables_bench  # noqa: E402  (the pipeline and column names)

SAME_TABLE = "import sys, pyarrow.parquet as pq; sys.exit(0 if pq.read_table(sys.argv[1]).equals(pq.read_table(sys.argv[2])) else 1)"


def run(sluice: str, csv: Path, work: Path) -> Path:
    work.mkdir(parents=True)
    os.link(csv, work / "data.csv")
    (work / "sluice.yaml").write_text(
        tables_bench.PIPELINE.format(csv="data.csv", num=", ".join(tables_bench.NUM))
    )
    env = dict(os.environ, SLUICE_CACHE_DIR=str(work / "cache"))
    subprocess.run([sluice, "run", "sluice.yaml", "-q"], cwd=work, env=env, check=True)
    return work / "out"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--csv", required=True, type=Path)
    ap.add_argument("--ref-python", default=sys.executable, help="a Python with pyarrow")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-compare-", dir=args.csv.parent) as tmp:
        a = run(os.path.abspath(args.old), args.csv, Path(tmp) / "old")
        b = run(os.path.abspath(args.new), args.csv, Path(tmp) / "new")
        names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()}
                       | {p.relative_to(b) for p in b.rglob("*") if p.is_file()})
        differ = 0
        for name in names:
            x, y = a / name, b / name
            if not (x.is_file() and y.is_file()):
                verdict = "only in one"
            elif name.suffix == ".parquet":
                same = subprocess.run([args.ref_python, "-c", SAME_TABLE, str(x), str(y)]).returncode == 0
                verdict = "equal tables" if same else "DIFFERENT TABLES"
            else:
                verdict = "identical" if x.read_bytes() == y.read_bytes() else "DIFFERENT BYTES"
            differ += verdict not in ("identical", "equal tables")
            print(f"{verdict:18s} {name}")
        print(f"{len(names)} outputs, {differ} differ")
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
