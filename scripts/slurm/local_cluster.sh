#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for testing the scripts beside this one without a real
# cluster: munged, slurmctld and slurmd run as the current user with every config, socket, log
# and state file under one directory, so nothing in /etc is touched and two clusters can
# coexist on one machine (each picks free ports).
#
#   local_cluster.sh start DIR [CPUS]   start it (CPUS slots on one node, default 4), wait until
#                                       the node is idle, print the line to source:
#                                       export SLURM_CONF=DIR/slurm.conf
#   local_cluster.sh stop DIR           stop the daemons started by `start DIR` (by their pid
#                                       files) and leave DIR (logs) in place
#
# Needs Debian's slurm-wlm and munge (scripts/slurm/install_slurm.sh installs them). The node
# advertises CPUS slots whatever the machine has (SlurmdParameters=config_overrides): the
# tests need several array tasks running at once, not real parallel speed.
set -euo pipefail

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 2 ] || usage
action=$1
dir=$(realpath -m "$2")
cpus=${3:-4}

log() { echo "local_cluster: $*" >&2; }

# A TCP port nobody listens on. Two helpers started at the same moment could pick the same
# one; slurmctld then fails to bind and `start` reports it.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  log "no free TCP port found"
  return 1
}

stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_cluster() {
  # Jobs still running in this cluster (a test that gave up) end with it; the daemons'
  # children would otherwise outlive them.
  if [ -f "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    scancel --user="$(id -un)" 2>/dev/null && sleep 1 || true
  fi
  stop_pidfile "$dir/run/slurmd.pid"
  stop_pidfile "$dir/run/slurmctld.pid"
  stop_pidfile "$dir/run/munged.pid"
}

write_configs() {
  local user node ctld_port slurmd_port
  user=$(id -un)
  node=$(hostname -s)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  mkdir -p "$dir"/{run,log,state,spool,munge}
  chmod 700 "$dir/munge"
  # munged refuses a key others can read; any 1 KiB of random bytes is a valid key.
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
  chmod 600 "$dir/munge/munge.key"
  cat > "$dir/slurm.conf" <<CONF
# Written by scripts/slurm/local_cluster.sh: a one-node test cluster, everything under $dir.
ClusterName=quantsmith-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default
# 120 s; a test wants it back at once).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: process groups track a job's processes.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Requeued jobs may run again (the array script requeues a failed task).
JobRequeue=1
ReturnToService=2
# Quick turnaround for tests: a requeued task is eligible again at once, finished jobs are
# forgotten after 5 minutes.
MinJobAge=300
SchedulerParameters=sched_interval=1,defer_batch
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start_cluster() {
  for program in munged slurmctld slurmd sinfo; do
    command -v "$program" >/dev/null || {
      log "$program not found: install slurm-wlm and munge (scripts/slurm/install_slurm.sh)"
      exit 1
    }
  done
  if [ -f "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    log "a cluster already runs from $dir (stop it first)"
    exit 1
  fi
  write_configs
  export SLURM_CONF=$dir/slurm.conf
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  # -c: a clean start (no jobs from an earlier cluster in this directory); -i: ignore stale
  # state files.
  slurmctld -c -i
  slurmd -N "$(hostname -s)"
  for _ in $(seq 300); do
    if [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = idle ]; then
      log "up: one node, $cpus slots; logs in $dir/log"
      echo "export SLURM_CONF=$dir/slurm.conf"
      return 0
    fi
    sleep 0.2
  done
  log "the node did not come up in 60 s; the logs say why:"
  tail -n 20 "$dir"/log/*.log >&2 || true
  stop_cluster
  exit 1
}

case $action in
  start) start_cluster ;;
  stop)
    export SLURM_CONF=$dir/slurm.conf
    stop_cluster
    log "stopped (logs kept in $dir/log)"
    ;;
  *) usage ;;
esac
