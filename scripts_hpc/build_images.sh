#!/usr/bin/env bash
# build_images.sh: build the grading image and one agent image as SIF files (what `make sif` runs).
#
#   build_images.sh [--agent dummy|aide] [--llm vllm] [--builder auto|docker|apptainer]
#                   [--base local|docker] [--image-dir DIR] [--force] [--base-only]
#
# Builders:
#   docker     as upstream: docker build, docker save, apptainer build x.sif docker-archive://x.tar
#   apptainer  apptainer build --fakeroot from the .def files, no Docker at all
#   auto       docker when `docker info` answers, else apptainer
# Base of the apptainer builds (--base, env IMAGE_BASE):
#   local   (default) a Debian bookworm rootfs made once by debootstrap from the Debian mirror
#           (no image registry), cached in ~/.cache/mlebench-hpc/rootfs/bookworm-python
#           (MLEBENCH_HPC_CACHE moves it); needs root the first time
#   docker  Bootstrap: docker from $BASE_DOCKER_IMAGE (default docker.io/library/debian:bookworm-slim),
#           what a cluster with registry access uses
# Images go to IMAGE_DIR (env, else the config in force, else ~/.cache/mlebench-hpc/images):
# mlebench-grading.sif, agent-<name>.sif and, with --llm, the LLM server image llm-<name>.sif
# (environment/llm/<name>.def; vLLM from PyPI, many GB). An image whose inputs did not change is not rebuilt
# (hash stored beside the SIF as <sif>.inputs); each image's size and sha256 are printed.
# MLEBENCH_DIR (env or config) = an upstream mle-bench checkout to pip install into the grading image.
set -euo pipefail

export MH_SCRIPTS
MH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"
ROOT=$(cd "$MH_SCRIPTS/.." && pwd)

CACHE=${MLEBENCH_HPC_CACHE:-$HOME/.cache/mlebench-hpc}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_NAME=bookworm-python
BASE_PACKAGES=python3,python3-pip,ca-certificates,curl
BASE_DOCKER_IMAGE=${BASE_DOCKER_IMAGE:-docker.io/library/debian:bookworm-slim}
APPTAINER=${APPTAINER:-apptainer}

AGENT=dummy LLM="" BUILDER=auto BASE=${IMAGE_BASE:-local} FORCE=0 BASE_ONLY=0 IMAGE_DIR_ARG=""
WORK=""
cleanup() { [[ -n $WORK ]] && rm -rf "$WORK"; return 0; }
trap cleanup EXIT

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

parse_args() {
    while (($#)); do
        case $1 in
            --agent) AGENT=${2:?--agent needs a value}; shift 2 ;;
            --llm) LLM=${2:?--llm needs a value}; shift 2 ;;
            --builder) BUILDER=${2:?--builder needs a value}; shift 2 ;;
            --base) BASE=${2:?--base needs a value}; shift 2 ;;
            --image-dir) IMAGE_DIR_ARG=${2:?--image-dir needs a value}; shift 2 ;;
            --force) FORCE=1; shift ;;
            --base-only) BASE_ONLY=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) mh_die "unknown argument '$1': see $0 --help" ;;
        esac
    done
    [[ $AGENT =~ ^[a-z0-9_-]+$ && -d $ROOT/agents/$AGENT ]] \
        || mh_die "no agent '$AGENT' (agents/$AGENT missing): use --agent dummy or --agent aide"
    [[ -z $LLM || ( $LLM =~ ^[a-z0-9_-]+$ && -f $ROOT/environment/llm/$LLM.def ) ]] \
        || mh_die "no LLM server image '$LLM' (environment/llm/$LLM.def missing): use --llm vllm"
    case $BUILDER in auto | docker | apptainer) ;; *) mh_die "--builder must be auto, docker or apptainer" ;; esac
    case $BASE in local | docker) ;; *) mh_die "--base must be local or docker" ;; esac
}

