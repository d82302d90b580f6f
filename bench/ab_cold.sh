#!/usr/bin/env bash
# Cold runs of one pipeline workspace with two sluice binaries, alternating per round, so that
# load from other work on a shared machine hits both alike. Prints "ROUND BINARY SECONDS".
#
#   bench/ab_cold.sh ROUNDS WORKSPACE OLD_SLUICE NEW_SLUICE
#
# WORKSPACE holds sluice.yaml and its inputs (e.g. the tables pipeline of tables_bench.py with
# `--keep`). Before each run `.sluice`, `out` and `sluice.lock` are removed: nothing cached.
set -euo pipefail
rounds=$1 ws=$2
shift 2
cd "$ws"
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    rm -rf .sluice out sluice.lock
    start=$(date +%s.%N)
    "$bin" run -q >/dev/null
    end=$(date +%s.%N)
    echo "$r $bin $(echo "$end - $start" | bc)"
  done
done
