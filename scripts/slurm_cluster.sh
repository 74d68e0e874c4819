#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing `hydra/launcher=submitit_slurm` for real.
#
#   scripts/slurm_cluster.sh start [STATE_DIR]    # install if missing, start munged, slurmctld, slurmd
#   scripts/slurm_cluster.sh stop [STATE_DIR]     # stop the daemons this script started (only those)
#   scripts/slurm_cluster.sh status [STATE_DIR]
#
# Then point the SLURM clients at it: `export SLURM_CONF=STATE_DIR/slurm.conf` (start prints it).
# Hardware: any Linux machine; Debian/Ubuntu for the automatic install (apt-get install slurm-wlm
# munge, as root or through sudo). Expected time: ~1 min to install, a few seconds to start.
# One node named after this host with all its CPUs and memory, partition `debug`, no cgroups
# (proctrack/linuxproc, task/none), no accounting. Daemon state, logs and pid files live in
# STATE_DIR (default /tmp/hydratune-slurm); munged uses the system socket and is left alone when it
# was already running.
set -euo pipefail

cmd=${1:-}
state=${2:-${HYDRATUNE_SLURM_DIR:-/tmp/hydratune-slurm}}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    echo "slurm_cluster: need root (or passwordless sudo) to run: $*" >&2
    return 1
  fi
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  command -v apt-get >/dev/null || { echo "slurm_cluster: slurm is not installed and apt-get is missing" >&2; return 1; }
  echo "slurm_cluster: installing slurm-wlm and munge with apt-get" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >&2 ||
    { as_root apt-get update >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends slurm-wlm munge >&2; }
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then
    return 0 # someone else's munged: use it, never stop it
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    as_root mungekey --create --keyfile=/etc/munge/munge.key
    as_root chown munge:munge /etc/munge/munge.key
  fi
  as_root install -d -o munge -g munge -m 0755 /run/munge
  as_root runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do munge_works && break; sleep 0.1; done
  munge_works || { echo "slurm_cluster: munged did not start" >&2; return 1; }
  cp /run/munge/munged.pid "$state/munged.pid"
}

write_conf() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc --all) # not plain nproc: it answers OMP_NUM_THREADS when that is set
  mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512))
  mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log"
  cat >"$state/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh: one node, no cgroups, no accounting.
ClusterName=hydratune
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmctldPort=${HYDRATUNE_SLURMCTLD_PORT:-6817}
SlurmdPort=${HYDRATUNE_SLURMD_PORT:-6818}
AuthType=auth/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobRequeue=1
# A requeued job may start again after cred_expire + 1 s (120 s unless set), and the scheduler looks at
# pending jobs every sched_interval (60 s): a real cluster's pace, shortened for this one-node test cluster.
AuthInfo=cred_expire=30
SchedulerParameters=sched_interval=5,bf_interval=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_packages
  mkdir -p "$state"
  if alive "$state/slurmctld.pid"; then
    echo "slurm_cluster: already running (state in $state)" >&2
  else
    start_munge
    write_conf
    export SLURM_CONF=$state/slurm.conf
    # -c: a clean start (no jobs left from an earlier cluster in this state dir).
    as_root slurmctld -c -f "$SLURM_CONF"
    as_root slurmd -f "$SLURM_CONF"
    touch "$state/started-by-script"
  fi
  export SLURM_CONF=$state/slurm.conf
  for _ in $(seq 60); do
    [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = idle ] && break
    sleep 0.5
  done
  if [ "$(sinfo -h -o %t 2>/dev/null | head -1)" != idle ]; then
    echo "slurm_cluster: the node did not come up; see $state/log/" >&2
    sinfo >&2 || true
    return 1
  fi
  echo "export SLURM_CONF=$state/slurm.conf"
}

stop_pid_file() {
  local file=$1
  alive "$file" || { rm -f "$file"; return 0; }
  local pid
  pid=$(cat "$file")
  as_root kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && as_root kill -9 "$pid"
  rm -f "$file"
}

stop() {
  [ -e "$state/started-by-script" ] || { echo "slurm_cluster: nothing started in $state" >&2; return 0; }
  # Jobs still running would outlive slurmd (proctrack/linuxproc does not kill them): cancel first.
  SLURM_CONF=$state/slurm.conf scancel --full --user="$(id -un)" 2>/dev/null || true
  stop_pid_file "$state/slurmd.pid"
  stop_pid_file "$state/slurmctld.pid"
  stop_pid_file "$state/munged.pid" # present only when this script started munged
  rm -f "$state/started-by-script"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status)
    for d in slurmctld slurmd munged; do
      if alive "$state/$d.pid"; then echo "$d: running (pid $(cat "$state/$d.pid"))"; else echo "$d: not started here"; fi
    done
    ;;
  *)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
