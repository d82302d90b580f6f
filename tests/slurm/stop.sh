#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start.sh: cancel every job, then stop slurmd,
# slurmctld and munged (by the pids in their pid files). Idempotent: stopping a stopped cluster
# succeeds. `--keep-jobs` skips the scancel (start.sh uses it to restart on a config change).
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
keep=0
[ "${1:-}" = --keep-jobs ] && keep=1

stop_pidfile() { # stop_pidfile NAME PIDFILE: TERM, wait up to 10 s, then KILL
  local pid
  [ -s "$2" ] || return 0
  pid=$(cat "$2" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm: $1 ($pid) ignored SIGTERM, killing it"; kill -KILL "$pid" 2>/dev/null; }
  fi
  rm -f "$2"
}

if [ "$keep" = 0 ] && command -v scancel >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
  scancel --full --quiet --user=root 2>/dev/null
  scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
  # Let slurmd deliver the signals before it goes away.
  for _ in $(seq 50); do [ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ] && break; sleep 0.1; done
fi
stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
[ "$keep" = 0 ] && stop_pidfile munged /run/munge/munged.pid
echo "slurm: stopped"
