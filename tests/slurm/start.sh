#!/usr/bin/env bash
# tests/slurm/start.sh -- bring up a REAL Slurm cluster of 2 compute nodes on this one machine,
# for hpsrl's tests and CI. No systemd needed (daemons are started by hand).
#
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd node1, slurmd node2
#
# * The nodes are one slurmd each on this machine (`slurmd -N nodeI`), all at 127.0.0.1 on a port
#   of their own, each with its own spool folder, pid file and log (Slurm's "multiple slurmd"
#   layout; Debian's build runs it because each node has a NodeHostname of its own). Jobs, job
#   steps and MPI ranks land on them as on separate hosts; they share the file system (as cluster
#   nodes share one), the network namespace and the real cores.
# * Installs the Debian/Ubuntu packages that are missing (needs root and apt),
#   with a policy-rc.d that keeps the packages from starting their own daemons.
# * Keeps all config, state, pid files and logs under one prefix
#   ($HPSRL_SLURM_PREFIX, default /tmp/hpsrl-slurm). The only things it changes
#   outside the prefix: the packages, and the symlink
#   /etc/slurm/slurm.conf -> $PREFIX/etc/slurm.conf (required: the Snakemake
#   slurm-jobstep plugin drops SLURM_CONF before its inner `srun`, so the config
#   must be at Slurm's default path; it also means no env var is needed).
# * Idempotent: a daemon that is already running (pid file + /proc/PID/exe) is
#   left alone, so a second run is a quick no-op; a node's slurmd that is missing (a node killed
#   by tests/slurm/node.sh) is started and a DOWN node resumed. If slurm.conf changed, the
#   slurm daemons are restarted.
# * Waits until every node is schedulable and `sacct` answers.
# * Exits non-zero with a message (and where the logs are) on any failure.
#
# Knobs (environment):
#   HPSRL_SLURM_PREFIX   base directory                       (/tmp/hpsrl-slurm)
#   HPSRL_SLURM_NODES    compute nodes, node1 .. nodeN        (2)
#   HPSRL_SLURM_CPUS     CPUs each node advertises; more than the real cores
#                        is fine (SlurmdParameters=config_overrides)
#                        to test job fan-out; 0 = real count   (4)
#   HPSRL_SLURM_PMIX     1: also install libpmix-dev so `srun --mpi=pmix` works
#                        (OpenMPI); failure to install it only warns   (1)
#   HPSRL_SLURM_CTLD_PORT / _DBD_PORT / _DB_PORT    (6817 / 6819 / 3307)
#   HPSRL_SLURM_SLURMD_PORT  node1's port; nodeI's is this + I - 1   (6821)
# Fixed names: cluster "hpsrl", partition "debug" (default, all nodes), account "hpsrl"
# (the invoking user's default account).
set -eEuo pipefail

PREFIX=${HPSRL_SLURM_PREFIX:-/tmp/hpsrl-slurm}
NODES=${HPSRL_SLURM_NODES:-2}
VCPUS=${HPSRL_SLURM_CPUS:-4}
WITH_PMIX=${HPSRL_SLURM_PMIX:-1}
CTLD_PORT=${HPSRL_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HPSRL_SLURM_SLURMD_PORT:-6821}
DBD_PORT=${HPSRL_SLURM_DBD_PORT:-6819}
DB_PORT=${HPSRL_SLURM_DB_PORT:-3307}
CLUSTER=hpsrl
PARTITION=debug
ACCOUNT=hpsrl

ETC=$PREFIX/etc RUN=$PREFIX/run LOG=$PREFIX/log STATE=$PREFIX/state
CONF=$ETC/slurm.conf
MUNGE_SOCK=$RUN/munge/munge.socket
DB_SOCK=$RUN/mysql/mysqld.sock
SYS_CONF=/etc/slurm/slurm.conf
# For this script's own use only; after setup the symlink makes it unnecessary.
# slurmdbd also finds its slurmdbd.conf next to $SLURM_CONF.
export SLURM_CONF=$CONF

