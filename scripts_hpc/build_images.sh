#!/usr/bin/env bash
# build_images.sh: build the grading image, mlebench-env and one agent image as SIF files (`make sif`).
#
# usage: build_images.sh [--agent NAME] [--agents-dir DIR] [--env light|upstream] [--env-image IMAGE]
#                      [--llm vllm] [--builder auto|docker|apptainer] [--base auto|local|registry]
#                      [--image-dir DIR] [--force] [--agent-only] [--base-only]
#
# Base (what the grading image and the light mlebench-env start from): BASE_IMAGE (environment, else
# the config in force), one of
#   a registry image   127.0.0.1:5000/mlebench-hpc/base:bookworm (what `make cluster-up` serves);
#                      registries on loopback addresses are reached over plain http
#   a local base       /path/to/base.sif or a root filesystem directory someone gave you
# --base (env IMAGE_BASE): auto (default) = BASE_IMAGE when set, else as root the local rootfs,
#   else debian:bookworm-slim from the builder's default registry; local = a Debian bookworm rootfs
#   made once by debootstrap (needs root the first time) from the Debian mirror of this machine's
#   apt sources (or DEBIAN_MIRROR), cached in ~/.cache/mlebench-hpc/rootfs (MLEBENCH_HPC_CACHE moves
#   it); registry = BASE_IMAGE or debian:bookworm-slim.
# Agents are directories in upstream MLE-bench's format: --agent NAME is AGENTS_DIR/NAME (its
#   Dockerfile, FROM mlebench-env, built with that directory as context and upstream's four build
#   arguments SUBMISSION_DIR, LOGS_DIR, CODE_DIR, AGENT_DIR = /home/submission, /home/logs, ...);
#   AGENTS_DIR: --agents-dir, else the config's (upstream's agents/ when MLEBENCH_DIR is set, else
#   this checkout's agents/).
# mlebench-env (what FROM mlebench-env means): --env light (default) = ours,
#   environment/mlebench-env/Dockerfile on the base; --env upstream = $MLEBENCH_DIR/environment/Dockerfile
#   with MLEBENCH_DIR as context, the seed's way (it downloads Miniconda and more: needs internet);
#   --env-image (env ENV_IMAGE) = an image that stands for it instead, nothing built: a local Docker
#   image for --builder docker, a SIF path or a registry reference for --builder apptainer.
# Builders:
#   docker     the seed's commands: docker build --platform=linux/amd64 -t mlebench-env ..., then
#              docker build --platform=linux/amd64 -t NAME AGENTS_DIR/NAME/ --build-arg ... (with
#              --env-image: a copy of the Dockerfile whose FROM names that image, nothing else
#              changed); docker save; apptainer build x.sif docker-archive://x.tar
#   apptainer  apptainer build --fakeroot, no Docker at all: the grading image from its .def, the
#              Dockerfiles of mlebench-env and the agent carried out in order by
#              `mlebench-hpc dockerfile-def` (helpers/mlebench_hpc/images/dockerfile_def.py) on top of
#              IMAGE_DIR/mlebench-env.sif (built first when missing) or --env-image
#   auto       docker only when the daemon answers and can get the base (has it or pulls it);
#              else apptainer. A local base is always built with apptainer under auto.
# Images go to IMAGE_DIR (env, else the config in force, else ~/.cache/mlebench-hpc/images):
# mlebench-grading.sif, mlebench-env.sif (apptainer builder; docker: the local image mlebench-env),
# agent-<name>.sif and, with --llm, the LLM server image
# llm-<name>.sif (environment/llm/<name>.def; vLLM from PyPI, many GB). An image whose inputs (its
# sources, its base or mlebench-env, the Dockerfile translator; not the builder) did not change is not
# rebuilt unless --force; each image's size and sha256 are printed. A failed build stops at the
# failing step with one line naming it and its log, and leaves the previous SIF in place.
# --agent-only: mlebench-env and the agent, not the grading image (an agent author's loop).
# MLEBENCH_DIR (env or config) = an upstream mle-bench checkout to pip install into the grading image.
set -euo pipefail

export MH_SCRIPTS
MH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"
ROOT=$(cd "$MH_SCRIPTS/.." && pwd)

CACHE=${MLEBENCH_HPC_CACHE:-$HOME/.cache/mlebench-hpc}
BASE_NAME=bookworm-python
BASE_PACKAGES=python3,python3-pip,ca-certificates,curl
# A short name: each builder resolves it with its own default registry.
DEFAULT_REGISTRY_BASE=debian:bookworm-slim
APPTAINER=${APPTAINER:-apptainer}
DOCKER_PULL_TIMEOUT=${MLEBENCH_DOCKER_PULL_TIMEOUT:-300}

