#!/usr/bin/env bash
# slurm_stop.sh: stop the test cluster that slurm_start.sh started. Run as root;
# `make cluster-down` calls it. Idempotent.
#
# Cancels all jobs while the controller is up, stops slurmd, slurmctld and munged by the PIDs in
# their pid files (TERM, bounded wait, KILL), kills leftover job processes of *this* cluster only
# (members of its proctrack cgroups, or processes whose environment names its slurm.conf or its
# cluster with a job id), never the caller or its ancestors, then removes the /etc/slurm links
# that point at us.
#
# Options: --keep-etc-links  leave /etc/slurm links in place (slurm_start.sh restarting).
# Knobs: MLEBENCH_SLURM_BASE (/tmp/mlebench-hpc-slurm), as for slurm_start.sh.
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly BASE=${MLEBENCH_SLURM_BASE:-/tmp/mlebench-hpc-slurm}
readonly CONF=$BASE/etc/slurm.conf
readonly CLUSTER_NAME=mlebench
readonly MUNGE_DIR=$BASE/munge
readonly T_START=$EPOCHREALTIME
export SLURM_CONF=$CONF

log() { printf '[slurm_stop %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf '[slurm_stop] ERROR: %s\n' "$*" >&2; exit 2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

keep_links=0
for arg in "$@"; do
    case $arg in
        --keep-etc-links) keep_links=1 ;;
        *) die "unknown option '$arg' (only --keep-etc-links)" ;;
    esac
done
[[ $(id -u) == 0 ]] || die "needs root (stops root's Slurm daemons); run: sudo make cluster-down"
if [[ ! -d $BASE ]]; then
    log "nothing to stop: $BASE does not exist"
    exit 0
fi
if [[ ${MLEBENCH_SLURM_LOCKED:-0} != 1 ]]; then
    exec 9>"$BASE/.lock"
    flock -w 300 9 || die "another slurm_start/slurm_stop holds $BASE/.lock for 300 s; try again"
fi

# pid_from FILE COMM: the PID in FILE if that process still runs COMM (a stale file may name a
# recycled PID that belongs to someone else).
pid_from() {
    local pid
    [[ -s $1 ]] || return 0
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
    return 0
}

# stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL what is left.
stop_pids() {
    local secs=$1 p deadline left
    shift
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    deadline=$((SECONDS + secs))
    while :; do
        left=()
        for p in "$@"; do alive "$p" && left+=("$p"); done
        ((${#left[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            log "SIGKILL to ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
}

# 1. Cancel every job while the controller still answers, and give them KillWait to end.
ctld=$(pid_from "$BASE/run/slurmctld.pid" slurmctld)
if [[ -n $ctld && -f $CONF ]]; then
    mapfile -t jobs < <(squeue -h -o '%A' 2>/dev/null | sort -u)
    if ((${#jobs[@]} > 0)); then
        log "cancelling jobs: ${jobs[*]}"
        scancel "${jobs[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 15))   # KillWait=5 plus slack
        while [[ -n $(squeue -h -t R,CG,S,CF -o '%A' 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
fi

# 2. The daemons, all at once (each takes ~2 s to exit on SIGTERM).
# Slurm accounting (slurm_accounting.sh): slurmdbd and its MariaDB, when they run.
MLEBENCH_SLURM_BASE=$BASE bash "$(dirname "${BASH_SOURCE[0]}")/slurm_accounting.sh" stop 9>&- || true

daemons=()
for f in "$BASE"/run/slurmd-*.pid; do
    [[ -e $f ]] && daemons+=("$(pid_from "$f" slurmd)")
done
daemons+=("$ctld" "$(pid_from "$MUNGE_DIR/run/munged.pid" munged)")
mapfile -t daemons < <(printf '%s\n' "${daemons[@]}" | grep -E '^[0-9]+$' || true)
if ((${#daemons[@]} > 0)); then
    log "stopping daemons: ${daemons[*]}"
    stop_pids 10 "${daemons[@]}"
fi

# 3. Leftover job processes of this cluster (double-forked children that proctrack/linuxproc lost,
#    container processes whose environment --cleanenv wiped but whose cgroup still says whose
#    they are). Never this script or its ancestors.
node_names=()
[[ -f $CONF ]] && mapfile -t node_names < <(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF")
declare -A protect=()
p=$$
while [[ $p =~ ^[0-9]+$ ]] && ((p > 1)); do
    protect[$p]=1
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
done
declare -A victims=()
for n in "${node_names[@]}"; do
    for ctl in /sys/fs/cgroup/*/"slurm_$n"; do
        [[ -d $ctl ]] || continue
        while read -r pid; do
            [[ -n $pid ]] && victims[$pid]=1
        done < <(find "$ctl" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done
done
for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    env=$(tr '\0' '\n' 2>/dev/null <"$d/environ") || continue
    if grep -qxF "SLURM_CONF=$CONF" <<<"$env"; then
        [[ $(cat "$d/comm" 2>/dev/null) == slurmstepd ]] && victims[$pid]=1
        grep -q '^SLURM_JOB_ID=' <<<"$env" && victims[$pid]=1
    elif grep -qxF "SLURM_CLUSTER_NAME=$CLUSTER_NAME" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env"; then
        victims[$pid]=1
    fi
done
leftover=()
for pid in "${!victims[@]}"; do
    [[ -z ${protect[$pid]:-} ]] && alive "$pid" && leftover+=("$pid")
done
if ((${#leftover[@]} > 0)); then
    log "killing leftover job processes: ${leftover[*]}"
    stop_pids 3 "${leftover[@]}"
fi

# 4. The per-node cgroup-v1 trees proctrack/cgroup created (empty by now).
for n in "${node_names[@]}"; do
    for ctl in /sys/fs/cgroup/*/"slurm_$n"; do
        [[ -d $ctl ]] && find "$ctl" -depth -type d -exec rmdir {} + 2>/dev/null
    done
done

# 5. Runtime files, and the /etc/slurm links that point at us (never someone else's).
rm -f "$BASE"/run/*.pid "$MUNGE_DIR/run/munged.pid" "$MUNGE_DIR/run/munge.socket.2" \
    "$MUNGE_DIR/run/munge.socket.2.lock"
if ((!keep_links)); then
    for f in slurm.conf gres.conf cgroup.conf; do
        if [[ -L /etc/slurm/$f && $(readlink "/etc/slurm/$f") == "$BASE/etc/$f" ]]; then
            rm -f "/etc/slurm/$f"
        fi
    done
fi
log "stopped in $(since "$T_START") s"
