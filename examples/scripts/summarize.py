#!/usr/bin/env python3
"""Per-class mean and standard deviation of every numeric column: summarize.py TABLE.csv LABEL OUT.json"""
import csv
import json
import statistics
import sys

table, label, out = sys.argv[1:4]
with open(table, newline="") as f:
    rows = list(csv.DictReader(f))
columns = [c for c in rows[0] if c != label]
summary = {}
for cls in sorted({r[label] for r in rows}):
    members = [r for r in rows if r[label] == cls]
    summary[cls] = {
        "count": len(members),
        **{
            c: {
                "mean": round(statistics.fmean(float(r[c]) for r in members), 4),
                "std": round(statistics.pstdev(float(r[c]) for r in members), 4),
            }
            for c in columns
            if all(r[c] not in ("", None) for r in members)
        },
    }
with open(out, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
