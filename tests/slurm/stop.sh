#!/usr/bin/env bash
# tests/slurm/stop.sh -- stop exactly the daemons tests/slurm/start.sh started,
# found by their pid files under $HPSRL_SLURM_PREFIX (default /tmp/hpsrl-slurm).
#
#   (default)     cancel the cluster's jobs, then SIGTERM the slurmds, slurmctld,
#                 slurmdbd, mariadbd, munged in turn and wait for each to exit
#                 (SIGKILL only after 30 s: a killed slurmctld loses queued jobs)
#   --keep-jobs   do not cancel jobs first
#   --purge       afterwards delete the prefix (config, state, accounting DB, logs)
#
# Packages stay installed. /etc/slurm/slurm.conf is removed only if it is the
# symlink start.sh made.
set -uo pipefail

PREFIX=${HPSRL_SLURM_PREFIX:-/tmp/hpsrl-slurm}
ETC=$PREFIX/etc RUN=$PREFIX/run
CONF=$ETC/slurm.conf
SYS_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF
KEEP_JOBS=0 PURGE=0
for a in "$@"; do
  case $a in
    --keep-jobs) KEEP_JOBS=1 ;;
    --purge) PURGE=1 ;;
    *) echo "usage: $0 [--keep-jobs] [--purge]" >&2; exit 2 ;;
  esac
done
log() { echo "[hpsrl-slurm stop $(date +%T)] $*"; }

alive() {  # PIDFILE EXE: PIDFILE names a live process whose binary is EXE
  local pf=$1 exe=$2 pid
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ]
}

rc=0
stop_daemon() {  # NAME PIDFILE EXE
  local name=$1 pf=$2 exe=$3 pid
  if ! alive "$pf" "$exe"; then
    rm -f "$pf"; log "$name not running"; return 0
  fi
  pid=$(cat "$pf")
  kill -TERM "$pid"
  for _ in $(seq 150); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  if [ -d "/proc/$pid" ]; then
    log "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
    kill -KILL "$pid"; sleep 0.5; rc=1
  fi
  rm -f "$pf"
  log "$name stopped (pid $pid)"
}

if [ "$KEEP_JOBS" = 0 ] && alive "$RUN/slurmctld.pid" /usr/sbin/slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 150); do   # wait until no job is pending/running/completing
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# one slurmd per node (slurmd-NODE.pid); slurmd.pid is the one node of older versions of start.sh
for pf in "$RUN"/slurmd-*.pid "$RUN/slurmd.pid"; do
  [ -e "$pf" ] || continue
  name=${pf##*/}; name=${name%.pid}
  stop_daemon "${name/-/ }" "$pf" /usr/sbin/slurmd
done
stop_daemon slurmctld "$RUN/slurmctld.pid"    /usr/sbin/slurmctld
stop_daemon slurmdbd  "$RUN/slurmdbd.pid"     /usr/sbin/slurmdbd
stop_daemon mariadbd  "$RUN/mysql/mysqld.pid" /usr/sbin/mariadbd
stop_daemon munged    "$RUN/munge/munged.pid" /usr/sbin/munged

# job steps that outlived the daemons (--keep-jobs) are reported, not killed
steps=$(ps -eo pid=,args= | awk '$2 ~ /^slurmstepd:/ {print $1}' | tr '\n' ' ')
[ -n "${steps// /}" ] && log "note: slurmstepd still running: $steps"

if [ -L "$SYS_CONF" ] && [ "$(readlink "$SYS_CONF")" = "$CONF" ]; then
  rm -f "$SYS_CONF"; log "removed symlink $SYS_CONF"
fi
if [ "$PURGE" = 1 ]; then
  rm -rf "$PREFIX"; log "purged $PREFIX"
fi
exit $rc
