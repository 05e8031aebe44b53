#!/usr/bin/env bash
# registry_up.sh: the site's image services, as an admin would run them (`make cluster-up` calls
# it after Slurm and Apptainer; root only). Installs Debian's docker.io and docker-registry, starts
# a Docker daemon and a plain registry on 127.0.0.1:5000, and puts the base image into it as
# 127.0.0.1:5000/mlebench-hpc/base:bookworm, made from the local debootstrap rootfs
# (python3, pip, ca-certificates, curl: `build_images.sh --base-only`). Prints the config line
# users add: BASE_IMAGE=127.0.0.1:5000/mlebench-hpc/base:bookworm.
#
# Idempotent: running daemons are reused (a Docker daemon or registry that was already there is
# never stopped by registry_down.sh), and the base is pushed again only when the rootfs changed.
# The daemon runs without a bridge or iptables rules (nothing on the host to undo); builds use the
# host network. Docker's socket stays root:docker 0660, so ordinary users build with Apptainer.
#
# Knobs (environment):
#   MLEBENCH_SITE_BASE       state: registry config and storage, pid files, logs (/var/lib/mlebench-hpc-site)
#   MLEBENCH_DOCKER_SOCKET   the daemon's socket (/var/run/docker.sock); another path gets its own
#                            data and exec roots under MLEBENCH_SITE_BASE (a second, private daemon)
#   MLEBENCH_SKIP_DOCKER=1   do nothing
#   MLEBENCH_APT_UPDATED=1   `apt-get update` already ran
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly SITE=${MLEBENCH_SITE_BASE:-/var/lib/mlebench-hpc-site}
readonly SOCK=${MLEBENCH_DOCKER_SOCKET:-/var/run/docker.sock}
readonly REGISTRY_HOST=127.0.0.1 REGISTRY_PORT=5000
readonly BASE_REPO=mlebench-hpc/base BASE_TAG=bookworm
readonly BASE_IMAGE_REF=$REGISTRY_HOST:$REGISTRY_PORT/$BASE_REPO:$BASE_TAG
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly T_START=$EPOCHREALTIME
export DOCKER_HOST=unix://$SOCK

log() { printf '[registry_up %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf '[registry_up] ERROR: %s\n' "$*" >&2; exit 2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
pid_alive() { [[ -s $1 ]] && kill -0 "$(<"$1")" 2>/dev/null; }

if [[ ${MLEBENCH_SKIP_DOCKER:-0} == 1 ]]; then
    log "MLEBENCH_SKIP_DOCKER=1: no Docker daemon, no registry"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "needs root (installs packages, starts daemons); run: sudo make cluster-up"
[[ $SITE == /?* ]] || die "MLEBENCH_SITE_BASE must be an absolute path, got '$SITE'"
mkdir -p "$SITE"/{run,log,registry}
exec 9>"$SITE/.lock"
flock -w 300 9 || die "another registry_up/registry_down holds $SITE/.lock for 300 s; try again"

# ------------------------------------------------------------------------------------ install
install_packages() {
    local t0=$EPOCHREALTIME own_policy=0 rc=0
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    log "installing docker.io + docker-registry from Debian"
    # No systemd here: keep the maintainer scripts from starting the services themselves.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    [[ ${MLEBENCH_APT_UPDATED:-0} == 1 ]] || "${apt[@]}" update >/dev/null || rc=$?
    ((rc == 0)) && { "${apt[@]}" install --no-install-recommends docker.io docker-registry >/dev/null || rc=$?; }
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get could not install docker.io docker-registry (exit $rc); check the Debian mirror"
    log "installed in $(since "$t0") s"
}
for bin in /usr/sbin/dockerd /usr/bin/docker-registry; do
    if [[ ! -x $bin ]]; then install_packages; break; fi
done
command -v docker >/dev/null || die "no docker client after installing docker.io"

# ------------------------------------------------------------------------------------ dockerd
docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
    local t0=$EPOCHREALTIME args=(-H "unix://$SOCK" --pidfile "$SITE/run/dockerd.pid"
        --bridge=none --iptables=false --ip-masq=false)
    if [[ $SOCK != /var/run/docker.sock ]]; then
        args+=(--data-root "$SITE/docker-data" --exec-root "$SITE/docker-exec")
    fi
    mkdir -p "$(dirname "$SOCK")"
    # 9>&-: the daemon must not inherit the provisioning lock.
    setsid /usr/sbin/dockerd "${args[@]}" >"$SITE/log/dockerd.log" 2>&1 </dev/null 9>&- &
    local i
    for ((i = 0; i < 120; i++)); do
        docker_answers && { log "dockerd started in $(since "$t0") s (socket $SOCK)"; return 0; }
        pid_alive "$SITE/run/dockerd.pid" || ((i < 10)) || break
        sleep 0.5
    done
    die "dockerd did not answer: $(tail -n 2 "$SITE/log/dockerd.log" 2>/dev/null | tr '\n' ' ')"
}

