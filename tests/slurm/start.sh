#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine for sluice's tests and CI (as root, without
# systemd): munged, then slurmctld, then slurmd, with a config generated from the templates next
# to this script. Idempotent: a running cluster with the same config is left alone; a changed
# config restarts the daemons.
#
#   tests/slurm/start.sh            start (or confirm) the cluster; exit 1 with the reason if it cannot
#   tests/slurm/start.sh --install  same, installing Debian's packages first when missing (needs network)
#   tests/slurm/start.sh --check    exit 0 iff the cluster is up and its node takes jobs; starts nothing
#   tests/slurm/start.sh --check --probe   same, and also runs a trivial job through it (bounded: 30 s)
#
# The stop side is tests/slurm/stop.sh. docs/cluster.md ("Running the test cluster locally") says
# what each config knob does.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
install=0 check=0 probe=0
for a in "$@"; do
  case "$a" in
    --install) install=1 ;;
    --check) check=1 ;;
    --probe) probe=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "slurm: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done

node=$(hostname -s)
conf_dir=/etc/slurm
log_dir=/var/log/slurm
packages=(slurmctld slurmd slurm-client munge)
fake_gpus=(/dev/sluice-fake-gpu0 /dev/sluice-fake-gpu1)
wait_s=${SLUICE_SLURM_START_WAIT:-30}

fail() { echo "slurm: not started: $*" >&2; exit 1; }

alive() { # alive PIDFILE: the daemon named by the pid file is running
  local pid
  # /proc rather than kill -0, which fails for a non-root caller (tests run --check as any user).
  [ -s "$1" ] && pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

node_state() { sinfo -h -n "$node" -o %t 2>/dev/null | head -n1; }

# A node that takes jobs: idle, partly or fully allocated, or finishing one ("comp").
usable() { case "$(node_state)" in idle|mix|mixed|alloc|allocated|comp|completing) return 0 ;; *) return 1 ;; esac; }

probe_job() { # run a trivial job, bounded; prints nothing on success
  local out
  out=$(timeout 30 srun --quiet --time=0:01 --job-name=sluice-probe true 2>&1) || { echo "${out:-probe job did not finish in 30 s}"; return 1; }
}

if [ "$check" = 1 ]; then
  command -v sbatch >/dev/null 2>&1 || { echo "slurm: no sbatch on PATH" >&2; exit 1; }
  alive /run/slurmctld.pid || { echo "slurm: slurmctld is not running" >&2; exit 1; }
  alive /run/slurmd.pid || { echo "slurm: slurmd is not running" >&2; exit 1; }
  usable || { echo "slurm: node $node is '$(node_state)', not taking jobs" >&2; exit 1; }
  if [ "$probe" = 1 ]; then why=$(probe_job) || { echo "slurm: probe job failed: $why" >&2; exit 1; }; fi
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "must run as root (the test cluster runs its daemons and jobs as root)"

# --- packages
missing=()
for p in slurmctld slurmd sbatch munged; do command -v "$p" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$install" = 1 ] || fail "missing ${missing[*]}; install Debian's packages (${packages[*]}) or rerun with --install"
  command -v apt-get >/dev/null 2>&1 || fail "missing ${missing[*]} and no apt-get to install them with"
  echo "slurm: installing ${packages[*]}"
  # The packages' own service starts are refused without systemd; that is fine, we start the daemons.
  # Bounded: a mirror that does not answer must not eat CI's time (the tests then skip).
  if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${packages[@]}" >/tmp/sluice-slurm-apt.log 2>&1; then
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=300 update >>/tmp/sluice-slurm-apt.log 2>&1
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${packages[@]}" >>/tmp/sluice-slurm-apt.log 2>&1 \
      || fail "apt-get install failed: $(tail -n 3 /tmp/sluice-slurm-apt.log | tr '\n' ' ')"
  fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# --- munge: one key, one daemon
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
  [ -s /etc/munge/munge.key ] || fail "could not create /etc/munge/munge.key"