T0=$(date +%s%N)
log() {
  local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
  printf '[hpsrl-slurm start +%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() {
  echo "[hpsrl-slurm start] ERROR: $*" >&2
  [ -d "$LOG" ] && echo "[hpsrl-slurm start] logs: $LOG/ (apt.log munged.log mariadb.err slurmdbd.log slurmctld.log slurmd-NODE.log)" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# alive PIDFILE EXE: true if PIDFILE names a live process whose binary is EXE
alive() {
  local pf=$1 exe=$2 pid
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ]
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, writes $SYS_CONF, runs the daemons as root)"
mkdir -p "$ETC" "$RUN/munge" "$RUN/mysql" "$LOG" "$STATE/ctld" "$STATE/d" "$STATE/munge" \
  || die "cannot create $PREFIX"
chmod 700 "$ETC"
chmod 755 "$PREFIX" "$RUN" "$RUN/munge"

# ------------------------------------------------------------------ packages
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing() { local p; for p in "$@"; do installed "$p" || echo "$p"; done; }

REQUIRED=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
OPTIONAL=()
[ "$WITH_PMIX" = 1 ] && OPTIONAL+=(libpmix-dev)   # Slurm's mpi/pmix dlopens libpmix.so
mapfile -t need_req < <(missing "${REQUIRED[@]}")
mapfile -t need_opt < <(missing "${OPTIONAL[@]}")

