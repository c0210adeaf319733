#!/usr/bin/env bash
# A real single-host SLURM cluster, with accounting, for tests and demos.
#
#   bash slurm/cluster.sh install   # Debian packages (munge, slurm, slurmdbd, mariadb, openmpi)
#   bash slurm/cluster.sh start     # install if needed, write config, start the daemons
#   bash slurm/cluster.sh status    # daemons, sinfo, accounting; exit 0 only when healthy
#   bash slurm/cluster.sh stop      # cancel all jobs, stop the daemons
#   eval "$(bash slurm/cluster.sh env)"   # export SLURM_CONF for sbatch, srun, submitit...
#
# Everything (config, keys, databases, logs, pid files) lives in one directory,
# ${NNQS_SLURM_DIR:-/tmp/nnqs-slurm}; nothing under /etc is used, and no system
# service manager is needed (this also works where PID 1 is not systemd).
# Needs root for install and start. See slurm/README.md for the design notes.
set -euo pipefail

# Absolute: every path below goes into config files read by daemons with another cwd.
DIR=$(realpath -m "${NNQS_SLURM_DIR:-/tmp/nnqs-slurm}")
# Ports away from the SLURM (6817-6819) and MariaDB (3306) defaults, so that a
# system SLURM or database on the same host does not collide with ours.
SLURMCTLD_PORT=${NNQS_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${NNQS_SLURMD_PORT:-16818}
SLURMDBD_PORT=${NNQS_SLURMDBD_PORT:-16819}
MARIADB_PORT=${NNQS_MARIADB_PORT:-16306}
TIMEOUT_S=${NNQS_SLURM_TIMEOUT:-90}
# Default memory of a job that asks for none: without DefMemPerCPU one job is
# given the whole node's memory and every other job waits behind it.
DEF_MEM_PER_CPU_MB=${NNQS_SLURM_DEF_MEM_PER_CPU_MB:-1024}
CLUSTER_NAME=nnqs
PARTITION=debug

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server openmpi-bin libpmix-dev)
# Start order; stop runs it backwards. slurmdbd needs the database, slurmctld
# registers the cluster with slurmdbd, slurmd registers the node with slurmctld.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

ETC=$DIR/etc
SLURM_CONF_FILE=$ETC/slurm.conf
RUN=$DIR/run
LOG=$DIR/log
MUNGE_DIR=$DIR/munge
# munged refuses a socket whose directory is not mode 0755 ("Socket is inaccessible").
MUNGE_SOCKET_DIR=$RUN/munge
MUNGE_SOCKET=$MUNGE_SOCKET_DIR/munge.socket
DB_DIR=$DIR/mariadb
DB_SOCKET=$RUN/mariadbd.sock
DB_PASS=nnqs-slurm-local
MARKER=$DIR/.nnqs-slurm

log() { printf '[cluster.sh] %s\n' "$*" >&2; }

# die MESSAGE [LOGFILE...]: print the message and the tail of each log, exit 1.
die() {
    local message=$1
    shift
    log "ERROR: $message"
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf '%s\n' "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2
        fi
    done
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "'$1' needs root (packages, daemons running as SlurmUser=root)"
}

# --------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

POLICY_RC=/usr/sbin/policy-rc.d
remove_policy_rc() { rm -f "$POLICY_RC"; }

cmd_install() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "packages present: ${PACKAGES[*]}"
        return 0
    fi
    require_root install
    log "installing: ${missing[*]}"
    # The packages' post-install scripts would start munge, slurm and mariadb
    # as system services; invoke-rc.d skips any start when policy-rc.d exits
    # 101. We run our own daemons from $DIR instead. An existing policy-rc.d
    # (the administrator's) is left alone.
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# temporary, from nnqs-suite slurm/cluster.sh install\nexit 101\n' \
            >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        trap remove_policy_rc EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # libpmix-dev: SLURM's pmix plugin dlopens the unversioned libpmix.so,
    # which only the -dev package ships (srun --mpi=pmix fails without it).
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ $(trap -p EXIT) == *remove_policy_rc* ]]; then
        remove_policy_rc
        trap - EXIT
    fi
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
    log "installed"
}

# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

pid_file() { printf '%s/%s.pid\n' "$RUN" "$1"; }

# alive PID: the process exists and is not a zombie. A zombie counts as dead:
# PID 1 here reaps orphans late, so a stopped daemon lingers as <defunct>.
alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state != Z && $state != X ]]
}

# pid_of DAEMON: the pid from its pid file when that process is alive and is
# that daemon, else nothing (status 1).
pid_of() {
    local name=$1 file pid
    file=$(pid_file "$name")
    [[ -r $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    # Guard against a reused pid: the command name must be the daemon's.
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

# Daemons launched by this run of `start`, and the pid of those whose pid we
# know at launch (mariadbd, which we put in the background ourselves).
STARTED=()
declare -A LAUNCH_PID=()

# check_started: die as soon as a daemon this run launched has exited (a bad
# config, a port in use...), instead of waiting for the timeout. The SLURM
# daemons fork at once; they are checked from when their pid file appears.
check_started() {
    local name pid
    for name in "${STARTED[@]}"; do
        pid=${LAUNCH_PID[$name]:-}
        if [[ -z $pid ]]; then
            pid=$(cat "$(pid_file "$name")" 2>/dev/null) || continue
        fi
        alive "$pid" ||
            die "$name exited during start-up" "$LOG/$name.out" "$(daemon_log "$name")"
    done
}

daemon_log() { printf '%s/%s.log\n' "$LOG" "$1"; }

stop_daemon() {
    local name=$1 pid i
    pid=$(pid_of "$name") || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_of "$name" >/dev/null || return 0
        sleep 0.1
    done
    log "$name did not stop in 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

# wait_for DESCRIPTION LOG COMMAND...: poll COMMAND until it succeeds or
# TIMEOUT_S passes; on timeout, die with the log's tail.
wait_for() {
    local what=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        check_started
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT_S} s waiting for $what" "$logfile"
        sleep 0.2
    done
}

# --------------------------------------------------------------------------
# health
# --------------------------------------------------------------------------

slurm_env() { export SLURM_CONF=$SLURM_CONF_FILE; }

node_name() { hostname -s; }

node_state() { timeout 10 sinfo -h -N -n "$(node_name)" -o %T 2>/dev/null | head -n 1 || true; }

node_idle() { [[ $(node_state) == idle ]]; }

# A node that is usable: idle, mixed, allocated or completing; a trailing '*'
# (not responding) or down/drain/fail is not.
node_usable() {
    local state
    state=$(node_state)
    [[ $state =~ ^(idle|mixed|allocated|completing)$ ]]
}

accounting_answers() { timeout 15 sacct -n -X -S now >/dev/null 2>&1; }

healthy() {
    local name
    [[ -r $SLURM_CONF_FILE ]] || return 1
    for name in "${DAEMONS[@]}"; do
        pid_of "$name" >/dev/null || return 1
    done
    slurm_env
    node_usable && accounting_answers
}

# --------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------

# Fresh state each start: a restart in the same directory works once the old
# state is wiped. Refuse to wipe a directory that we did not create.
prepare_dir() {
    if [[ -e $DIR && ! -e $MARKER ]] && [[ -n $(ls -A "$DIR" 2>/dev/null) ]]; then
        die "$DIR exists, is not empty and was not made by cluster.sh: set NNQS_SLURM_DIR"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR" "$ETC" "$RUN" "$LOG" "$MUNGE_DIR" "$DB_DIR" "$DIR/state" "$DIR/spool"
    : >"$MARKER"
    chmod 0755 "$DIR" "$RUN"
    chmod 0700 "$MUNGE_DIR"
    mkdir -m 0755 "$MUNGE_SOCKET_DIR"
}

start_munged() {
    # Our own 1 KiB key; munged wants it private (mode 0400, owned by its user).
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$MUNGE_DIR/munge.key"
    log "starting munged"
    munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pid_file munged)" --log-file="$LOG/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG/munged.out" 2>&1 ||
        die "munged failed to start" "$LOG/munged.out" "$LOG/munged.log"
    STARTED+=(munged)
    wait_for "munged to answer" "$LOG/munged.log" \
        bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

start_mariadbd() {
    log "initialising MariaDB in $DB_DIR"
    mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install-db.log" 2>&1 ||
        die "mariadb-install-db failed" "$LOG/mariadb-install-db.log"
    log "starting mariadbd on 127.0.0.1:$MARIADB_PORT"
    # mariadbd stays in the foreground: detach it (own session, no inherited
    # stdio) so that a caller capturing our output does not wait on it. A
    # background job of a script is no process group leader, so setsid execs
    # without forking and $! is mariadbd's pid.
    setsid mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --bind-address=127.0.0.1 --port="$MARIADB_PORT" --socket="$DB_SOCKET" \
        --pid-file="$(pid_file mariadbd)" --log-error="$LOG/mariadbd.log" \
        --skip-name-resolve </dev/null >>"$LOG/mariadbd.out" 2>&1 &
    STARTED+=(mariadbd)
    LAUNCH_PID[mariadbd]=$!
    wait_for "mariadbd to answer" "$LOG/mariadbd.log" \
        mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping
    # slurmdbd connects over TCP to 127.0.0.1 (skip-name-resolve: no 'localhost').
    mariadb --no-defaults --socket="$DB_SOCKET" -u root <<SQL ||
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
        die "could not create the slurm database user" "$LOG/mariadbd.log"
}

# CommunicationParameters=NoCtldInAddrAny,NoInAddrAny binds the daemons to
# 127.0.0.1 only, but sbatch/srun then fail when the host name does not resolve
# to a loopback address: use it only where it does.
communication_parameters() {
    local addr
    addr=$(getent hosts "$(node_name)" | awk '{print $1; exit}') || true
    if [[ $addr == 127.* ]]; then
        printf 'CommunicationParameters=NoCtldInAddrAny,NoInAddrAny\n'
    fi
}

write_slurm_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    # RealMemory about 90% of MemTotal (kB -> MB): slurmd drains a node that
    # reports less memory than configured, and the OS needs some.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 * 0.9 / 1024}' /proc/meminfo)
    cat >"$SLURM_CONF_FILE" <<EOF
# Written by slurm/cluster.sh: single-host SLURM for nnqs-suite.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
# Our munged's socket. cred_expire=10: a requeued job (e.g. after the SIGUSR2
# checkpoint signal) waits cred_expire before it can start again (default 120 s).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
# No cgroup confinement, no job containers: works in containers and VMs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobContainerType=job_container/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU_MB
# Schedule every 2 s instead of the defaults (30-60 s between backfill passes).
SchedulerParameters=bf_interval=2,sched_interval=2
# Trust this file's node description over what slurmd detects.
SlurmdParameters=config_overrides
# A node that was down comes back by itself when slurmd registers again.
ReturnToService=2
KillWait=5
MailProg=/bin/true
$(communication_parameters)
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# Accounting through slurmdbd: without it sacct fails, and submitit never sees
# a cancelled job finish. AccountingStoragePass names our munge socket
# (otherwise the default /run/munge socket is used).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$SLURMDBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
NodeName=$(node_name) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmd 22.05 always sets up cgroups (even with task/none): autodetect the
    # cgroup version and do not insist on systemd.
    cat >"$ETC/cgroup.conf" <<EOF
CgroupPlugin=autodetect
IgnoreSystemdOnFailure=yes
EOF

    # slurmdbd reads slurmdbd.conf beside slurm.conf and refuses it unless it
    # is private to SlurmUser (it holds the database password).
    (
        umask 077
        cat >"$ETC/slurmdbd.conf" <<EOF
# Written by slurm/cluster.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$SLURMDBD_PORT
SlurmUser=root
PidFile=$(pid_file slurmdbd)
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    )
    chmod 0600 "$ETC/slurmdbd.conf"
}

# start_slurm_daemon NAME: the slurm daemons fork into the background and
# write their pid files themselves.
start_slurm_daemon() {
    local name=$1
    log "starting $name"
    "$name" </dev/null >>"$LOG/$name.out" 2>&1 ||
        die "$name failed to start" "$LOG/$name.out" "$(daemon_log "$name")"
    STARTED+=("$name")
    wait_for "$name to run" "$(daemon_log "$name")" pid_of "$name"
}

dbd_listening() { (: >"/dev/tcp/127.0.0.1/$SLURMDBD_PORT") 2>/dev/null; }

cmd_start() {
    if healthy; then
        log "already running and healthy in $DIR"
        log "use: export SLURM_CONF=$SLURM_CONF_FILE"
        return 0
    fi
    require_root start
    cmd_install
    local t0=$SECONDS
    # Whatever is left of an earlier run in this directory goes first.
    stop_all_daemons
    prepare_dir
    write_slurm_conf
    slurm_env
    # On any failure below, stop what was started (logs stay in $DIR/log).
    trap stop_all_daemons EXIT

    start_munged
    start_mariadbd
    start_slurm_daemon slurmdbd
    wait_for "slurmdbd to listen on port $SLURMDBD_PORT" "$LOG/slurmdbd.log" dbd_listening
    start_slurm_daemon slurmctld
    start_slurm_daemon slurmd
    wait_for "node $(node_name) to be idle" "$LOG/slurmd.log" node_idle
    wait_for "accounting (sacct) to answer" "$LOG/slurmdbd.log" accounting_answers
    trap - EXIT
    log "SLURM cluster '$CLUSTER_NAME' up in $((SECONDS - t0)) s: partition $PARTITION," \
        "node $(node_name), state in $DIR"
    log "use: export SLURM_CONF=$SLURM_CONF_FILE"
}

# --------------------------------------------------------------------------
# stop, status, env
# --------------------------------------------------------------------------

cancel_all_jobs() {
    pid_of slurmctld >/dev/null || return 0
    slurm_env
    local jobs i
    mapfile -t jobs < <(timeout 10 squeue -h -o %i 2>/dev/null || true)
    [[ ${#jobs[@]} -gt 0 ]] || return 0
    log "cancelling ${#jobs[@]} job(s)"
    scancel "${jobs[@]}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -z $(timeout 10 squeue -h -o %i 2>/dev/null || true) ]] && return 0
        sleep 0.2
    done
    log "jobs still listed after 20 s; stopping anyway"
}

stop_all_daemons() {
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
}

cmd_stop() {
    cancel_all_jobs
    stop_all_daemons
    log "stopped (state kept in $DIR until the next start)"
}

cmd_status() {
    local name pid ok=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$name"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
            ok=1
        fi
    done
    if [[ ! -r $SLURM_CONF_FILE ]]; then
        printf 'no %s: not started\n' "$SLURM_CONF_FILE"
        return 1
    fi
    slurm_env
    printf 'SLURM_CONF=%s\n' "$SLURM_CONF_FILE"
    # The clients retry a dead daemon for many seconds: ask only live ones.
    if pid_of slurmctld >/dev/null; then
        timeout 10 sinfo -N -o '%N %P %T %c %m' 2>&1 || ok=1
        node_usable || ok=1
    fi
    if pid_of slurmdbd >/dev/null && accounting_answers; then
        printf 'accounting: sacct answers\n'
    else
        printf 'accounting: sacct does not answer\n'
        ok=1
    fi
    if [[ $ok -eq 0 ]]; then printf 'healthy\n'; else printf 'NOT healthy\n'; fi
    return "$ok"
}

cmd_env() { printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"; }

main() {
    local cmd=${1:-}
    case $cmd in
        install) cmd_install ;;
        start) cmd_start ;;
        status) cmd_status ;;
        stop) cmd_stop ;;
        env) cmd_env ;;
        *)
            printf 'usage: %s {install|start|status|stop|env}\n' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
