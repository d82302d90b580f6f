#!/usr/bin/env python3
"""Renders the per-class summary as a Markdown table: report.py SUMMARY.json COLUMN..."""
import json
import sys

summary = json.load(open(sys.argv[1]))
columns = sys.argv[2:]
print("# Iris: per-class means\n")
print("| class | n | " + " | ".join(columns) + " |")
print("|---|---|" + "---|" * len(columns))
for cls, stats in summary.items():
    cells = [f"{stats[c]['mean']:.2f} ± {stats[c]['std']:.2f}" for c in columns]
    print(f"| {cls} | {stats['count']} | " + " | ".join(cells) + " |")
