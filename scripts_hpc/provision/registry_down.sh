#!/usr/bin/env bash
# registry_down.sh: stop what registry_up.sh started (`make cluster-down` calls it; root only): the
# registry and the Docker daemon, by the PIDs in their pid files, TERM then KILL after a bounded
# wait. A daemon or registry that was already running before registry_up.sh is left alone. The
# registry's storage stays, so the next `make cluster-up` need not push the base again.
# Knobs: MLEBENCH_SITE_BASE, MLEBENCH_DOCKER_SOCKET (as registry_up.sh).
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly SITE=${MLEBENCH_SITE_BASE:-/var/lib/mlebench-hpc-site}
readonly SOCK=${MLEBENCH_DOCKER_SOCKET:-/var/run/docker.sock}
readonly T_START=$EPOCHREALTIME

log() { printf '[registry_down %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf '[registry_down] ERROR: %s\n' "$*" >&2; exit 2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

[[ $(id -u) == 0 ]] || die "needs root (stops root's daemons); run: sudo make cluster-down"
if [[ ! -d $SITE/run ]]; then
    log "nothing to stop: $SITE/run does not exist"
    exit 0
fi
exec 9>"$SITE/.lock"
flock -w 300 9 || die "another registry_up/registry_down holds $SITE/.lock for 300 s; try again"

# stop FILE COMM SECONDS: the process in FILE, if it still runs COMM (a stale file may name a
# recycled PID that belongs to someone else). False when there was nothing of ours to stop.
stop() {
    local file=$1 comm=$2 secs=$3 pid deadline ours=1
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]; then
        log "stopping $comm ($pid)"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + secs))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { log "SIGKILL to $comm ($pid)"; kill -KILL "$pid" 2>/dev/null || true; }
    else
        ours=0
    fi
    rm -f "$file"
    ((ours))
}

stop "$SITE/run/registry.pid" docker-registry 10 || true
# dockerd stops its containerd itself; give it the time to. It leaves the mount of its default
# network namespace behind: remove that too.
if stop "$SITE/run/dockerd.pid" dockerd 30; then
    netns=/var/run/docker/netns/default
    [[ $SOCK == /var/run/docker.sock ]] || netns=$SITE/docker-exec/netns/default
    if mountpoint -q "$netns" 2>/dev/null; then umount "$netns" || log "could not unmount $netns"; fi
fi
log "stopped in $(since "$T_START") s"