if docker_answers; then
    if pid_alive "$SITE/run/dockerd.pid"; then log "dockerd (ours) already running"
    else log "a Docker daemon already answers on $SOCK: using it (never stopped by cluster-down)"; fi
else
    start_dockerd
fi

# ----------------------------------------------------------------------------------- registry
# True when a registry answers GET /v2/ with 200 (bash's /dev/tcp: no HTTP client needed).
registry_answers() {
    local line
    # (a group: `exec ... 2>/dev/null` alone would silence this shell's stderr for good)
    { exec 3<>"/dev/tcp/$REGISTRY_HOST/$REGISTRY_PORT"; } 2>/dev/null || return 1
    printf 'GET /v2/ HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$REGISTRY_HOST" "$REGISTRY_PORT" >&3
    IFS= read -r -t 5 line <&3 || line=""
    exec 3>&-
    [[ $line == "HTTP/1."?" 200"* ]]
}

start_registry() {
    local t0=$EPOCHREALTIME conf=$SITE/registry/config.yml i
    if (: <"/dev/tcp/$REGISTRY_HOST/$REGISTRY_PORT") 2>/dev/null; then
        die "$REGISTRY_HOST:$REGISTRY_PORT is taken by something that is no registry (see: ss -ltnp | grep $REGISTRY_PORT)"
    fi
    # Filesystem storage, loopback only, no auth: the site's registry for this machine's users.
    cat >"$conf" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $SITE/registry/data
http:
  addr: $REGISTRY_HOST:$REGISTRY_PORT
EOF
    setsid /usr/bin/docker-registry serve "$conf" >"$SITE/log/registry.log" 2>&1 </dev/null 9>&- &
    echo $! >"$SITE/run/registry.pid"
    for ((i = 0; i < 60; i++)); do
        registry_answers && { log "registry started in $(since "$t0") s on $REGISTRY_HOST:$REGISTRY_PORT"; return 0; }
        pid_alive "$SITE/run/registry.pid" || break
        sleep 0.5
    done
    die "the registry did not answer: $(tail -n 2 "$SITE/log/registry.log" 2>/dev/null | tr '\n' ' ')"
}

if registry_answers; then
    if pid_alive "$SITE/run/registry.pid"; then log "registry (ours) already running"
    else log "a registry already answers on $REGISTRY_HOST:$REGISTRY_PORT: using it"; fi
else
    rm -f "$SITE/run/registry.pid"
    start_registry
fi

# --------------------------------------------------------------------------------- base image
# The rootfs every local build starts from, pushed once per rootfs (its stamp says which).
rootfs=$(bash "$HERE/../build_images.sh" --base-only) || die "no base rootfs (build_images.sh --base-only failed above)"
want="$(head -n1 "$rootfs.stamp") -> $BASE_IMAGE_REF"
tag_link=$SITE/registry/data/docker/registry/v2/repositories/$BASE_REPO/_manifests/tags/$BASE_TAG/current/link
if [[ -f $tag_link && -f $SITE/base.stamp && $(<"$SITE/base.stamp") == "$want" ]]; then
    log "$BASE_IMAGE_REF is up to date"
else
    t0=$EPOCHREALTIME
    log "pushing $rootfs as $BASE_IMAGE_REF"
    tar -C "$rootfs" -cf - . | docker import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE_REF" >/dev/null \
        || die "docker import of $rootfs failed; see $SITE/log/dockerd.log"
    docker push -q "$BASE_IMAGE_REF" >/dev/null || die "docker push $BASE_IMAGE_REF failed; see $SITE/log/registry.log"
    echo "$want" >"$SITE/base.stamp"
    log "base image pushed in $(since "$t0") s"
fi

log "site images ready in $(since "$T_START") s; users add this line to their config:"
echo "BASE_IMAGE=$BASE_IMAGE_REF"
