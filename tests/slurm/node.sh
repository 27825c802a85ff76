#!/usr/bin/env bash
# tests/slurm/node.sh -- fail a node of the local test cluster (tests/slurm/start.sh), as a power cut
# would, and bring it back.
#
#   node.sh kill NODE   freeze (SIGSTOP), then SIGKILL, at once: NODE's slurmd, every slurmstepd
#                       of NODE (those whose socket is in NODE's spool folder) and every process
#                       under them (batch scripts, srun, MPI ranks). Nothing gets to report an
#                       exit: slurmctld only notices that NODE stopped answering, and after
#                       SlurmdTimeout marks it DOWN and fails its jobs with NODE_FAIL.
#   node.sh start       start what is missing and return DOWN nodes to service: start.sh again.
#
# The nodes of the test cluster are slurmds on this one machine (see start.sh); this touches only
# processes found by the pid file and spool folder under $HPSRL_SLURM_PREFIX.
set -euo pipefail

PREFIX=${HPSRL_SLURM_PREFIX:-/tmp/hpsrl-slurm}
RUN=$PREFIX/run STATE=$PREFIX/state
die() { echo "[hpsrl-slurm node] ERROR: $*" >&2; exit 1; }

case ${1:-} in
  start) exec bash "$(dirname "${BASH_SOURCE[0]}")/start.sh" ;;
  kill) node=${2:-}; [ -n "$node" ] || die "usage: $0 kill NODE | start" ;;
  *) die "usage: $0 kill NODE | start" ;;
esac

spool=$STATE/d/$node
[ -d "$spool" ] || die "no spool folder $spool: is $node a node of the test cluster?"
SLURMD=$(readlink -f /usr/sbin/slurmd) STEPD=$(readlink -f /usr/sbin/slurmstepd)
pids=()
if [ -s "$RUN/slurmd-$node.pid" ]; then
  pid=$(cat "$RUN/slurmd-$node.pid")
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$SLURMD" ] && pids+=("$pid")
fi

# The slurmstepds of the node: each listens on a socket NODE_JOB.STEP in the node's spool folder.
# /proc/net/unix maps the socket's path to its inode, /proc/PID/fd the inode to the process.
mapfile -t inodes < <(awk -v d="$spool/" 'index($8, d) == 1 {print $7}' /proc/net/unix | sort -u)
steps=()
if [ ${#inodes[@]} -gt 0 ]; then
  for p in /proc/[0-9]*; do
    [ "$(readlink -f "$p/exe" 2>/dev/null)" = "$STEPD" ] || continue
    links=$(ls -l "$p/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p') || continue
    for i in "${inodes[@]}"; do
      if grep -qx "$i" <<<"$links"; then steps+=("${p#/proc/}"); break; fi
    done
  done
fi

# ...and every process under them.
tree=("${steps[@]}")
table=$(ps -eo pid=,ppid=)
frontier=("${steps[@]}")
while [ ${#frontier[@]} -gt 0 ]; do
  mapfile -t children < <(awk -v ps=" ${frontier[*]} " 'index(ps, " " $2 " ") {print $1}' <<<"$table")
  tree+=("${children[@]}")
  frontier=("${children[@]}")
done

all=("${pids[@]}" "${tree[@]}")
[ ${#all[@]} -gt 0 ] || { echo "[hpsrl-slurm node] $node: nothing running"; exit 0; }
kill -STOP "${all[@]}" 2>/dev/null || true
# The node's /dev/shm goes with it, as at a reboot: the MPICH segments its ranks had mapped (a new
# job step with the same ID would attach to them and fail in MPI_Init).
shm=()
for p in "${tree[@]}"; do
  mapfile -t -O "${#shm[@]}" shm < <(grep -o '/dev/shm/mpich_[a-z]*_[0-9a-f_]*' "/proc/$p/maps" 2>/dev/null | sort -u)
done
kill -KILL "${all[@]}" 2>/dev/null || true
[ ${#shm[@]} -eq 0 ] || rm -f "${shm[@]}"
rm -f "$RUN/slurmd-$node.pid"
echo "[hpsrl-slurm node] $node killed: slurmd ${pids[*]:-(not running)}; slurmstepd ${steps[*]:-none};" \
     "$(( ${#tree[@]} - ${#steps[@]} )) processes under them"
