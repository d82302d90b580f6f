#!/usr/bin/env python3
"""An example sluice plugin stage: adds derived feature columns to a CSV table.

It speaks sluice's JSON stage protocol (docs/plugins.md): one request object arrives on stdin;
progress, log and metric messages go to stdout as JSON lines, ending with a `result` message.
Anything written to stderr lands in the stage's log file.

Config (`with:`):
  columns:  numeric columns to derive features from (default: every numeric column)
  square:   also add COLUMN_sq = COLUMN ** 2 (default true)
  ratio:    [A, B] adds A_over_B = A / B (optional)
  fail:     a message; when set, the plugin reports that error (used by the tests)
  sleep:    seconds to pause per row (used by the timeout test)
"""

import csv
import json
import os
import sys
import time


def emit(kind, **fields):
    fields["type"] = kind
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def main():
    request = json.load(sys.stdin)
    if request.get("protocol") != 1:
        emit("result", status="error", message=f"unsupported protocol {request.get('protocol')}")
        return 1
    cfg = request.get("with") or {}
    if cfg.get("fail"):
        print(f"asked to fail: {cfg['fail']}", file=sys.stderr)
        emit("result", status="error", message=str(cfg["fail"]))
        return 1

    source = request["inputs"]["table"]
    target = request["outputs"]["table"]
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        emit("result", status="error", message=f"{source}: no data rows")
        return 1
    header = list(rows[0].keys())
    numeric = [c for c in header if all(is_number(r[c]) for r in rows)]
    columns = cfg.get("columns") or numeric
    ratio = cfg.get("ratio")
    # Every column the config names is checked before any work: a typo is an error that names
    # it, not a traceback halfway through.
    unknown = [c for c in columns + list(ratio or []) if c not in header]
    if unknown:
        shown = os.path.relpath(source, request.get("workspace", "."))
        emit("result", status="error", message=f"{shown}: unknown column(s) {unknown}; the table has {header}")
        return 1
    if ratio and (len(ratio) != 2 or not all(c in numeric for c in ratio)):
        emit("result", status="error", message=f"`ratio` needs two numeric columns, not {ratio}")
        return 1
    emit("log", level="info", message=f"{len(rows)} rows, deriving from {columns}")

    square = cfg.get("square", True)
    new_cols = [f"{c}_sq" for c in columns] if square else []
    if ratio:
        new_cols.append(f"{ratio[0]}_over_{ratio[1]}")
    pause = float(cfg.get("sleep", 0))

    # Write into the scratch directory sluice gives us (same file system), then rename into
    # place: a killed plugin never leaves a half-written output, and sluice cleans scratch up.
    tmp = os.path.join(request["scratch"], "table.csv")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header + new_cols, lineterminator="\n")
        writer.writeheader()
        total = len(rows)
        for i, row in enumerate(rows, 1):
            if square:
                for c in columns:
                    row[f"{c}_sq"] = repr(float(row[c]) ** 2)
            if ratio:
                b = float(row[ratio[1]])
                row[f"{ratio[0]}_over_{ratio[1]}"] = repr(float(row[ratio[0]]) / b) if b else ""
            writer.writerow(row)
            if pause:
                time.sleep(pause)
            if i % max(1, total // 10) == 0 or i == total:
                emit("progress", done=i, total=total, unit="rows")
    os.replace(tmp, target)
    emit("metric", name="rows", value=len(rows))
    emit("metric", name="features", value=len(header) + len(new_cols))
    emit("result", status="ok", metrics={"rows": len(rows)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