if [ ${#need_req[@]} -gt 0 ] || [ ${#need_opt[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing packages (${need_req[*]} ${need_opt[*]}) and no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  APT=(apt-get -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends)
  # Keep package postinst scripts from starting daemons with default config:
  # a policy-rc.d that denies every start; any existing one is put back after.
  POLICY=/usr/sbin/policy-rc.d POLICY_BAK=$RUN/policy-rc.d.orig
  [ -e "$POLICY_BAK" ] || ! [ -e "$POLICY" ] || cp -p "$POLICY" "$POLICY_BAK"
  restore_policy() {
    if [ -e "$POLICY_BAK" ]; then mv -f "$POLICY_BAK" "$POLICY"; else rm -f "$POLICY"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# hpsrl tests/slurm/start.sh: no daemon starts during install\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"

  updated=0
  apt_update() {
    [ "$updated" = 1 ] && return 1
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 -qq update >>"$LOG/apt.log" 2>&1 \
      || { cat "$LOG/apt.log" >&2; die "apt-get update failed"; }
    updated=1
  }
  # `apt-get update` only if the package lists do not know a needed package.
  for p in "${need_req[@]}" "${need_opt[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then apt_update; break; fi
  done
  if [ ${#need_req[@]} -gt 0 ]; then
    log "installing: ${need_req[*]}"
    if ! "${APT[@]}" install "${need_req[@]}" >>"$LOG/apt.log" 2>&1; then
      # stale lists (404 on a superseded .deb): update once and retry
      apt_update || { cat "$LOG/apt.log" >&2; die "apt-get install ${need_req[*]} failed"; }
      "${APT[@]}" install "${need_req[@]}" >>"$LOG/apt.log" 2>&1 \
        || { cat "$LOG/apt.log" >&2; die "apt-get install ${need_req[*]} failed"; }
    fi
  fi
  if [ ${#need_opt[@]} -gt 0 ]; then
    log "installing (optional): ${need_opt[*]}"
    "${APT[@]}" install "${need_opt[@]}" >>"$LOG/apt.log" 2>&1 \
      || log "WARNING: could not install ${need_opt[*]} (srun --mpi=pmix will not work); see $LOG/apt.log"
  fi
  restore_policy
  trap - EXIT
  log "packages installed"
fi
for b in /usr/sbin/munged /usr/sbin/mariadbd /usr/sbin/slurmdbd /usr/sbin/slurmctld /usr/sbin/slurmd; do
  [ -x "$b" ] || die "$b not found after installing packages"
done

# ------------------------------------------------------------------ munge
if [ ! -s "$ETC/munge.key" ]; then
  mungekey -c -k "$ETC/munge.key" -b 1024
  chmod 400 "$ETC/munge.key"
fi
if alive "$RUN/munge/munged.pid" /usr/sbin/munged; then
  log "munged already running (pid $(cat "$RUN/munge/munged.pid"))"
else
  rm -f "$RUN/munge/munged.pid"
  # --force: we run as root and under /tmp, which munged would otherwise refuse
  /usr/sbin/munged --force -S "$MUNGE_SOCK" --key-file="$ETC/munge.key" \
    --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munged.log" \
    --seed-file="$STATE/munge/munged.seed" --num-threads=4 \
    || die "munged failed to start"
  wait_for 20 munged bash -c "munge -S '$MUNGE_SOCK' -n | unmunge -S '$MUNGE_SOCK'"
  log "munged started (pid $(cat "$RUN/munge/munged.pid"))"
fi

# ------------------------------------------------------------------ slurm.conf
HOST=$(hostname -s)
hw=$(slurmd -C 2>/dev/null | head -1)
hwval() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS=$(hwval CPUs) BOARDS=$(hwval Boards) SPB=$(hwval SocketsPerBoard)
CPS=$(hwval CoresPerSocket) TPC=$(hwval ThreadsPerCore) RMEM=$(hwval RealMemory)
[ -n "$CPUS" ] && [ -n "$RMEM" ] || die "could not read the hardware from 'slurmd -C': $hw"
RMEM=$(( RMEM * 85 / 100 / NODES ))   # headroom for the daemons and MariaDB; shared by the nodes
OVERRIDES=""
if [ "$VCPUS" != 0 ]; then
  # advertise VCPUS single-thread cores on one socket, more than the real ones
  CPUS=$VCPUS BOARDS=1 SPB=1 CPS=$VCPUS TPC=1
  OVERRIDES="SlurmdParameters=config_overrides"
fi
# Without DefMemPerCPU each job would take the whole node's memory (one job at a time).
DEFMEM=$(( RMEM / CPUS )); [ "$DEFMEM" -gt 1000 ] && DEFMEM=1000

cat > "$CONF.new" <<EOF
# Generated by hpsrl tests/slurm/start.sh -- Slurm with $NODES compute nodes on one machine, for tests/CI.
# Edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
MailProg=/bin/true
# no cgroups here (no freezer): the cgroup plugins fail
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEFMEM
SchedulerType=sched/backfill
# short scheduling intervals so that tests are quick
SchedulerParameters=sched_interval=2,bf_interval=1
# accounting through slurmdbd, so that sacct works (Snakemake polls with sacct)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# srun --mpi=pmi2 (MPICH) and --mpi=pmix (OpenMPI, with libpmix-dev) are available
MpiDefault=none
# a node that was DOWN (tests/slurm/node.sh kill) serves again as soon as its slurmd registers
ReturnToService=2
# as on most clusters, Slurm requeues a batch job whose node fails (NODE_FAIL) unless it was
# submitted with --no-requeue (as profiles/slurm does: snakemake resubmits it instead)
JobRequeue=1
# keep finished jobs visible to squeue/scontrol for 10 minutes
MinJobAge=600
SlurmctldTimeout=30
# a node that stops answering is DOWN after 15 s (default 300), so node failures test quickly
SlurmdTimeout=15
InactiveLimit=0
KillWait=5
$OVERRIDES
NodeName=node[1-$NODES] NodeAddr=127.0.0.1 Port=[$SLURMD_PORT-$((SLURMD_PORT + NODES - 1))] CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SPB CoresPerSocket=$CPS ThreadsPerCore=$TPC RealMemory=$RMEM State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"
else mv "$CONF.new" "$CONF"; conf_changed=1; fi
chmod 644 "$CONF"

mkdir -p /etc/slurm
if [ -L "$SYS_CONF" ] || [ ! -e "$SYS_CONF" ]; then
  [ "$(readlink "$SYS_CONF" 2>/dev/null)" = "$CONF" ] || ln -sfn "$CONF" "$SYS_CONF"
else
  die "$SYS_CONF exists and is a real file (another Slurm setup?); refusing to overwrite it"
fi

# ------------------------------------------------------------------ MariaDB
if [ ! -d "$STATE/mysql/mysql" ]; then
  rm -rf "$STATE/mysql"; mkdir -p "$STATE/mysql"
  mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" \
    --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed, see $LOG/mariadb-install.log"
  log "MariaDB datadir initialised"
fi
if alive "$RUN/mysql/mysqld.pid" /usr/sbin/mariadbd; then
  log "mariadbd already running (pid $(cat "$RUN/mysql/mysqld.pid"))"
else
  rm -f "$RUN/mysql/mysqld.pid"
  setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/mysql" \
    --socket="$DB_SOCK" --pid-file="$RUN/mysql/mysqld.pid" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --log-error="$LOG/mariadb.err" \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
    --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$DB_SOCK" ping
  wait_for 10 "mariadbd pid file" test -s "$RUN/mysql/mysqld.pid"
  log "mariadbd started (pid $(cat "$RUN/mysql/mysqld.pid"))"
fi
if [ ! -e "$STATE/mysql/.hpsrl-grants" ]; then
  mariadb --no-defaults --socket="$DB_SOCK" -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'hpsrl';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'hpsrl';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  touch "$STATE/mysql/.hpsrl-grants"
fi

# ------------------------------------------------------------------ slurmdbd
cat > "$ETC/slurmdbd.conf.new" <<EOF
# Generated by hpsrl tests/slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=hpsrl
StorageLoc=slurm_acct_db
EOF
if cmp -s "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"; then rm -f "$ETC/slurmdbd.conf.new"
else mv "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"; fi
chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a world-readable one

if alive "$RUN/slurmdbd.pid" /usr/sbin/slurmdbd; then
  log "slurmdbd already running (pid $(cat "$RUN/slurmdbd.pid"))"
else
  rm -f "$RUN/slurmdbd.pid"
  /usr/sbin/slurmdbd || die "slurmdbd failed to start"   # reads $ETC/slurmdbd.conf
  wait_for 60 slurmdbd timeout 10 sacctmgr -n show cluster
  log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
fi

# cluster + account, with the invoking user's default account set to it, so
# that jobs need no --account (Snakemake's slurm_account is optional)
ME=$(id -un)
acct_mark=$STATE/.hpsrl-accounts-$CLUSTER-$ACCOUNT-$ME
if [ ! -e "$acct_mark" ]; then
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P show account "$ACCOUNT" format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" Description=hpsrl-tests Organization=hpsrl Cluster="$CLUSTER" >/dev/null
  sacctmgr -n -P show assoc where user="$ME" account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx "$ME" \
    || sacctmgr -i add user "$ME" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
  [ "$(sacctmgr -n -P show user "$ME" format=defaultaccount)" = "$ACCOUNT" ] \
    || sacctmgr -i modify user "$ME" set DefaultAccount="$ACCOUNT" >/dev/null
  touch "$acct_mark"
  log "accounting ready (cluster=$CLUSTER account=$ACCOUNT user=$ME)"
fi

# ------------------------------------------------------------------ slurmctld, slurmd
stop_pid() {  # NAME PIDFILE: SIGTERM and wait (SIGKILL can lose queued jobs)
  local pid; pid=$(cat "$2")
  log "slurm.conf changed: restarting $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do [ -d "/proc/$pid" ] || return 0; sleep 0.2; done
  die "$1 (pid $pid) did not stop within 30 s"
}
NODE_NAMES=()
for i in $(seq "$NODES"); do NODE_NAMES+=("node$i"); done
if [ "$conf_changed" = 1 ]; then
  for n in "${NODE_NAMES[@]}"; do
    alive "$RUN/slurmd-$n.pid" /usr/sbin/slurmd && stop_pid "slurmd $n" "$RUN/slurmd-$n.pid"
  done
  alive "$RUN/slurmctld.pid" /usr/sbin/slurmctld && stop_pid slurmctld "$RUN/slurmctld.pid"
fi

# MPICH ranks that were killed (a cancelled job, a killed node) leave their shared-memory segment in
# /dev/shm, named after a hash of the Slurm job and step ID ("JOBID.STEP"). A new cluster numbers
# jobs from 1 again, and its job steps would attach to the old segments of the same IDs and fail
# in MPI_Init ("UCX ERROR failed to unpack address", "Message truncated") or hang. So when
# slurmctld starts without saved state, the segments that no process has mapped are removed.
if [ ! -e "$STATE/ctld/job_state" ] && ! alive "$RUN/slurmctld.pid" /usr/sbin/slurmctld; then
  mapped=$(cat /proc/[0-9]*/maps 2>/dev/null | grep -o '/dev/shm/mpich_[a-z]*_[0-9a-f_]*' | sort -u || true)
  stale=0
  for f in /dev/shm/mpich_shm_* /dev/shm/mpich_vci_*; do
    [ -e "$f" ] || continue
    grep -qxF "$f" <<<"$mapped" && continue
    rm -f "$f" && stale=$((stale + 1))
  done
  [ "$stale" = 0 ] || log "removed $stale MPICH shared-memory segments of killed jobs from /dev/shm"
fi

if alive "$RUN/slurmctld.pid" /usr/sbin/slurmctld; then
  log "slurmctld already running (pid $(cat "$RUN/slurmctld.pid"))"
else
  rm -f "$RUN/slurmctld.pid"
  /usr/sbin/slurmctld || die "slurmctld failed to start"
  wait_for 30 slurmctld bash -c "scontrol ping | grep -q 'is UP'"
  log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
fi
for n in "${NODE_NAMES[@]}"; do
  if alive "$RUN/slurmd-$n.pid" /usr/sbin/slurmd; then
    log "slurmd $n already running (pid $(cat "$RUN/slurmd-$n.pid"))"
  else
    rm -f "$RUN/slurmd-$n.pid"
    mkdir -p "$STATE/d/$n"
    /usr/sbin/slurmd -N "$n" || die "slurmd $n failed to start"
    wait_for 10 "slurmd $n pid file" test -s "$RUN/slurmd-$n.pid"
    log "slurmd $n started (pid $(cat "$RUN/slurmd-$n.pid"))"
  fi
done

node_state() { sinfo -h -n "$1" -o %T 2>/dev/null; }
node_ok() { node_state "$1" | grep -qE '^(idle|mixed|allocated|completing)$'; }
for n in "${NODE_NAMES[@]}"; do
  if ! node_ok "$n"; then
    # a node left DOWN/DRAINED by an unclean stop (or a test that killed it) is returned to service
    if node_state "$n" | grep -qE 'down|drain'; then
      scontrol update nodename="$n" state=resume 2>/dev/null || true
    fi
    wait_for 60 "node $n to become schedulable (state: $(node_state "$n"))" node_ok "$n"
  fi
done
wait_for 30 "sacct to answer" sacct -n -X -S now
log "up: $(sinfo -h -o 'partition=%P avail=%a nodes=%D(%N) state=%T cpus=%c mem=%mMB')"
echo "hpsrl-slurm: ready; nothing to export (config at $SYS_CONF -> $CONF);" \
     "partition=$PARTITION account=$ACCOUNT cluster=$CLUSTER; logs in $LOG; stop with tests/slurm/stop.sh"
