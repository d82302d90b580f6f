#!/usr/bin/env bash
# Start the remote-cache test servers on this machine for sluice's tests and CI, without systemd:
# one nginx (Debian's, WebDAV PUT) with three servers over one data directory, and moto, an S3
# emulator. Idempotent: servers that already answer are left alone.
#
#   tests/remote/start.sh            start (or confirm) them; exit 1 with the reason if one cannot
#   tests/remote/start.sh --install  same, first installing nginx (apt, as root) and the moto
#                                    virtual environment (pip, from PyPI) when missing
#   tests/remote/start.sh --check    exit 0 iff all four ports answer as the tests expect; starts nothing
#
# Ports: 18080 read-write, 18081 read-only (PUT answers 405), 18082 read-write with basic auth
# sluice:s3cret-token-xyz, 18090 moto (bucket sluice-cache, keys test/test, us-east-1).
# State (config, logs, pid files, nginx's data) lives under ${SLUICE_REMOTE_DIR:-/tmp/sluice-remote};
# the moto venv under ${SLUICE_MOTO_VENV:-~/.cache/sluice/moto-5.2.6}, kept between runs because
# installing it takes a minute and a half. Nothing is written to /etc. tests/remote/stop.sh stops them.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
install=0 check=0
for a in "$@"; do
  case "$a" in
    --install) install=1 ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "remote: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
export PATH="$PATH:/usr/sbin:/sbin"

dir=${SLUICE_REMOTE_DIR:-/tmp/sluice-remote}
ngx=$dir/nginx
moto_dir=$dir/moto
moto_version=5.2.6
venv=${SLUICE_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/moto-$moto_version}
user=sluice password=s3cret-token-xyz
bucket=sluice-cache
base=http://127.0.0.1

fail() { echo "remote: not started: $*" >&2; exit 1; }

# status METHOD URL [CURL ARGS...]: the HTTP status code, 000 when nothing answers. Bounded, so a
# server that accepts and never answers cannot hang the check.
status() {
  local method=$1 url=$2; shift 2
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method" "$@" "$url" 2>/dev/null
  return 0
}
# A HEAD without a body to wait for (curl -X HEAD would wait for one).
head_status() {
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -I "$@" "$url" 2>/dev/null
  return 0
}
s3() { echo --aws-sigv4 "aws:amz:us-east-1:s3" --user test:test; }

# What each server must answer; prints the first mismatch and returns 1.
check_nginx() {
  local s
  s=$(status PUT "$base:18080/.sluice-check/probe" --data-binary probe)
  case "$s" in 201|204) ;; *) echo "18080: PUT answered $s, expected 201/204"; return 1 ;; esac
  s=$(status GET "$base:18080/.sluice-check/probe")
  [ "$s" = 200 ] || { echo "18080: GET answered $s, expected 200"; return 1; }
  s=$(status PUT "$base:18081/.sluice-check/probe" --data-binary probe)
  [ "$s" = 405 ] || { echo "18081 (read-only): PUT answered $s, expected 405"; return 1; }
  s=$(head_status "$base:18081/.sluice-check/probe")
  [ "$s" = 200 ] || { echo "18081 (read-only): HEAD answered $s, expected 200"; return 1; }
  s=$(status GET "$base:18082/.sluice-check/probe")
  [ "$s" = 401 ] || { echo "18082 (auth): GET without credentials answered $s, expected 401"; return 1; }
  s=$(status GET "$base:18082/.sluice-check/probe" --user "$user:$password")
  [ "$s" = 200 ] || { echo "18082 (auth): GET with credentials answered $s, expected 200"; return 1; }
}
check_moto() {
  local s
  # shellcheck disable=SC2046
  s=$(head_status "$base:18090/$bucket" $(s3))
  [ "$s" = 200 ] || { echo "18090 (moto): HEAD of bucket $bucket answered $s, expected 200"; return 1; }
}

if [ "$check" = 1 ]; then
  command -v curl >/dev/null 2>&1 || { echo "remote: no curl on PATH" >&2; exit 1; }
  why=$(check_nginx) || { echo "remote: $why" >&2; exit 1; }
  why=$(check_moto) || { echo "remote: $why" >&2; exit 1; }
  exit 0
fi

command -v curl >/dev/null 2>&1 || fail "no curl on PATH"

# --- packages (nginx, and python3-venv where Python lacks ensurepip) and the moto venv
apt_log=$dir/apt.log
apt_install() { # apt_install WHY PACKAGE...: Debian's packages, as root, or fail saying why
  local why=$1; shift
  [ "$install" = 1 ] || fail "$why; install Debian's $* or rerun with --install"
  [ "$(id -u)" = 0 ] || fail "$why, and installing $* needs root"
  command -v apt-get >/dev/null 2>&1 || fail "$why, and there is no apt-get to install $* with"
  echo "remote: installing $*"
  mkdir -p "$dir" || fail "cannot create $dir"
  # A service start is refused without systemd; that is fine, we start our own instance. The
  # lock timeout: .ci/run installs this in the background while other steps may use apt too.
  # Bounded: a mirror that does not answer must not eat CI's time (the tests then skip).
  local get=(env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=300)
  if ! "${get[@]}" install -y --no-install-recommends "$@" >>"$apt_log" 2>&1; then
    "${get[@]}" update >>"$apt_log" 2>&1
    "${get[@]}" install -y --no-install-recommends "$@" >>"$apt_log" 2>&1 \
      || fail "apt-get install $* failed: $(tail -n 3 "$apt_log" | tr '\n' ' ')"
  fi
}
if ! command -v nginx >/dev/null 2>&1; then
  apt_install "nginx is not installed" nginx
  command -v nginx >/dev/null 2>&1 || fail "apt-get installed nginx but there is no nginx on PATH"
