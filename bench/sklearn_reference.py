#!/usr/bin/env python3
"""sluice's test metric next to scikit-learn's on the same split (issue 15).

Runs each shipped example pipeline with sluice in a temporary workspace, then fits scikit-learn
models on the very arrays sluice's `normalize` wrote (`out/<name>/normalized/{train,test}`, the
features standardized on the train split) and scores them on the same test rows:

- regression (diabetes): LinearRegression, Ridge(), and MLPRegressor(random_state=0) on
  targets standardized like sluice's (mapped back before scoring); metric R².
- classification (iris, digits): LogisticRegression(max_iter=2000) and
  MLPClassifier(random_state=0, max_iter=1000), images flattened; metric accuracy.

scikit-learn is installed into its own virtual environment on first use (`--venv`, default
~/.cache/sluice/bench-sklearn), never into sluice's training environment.

    cargo build && python3 bench/sklearn_reference.py [--sluice target/debug/sluice] [--json FILE]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = {
    # name: (task, data files or folders to copy, sluice's metric)
    "diabetes": ("regression", ["examples/data/diabetes.csv"], "r2"),
    "iris": ("classification", ["examples/data/iris.csv"], "accuracy"),
    "digits": ("classification", ["examples/data/digits"], "accuracy"),
}

# Runs inside the scikit-learn venv: argv[1] is the workspace, argv[2] the pipeline name,
# argv[3] the task. Prints {model: metric}.
REFERENCE = r'''
import json, sys, warnings
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor

warnings.simplefilter("ignore", ConvergenceWarning)
ws, name, task = sys.argv[1:4]
def split(s):
    d = f"{ws}/out/{name}/normalized/{s}"
    x = np.load(f"{d}/features.npy").astype(np.float64)
    return x.reshape(len(x), -1), np.load(f"{d}/labels.npy")
(xt, yt), (xs, ys) = split("train"), split("test")
out = {}
if task == "regression":
    yt, ys = yt.astype(np.float64), ys.astype(np.float64)
    out["LinearRegression"] = r2_score(ys, LinearRegression().fit(xt, yt).predict(xs))
    out["Ridge()"] = r2_score(ys, Ridge().fit(xt, yt).predict(xs))
    m, s = yt.mean(), yt.std()
    mlp = MLPRegressor(random_state=0).fit(xt, (yt - m) / s)
    out["MLPRegressor(random_state=0), standardized y"] = r2_score(ys, mlp.predict(xs) * s + m)
else:
    out["LogisticRegression"] = accuracy_score(ys, LogisticRegression(max_iter=2000).fit(xt, yt).predict(xs))
    mlp = MLPClassifier(random_state=0, max_iter=1000).fit(xt, yt)
    out["MLPClassifier(random_state=0)"] = accuracy_score(ys, mlp.predict(xs))
out["rows"] = {"train": len(xt), "test": len(xs)}
print(json.dumps(out))
'''


def sklearn_python(venv: str) -> str:
    python = os.path.join(venv, "bin", "python")
    ready = os.path.join(venv, ".ready")
    if not os.path.exists(ready):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "scikit-learn", "numpy"], check=True)
        open(ready, "w").close()
    return python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sluice", default=os.path.join(REPO, "target", "debug", "sluice"))
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/sluice/bench-sklearn"))
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("pipelines", nargs="*", default=list(PIPELINES))
    args = ap.parse_args()
    python = sklearn_python(args.venv)
    results = {}
    for name in args.pipelines:
        task, data, metric = PIPELINES[name]
        with tempfile.TemporaryDirectory() as ws:
            for rel in data + [f"pipelines/{name}.yaml"]:
                src, dst = os.path.join(REPO, rel), os.path.join(ws, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                (shutil.copytree if os.path.isdir(src) else shutil.copyfile)(src, dst)
            subprocess.run([args.sluice, "run", f"pipelines/{name}.yaml"], cwd=ws, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(ws, "out", name, "metrics.json")) as f:
                sluice = json.load(f)["metrics"][metric]
            ref = subprocess.run([python, "-c", REFERENCE, ws, name, task], check=True,
                                 capture_output=True, text=True)
            results[name] = {"metric": metric, "sluice": sluice, "sklearn": json.loads(ref.stdout)}
    print("| pipeline | metric | sluice | scikit-learn on the same split |")
    print("|---|---|---|---|")
    for name, r in results.items():
        refs = ", ".join(f"{k} {v:.3f}" for k, v in r["sklearn"].items() if k != "rows")
        rows = r["sklearn"]["rows"]
        print(f"| {name} ({rows['train']} train / {rows['test']} test rows) | {r['metric']} | {r['sluice']:.3f} | {refs} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