AGENT=dummy LLM="" BUILDER=auto BASE_MODE=${IMAGE_BASE:-auto} FORCE=0 BASE_ONLY=0 IMAGE_DIR_ARG=""
AGENTS_DIR_ARG="" AGENT_ONLY=0 ENV_KIND=light ENV_IMAGE=${ENV_IMAGE:-}
# The four build arguments of upstream's agent Dockerfiles (upstream's agents/.shared_env).
AGENT_BUILD_ARGS=(--build-arg SUBMISSION_DIR=/home/submission --build-arg LOGS_DIR=/home/logs
    --build-arg CODE_DIR=/home/code --build-arg AGENT_DIR=/home/agent)
# What `FROM mlebench-env` stands for in the agent build, and its identity in the agent's inputs.
ENV_FROM="" ENV_ID="" ENV_BUILD=""
WORK="" WORK_BASE="" PARTIAL=""
# BASE_KIND: rootfs (the debootstrap cache) | path (a given SIF or rootfs) | loopback | registry | short
BASE_KIND="" BASE_REF="" DOCKER_BASE=""
cleanup() {
    [[ -n $WORK ]] && rm -rf "$WORK"
    [[ -n $WORK_BASE ]] && rm -rf "$WORK_BASE"
    [[ -n $PARTIAL ]] && rm -f "$PARTIAL"
    return 0
}
trap cleanup EXIT


parse_args() {
    while (($#)); do
        case $1 in
            --agent) AGENT=${2:?--agent needs a value}; shift 2 ;;
            --agents-dir) AGENTS_DIR_ARG=${2:?--agents-dir needs a value}; shift 2 ;;
            --env) ENV_KIND=${2:?--env needs a value}; shift 2 ;;
            --env-image) ENV_IMAGE=${2:?--env-image needs a value}; shift 2 ;;
            --llm) LLM=${2:?--llm needs a value}; shift 2 ;;
            --builder) BUILDER=${2:?--builder needs a value}; shift 2 ;;
            --base) BASE_MODE=${2:?--base needs a value}; shift 2 ;;
            --image-dir) IMAGE_DIR_ARG=${2:?--image-dir needs a value}; shift 2 ;;
            --force) FORCE=1; shift ;;
            --base-only) BASE_ONLY=1; shift ;;
            --agent-only) AGENT_ONLY=1; shift ;;
            -h | --help) mh_help --help ;;
            *) mh_usage_error "unknown argument '$1'" ;;
        esac
    done
    [[ $AGENT =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || mh_die "--agent '$AGENT': give an agent directory's name"
    case $ENV_KIND in light | upstream) ;; *) mh_die "--env must be light or upstream" ;; esac
    [[ -z $LLM || ( $LLM =~ ^[a-z0-9_-]+$ && -f $ROOT/environment/llm/$LLM.def ) ]] \
        || mh_die "no LLM server image '$LLM' (environment/llm/$LLM.def missing): use --llm vllm"
    case $BUILDER in auto | docker | apptainer) ;; *) mh_die "--builder must be auto, docker or apptainer" ;; esac
    [[ $BASE_MODE == docker ]] && BASE_MODE=registry  # the name of earlier versions
    case $BASE_MODE in auto | local | registry) ;; *) mh_die "--base must be auto, local or registry" ;; esac
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
human_size() { numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")"; }
is_root() { [[ $(id -u) == 0 ]]; }
# The one line that names the three ways to a base (helpers/mlebench_hpc/images/base.py owns it).
three_ways() { [[ -n ${MH_CLI:-} ]] || mh_init; "$MH_CLI" base-image ways; }

# ------------------------------------------------------------------ the base
resolve_base() {
    local want=${BASE_IMAGE:-}  # the config's, or the environment's (which wins)
    case $BASE_MODE in
        local) BASE_KIND=rootfs ;;
        registry) BASE_REF=${want:-$DEFAULT_REGISTRY_BASE} ;;
        auto)
            if [[ -n $want ]]; then BASE_REF=$want
            elif is_root; then BASE_KIND=rootfs
            else BASE_REF=$DEFAULT_REGISTRY_BASE; fi ;;
    esac
    if [[ $BASE_KIND != rootfs ]]; then
        BASE_KIND=$("$MH_CLI" base-image kind "$BASE_REF" 2>/dev/null) || mh_die "BASE_IMAGE='$BASE_REF' is no image reference or path: fix it in the config"
        [[ $BASE_MODE != registry || $BASE_KIND != path ]] \
            || mh_die "--base registry needs a registry image, BASE_IMAGE is the path $BASE_REF: use --base auto"
    fi
}