fi
munge_user=root
id munge >/dev/null 2>&1 && munge_user=munge
chown "$munge_user:" /etc/munge /etc/munge/munge.key && chmod 700 /etc/munge && chmod 600 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown "$munge_user:" /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  if [ "$munge_user" = munge ]; then out=$(runuser -u munge -- munged 2>&1)
  else out=$(munged --force 2>&1); fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged did not start: ${out:-see /var/log/munge/munged.log}"
fi

# --- placeholder GPUs: character devices aliasing /dev/null where mknod is allowed, plain files
# elsewhere (slurmd only needs the path to exist when nothing constrains devices).
for f in "${fake_gpus[@]}"; do
  [ -e "$f" ] || mknod -m 666 "$f" c 1 3 2>/dev/null || { : >"$f" && chmod 666 "$f"; } || fail "cannot create $f"
done

# --- config
cpus=$(nproc)
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# Leave room for the OS and the daemons; slurmd drains a node that reports less than RealMemory.
margin=$(( mem_mb / 20 > 512 ? mem_mb / 20 : 512 ))
memory=$(( mem_mb - margin ))
sched=${SLUICE_SLURM_SCHED:-"batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,bf_interval=1"}
schedtype=${SLUICE_SLURM_SCHEDTYPE:-sched/backfill}
render() { sed -e "s|@NODE@|$node|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY@|$memory|g" -e "s|@SCHED@|$sched|g" -e "s|@SCHEDTYPE@|$schedtype|g" "$1"; }
mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd
changed=0
for f in slurm.conf gres.conf; do
  new=$(render "$here/$f.in") || fail "cannot read $here/$f.in"
  if [ "$(cat "$conf_dir/$f" 2>/dev/null)" != "$new" ]; then
    printf '%s\n' "$new" >"$conf_dir/$f.tmp" && mv "$conf_dir/$f.tmp" "$conf_dir/$f" || fail "cannot write $conf_dir/$f"
    changed=1
  fi
done
# A cgroup.conf from an earlier setup would make slurmd try cgroups; this cluster uses none.
[ -e "$conf_dir/cgroup.conf" ] && mv "$conf_dir/cgroup.conf" "$conf_dir/cgroup.conf.sluice-disabled"

if [ "$changed" = 1 ] && { alive /run/slurmctld.pid || alive /run/slurmd.pid; }; then
  echo "slurm: config changed, restarting the daemons"
  "$here/stop.sh" --keep-jobs >/dev/null 2>&1
fi

# --- daemons
if ! alive /run/slurmctld.pid; then
  out=$(slurmctld 2>&1) || fail "slurmctld refused to start: $out (log: $log_dir/slurmctld.log)"
fi
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
scontrol ping >/dev/null 2>&1 || fail "slurmctld does not answer: $(tail -n 5 "$log_dir/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
if ! alive /run/slurmd.pid; then
  out=$(slurmd 2>&1) || fail "slurmd refused to start: $out (log: $log_dir/slurmd.log)"
fi

deadline=$(( $(date +%s) + wait_s ))
resumed=0
while ! usable; do
  state=$(node_state)
  # A node left down/drained by an earlier run (e.g. slurmd killed) is put back once.
  if [ "$resumed" = 0 ] && case "$state" in down*|drain*|drng*|fail*) true ;; *) false ;; esac; then
    scontrol update nodename="$node" state=resume >/dev/null 2>&1
    resumed=1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    reason=$(sinfo -h -R -n "$node" -o %E 2>/dev/null | head -n1)
    fail "node $node is '${state:-unknown}' after ${wait_s} s${reason:+ ($reason)}; logs: $(tail -n 3 "$log_dir/slurmd.log" 2>/dev/null | tr '\n' ' ')"
  fi
  sleep 0.2
done
gres=$(sinfo -h -n "$node" -o %G | head -n1)
echo "slurm: up (node $node, $cpus CPUs, ${gres:-no gres})"