fi
# A venv is finished only when its marker exists: an install killed halfway is redone.
if [ ! -e "$venv/.sluice-complete" ]; then
  [ "$install" = 1 ] || fail "no moto at $venv; rerun with --install (pip install 'moto[server]==$moto_version', about 90 s)"
  command -v python3 >/dev/null 2>&1 || apt_install "there is no python3 for moto" python3 python3-venv
  echo "remote: installing moto $moto_version into $venv"
  mkdir -p "$dir" "$(dirname "$venv")" || fail "cannot create $dir or $(dirname "$venv")"
  pip_log=$dir/moto-install.log
  rm -rf "$venv"
  # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
  if ! python3 -m venv "$venv" >"$pip_log" 2>&1; then
    rm -rf "$venv"
    apt_install "python3 cannot create a venv ($(tail -n 1 "$pip_log"))" python3-venv
    python3 -m venv "$venv" >>"$pip_log" 2>&1 || fail "python3 -m venv failed: $(tail -n 3 "$pip_log" | tr '\n' ' ')"
  fi
  timeout 600 "$venv/bin/pip" install --disable-pip-version-check -q "moto[server]==$moto_version" >>"$pip_log" 2>&1 \
    || fail "pip install moto[server]==$moto_version failed: $(tail -n 3 "$pip_log" | tr '\n' ' ')"
  touch "$venv/.sluice-complete"
fi

alive() { # alive PIDFILE: the process named by the pid file is running
  local pid
  [ -s "$1" ] && pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

# --- nginx
mkdir -p "$ngx/data" "$ngx/tmp" || fail "cannot create $ngx"
printf '%s:{PLAIN}%s\n' "$user" "$password" >"$ngx/htpasswd"
conf=$(sed -e "s|@DIR@|$ngx|g" "$here/nginx.conf.in") || fail "cannot read $here/nginx.conf.in"
ngx_args=(-p "$ngx" -e "$ngx/error.log" -c "$ngx/nginx.conf")
if [ "$(cat "$ngx/nginx.conf" 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" >"$ngx/nginx.conf.tmp" && mv "$ngx/nginx.conf.tmp" "$ngx/nginx.conf" || fail "cannot write $ngx/nginx.conf"
  if alive "$ngx/nginx.pid"; then
    echo "remote: nginx config changed, reloading"
    nginx "${ngx_args[@]}" -s reload 2>&1 || fail "nginx reload failed (log: $ngx/error.log)"
  fi
fi
# Ports that already answer as expected (an instance started from another state dir) are reused.
data="data $ngx/data"
if ! alive "$ngx/nginx.pid"; then
  if check_nginx >/dev/null; then
    data="an nginx from another state dir (not $ngx) serves the ports"
  else
    out=$(nginx -t -q "${ngx_args[@]}" 2>&1) || fail "nginx rejects its config: $out"
    out=$(nginx "${ngx_args[@]}" 2>&1) || fail "nginx refused to start: $out"
  fi
fi
for _ in $(seq 100); do why=$(check_nginx) && break; sleep 0.1; done
why=$(check_nginx) || fail "nginx does not answer as expected: $why (log: $ngx/error.log)"

# --- moto
mkdir -p "$moto_dir" || fail "cannot create $moto_dir"
if ! alive "$moto_dir/moto.pid" && [ "$(status GET "$base:18090/moto-api/")" = 000 ]; then
  # Its own session, so a CI step's end (or Ctrl-C in a terminal) does not take it down.
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p 18090 >"$moto_dir/moto.log" 2>&1 </dev/null &
  echo $! >"$moto_dir/moto.pid"
fi
for _ in $(seq 300); do [ "$(status GET "$base:18090/moto-api/")" = 200 ] && break; sleep 0.1; done
[ "$(status GET "$base:18090/moto-api/")" = 200 ] || fail "moto does not answer on 18090 after 30 s: $(tail -n 3 "$moto_dir/moto.log" 2>/dev/null | tr '\n' ' ')"
# moto keeps everything in memory: a restarted one has no bucket. Creating an existing one is harmless.
# shellcheck disable=SC2046
status PUT "$base:18090/$bucket" $(s3) >/dev/null
why=$(check_moto) || fail "$why"

echo "remote: up (nginx http://127.0.0.1:18080 rw, :18081 read-only, :18082 basic auth; moto s3://$bucket at http://127.0.0.1:18090; $data)"
