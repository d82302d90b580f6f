#!/usr/bin/env bash
# Stop the remote-cache test servers started by tests/remote/start.sh (nginx, then moto, by the
# pids in their pid files). Idempotent: stopping stopped servers succeeds. `--purge` also deletes
# what nginx stored (its data directory); moto's data lives in its memory and goes with it.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
purge=0
for a in "$@"; do
  case "$a" in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "remote: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
dir=${SLUICE_REMOTE_DIR:-/tmp/sluice-remote}
ngx=$dir/nginx

# wait_gone PID: up to 10 s for it to exit; 1 if it is still there
wait_gone() {
  for _ in $(seq 100); do [ -d "/proc/$1" ] || return 0; sleep 0.1; done
  return 1
}

pid=$(cat "$ngx/nginx.pid" 2>/dev/null)
if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
  # quit: finish the requests in flight, then exit (workers included).
  nginx -p "$ngx" -e "$ngx/error.log" -c "$ngx/nginx.conf" -s quit 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  wait_gone "$pid" || { echo "remote: nginx ($pid) did not quit, killing it"; kill -KILL "$pid" 2>/dev/null; }
  echo "remote: nginx stopped"
fi
rm -f "$ngx/nginx.pid"

pid=$(cat "$dir/moto/moto.pid" 2>/dev/null)
if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
  # start.sh ran it with setsid: its pid is its process group.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  wait_gone "$pid" || { echo "remote: moto ($pid) ignored SIGTERM, killing it"; kill -KILL -- "-$pid" 2>/dev/null; }
  echo "remote: moto stopped"
fi
rm -f "$dir/moto/moto.pid"

if [ "$purge" = 1 ]; then
  rm -rf "$ngx/data" "$ngx/tmp"
fi
exit 0