base_desc() {
    if [[ $BASE_KIND == rootfs ]]; then echo "the local rootfs ($CACHE/rootfs/$BASE_NAME)"; else echo "$BASE_REF"; fi
}

# What identifies the base in the inputs hash: the builder is not part of it.
base_identity() {
    case $BASE_KIND in
        rootfs) head -n1 "$CACHE/rootfs/$BASE_NAME.stamp" ;;
        path) echo "path $BASE_REF $(stat -L -c '%s %Y' "$BASE_REF" 2>/dev/null)" ;;
        *) echo "image $BASE_REF" ;;
    esac
}

# Can the apptainer builder get the base? One line with the three ways when it cannot.
check_base() {
    local out
    [[ $BASE_KIND == rootfs ]] && return 0
    out=$("$MH_CLI" base-image check "$BASE_REF" 2>&1) || mh_die "no base image: $out; $(three_ways)"
    mh_log "base $out"
}

# debootstrap minbase bookworm + python3/pip/curl, pruned, without device nodes (a --fakeroot
# build that unpacks a tree with device nodes fails). Built once per machine and user; the
# stamp records how, so a change of package list rebuilds it.
ensure_base_rootfs() {
    local dir=$CACHE/rootfs/$BASE_NAME stamp want mirror
    stamp=$CACHE/rootfs/$BASE_NAME.stamp
    mirror=$(bash "$MH_SCRIPTS/provision/debian_mirror.sh" bookworm 2>/dev/null) || mirror=""
    want="debootstrap --variant=minbase --include=$BASE_PACKAGES bookworm $mirror"
    if [[ -d $dir && -f $stamp ]] && [[ $(head -n1 "$stamp") == "$want" || -z $mirror ]]; then
        BASE_ROOTFS=$dir
        return 0
    fi
    is_root || mh_die "the local base rootfs ($dir) needs root for debootstrap; $(three_ways)"
    [[ -n $mirror ]] || bash "$MH_SCRIPTS/provision/debian_mirror.sh" bookworm >/dev/null || exit 2
    command -v debootstrap >/dev/null 2>&1 \
        || mh_die "debootstrap is not installed: run scripts_hpc/provision/install_apptainer.sh (installs it) or apt-get install debootstrap"
    mkdir -p "$CACHE/rootfs"
    local tmp=$dir.tmp.$$ t0=$SECONDS
    WORK_BASE=$tmp
    rm -rf "$tmp"
    mh_log "building the base rootfs (debootstrap minbase bookworm from $mirror, ~40 s)"
    timeout 1200 debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$tmp" "$mirror" \
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

# ------------------------------------------------------------------ builder choice
docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

# Docker can build from the base: it has it, or pulls it (what its build would do first).
docker_has_base() {
    timeout 20 docker image inspect "$1" >/dev/null 2>&1 \
        || timeout "$DOCKER_PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1
}

pick_builder() {
    if [[ $BUILDER == auto ]]; then
        BUILDER=apptainer
        if [[ -n $ENV_IMAGE && ( $ENV_IMAGE == /* || $ENV_IMAGE == *.sif ) ]]; then
            mh_log "builder: apptainer (ENV_IMAGE is the SIF $ENV_IMAGE)"
        elif docker_answers; then
            # A daemon that answers but cannot get the base must not take the build over.
            if [[ $BASE_KIND == rootfs || $BASE_KIND == path ]]; then
                mh_log "builder: apptainer (the base $(base_desc) is local; docker is used only when asked)"
            elif docker_has_base "$BASE_REF"; then
                BUILDER=docker
                mh_log "builder: docker (the daemon answers and has $BASE_REF)"
            else
                mh_log "builder: apptainer (docker answers but cannot get $BASE_REF)"
            fi
        fi
    fi
    command -v "$APPTAINER" >/dev/null 2>&1 \
        || mh_die "apptainer is not on PATH: as root run scripts_hpc/provision/install_apptainer.sh (or module load apptainer)"
    if [[ $BUILDER == docker ]]; then
        docker_answers || mh_die "docker daemon not reachable: start it or use --builder apptainer"
    elif ! is_root && ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null \
        && ! command -v fakeroot >/dev/null 2>&1; then
        # Without a subuid range apptainer can only fake root through the `fakeroot` program.
        mh_die "apptainer build --fakeroot needs a subuid/subgid range for $(id -un): ask an admin to run 'apptainer config fakeroot --add $(id -un)', or build with --builder docker elsewhere and copy the SIFs into $IMAGE_DIR"
    fi
}

# The image docker builds FROM. A local rootfs (only when --builder docker was asked for) is
# imported into the daemon once, under a name made from what identifies it.
prepare_docker_base() {
    local dir tag
    case $BASE_KIND in
        rootfs | path)
            dir=${BASE_ROOTFS:-$BASE_REF}
            [[ -d $dir ]] || mh_die "the docker builder cannot start from the SIF $dir: use --builder apptainer, or BASE_IMAGE=<registry image>"
            tag=mlebench-hpc/base-local:$(base_identity | sha256sum | cut -c1-12)
            if ! timeout 20 docker image inspect "$tag" >/dev/null 2>&1; then
                mh_log "importing $dir into docker as $tag"
                tar -C "$dir" -cf - . | docker import - "$tag" >/dev/null \
                    || mh_die "docker import of $dir failed: check 'docker info'"
            fi
            DOCKER_BASE=$tag ;;
        *)
            docker_has_base "$BASE_REF" || mh_die "docker cannot get the base image $BASE_REF; $(three_ways)"
            DOCKER_BASE=$BASE_REF ;;
    esac
}

# ------------------------------------------------------------------ build contexts
# A context directory holds exactly what an image needs, in the same layout for the .def
# (%files paths are relative to it: the build runs with it as working directory) and for
# the Dockerfile (docker build context).
# The host's CA bundle, for pip during the build only (sites that intercept TLS add their own CA);
# the build deletes it, and it is left out of the inputs hash.
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
    local mle=${MLEBENCH_DIR:-}
    if [[ -n $mle ]]; then
        [[ -f $mle/pyproject.toml || -f $mle/setup.py ]] \
            || mh_die "MLEBENCH_DIR=$mle is not an mle-bench checkout (no pyproject.toml): fix MLEBENCH_DIR"
        mh_log "including upstream mlebench from $mle"
        copy_tree "$mle" "$ctx/mlebench"
    fi
}

# The light mlebench-env's context in environment/'s layout (the COPY paths of its Dockerfile).
stage_env() {
    local ctx=$1 f
    mkdir -p "$ctx/mlebench-env"
    for f in instructions.txt instructions_obfuscated.txt validate_submission.sh; do
        cp "$ROOT/environment/$f" "$ctx/"
    done
    cp "$ROOT/environment/mlebench-env/Dockerfile" "$ROOT/environment/mlebench-env/conda" "$ctx/mlebench-env/"
    stage_build_ca "$ctx/mlebench-env"
}

stage_llm() {
    local ctx=$1 name=$2
    mkdir -p "$ctx/llm"
    cp "$ROOT/environment/llm/requirements-$name.txt" "$ctx/llm/"
    cp "$ROOT/environment/llm/$name.def" "$ROOT/environment/llm/Dockerfile.$name" "$ctx/"
    stage_build_ca "$ctx"
}

# tree_lines DIR [find tests...]: what identifies a directory's content, one line per entry: mode,
# path and sha256 of each file, the target of each link (never followed: it may point anywhere).
tree_lines() {
    local dir=$1
    shift
    (cd "$dir" && find . \( -type f -o -type l \) "$@" -printf '%m %y %p %l\n' | LC_ALL=C sort \
        && find . -type f "$@" -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
}

# The Dockerfile translator's own code: a change to it rebuilds what it built.
translator_id() {
    cat "$ROOT"/helpers/mlebench_hpc/images/dockerfile_{syntax,context,def}.py | sha256sum | cut -c1-16
}

# Hash of everything that goes into an image: the staged context (both recipes included) and
# the base it starts from. Not the builder: both make the same image, so switching builders
# alone rebuilds nothing. The build host's CA bundle counts only for mlebench-env, which keeps it.
inputs_hash() {
    local ctx=$1 skip=(! -name build-ca.crt)
    [[ ${2:-} == with-ca ]] && skip=()
    {
        tree_lines "$ctx" "${skip[@]}"
        echo "base=$(base_identity)"
        [[ ${2:-} != with-ca ]] || echo "translator=$(translator_id)"
    } | sha256sum | cut -d' ' -f1
}

# ------------------------------------------------------------------ builders
# run_step NAME STEP LOG CMD...: one step of a build, its output appended to LOG. A failure ends
# the build with one line naming the step and the log (the EXIT trap removes the partial SIF).
run_step() {
    local name=$1 step=$2 log=$3 rc=0 at
    shift 3
    printf '### %s: %s\n' "$step" "$*" >>"$log"
    "$@" >>"$log" 2>&1 || rc=$?
    ((rc == 0)) && return 0
    # A Dockerfile's RUN that failed under the apptainer builder names its line (dockerfile_def.py).
    at=$(sed -n 's/^mlebench-hpc: error: \(Dockerfile line .*\)$/\1/p' "$log" | tail -n1)
    [[ -z $at ]] || mh_die "building $name.sif: $step failed at $at: see $log"
    if [[ $name == mlebench-env && $ENV_KIND == upstream ]]; then upstream_unreachable "$log"; fi
    # The base could not be fetched: say which ways lead to one (apptainer's and docker's words).
    if grep -qE 'conveyor failed to get|failed to get checksum|pull access denied|manifest unknown|error pulling image' "$log"; then
        mh_die "building $name.sif: $step could not get the base image $(base_desc) (see $log); $(three_ways)"
    fi
    mh_die "building $name.sif: $step failed (exit $rc): see $log"
}

# Upstream's environment/Dockerfile downloads ubuntu, Miniconda and PyPI packages: where that cannot
# be reached, say so in one line (what Docker, apptainer, apt, wget, curl and pip print then).
upstream_unreachable() {
    local what
    what=$(grep -m1 -oE "(lookup [^ ]+|Could not resolve host:? [^ ]+|unable to resolve host address [^ ]+|Temporary failure (in name )?resolving [^ ]+|Failed to establish a new connection|Network is unreachable|Connection timed out|i/o timeout|TLS handshake timeout)" "$1" || true)
    [[ -z $what ]] || mh_die "building upstream's mlebench-env ($MLEBENCH_DIR/environment/Dockerfile) needs the internet (ubuntu:20.04, Miniconda, PyPI), which cannot be reached from here ($what): build it on a machine with internet (docker save, then ENV_IMAGE=...) or use ENV=light: see $1"
    return 0
}

build_with_apptainer() {  # name ctx deffile out.sif log
    local name=$1 ctx=$2 def=$3 out=$4 log=$5 args=() envs=()
    case $BASE_KIND in
        rootfs) args=(--build-arg BOOTSTRAP=localimage --build-arg "BASE=$BASE_ROOTFS") ;;
        path) args=(--build-arg BOOTSTRAP=localimage --build-arg "BASE=$BASE_REF") ;;
        *) args=(--build-arg BOOTSTRAP=docker --build-arg "BASE=$BASE_REF") ;;
    esac
    # A registry on this machine speaks plain http, as Docker assumes for loopback registries.
    [[ $BASE_KIND == loopback ]] && envs=(APPTAINER_NOHTTPS=1)
    (cd "$ctx" && run_step "$name" "apptainer build" "$log" \
        env "${envs[@]}" "$APPTAINER" build --fakeroot --force "${args[@]}" "$out" "$def")
}

build_with_docker() {  # name ctx dockerfile out.sif log
    local name=$1 ctx=$2 dockerfile=$3 out=$4 log=$5 tag tar opts=()
    tag=mlebench-hpc/$name:latest
    tar=$WORK/$name.docker.tar
    # --force rebuilds for real, as apptainer does: no layer of an earlier build (pip resolves anew).
    ((FORCE)) && opts+=(--no-cache)
    # Host network, as apptainer builds: no bridge or NAT needed on the build machine.
    run_step "$name" "docker build" "$log" docker build --network host "${opts[@]}" \
        --build-arg "BASE_IMAGE=$DOCKER_BASE" -t "$tag" -f "$ctx/$dockerfile" "$ctx"
    run_step "$name" "docker save" "$log" docker save -o "$tar" "$tag"
    run_step "$name" "apptainer build from docker-archive" "$log" \
        "$APPTAINER" build --force "$out" "docker-archive://$tar"
    rm -f "$tar"
}

sif_current() {  # NAME HASH: the SIF exists, was made from these inputs, and --force was not given
    local sif=$IMAGE_DIR/$1.sif
    [[ $FORCE == 0 && -f $sif && -f $sif.inputs && $(cat "$sif.inputs") == "$2" ]]
}

# build_sif NAME HASH FROM FN ARGS...: IMAGE_DIR/NAME.sif made by `FN PARTIAL LOG ARGS...`, unless
# the SIF's recorded inputs equal HASH. FROM says what it starts from (for the log line).
build_sif() {
    local name=$1 hash=$2 from=$3 fn=$4 sif log t0
    shift 4
    sif=$IMAGE_DIR/$name.sif
    if sif_current "$name" "$hash"; then
        mh_log "$name.sif is up to date (inputs unchanged), not rebuilt"
    else
        log=$IMAGE_DIR/logs/$name.build.log
        mkdir -p "$IMAGE_DIR/logs"
        : >"$log"
        t0=$SECONDS
        mh_log "building $name.sif with $BUILDER from $from, log: $log"
        # Readers never see a half-written SIF, and a failed build leaves the previous one.
        PARTIAL=$IMAGE_DIR/.$name.sif.partial.$$
        "$fn" "$PARTIAL" "$log" "$@"
        [[ -s $PARTIAL ]] || mh_die "building $name.sif: the build made no image: see $log"
        mv -f "$PARTIAL" "$sif"
        PARTIAL=""
        echo "$hash" >"$sif.inputs"
        mh_log "built $name.sif in $((SECONDS - t0)) s"
    fi
    sha256_of "$sif" >"$sif.sha256"
    printf '%s\t%s\tsha256:%s\n' "$sif" "$(human_size "$sif")" "$(cat "$sif.sha256")"
}

# The grading and LLM images, from their own recipes. Args: name (sif basename) ctx def dockerfile
build_image() {
    build_sif "$1" "$(inputs_hash "$2")" "$(base_desc)" build_recipe "$1" "$2" "$3" "$4"
}

build_recipe() {  # partial log name ctx def dockerfile
    if [[ $BUILDER == docker ]]; then
        build_with_docker "$3" "$4" "$6" "$1" "$2"
    else
        build_with_apptainer "$3" "$4" "$5" "$1" "$2"
    fi
}

# ------------------------------------------------------------------ Dockerfiles of upstream's format
# docker_to_sif PARTIAL LOG NAME TAG: docker save + apptainer build docker-archive (the seed's way).
docker_to_sif() {
    local out=$1 log=$2 name=$3 tag=$4 tar=$WORK/$3.docker.tar
    run_step "$name" "docker save" "$log" docker save -o "$tar" "$tag"
    run_step "$name" "apptainer build from docker-archive" "$log" \
        "$APPTAINER" build --force "$out" "docker-archive://$tar"
    rm -f "$tar"
}

# apptainer_dockerfile PARTIAL LOG NAME DOCKERFILE CONTEXT NOHTTPS TRANSLATOR-ARGS...: the Dockerfile
# carried out by apptainer build --fakeroot. What it cannot carry out is refused before anything
# is built, in the translator's one line.
apptainer_dockerfile() {
    local out=$1 log=$2 name=$3 dockerfile=$4 ctx=$5 nohttps=$6 def notes rc=0 envs=()
    shift 6
    def=$WORK/def-$name
    printf '### dockerfile-def: %s\n' "$dockerfile" >>"$log"
    notes=$("$MH_CLI" dockerfile-def "$dockerfile" --context "$ctx" --out "$def" "$@" 2>&1 >/dev/null) || rc=$?
    printf '%s\n' "$notes" >>"$log"
    ((rc == 0)) || mh_die "building $name.sif: $(grep -v '^note: ' <<<"$notes" | sed 's/^Error: //' | tail -n1)"
    local line
    while IFS= read -r line; do
        [[ $line != "note: "* ]] || mh_log "${line#note: }"
    done <<<"$notes"
    if ((nohttps)); then envs=(APPTAINER_NOHTTPS=1); fi
    run_step "$name" "apptainer build" "$log" env "${envs[@]}" "$APPTAINER" build --fakeroot --force "$out" "$def/build.def"
}

# What FROM mlebench-env stands for and its identity: ENV_IMAGE, else mlebench-env built here.
prepare_env() {
    local kind
    if [[ -n $ENV_IMAGE ]]; then
        if [[ $BUILDER == docker ]]; then
            [[ $ENV_IMAGE != /* && $ENV_IMAGE != *.sif ]] \
                || mh_die "ENV_IMAGE=$ENV_IMAGE is a SIF: the docker builder needs a Docker image (or use BUILDER=apptainer)"
            ENV_ID=$(timeout 60 docker image inspect -f '{{.Id}}' "$ENV_IMAGE" 2>/dev/null) \
                || mh_die "ENV_IMAGE=$ENV_IMAGE is not a local Docker image: docker build or docker load it first"
            ENV_ID="docker $ENV_ID"
        else
            kind=$("$MH_CLI" base-image kind "$ENV_IMAGE" 2>/dev/null) \
                || mh_die "ENV_IMAGE=$ENV_IMAGE is neither a SIF path nor an image reference: fix it"
            if [[ $kind == path ]]; then
                [[ -f $ENV_IMAGE ]] || mh_die "ENV_IMAGE=$ENV_IMAGE does not exist: build it (make sif) or fix the path"
                ENV_IMAGE=$(realpath "$ENV_IMAGE")
                ENV_ID="sif $ENV_IMAGE $(stat -c '%s %Y' "$ENV_IMAGE")"
            else
                ENV_ID="image $ENV_IMAGE"
            fi
        fi
        ENV_FROM=$ENV_IMAGE
        mh_log "mlebench-env: ENV_IMAGE=$ENV_IMAGE (not built here)"
        return 0
    fi
    if [[ $ENV_KIND == upstream ]]; then
        build_env_upstream
    else
        # Built only when the agent is (an up-to-date agent needs no mlebench-env).
        stage_env "$WORK/env"
        ENV_ID="light $(inputs_hash "$WORK/env" with-ca)"
        ENV_BUILD=build_env_light
        if [[ $BUILDER == docker ]]; then ENV_FROM=mlebench-env; else ENV_FROM=$IMAGE_DIR/mlebench-env.sif; fi
    fi
}

build_env_light() {
    local hash=${ENV_ID#light } ctx=$WORK/env base_arg nohttps=0
    if [[ $BUILDER == docker ]]; then
        # The seed's step 1: the local Docker image mlebench-env, labelled with its inputs.
        local have opts=() log=$IMAGE_DIR/logs/mlebench-env.docker.log
        have=$(timeout 20 docker image inspect -f '{{ index .Config.Labels "org.mlebench-hpc.inputs" }}' mlebench-env 2>/dev/null || true)
        if [[ $FORCE == 0 && $have == "$hash" ]]; then
            mh_log "docker image mlebench-env is up to date (inputs unchanged), not rebuilt"
        else
            mkdir -p "$IMAGE_DIR/logs"
            : >"$log"
            ((FORCE)) && opts+=(--no-cache)
            mh_log "building the docker image mlebench-env from $(base_desc), log: $log"
            run_step mlebench-env "docker build" "$log" docker build --platform=linux/amd64 --network host \
                "${opts[@]}" --label "org.mlebench-hpc.inputs=$hash" --build-arg "BASE_IMAGE=$DOCKER_BASE" \
                -t mlebench-env -f "$ctx/mlebench-env/Dockerfile" "$ctx"
        fi
        # Kept as the Docker image the agent builds FROM (docker save it for a SIF of its own).
        ENV_FROM=mlebench-env
        return 0
    fi
    case $BASE_KIND in rootfs) base_arg=$BASE_ROOTFS ;; *) base_arg=$BASE_REF ;; esac
    if [[ $BASE_KIND == loopback ]]; then nohttps=1; fi
    build_sif mlebench-env "$hash" "$(base_desc)" apptainer_dockerfile mlebench-env \
        "$ctx/mlebench-env/Dockerfile" "$ctx" "$nohttps" --build-arg "BASE_IMAGE=$base_arg"
    ENV_FROM=$IMAGE_DIR/mlebench-env.sif
}

# Upstream's mlebench-env, the seed's way: its environment/Dockerfile, MLEBENCH_DIR as context.
build_env_upstream() {
    local mle=${MLEBENCH_DIR:-} log=$IMAGE_DIR/logs/mlebench-env.docker.log id state
    [[ -n $mle && -f $mle/environment/Dockerfile ]] \
        || mh_die "ENV=upstream builds \$MLEBENCH_DIR/environment/Dockerfile: set MLEBENCH_DIR to your mle-bench checkout"
    if [[ $BUILDER == docker ]]; then
        mkdir -p "$IMAGE_DIR/logs"
        : >"$log"
        mh_log "building the docker image mlebench-env from $mle/environment/Dockerfile (upstream's), log: $log"
        # Docker's layer cache makes an unchanged rebuild quick.
        run_step mlebench-env "docker build" "$log" docker build --platform=linux/amd64 --network host \
            -t mlebench-env -f "$mle/environment/Dockerfile" "$mle"
        id=$(docker image inspect -f '{{.Id}}' mlebench-env)
        ENV_ID="upstream docker $id" ENV_FROM=mlebench-env
        return 0
    fi
    if state=$(git -C "$mle" rev-parse HEAD 2>/dev/null); then
        state+=$(git -C "$mle" status --porcelain 2>/dev/null)
    else
        state=$(tree_lines "$mle/environment")
    fi
    ENV_ID="upstream $(printf '%s\n%s\n' "$state" "$(translator_id)" | sha256sum | cut -c1-32)"
    build_sif mlebench-env "$ENV_ID" "upstream's environment/Dockerfile" apptainer_dockerfile mlebench-env \
        "$mle/environment/Dockerfile" "$mle" 0
    ENV_FROM=$IMAGE_DIR/mlebench-env.sif
}

build_agent() {
    local dir=$AGENTS_DIR/$AGENT hash
    hash=$({
        tree_lines "$dir"
        printf '%s\n' "env=$ENV_ID" "translator=$(translator_id)" "${AGENT_BUILD_ARGS[*]}"
    } | sha256sum | cut -d' ' -f1)
    if [[ -n $ENV_BUILD ]] && ! sif_current "agent-$AGENT" "$hash"; then "$ENV_BUILD"; fi
    build_sif "agent-$AGENT" "$hash" "mlebench-env ($ENV_FROM)" "build_agent_$BUILDER"
}

# The seed's step 2: docker build --platform=linux/amd64 -t NAME AGENTS_DIR/NAME/ --build-arg ...
build_agent_docker() {
    local out=$1 log=$2 dir=$AGENTS_DIR/$AGENT opts=() file=()
    ((FORCE)) && opts+=(--no-cache)
    if [[ $ENV_FROM != mlebench-env ]]; then
        # Docker 20.10 without buildx cannot map a FROM name: a copy with only FROM replaced.
        "$MH_CLI" dockerfile-def "$dir/Dockerfile" --retarget "mlebench-env=$ENV_FROM" --out "$WORK/Dockerfile.agent" \
            || mh_die "building agent-$AGENT.sif: cannot read $dir/Dockerfile"
        file=(-f "$WORK/Dockerfile.agent")
    fi
    run_step "agent-$AGENT" "docker build" "$log" docker build --platform=linux/amd64 --network host "${opts[@]}" \
        -t "$AGENT" "${file[@]}" "$dir/" "${AGENT_BUILD_ARGS[@]}"
    docker_to_sif "$out" "$log" "agent-$AGENT" "$AGENT"
}

build_agent_apptainer() {
    local out=$1 log=$2 nohttps=0
    if [[ $ENV_FROM != /* && $("$MH_CLI" base-image kind "$ENV_FROM" 2>/dev/null) == loopback ]]; then nohttps=1; fi
    # mlebench-env's WORKDIR (upstream's and ours) is /home: a SIF does not record it.
    apptainer_dockerfile "$out" "$log" "agent-$AGENT" "$AGENTS_DIR/$AGENT/Dockerfile" "$AGENTS_DIR/$AGENT" \
        "$nohttps" --from "mlebench-env=$ENV_FROM" --workdir /home "${AGENT_BUILD_ARGS[@]}"
}

# AGENTS_DIR/NAME must be an agent directory: one line listing the ones there otherwise.
check_agent() {
    AGENTS_DIR=${AGENTS_DIR_ARG:-$AGENTS_DIR}
    [[ -d $AGENTS_DIR ]] || mh_die "AGENTS_DIR=$AGENTS_DIR is not a directory: set AGENTS_DIR (or MLEBENCH_DIR) or use --agents-dir"
    AGENTS_DIR=$(cd "$AGENTS_DIR" && pwd)
    if [[ ! -f $AGENTS_DIR/$AGENT/Dockerfile ]]; then
        local found=() d
        for d in "$AGENTS_DIR"/*/Dockerfile; do [[ -f $d ]] && found+=("$(basename "$(dirname "$d")")"); done
        mh_die "no agent '$AGENT' in $AGENTS_DIR (no $AGENT/Dockerfile): agents there: ${found[*]:-none}"
    fi
}

# Two builds at once (tests, demo, a user) would race on the cache and the SIFs.
lock_cache() {
    if ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w $CACHE ]]; then
        mh_die "cannot write $CACHE: set MLEBENCH_HPC_CACHE to a writable directory"
    fi
    exec 9>"$CACHE/.build.lock"
    flock -w 3600 9 || mh_die "another image build holds $CACHE/.build.lock for over an hour: check 'ps'"
}

main() {
    parse_args "$@"
    if ((BASE_ONLY)); then  # the admin's step (make cluster-up): no venv needed
        lock_cache
        ensure_base_rootfs
        echo "$BASE_ROOTFS"
        return 0
    fi
    mh_init
    # The config in force (or, without one, the defaults); IMAGE_DIR and BASE_IMAGE of the
    # environment win over the file's.
    mh_load_config --defaults-ok
    IMAGE_DIR=${IMAGE_DIR_ARG:-$IMAGE_DIR}
    check_agent
    resolve_base
    pick_builder
    if ! mkdir -p "$IMAGE_DIR" 2>/dev/null || [[ ! -w $IMAGE_DIR ]]; then
        mh_die "cannot write $IMAGE_DIR: set IMAGE_DIR (config) to a writable directory"
    fi
    lock_cache
    if [[ $BASE_KIND == rootfs ]]; then ensure_base_rootfs; fi
    if [[ $BUILDER == docker ]]; then prepare_docker_base; else check_base; fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlebench-hpc-build.XXXXXX")
    if ((!AGENT_ONLY)); then
        stage_grading "$WORK/grading"
        build_image mlebench-grading "$WORK/grading" grading.def Dockerfile
    fi
    prepare_env
    build_agent
    if [[ -n $LLM ]]; then
        stage_llm "$WORK/llm" "$LLM"
        build_image "llm-$LLM" "$WORK/llm" "$LLM.def" "Dockerfile.$LLM"
    fi
}

main "$@"
