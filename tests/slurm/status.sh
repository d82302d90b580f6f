#!/usr/bin/env bash
# Exit 0 iff the test cluster is up and takes jobs (same as `start.sh --check`; pass --probe to
# also run a trivial job). Tests use this to decide between running and SKIPPED.
exec "$(dirname "$0")/start.sh" --check "$@"
