#!/usr/bin/env python3
"""Regenerates examples/data/diabetes.csv from scikit-learn's copy of the diabetes data (Efron et
al., "Least Angle Regression", 2004): 442 patients, ten baseline measurements, and a measure of
disease progression one year later (25..346, the regression target).

    python3 examples/data/make_diabetes.py PATH/TO/sklearn/datasets/data

The folder holds diabetes_data_raw.csv.gz (the unscaled features, space-separated) and
diabetes_target.csv.gz. Standard library only; reruns give identical files.
"""

import gzip
import os
import sys

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "progression"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with gzip.open(os.path.join(sys.argv[1], "diabetes_data_raw.csv.gz"), "rt") as f:
        features = [line.split() for line in f if line.strip()]
    with gzip.open(os.path.join(sys.argv[1], "diabetes_target.csv.gz"), "rt") as f:
        targets = [line.strip() for line in f if line.strip()]
    if len(features) != len(targets):
        sys.exit(f"{len(features)} feature rows but {len(targets)} targets")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diabetes.csv")
    with open(out, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for row, target in zip(features, targets):
            f.write(",".join(row + [f"{float(target):g}"]) + "\n")


if __name__ == "__main__":
    main()
