#!/usr/bin/env bash
# Slurm accounting for the local test cluster, as a site has it: Debian's mariadb-server and slurmdbd
# under $BASE (a fresh database on every start, like the cluster's fresh state: job ids start again),
# so that `sacct` answers with each job's AllocTRES, elapsed time and steps' peak memory.
# usage: bash slurm_accounting.sh start|stop     (root; slurm_start.sh and slurm_stop.sh call it)
# MLEBENCH_SLURM_ACCOUNTING=0 (slurm_start.sh) leaves accounting out: AccountingStorageType=none.
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly BASE=${MLEBENCH_SLURM_BASE:-/tmp/mlebench-hpc-slurm}
readonly CTLD_PORT=${MLEBENCH_SLURM_PORT:-6817}
# Above the slurmd ports (CTLD_PORT+1..+nodes): slurmdbd's default 6819 is a slurmd's here.
readonly DBD_PORT=${MLEBENCH_SLURM_DBD_PORT:-$((CTLD_PORT + 9))}
readonly DB_PORT=${MLEBENCH_SLURM_DB_PORT:-$((CTLD_PORT + 10))}
readonly CLUSTER_NAME=mlebench
readonly DB=$BASE/mariadb
readonly MUNGE_SOCK=$BASE/munge/run/munge.socket.2
readonly DBD_CONF=$BASE/etc/slurmdbd.conf
export SLURM_CONF=$BASE/etc/slurm.conf

log() { printf '[slurm_accounting %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf '[slurm_accounting] ERROR: %s\n' "$*" >&2; exit 2; }
pid_of() { [[ -s $1 && $(<"$1") =~ ^[0-9]+$ ]] && kill -0 "$(<"$1")" 2>/dev/null && cat "$1"; return 0; }
port_open() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

install_packages() {
    local own_policy=0 rc=0
    log "installing slurmdbd + mariadb-server from Debian"
    # never let the packages start their own services (systemd units or init scripts)
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    export DEBIAN_FRONTEND=noninteractive
    # package lists older than the mirror: update once and try again
    "${apt[@]}" install --no-install-recommends slurmdbd mariadb-server >/dev/null ||
        { "${apt[@]}" update >/dev/null && "${apt[@]}" install --no-install-recommends slurmdbd mariadb-server >/dev/null; } ||
        rc=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get could not install slurmdbd mariadb-server (exit $rc); check the Debian mirror"
}

# wait_for WHAT SECONDS CMD...: until CMD succeeds, bounded.
wait_for() {
    local what=$1 secs=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
    log "$what ready"
}

stop() {
    local p pids=()
    for f in "$BASE/run/slurmdbd.pid" "$DB/run/mariadbd.pid"; do
        p=$(pid_of "$f")
        [[ -n $p ]] && { kill -TERM "$p" 2>/dev/null || true; pids+=("$p"); }
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    return 0
}

start() {
    [[ -x /usr/sbin/slurmdbd && -x /usr/sbin/mariadbd ]] || install_packages
    getent passwd mysql >/dev/null || die "user 'mysql' missing after install; reinstall mariadb-server"
    [[ -f $SLURM_CONF ]] || die "no $SLURM_CONF: slurm_start.sh writes it first"
    stop
    local p
    for p in "$DBD_PORT" "$DB_PORT"; do
        port_open "$p" && die "port $p is already in use (see: ss -ltnp | grep $p); set MLEBENCH_SLURM_DBD_PORT/DB_PORT"
    done
    rm -rf "$DB"
    mkdir -p "$DB/data" "$DB/run" "$BASE/log" "$BASE/run"
    chown -R mysql:mysql "$DB"
    mariadb-install-db --user=mysql --datadir="$DB/data" --skip-test-db \
        --auth-root-authentication-method=socket >"$BASE/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed: see $BASE/log/mariadb-install.log"
    # 9>&-: daemons must not inherit slurm_start.sh's provisioning lock.
    setsid /usr/sbin/mariadbd --user=mysql --datadir="$DB/data" --socket="$DB/run/mysqld.sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$DB/run/mariadbd.pid" \
        --log-error="$BASE/log/mariadb.log" </dev/null >/dev/null 2>&1 9>&- &
    wait_for "mariadb on 127.0.0.1:$DB_PORT" 60 test -S "$DB/run/mysqld.sock" ||
        die "mariadbd did not start: $(tail -n 1 "$BASE/log/mariadb.log" 2>/dev/null)"
    local pass
    mh_trace_pause  # the database password below
    pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    mariadb --socket="$DB/run/mysqld.sock" -e "CREATE DATABASE slurm_acct_db;
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "cannot create the accounting database"
    # slurmdbd reads slurmdbd.conf beside slurm.conf; it holds the password: root only, 0600.
    (umask 077 && cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=$(hostname -s)
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    mh_trace_resume
    /usr/sbin/slurmdbd 9>&- || die "slurmdbd did not start: $(tail -n 1 "$BASE/log/slurmdbd.log" 2>/dev/null)"
    wait_for "slurmdbd on 127.0.0.1:$DBD_PORT" 60 port_open "$DBD_PORT" ||
        die "slurmdbd does not answer on $DBD_PORT: $(tail -n 1 "$BASE/log/slurmdbd.log" 2>/dev/null)"
    sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || die "sacctmgr could not add cluster $CLUSTER_NAME"
}

[[ $(id -u) == 0 ]] || die "needs root (starts daemons)"
case ${1:-} in
    start) start ;;
    stop) stop ;;
    *) die "usage: slurm_accounting.sh start|stop" ;;
esac
