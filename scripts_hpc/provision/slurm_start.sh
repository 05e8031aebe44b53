#!/usr/bin/env bash
# slurm_start.sh: install (if needed), configure and start a throw-away Slurm cluster on this one
# host, without systemd, for development and CI. Run as root; `make cluster-up` calls it.
#
# Two slurmd run here as two "nodes" (`hostname -s` and `localhost`, both 127.0.0.1, different
# ports): Slurm starts heterogeneous jobs only from the backfill scheduler, and backfill never
# puts two components of one hetjob on the same node.
#
# Idempotent: when the daemons run with the config this script would write, it only checks their
# health (and resumes down/drained nodes); otherwise it stops them and starts fresh ones with
# empty state. Everything lives under $MLEBENCH_SLURM_BASE; /etc/slurm only gets symlinks.
#
# Knobs (environment):
#   MLEBENCH_SLURM_BASE       base directory                 (/tmp/mlebench-hpc-slurm)
#   MLEBENCH_SLURM_NODES      node names, space separated    ("$(hostname -s) localhost")
#   MLEBENCH_SLURM_CPUS       CPUs declared per node         (8; more than physical is fine)
#   MLEBENCH_SLURM_MEM_MB     RealMemory per node            (65536: more than the host has, so
#                             the product's #SBATCH --mem defaults fit unchanged; each job's own
#                             --mem is enforced where the memory cgroup allows, see below)
#   MLEBENCH_SLURM_GPUS       fake gpu gres per node         (1; 0 = no gres)
#   MLEBENCH_SLURM_PORT       slurmctld port; slurmd ports follow (6817)
#   MLEBENCH_SLURM_WAIT       seconds to wait for the nodes  (60)
#   MLEBENCH_SLURM_PROCTRACK  auto|cgroup|linuxproc          (auto: cgroup if the v1 freezer is writable)
#   MLEBENCH_SLURM_MEMORY     auto|enforce|off               (auto: enforce --mem (task/cgroup,
#                             ConstrainRAMSpace) if the v1 memory controller is writable)
#   MLEBENCH_SLURM_ACCOUNTING 1 = slurmdbd + MariaDB (slurm_accounting.sh), sacct answers (1; 0 = none)
#   MLEBENCH_SLURM_LINK_ETC   1 = symlink /etc/slurm/*.conf to ours so plain sbatch works (1)
#   MLEBENCH_APT_UPDATED      1 = `apt-get update` already ran (tests/run_all.sh sets it)
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly BASE=${MLEBENCH_SLURM_BASE:-/tmp/mlebench-hpc-slurm}
SHORT_HOST=$(hostname -s)
readonly SHORT_HOST
readonly NODES=${MLEBENCH_SLURM_NODES:-"$SHORT_HOST localhost"}
readonly CPUS=${MLEBENCH_SLURM_CPUS:-8}
readonly MEM_MB=${MLEBENCH_SLURM_MEM_MB:-65536}
readonly GPUS=${MLEBENCH_SLURM_GPUS:-1}
# Slurm accounting (slurmdbd + MariaDB, slurm_accounting.sh), as sites keep it: `sacct` answers.
readonly ACCOUNTING=${MLEBENCH_SLURM_ACCOUNTING:-1}
readonly CTLD_PORT=${MLEBENCH_SLURM_PORT:-6817}
readonly DBD_PORT=${MLEBENCH_SLURM_DBD_PORT:-$((CTLD_PORT + 9))}
readonly WAIT=${MLEBENCH_SLURM_WAIT:-60}
readonly LINK_ETC=${MLEBENCH_SLURM_LINK_ETC:-1}
readonly CLUSTER_NAME=mlebench
readonly CONF_FILES=(slurm.conf gres.conf cgroup.conf plugstack.conf)
readonly ETC_LINKS=(slurm.conf gres.conf cgroup.conf)
readonly CONF=$BASE/etc/slurm.conf
readonly MUNGE_DIR=$BASE/munge
readonly MUNGE_SOCK=$MUNGE_DIR/run/munge.socket.2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly T_START=$EPOCHREALTIME
export SLURM_CONF=$CONF