# One key of the config in force (read by the Python loader, so the rules are the same).
config_get() {
    local py=python3
    [[ -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python
    PYTHONPATH=$ROOT/helpers "$py" -c \
        'import sys; from mlebench_hpc.config import config_value; print(config_value(sys.argv[1]) or "")' \
        "$1" 2>/dev/null || true
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
human_size() { numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")"; }

pick_builder() {
    if [[ $BUILDER == auto ]]; then
        if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
            BUILDER=docker
        else
            BUILDER=apptainer
        fi
    fi
    command -v "$APPTAINER" >/dev/null 2>&1 \
        || mh_die "apptainer is not on PATH: as root run scripts_hpc/provision/install_apptainer.sh (or module load apptainer)"
    if [[ $BUILDER == docker ]]; then
        timeout 20 docker info >/dev/null 2>&1 || mh_die "docker daemon not reachable: start it or use --builder apptainer"
    elif [[ $(id -u) != 0 ]] && ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null \
        && ! command -v fakeroot >/dev/null 2>&1; then
        # Without a subuid range apptainer can only fake root through the `fakeroot` program.
        mh_die "apptainer build --fakeroot needs a subuid/subgid range for $(id -un): ask an admin to run 'apptainer config fakeroot --add $(id -un)', or build with --builder docker elsewhere and copy the SIFs into $IMAGE_DIR"
    fi
}

# ------------------------------------------------------------------ cached base rootfs
# debootstrap minbase bookworm + python3/pip/curl, pruned, without device nodes (a --fakeroot
# build that unpacks a tree with device nodes fails). Built once per machine and user; the
# stamp records how, so a change of package list rebuilds it.
ensure_base_rootfs() {
    local dir=$CACHE/rootfs/$BASE_NAME stamp want
    stamp=$CACHE/rootfs/$BASE_NAME.stamp
    want="debootstrap --variant=minbase --include=$BASE_PACKAGES bookworm $MIRROR"
    if [[ -d $dir && -f $stamp && $(head -n1 "$stamp") == "$want" ]]; then
        BASE_ROOTFS=$dir
        return 0
    fi
    [[ $(id -u) == 0 ]] \
        || mh_die "the local base rootfs ($dir) needs root for debootstrap: run 'make sif' once as root, or use --base docker"
    command -v debootstrap >/dev/null 2>&1 \
        || mh_die "debootstrap is not installed: run scripts_hpc/provision/install_apptainer.sh (installs it) or apt-get install debootstrap"
    mkdir -p "$CACHE/rootfs"
    local tmp=$dir.tmp.$$ t0=$SECONDS
    WORK_BASE=$tmp
    rm -rf "$tmp"
    mh_log "building the base rootfs (debootstrap minbase bookworm from $MIRROR, ~40 s)"
    timeout 1200 debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$tmp" "$MIRROR" \
        >"$CACHE/rootfs/$BASE_NAME.debootstrap.log" 2>&1 \
        || mh_die "debootstrap failed: see $CACHE/rootfs/$BASE_NAME.debootstrap.log"
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
        "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/locale/*
    find "$tmp/dev" -mindepth 1 -delete
    rm -rf "$dir"
    mv "$tmp" "$dir"
    WORK_BASE=""
    printf '%s\n%s\n' "$want" "built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$stamp"
    mh_log "base rootfs ready in $((SECONDS - t0)) s: $dir ($(du -sh "$dir" | cut -f1))"
    BASE_ROOTFS=$dir
}

# ------------------------------------------------------------------ build contexts
# A context directory holds exactly what an image needs, in the same layout for the .def
# (%files paths are relative to it: the build runs with it as working directory) and for
# the Dockerfile (docker build context).
# The host's CA bundle, for pip during the build only (sites that intercept TLS add their own CA);
# %post deletes it, and it is left out of the inputs hash.
stage_build_ca() {
    local ctx=$1 bundle=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
    if [[ -f $bundle ]]; then cp "$bundle" "$ctx/build-ca.crt"; else : >"$ctx/build-ca.crt"; fi
}

copy_tree() {  # src dst: a source tree without caches and build litter
    mkdir -p "$2"
    tar -C "$1" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
        --exclude='.git' --exclude='.venv' --exclude='build' --exclude='dist' -cf - . | tar -C "$2" -xf -
}

stage_grading() {
    local ctx=$1
    [[ -f $ROOT/environment/run_grading_server.py ]] || mh_die "environment/run_grading_server.py is missing in $ROOT"
    mkdir -p "$ctx/src" "$ctx/environment" "$ctx/mlebench"
    cp "$ROOT/pyproject.toml" "$ctx/src/"
    copy_tree "$ROOT/helpers" "$ctx/src/helpers"
    cp "$ROOT/environment/run_grading_server.py" "$ctx/environment/"
    cp "$ROOT/environment/grading.def" "$ROOT/environment/Dockerfile" "$ctx/"
    stage_build_ca "$ctx"
    local mle=${MLEBENCH_DIR:-$(config_get MLEBENCH_DIR)}
    if [[ -n $mle ]]; then
        [[ -f $mle/pyproject.toml || -f $mle/setup.py ]] \
            || mh_die "MLEBENCH_DIR=$mle is not an mle-bench checkout (no pyproject.toml): fix MLEBENCH_DIR"
        mh_log "including upstream mlebench from $mle"
        copy_tree "$mle" "$ctx/mlebench"
    fi
}

stage_agent() {
    local ctx=$1 name=$2 f
    mkdir -p "$ctx/environment" "$ctx/agent"
    for f in instructions.txt instructions_obfuscated.txt validate_submission.sh entrypoint_hpc.sh; do
        cp "$ROOT/environment/$f" "$ctx/environment/"
    done
    copy_tree "$ROOT/agents/$name" "$ctx/agent"
    rm -f "$ctx/agent/Dockerfile" "$ctx/agent/agent.def"  # build recipes are not agent files
    cp "$ROOT/agents/$name/agent.def" "$ROOT/agents/$name/Dockerfile" "$ctx/"
    stage_build_ca "$ctx"
}

stage_llm() {
    local ctx=$1 name=$2
    mkdir -p "$ctx/llm"
    cp "$ROOT/environment/llm/requirements-$name.txt" "$ctx/llm/"
    cp "$ROOT/environment/llm/$name.def" "$ROOT/environment/llm/Dockerfile.$name" "$ctx/"
    stage_build_ca "$ctx"
}

# Hash of everything that goes into an image: the staged context (recipes included), the
# builder and the base it starts from.
inputs_hash() {
    local ctx=$1
    {
        (cd "$ctx" && find . -type f ! -name build-ca.crt -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        echo "builder=$BUILDER base=$BASE"
        if [[ $BUILDER == apptainer && $BASE == local ]]; then head -n1 "$CACHE/rootfs/$BASE_NAME.stamp"
        elif [[ $BUILDER == apptainer ]]; then echo "$BASE_DOCKER_IMAGE"; fi
    } | sha256sum | cut -d' ' -f1
}

# ------------------------------------------------------------------ builders
build_with_apptainer() {  # ctx deffile out.sif log
    local ctx=$1 def=$2 out=$3 log=$4 args=()
    if [[ $BASE == local ]]; then
        args=(--build-arg BOOTSTRAP=localimage --build-arg "BASE=$BASE_ROOTFS")
    else
        args=(--build-arg BOOTSTRAP=docker --build-arg "BASE=$BASE_DOCKER_IMAGE")
    fi
    (cd "$ctx" && "$APPTAINER" build --fakeroot --force "${args[@]}" "$out" "$def") >"$log" 2>&1
}

build_with_docker() {  # ctx dockerfile out.sif log tag
    local ctx=$1 dockerfile=$2 out=$3 log=$4 tag=$5 tar
    tar=$WORK/${tag//[:\/]/_}.tar
    {
        docker build -t "$tag" -f "$ctx/$dockerfile" "$ctx"
        docker save -o "$tar" "$tag"
        "$APPTAINER" build --force "$out" "docker-archive://$tar"
    } >"$log" 2>&1
    rm -f "$tar"
}

# Build one image unless its inputs are unchanged. Args: name (sif basename) ctx def dockerfile
build_image() {
    local name=$1 ctx=$2 def=$3 dockerfile=$4 sif hash log t0
    sif=$IMAGE_DIR/$name.sif
    hash=$(inputs_hash "$ctx")
    if [[ $FORCE == 0 && -f $sif && -f $sif.inputs && $(cat "$sif.inputs") == "$hash" ]]; then
        mh_log "$name.sif is up to date (inputs unchanged), not rebuilt"
    else
        log=$IMAGE_DIR/logs/$name.build.log
        mkdir -p "$IMAGE_DIR/logs"
        t0=$SECONDS
        mh_log "building $name.sif with $BUILDER (base: $([[ $BUILDER == docker ]] && echo Dockerfile || echo "$BASE")), log: $log"
        local partial=$IMAGE_DIR/.$name.sif.partial.$$
        if [[ $BUILDER == docker ]]; then
            build_with_docker "$ctx" "$dockerfile" "$partial" "$log" "mlebench-hpc/$name:latest" \
                || { tail -n 30 "$log" >&2; mh_die "building $name failed: see $log"; }
        else
            build_with_apptainer "$ctx" "$def" "$partial" "$log" \
                || { rm -f "$partial"; tail -n 30 "$log" >&2; mh_die "building $name failed: see $log"; }
        fi
        mv -f "$partial" "$sif"  # readers never see a half-written SIF
        echo "$hash" >"$sif.inputs"
        mh_log "built $name.sif in $((SECONDS - t0)) s"
    fi
    sha256_of "$sif" >"$sif.sha256"
    printf '%s\t%s\tsha256:%s\n' "$sif" "$(human_size "$sif")" "$(cat "$sif.sha256")"
}

main() {
    parse_args "$@"
    IMAGE_DIR=${IMAGE_DIR_ARG:-${IMAGE_DIR:-$(config_get IMAGE_DIR)}}
    IMAGE_DIR=${IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    ((BASE_ONLY)) || pick_builder
    if ! mkdir -p "$IMAGE_DIR" "$CACHE" 2>/dev/null || [[ ! -w $IMAGE_DIR || ! -w $CACHE ]]; then
        mh_die "cannot write $IMAGE_DIR or $CACHE: set IMAGE_DIR (config) and MLEBENCH_HPC_CACHE to writable directories"
    fi
    # Two builds at once (tests, demo, a user) would race on the cache and the SIFs.
    exec 9>"$CACHE/.build.lock"
    flock -w 3600 9 || mh_die "another image build holds $CACHE/.build.lock for over an hour: check 'ps'"
    WORK_BASE=""
    trap 'cleanup; [[ -n ${WORK_BASE:-} ]] && rm -rf "$WORK_BASE"; true' EXIT
    if ((BASE_ONLY)); then
        ensure_base_rootfs
        echo "$BASE_ROOTFS"
        return 0
    fi
    if [[ $BUILDER == apptainer && $BASE == local ]]; then ensure_base_rootfs; fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlebench-hpc-build.XXXXXX")
    stage_grading "$WORK/grading"
    build_image mlebench-grading "$WORK/grading" grading.def Dockerfile
    stage_agent "$WORK/agent" "$AGENT"
    build_image "agent-$AGENT" "$WORK/agent" agent.def Dockerfile
    if [[ -n $LLM ]]; then
        stage_llm "$WORK/llm" "$LLM"
        build_image "llm-$LLM" "$WORK/llm" "$LLM.def" "Dockerfile.$LLM"
    fi
}

main "$@"