log() { printf '[slurm_start %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf '[slurm_start] ERROR: %s\n' "$*" >&2; exit 2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
pid_alive() { [[ -s $1 ]] && kill -0 "$(<"$1")" 2>/dev/null; }

[[ $(id -u) == 0 ]] || die "needs root (installs packages, starts daemons); run: sudo make cluster-up"
[[ $BASE == /?* ]] || die "MLEBENCH_SLURM_BASE must be an absolute path, got '$BASE'"
read -r -a NODE_ARR <<<"$NODES"
((${#NODE_ARR[@]} >= 1)) || die "MLEBENCH_SLURM_NODES is empty"

# One provisioning at a time: several engineers' `make test` may start together.
mkdir -p "$BASE"
exec 9>"$BASE/.lock"
flock -w 300 9 || die "another slurm_start/slurm_stop holds $BASE/.lock for 300 s; try again"

# ------------------------------------------------------------------------------------ install
install_packages() {
    local t0=$EPOCHREALTIME own_policy=0
    log "installing slurm-wlm + munge from Debian"
    # No systemd here: keep the maintainer scripts from starting the services themselves.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    local pkgs=(slurm-wlm slurmctld slurmd slurm-client munge)
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    [[ ${MLEBENCH_APT_UPDATED:-0} == 1 ]] || "${apt[@]}" update >/dev/null || rc=$?
    if ((rc == 0)); then
        "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >/dev/null || rc=$?
    fi
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get could not install ${pkgs[*]} (exit $rc); check the Debian mirror"
    log "installed in $(since "$t0") s"
}
for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged /usr/bin/munge; do
    if [[ ! -x $bin ]]; then install_packages; break; fi
done
getent passwd munge >/dev/null || die "user 'munge' missing after install; reinstall the munge package"

for n in "${NODE_ARR[@]}"; do
    getent hosts "$n" >/dev/null || log "WARNING: node name '$n' does not resolve; add it to /etc/hosts"
done

# ------------------------------------------------------------------------------ proctrack
proctrack=${MLEBENCH_SLURM_PROCTRACK:-auto}
if [[ $proctrack == auto ]]; then
    # proctrack/cgroup also kills double-forked children of a job; it needs a writable cgroup-v1
    # freezer (probe by creating a group: `-w` lies for root on a read-only mount).
    proctrack=linuxproc
    probe=/sys/fs/cgroup/freezer/mlebench-probe-$$
    if mkdir "$probe" 2>/dev/null; then
        rmdir "$probe"
        proctrack=cgroup
    fi
fi

# ------------------------------------------------------------------------------ memory
# As on a real cluster, a job's --mem is a fence: past it the kernel's OOM killer stops the job's
# processes (task/cgroup with ConstrainRAMSpace). It needs a writable cgroup-v1 memory controller
# (probed like the freezer) and proctrack/cgroup.
memory=${MLEBENCH_SLURM_MEMORY:-auto}
if [[ $memory == auto ]]; then
    memory=off
    probe=/sys/fs/cgroup/memory/mlebench-probe-$$
    if [[ $proctrack == cgroup ]] && mkdir "$probe" 2>/dev/null; then
        rmdir "$probe"
        memory=enforce
    fi
fi
[[ $memory == enforce || $memory == off ]] || die "MLEBENCH_SLURM_MEMORY must be auto, enforce or off, got '$memory'"
task_plugin=task/none
constrain_ram=no
select_params=CR_CPU
if [[ $memory == enforce ]]; then
    # Memory must be a consumable resource, or every job is "allocated" 0 MB and its cgroup gets the
    # node's whole memory; a job that asks for none gets DefMemPerCPU.
    task_plugin=task/cgroup
    constrain_ram=yes
    select_params=CR_CPU_Memory
fi

# --------------------------------------------------------------------------------- config
NEW=$(mktemp -d)
trap 'rm -rf "$NEW"' EXIT

# With accounting: the steps' usage gathered from their cgroups every second (peak memory for sacct;
# the default 30 s misses the tests' short steps), GPUs as a TRES; AccountingStoragePass names the
# munge socket slurmdbd's clients use (ours is not the default one).
accounting_lines() {
    if [[ $ACCOUNTING != 1 ]]; then
        printf '%s\n' JobAcctGatherType=jobacct_gather/none AccountingStorageType=accounting_storage/none
        return 0
    fi
    local gather=linux
    [[ $proctrack == cgroup ]] && gather=cgroup
    printf '%s\n' "JobAcctGatherType=jobacct_gather/$gather" JobAcctGatherFrequency=task=1 \
        AccountingStorageType=accounting_storage/slurmdbd \
        AccountingStorageHost=127.0.0.1 "AccountingStoragePort=$DBD_PORT" "AccountingStoragePass=$MUNGE_SOCK" \
        AccountingStorageTRES=gres/gpu
}

write_slurm_conf() {
    local port n gres=""
    ((GPUS > 0)) && gres=" Gres=gpu:$GPUS"
    cat <<EOF
# Written by scripts_hpc/provision/slurm_start.sh: single-host Slurm test cluster
ClusterName=$CLUSTER_NAME
SlurmctldHost=$SHORT_HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s);
# 30 s keeps the requeue test short and still leaves step launches room on a loaded machine.
AuthInfo=socket=$MUNGE_SOCK,cred_expire=30
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd-%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$BASE/etc/plugstack.conf
ProctrackType=proctrack/$proctrack
TaskPlugin=$task_plugin
SelectType=select/cons_tres
SelectTypeParameters=$select_params
DefMemPerCPU=1024
# Hetjobs are started only by the backfill scheduler: run it every second.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,bf_resolution=10,bf_hetjob_immediate
MpiDefault=none
SwitchType=switch/none
$(accounting_lines)
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
# Short grace between SIGTERM and SIGKILL on scancel/timeout keeps the tests fast.
KillWait=5
# Finished jobs stay visible to scontrol show job for 10 minutes (URL discovery needs them).
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
EOF
    ((GPUS > 0)) && echo "GresTypes=gpu"
    port=$((CTLD_PORT + 1))
    for n in "${NODE_ARR[@]}"; do
        echo "NodeName=$n NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS Boards=1 SocketsPerBoard=1" \
            "CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB$gres State=UNKNOWN"
        port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
}

write_gres_conf() {
    local n
    echo "AutoDetect=off"
    # A gpu gres without File= is dropped by slurmd and the node drains ("count reported lower
    # than configured"): one fake GPU per node backed by /dev/null is enough for tests.
    for n in "${NODE_ARR[@]}"; do
        ((GPUS > 0)) && echo "NodeName=$n Name=gpu Count=$GPUS File=/dev/null"
    done
    return 0
}

((GPUS <= 1)) || die "MLEBENCH_SLURM_GPUS must be 0 or 1 (fake GPUs share /dev/null), got $GPUS"
write_slurm_conf >"$NEW/slurm.conf"
write_gres_conf >"$NEW/gres.conf"
cat >"$NEW/cgroup.conf" <<EOF
# proctrack/cgroup (v1 freezer) and, with task/cgroup, each job's --mem (v1 memory controller).
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=$constrain_ram
EOF
: >"$NEW/plugstack.conf"

same_conf=1
for f in "${CONF_FILES[@]}"; do cmp -s "$NEW/$f" "$BASE/etc/$f" || same_conf=0; done

# ----------------------------------------------------------------------------------- start
# Daemons of another cluster (or orphans whose pid files are gone) on our ports would answer our
# clients and make a broken start look healthy.
check_ports_free() {
    local port
    for ((port = CTLD_PORT; port <= CTLD_PORT + ${#NODE_ARR[@]}; port++)); do
        if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            die "port $port is already in use (another Slurm? see: ss -ltnp | grep $port);" \
                "stop it or set MLEBENCH_SLURM_PORT"
        fi
    done
}

# True when every daemon named by our pid files runs.
daemons_alive() {
    local n
    pid_alive "$MUNGE_DIR/run/munged.pid" || return 1
    pid_alive "$BASE/run/slurmctld.pid" || return 1
    [[ $ACCOUNTING != 1 ]] || pid_alive "$BASE/run/slurmdbd.pid" || return 1
    for n in "${NODE_ARR[@]}"; do pid_alive "$BASE/run/slurmd-$n.pid" || return 1; done
}

start_daemons() {
    local t0=$EPOCHREALTIME n f
    # The stop script takes the same lock: hand it our descriptor's lock by running it inline.
    MLEBENCH_SLURM_LOCKED=1 bash "$HERE/slurm_stop.sh" --keep-etc-links || true
    mkdir -p "$BASE"/{etc,log,run} "$MUNGE_DIR"/{key,run,lib}
    for f in "${CONF_FILES[@]}"; do install -m 644 "$NEW/$f" "$BASE/etc/$f"; done
    echo "export SLURM_CONF=$CONF" >"$BASE/env.sh"
    # Fresh state on every (re)start: old drain reasons and jobs would otherwise come back.
    rm -rf "${BASE:?}/state" "${BASE:?}/spool"
    mkdir -p "$BASE/state"
    for n in "${NODE_ARR[@]}"; do mkdir -p "$BASE/spool/slurmd-$n"; done
    chmod 755 "$BASE" "$BASE/etc"   # clients of any user read slurm.conf through /etc/slurm
    check_ports_free

    if [[ ! -s $MUNGE_DIR/key/munge.key ]]; then
        if [[ -s /etc/munge/munge.key ]]; then
            cp /etc/munge/munge.key "$MUNGE_DIR/key/munge.key"
        else
            dd if=/dev/urandom of="$MUNGE_DIR/key/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chown -R munge:munge "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR" "$MUNGE_DIR/run"   # every user's client must reach the socket
    chmod 700 "$MUNGE_DIR/key" "$MUNGE_DIR/lib"
    chmod 400 "$MUNGE_DIR/key/munge.key"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock" "$MUNGE_DIR/run/munged.pid"
    # 9>&-: daemons must not inherit the provisioning lock (it would stay held forever).
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCK" \
        --key-file="$MUNGE_DIR/key/munge.key" --pid-file="$MUNGE_DIR/run/munged.pid" \
        --log-file="$MUNGE_DIR/lib/munged.log" --seed-file="$MUNGE_DIR/lib/munged.seed" 9>&- ||
        die "munged did not start: $(tail -n 1 "$MUNGE_DIR/lib/munged.log" 2>/dev/null)"
    munge -n --socket="$MUNGE_SOCK" | unmunge --socket="$MUNGE_SOCK" >/dev/null ||
        die "munge round trip failed; see $MUNGE_DIR/lib/munged.log"

    if [[ $ACCOUNTING == 1 ]]; then
        MLEBENCH_SLURM_BASE=$BASE MLEBENCH_SLURM_DBD_PORT=$DBD_PORT bash "$HERE/slurm_accounting.sh" start 9>&-
    fi
    /usr/sbin/slurmctld 9>&- ||
        die "slurmctld did not start: $(tail -n 1 "$BASE/log/slurmctld.log" 2>/dev/null)"
    for n in "${NODE_ARR[@]}"; do
        /usr/sbin/slurmd -N "$n" 9>&- ||
            die "slurmd $n did not start: $(tail -n 1 "$BASE/log/slurmd-$n.log" 2>/dev/null)"
    done
    log "daemons started in $(since "$t0") s (proctrack/$proctrack, $task_plugin, memory $memory)"
}

link_etc() {
    local f dst
    [[ $LINK_ETC == 1 ]] || return 0
    mkdir -p /etc/slurm
    for f in "${ETC_LINKS[@]}"; do
        dst=/etc/slurm/$f
        # Never clobber a real cluster's configuration.
        if [[ -e $dst && ! -L $dst ]]; then
            die "$dst is a real file, not our link; move it away or set MLEBENCH_SLURM_LINK_ETC=0"
        fi
        ln -sfn "$BASE/etc/$f" "$dst"
    done
}

# wait_nodes STATES SECONDS: true once every node is in one of STATES (a regex of sinfo %T).
wait_nodes() {
    local states=$1 secs=$2 deadline bad
    deadline=$((SECONDS + secs))
    while :; do
        bad=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | awk -v ok="^($states)\$" '
            { seen[$1] = 1; if ($2 !~ ok) print $1 "=" $2 }
            END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!(w[i] in seen)) print w[i] "=missing" }
        ' want="${NODE_ARR[*]}") || bad="sinfo-failed"
        [[ -z $bad ]] && return 0
        ((SECONDS >= deadline)) && { log "nodes not ready: $bad"; return 1; }
        sleep 0.2
    done
}

link_etc
if ((same_conf)) && daemons_alive; then
    log "cluster already running with this config; checking health"
    # A node that went down (e.g. slurmd restarted) comes back with RESUME.
    down=$(sinfo -h -N -t down,drain,fail -o '%N' 2>/dev/null | sort -u | paste -sd, || true)
    if [[ -n $down ]]; then
        log "resuming nodes: $down"
        scontrol update NodeName="$down" State=RESUME 2>/dev/null || true
    fi
    # Jobs of other users may be running: allocated or mixed nodes are healthy too.
    ready='idle|mixed|allocated|completing'
    if ! wait_nodes "$ready" 15; then
        log "unhealthy cluster; restarting it"
        start_daemons
        ready=idle
    fi
else
    if daemons_alive; then
        log "config changed: restarting the cluster (running jobs are cancelled)"
    fi
    start_daemons
    ready=idle
fi
if ! wait_nodes "$ready" "$WAIT"; then
    sinfo -N -o '%N %T %E' >&2 || true
    tail -n 15 "$BASE/log/slurmctld.log" >&2 || true
    die "nodes not ready after ${WAIT} s; logs in $BASE/log"
fi
daemons_alive || die "a daemon of ours exited after start; logs in $BASE/log"
log "cluster ready in $(since "$T_START") s: nodes ${NODE_ARR[*]}, partition debug, SLURM_CONF=$CONF"
