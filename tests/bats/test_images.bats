#!/usr/bin/env bats
# The images, built for real with `apptainer build --fakeroot` (BUILDER=apptainer, no Docker, no
# image registry) or reused when their inputs did not change, and run with real Apptainer: the
# grading server in the grading image, the dummy agent in the agent image, validating over HTTP.
# The Docker path for real where `make cluster-up` runs a Docker daemon and the registry with the
# base image (root): docker build from BASE_IMAGE, docker save, docker-archive, its images running a
# hetjob, the same image contents as the apptainer builder, BUILDER=auto and failed builds. And the
# Docker path without Docker: a hand-made `docker save` archive converted with
# `apptainer build x.sif docker-archive://x.tar`. The agent image holds nothing of ours: the tests
# bind environment/entrypoint_hpc.sh from the checkout and a writable copy of the image's
# /home/agent at run time, as the launcher does.

load helpers

# Free TCP port on 127.0.0.1 (for a server that must be unreachable: nobody listens on it).
img_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Files of a SIF's root filesystem, listed from the image itself (not from a running container,
# whose binds and tmpfs would hide or add paths). One path per line, relative to /.
img_list_files() {
    local sif=$1 part id
    id=$(apptainer sif list "$sif" | awk -F'|' '/Squashfs/ {gsub(/ /, "", $1); print $1; exit}')
    [[ -n $id ]] || { echo "no squashfs partition in $sif" >&2; return 1; }
    part=$BATS_FILE_TMPDIR/$(basename "$sif").sqfs
    apptainer sif dump "$id" "$sif" >"$part"
    unsquashfs -lc "$part" | sed -n 's|^squashfs-root||p'
    rm -f "$part"
}

bats_require_minimum_version 1.5.0

setup_file() {
    require_apptainer
    export ROOT
    ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
    export T=$BATS_FILE_TMPDIR
    export IMAGES=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    export GRADING=$IMAGES/mlebench-grading.sif AGENT=$IMAGES/agent-dummy.sif
    export DIMG=$T/docker-images SITE_BASE=127.0.0.1:5000/mlebench-hpc/base:bookworm
    export EP=/.mlebench-hpc/entrypoint_hpc.sh
    export ENTRY=$ROOT/environment/entrypoint_hpc.sh:$EP:ro
    local t0=$SECONDS
    bash "$ROOT/scripts_hpc/build_images.sh" --agent dummy --agents-dir "$ROOT/agents" --builder apptainer --image-dir "$IMAGES" \
        >"$T/build.out" 2>"$T/build.err" || { cat "$T/build.err" >&2; return 1; }
    echo "# images ready in $((SECONDS - t0)) s" >&3
    "$ROOT/.venv/bin/python" -c 'from mlebench_hpc.demo import prepare_demo_cmd; prepare_demo_cmd()' \
        --data-dir "$T/data" >"$T/comps"
    export COMP
    COMP=$(head -n1 "$T/comps")
    [[ -n $COMP ]]

    # The real grading server in the real grading image, as the sbatch scripts start it.
    mkdir -p "$T/state"
    apptainer exec --contain --cleanenv --no-home --pid --pwd / \
        --bind "$T/data/$COMP/prepared/private:/private/data/$COMP/prepared/private:ro" \
        --bind "$T/state:/state" "$GRADING" \
        python3 /opt/mlebench-hpc/run_grading_server.py --competition-id "$COMP" \
        --data-dir /private/data --host 127.0.0.1 --port 0 --url-file /state/url >"$T/server.log" 2>&1 &
    echo $! >"$T/server.pid"
    local _
    for _ in $(seq 1 150); do [[ -s $T/state/url ]] && break; sleep 0.2; done
    [[ -s $T/state/url ]] || { cat "$T/server.log" >&2; return 1; }
    export URL
    URL=$(cat "$T/state/url")
    # What the overlay helper does for the agent: the image's localhost:5000 file, rewritten.
    sed "s|http://localhost:5000|$URL|g" "$ROOT/environment/validate_submission.sh" >"$T/validate_submission.sh"
}

teardown_file() {
    if command -v docker >/dev/null 2>&1; then docker image rm mlebench-hpc-test/no-python:1 >/dev/null 2>&1 || true; fi
    if [[ -f $BATS_FILE_TMPDIR/server.pid ]]; then
        local pid
        pid=$(cat "$BATS_FILE_TMPDIR/server.pid")
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

# The run's writable copy of the image's /home/agent, as `run start` makes it (read from the SIF).
agent_copy() {
    "$ROOT/.venv/bin/python" -c 'import sys; from pathlib import Path; from mlebench_hpc.run.agent_home import copy_agent_dir
copy_agent_dir(Path(sys.argv[1]), Path(sys.argv[2]))' "$AGENT" "$1"
}

# A fresh run directory; runs the agent image with the agent flags of scripts_hpc/lib.sh.
# Usage: run_agent RUN_DIR [--env K=V]... -- COMMAND...
run_agent() {
    local run=$1; shift
    local extra=()
    while (($#)) && [[ $1 != -- ]]; do extra+=("$1"); shift; done
    [[ ${1:-} == -- ]] && shift
    mkdir -p "$run"/{submission,logs,code,scratch}
    agent_copy "$run/agent"
    apptainer exec --contain --cleanenv --no-home --pid --workdir "$run/scratch" --pwd /home \
        --bind "$T/data/$COMP/prepared/public:/home/data:ro" \
        --bind "$run/submission:/home/submission" --bind "$run/logs:/home/logs" \
        --bind "$run/code:/home/code" --bind "$T/validate_submission.sh:/home/validate_submission.sh:ro" \
        --bind "$run/agent:/home/agent" \
        --env COMPETITION_ID="$COMP" --env STEP_LIMIT=5 --env GRADING_SERVER="$URL" "${extra[@]}" \
        --bind "$ENTRY" "$AGENT" bash "$EP" "$@"
}

@test "make sif prints each image's size and sha256, and the hash beside each SIF matches" {
    local sif
    for sif in "$GRADING" "$AGENT"; do
        grep -E "^$sif	[0-9.]+[KMG]iB	sha256:[0-9a-f]{64}$" "$T/build.out"
        [[ $(sha256sum "$sif" | cut -d' ' -f1) == "$(cat "$sif.sha256")" ]]
        [[ -s $sif.inputs ]]
    done
}

@test "a second build with unchanged inputs rebuilds nothing" {
    run bash "$ROOT/scripts_hpc/build_images.sh" --agent dummy --agents-dir "$ROOT/agents" --builder apptainer --image-dir "$IMAGES"
    [ "$status" -eq 0 ]
    [[ $output == *"mlebench-grading.sif is up to date"* ]]
    [[ $output == *"agent-dummy.sif is up to date"* ]]
    [[ $output != *"building "* ]]
}

@test "build_images.sh refuses bad arguments with one line" {
    run bash "$ROOT/scripts_hpc/build_images.sh" --agent nosuchagent --agents-dir "$ROOT/agents"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: no agent 'nosuchagent' in $ROOT/agents (no nosuchagent/Dockerfile): agents there: aide dummy" ]]
    run bash "$ROOT/scripts_hpc/build_images.sh" --env conda
    [ "$status" -eq 2 ]
    [[ $output == *"--env must be light or upstream"* ]]
    run bash "$ROOT/scripts_hpc/build_images.sh" --builder podman
    [ "$status" -eq 2 ]
    [[ $output == *"--builder must be auto, docker or apptainer"* ]]
}

@test "grading image: Python 3.11, pandas >= 2.2 from PyPI, the package and server import, no ML stack" {
    run apptainer exec --contain --cleanenv --no-home "$GRADING" python3 -c '
import importlib.util, sys
import pandas, numpy, click, requests, cheroot, werkzeug
import mlebench_hpc, mlebench_hpc.server.app, mlebench_hpc.grading
major, minor = (int(x) for x in pandas.__version__.split(".")[:2])
assert (major, minor) >= (2, 2), pandas.__version__
heavy = [m for m in ("sklearn", "torch", "tensorflow", "scipy") if importlib.util.find_spec(m)]
assert not heavy, heavy
print(sys.version.split()[0], pandas.__version__)'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == 3.11.* ]]
    run apptainer exec --contain --cleanenv --no-home "$GRADING" python3 /opt/mlebench-hpc/run_grading_server.py --help
    [ "$status" -eq 0 ]
}

@test "no answers in the images: no /private, no data files, csv only inside installed Python packages" {
    local sif listing bad
    for sif in "$GRADING" "$AGENT"; do
        listing=$BATS_TEST_TMPDIR/$(basename "$sif").files
        img_list_files "$sif" >"$listing"
        [ "$(wc -l <"$listing")" -gt 1000 ]  # the listing is real, not empty
        ! grep -E '^/private(/|$)' "$listing"
        # /home/data is an empty mount point in the image
        ! grep -E '^/home/data/.' "$listing"
        bad=$(grep -iE '\.(csv|parquet|feather|jsonl)(\.gz|\.zip)?$' "$listing" \
            | grep -vE '^/(usr/(local/)?|opt/conda/envs/[^/]+/)lib/python3[^/]*/(site|dist)-packages/' || true)
        [ -z "$bad" ] || { echo "data files in $sif: $bad"; false; }
    done
    # the project's own package ships only the data files that are in the checkout
    local shipped
    shipped=$(grep -E '/(site|dist)-packages/mlebench_hpc/.*\.csv$' "$BATS_TEST_TMPDIR/mlebench-grading.sif.files" \
        | sed 's|.*/mlebench_hpc/||' || true)
    for f in $shipped; do [ -f "$ROOT/helpers/mlebench_hpc/$f" ]; done
    # and nothing of this run's private answers, by content
    local answers
    answers=$(sha256sum "$T/data/$COMP/prepared/private/"* | cut -d' ' -f1)
    run apptainer exec --contain --cleanenv --no-home "$GRADING" sh -c \
        'find / -xdev -type f -size -50M 2>/dev/null | xargs -r sha256sum 2>/dev/null | cut -d" " -f1'
    for h in $answers; do ! grep -qx "$h" <<<"$output"; done
}

@test "agent image holds upstream's files, with localhost:5000 for the overlays to rewrite, and nothing of ours" {
    run apptainer exec --contain --cleanenv --no-home "$AGENT" sh -c \
        'cat /home/validate_submission.sh; test -x /home/agent/start.sh; test -f /home/agent/config.yaml;
         test ! -e /opt/mlebench-hpc; test ! -e /home/agent/agent.def; cmp /home/instructions.txt /dev/stdin' \
        <"$ROOT/environment/instructions.txt"
    [ "$status" -eq 0 ]
    [[ $output == *'SERVER_URL="http://localhost:5000/validate"'* ]]
    run apptainer exec --contain --cleanenv --no-home "$AGENT" grep -c 'http://localhost:5000' \
        /home/instructions.txt /home/instructions_obfuscated.txt
    [[ $output == *"instructions.txt:1"* && $output == *"instructions_obfuscated.txt:1"* ]]
}

@test "dummy agent in the container: valid submission, verdict recorded, files in code/ and logs/" {
    local run=$BATS_TEST_TMPDIR/run
    run run_agent "$run" --env TIME_LIMIT_SECS=120 --
    echo "$output"
    [ "$status" -eq 0 ]
    cmp "$run/submission/submission.csv" "$T/data/$COMP/prepared/public/sample_submission.csv"
    grep -q '"valid": true' "$run/logs/validation_verdict.json"
    grep -q 'Submission is valid.' "$run/logs/validation_verdict.json"
    [[ $(cat "$run/agent/agent_was_here.txt") == "$COMP" ]]  # the writable copy, as upstream's dummy
    [ -s "$run/code/solution.sh" ]
    grep -q 'verdict: valid' "$run/logs/dummy_agent.log"
    grep -q 'grading server healthy' "$run/logs/entrypoint.log"
    grep -q 'agent exited with code 0' "$run/logs/entrypoint.log"
    # the server saw the validation
    grep -q 'POST /validate 200' "$T/server.log"
}

@test "dummy agent exits non-zero when the server says invalid" {
    local run=$BATS_TEST_TMPDIR/run
    mkdir -p "$BATS_TEST_TMPDIR/baddata"
    cp -r "$T/data/$COMP/prepared/public/." "$BATS_TEST_TMPDIR/baddata/"
    head -n 3 "$T/data/$COMP/prepared/public/sample_submission.csv" >"$BATS_TEST_TMPDIR/baddata/sample_submission.csv"
    mkdir -p "$run"/{submission,logs,code,scratch}
    agent_copy "$run/agent"
    run apptainer exec --contain --cleanenv --no-home --pid --workdir "$run/scratch" --pwd /home \
        --bind "$BATS_TEST_TMPDIR/baddata:/home/data:ro" --bind "$run/submission:/home/submission" \
        --bind "$run/logs:/home/logs" --bind "$run/code:/home/code" --bind "$run/agent:/home/agent" \
        --bind "$T/validate_submission.sh:/home/validate_submission.sh:ro" \
        --env COMPETITION_ID="$COMP" --env GRADING_SERVER="$URL" --bind "$ENTRY" "$AGENT" bash "$EP"
    [ "$status" -eq 1 ]
    grep -q '"valid": false' "$run/logs/validation_verdict.json"
    grep -q 'verdict: invalid' "$run/logs/dummy_agent.log"
}

@test "entrypoint_hpc.sh exits with the agent's exit code" {
    run run_agent "$BATS_TEST_TMPDIR/run" --env TIME_LIMIT_SECS=60 -- sh -c 'echo hello-from-agent; exit 7'
    [ "$status" -eq 7 ]
    grep -q 'agent exited with code 7' "$BATS_TEST_TMPDIR/run/logs/entrypoint.log"
    grep -q 'hello-from-agent' "$BATS_TEST_TMPDIR/run/logs/agent_output.log"
}

@test "entrypoint_hpc.sh stops an agent at TIME_LIMIT_SECS with 124 and says so" {
    local start=$SECONDS
    run run_agent "$BATS_TEST_TMPDIR/run" --env TIME_LIMIT_SECS=2 -- sh -c 'sleep 60 & sleep 60'
    [ "$status" -eq 124 ]
    (( SECONDS - start < 30 ))
    grep -q 'TIMED OUT' "$BATS_TEST_TMPDIR/run/logs/entrypoint.log"
}

@test "entrypoint_hpc.sh gives up on an unreachable server within its bound, with a clear message" {
    local port start=$SECONDS
    port=$(img_free_port)
    mkdir -p "$BATS_TEST_TMPDIR/run"/{submission,logs,code}
    run apptainer exec --contain --cleanenv --no-home --pid \
        --bind "$BATS_TEST_TMPDIR/run/logs:/home/logs" \
        --env GRADING_SERVER="http://127.0.0.1:$port" --env HEALTH_TIMEOUT_SECS=3 \
        --bind "$ENTRY" "$AGENT" bash "$EP" sh -c 'echo agent-ran'
    [ "$status" -eq 3 ]
    (( SECONDS - start < 30 ))
    [[ $output == *"did not answer within 3s"* ]]
    [[ $output != *agent-ran* ]]
    run apptainer exec --contain --cleanenv --no-home --bind "$BATS_TEST_TMPDIR/run/logs:/home/logs" \
        --bind "$ENTRY" "$AGENT" bash "$EP" true
    [ "$status" -eq 2 ]
    [[ $output == *"GRADING_SERVER is not set"* ]]
}

@test "entrypoint_hpc.sh refuses a server that serves another competition" {
    run run_agent "$BATS_TEST_TMPDIR/run" --env COMPETITION_ID=some-other-competition -- true
    [ "$status" -eq 3 ]
    [[ $output == *"serves another competition"* ]]
}

@test "as an ordinary user: the agent runs, writes only its bound dirs, the image stays read-only" {
    [[ $(id -u) == 0 ]] || skip "needs root to switch to an ordinary user"
    # a directory the ordinary user can traverse (the test tmp dirs and ~root are private)
    local base run
    base=$(mktemp -d /tmp/mlebench-hpc-usertest.XXXXXX)
    chmod 0755 "$base"
    cp "$AGENT" "$base/agent.sif"
    cp "$ROOT/environment/entrypoint_hpc.sh" "$base/entrypoint_hpc.sh"
    run=$base/run
    mkdir -p "$run"/{submission,logs,code,scratch}
    chmod -R 0777 "$run"
    # shellcheck disable=SC2016 # expanded inside the container
    run runuser -u nobody -- apptainer exec --contain --cleanenv --no-home --pid --workdir "$run/scratch" --pwd /home \
        --bind "$run/submission:/home/submission" --bind "$run/logs:/home/logs" --bind "$run/code:/home/code" \
        --env GRADING_SERVER="$URL" --env TIME_LIMIT_SECS=30 --bind "$base/entrypoint_hpc.sh:$EP:ro" \
        "$base/agent.sif" bash "$EP" sh -c '
            id -u; echo x > /home/submission/ok.txt; echo y > /tmp/ok.txt
            for p in /home/agent/x /home/x /opt/x /x; do (echo z > "$p") 2>/dev/null && echo "WROTE:$p"; done; true'
    echo "$output"
    local owner=""
    [[ -f $run/logs/entrypoint.log ]] && owner=$(stat -c %u "$run/logs/entrypoint.log")
    rm -rf "$base"
    [ "$status" -eq 0 ]
    [[ $output == *65534* ]]
    [[ $output != *WROTE:/* ]]
    [ "$owner" = 65534 ]
}

@test "dummy agent without a container (AGENT_HOME), against the containerised server" {
    local home=$BATS_TEST_TMPDIR/home
    mkdir -p "$home"/{submission,logs,code,agent}
    ln -s "$T/data/$COMP/prepared/public" "$home/data"
    cp "$T/validate_submission.sh" "$home/validate_submission.sh"
    run env -i PATH="$PATH" AGENT_HOME="$home" COMPETITION_ID="$COMP" GRADING_SERVER="$URL" TIME_LIMIT_SECS=60 \
        bash "$ROOT/environment/entrypoint_hpc.sh" bash "$ROOT/agents/dummy/start.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [ -f "$home/submission/submission.csv" ]
    grep -q '"valid": true' "$home/logs/validation_verdict.json"
    [ -f "$home/logs/entrypoint.log" ]
}

@test "docker-archive path without Docker: hand-made docker save tar -> apptainer build -> run" {
    # a small root filesystem from the host's own dash and its libraries (no download)
    local rootfs=$BATS_TEST_TMPDIR/rootfs lib
    mkdir -p "$rootfs"/{bin,etc,tmp}
    cp /bin/dash "$rootfs/bin/sh"
    for lib in $(ldd /bin/dash | grep -oE '/[^ ]+'); do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
    echo "archive-ok" >"$rootfs/etc/marker"
    run "$ROOT/.venv/bin/python" -m mlebench_hpc.images.docker_archive "$rootfs" "$BATS_TEST_TMPDIR/x.tar" \
        --tag local/bats:1 --env MARKER=from-image-config
    [ "$status" -eq 0 ]
    tar -tf "$BATS_TEST_TMPDIR/x.tar" | grep -qx manifest.json
    run apptainer build --force "$BATS_TEST_TMPDIR/x.sif" "docker-archive://$BATS_TEST_TMPDIR/x.tar"
    [ "$status" -eq 0 ]
    # shellcheck disable=SC2016 # expanded inside the container
    run --separate-stderr apptainer exec --contain --no-home "$BATS_TEST_TMPDIR/x.sif" \
        sh -c 'read -r m </etc/marker; echo "$m $MARKER"'
    [ "$status" -eq 0 ]
    [ "$output" = "archive-ok from-image-config" ]
}

# ------------------------------------------------------------------ the Docker path, for real
# A small root filesystem from the host's own dash and its libraries (no download), at DIR.
img_dash_rootfs() {
    local rootfs=$1 lib
    mkdir -p "$rootfs"/{bin,etc,tmp}
    cp /bin/dash "$rootfs/bin/sh"
    for lib in $(ldd /bin/dash | grep -oE '/[^ ]+'); do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
}

# `make cluster-up` gives root a Docker daemon and the registry with the base image.
docker_site() {
    [[ $(id -u) == 0 ]] || skip "the Docker builder needs root or the docker group (CI runs this as root)"
    { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; } \
        || _unavailable "a Docker daemon" MLEBENCH_REQUIRE_SLURM "docker info fails (as root: make cluster-up)"
    "$ROOT/.venv/bin/mlebench-hpc" base-image check "$SITE_BASE" >/dev/null 2>&1 \
        || _unavailable "the site registry" MLEBENCH_REQUIRE_SLURM "$SITE_BASE not served (as root: make cluster-up)"
}

# docker_images: the grading and dummy agent images that BUILDER=docker makes from the site's base,
# in DIMG, for the tests that compare with them or build over them. The first Docker test below
# makes them (FORCE=1); when it did not run (bats -f) or stopped before its build, they are built
# here, with Docker's layer cache. Fails with the build's output when they cannot be built.
docker_images() {
    [[ -f $DIMG/mlebench-grading.sif && -f $DIMG/agent-dummy.sif ]] && return 0
    echo "# building the docker images in $DIMG (BUILDER=docker from $SITE_BASE)" >&3
    env BASE_IMAGE="$SITE_BASE" IMAGE_DIR="$DIMG" make -C "$ROOT" --no-print-directory sif AGENT=dummy \
        AGENTS_DIR="$ROOT/agents" BUILDER=docker >"$T/docker-images.out" 2>&1 || {
        cat "$T/docker-images.out" >&2
        echo "could not build the docker images in $DIMG (make sif BUILDER=docker from $SITE_BASE)" >&2
        return 1
    }
}

# What both builders must agree on: Python, every package and its version, the image's own files
# and the package's installed files, the environment. One line each.
img_fingerprint() {
    # shellcheck disable=SC2016 # expanded inside the container
    apptainer exec --contain --cleanenv --no-home "$1" sh -c '
        python3 --version; python3 -m pip list --format=freeze 2>/dev/null | LC_ALL=C sort
        if command -v conda >/dev/null; then conda run -n agent python -m pip list --format=freeze | LC_ALL=C sort; fi
        env | grep -E "^(PATH|PYTHON[A-Z]*|LC_ALL|SUBMISSION_DIR|LOGS_DIR|CODE_DIR|AGENT_DIR)=" | LC_ALL=C sort
        pkg=$(python3 -c "import mlebench_hpc, os; print(os.path.dirname(mlebench_hpc.__file__))" 2>/dev/null)
        cd / && find /opt/mlebench-hpc /opt/conda /home $pkg ! -name "*.pyc" -printf "%m %y %p %l\n" 2>/dev/null | LC_ALL=C sort
        find /opt/mlebench-hpc /opt/conda /home $pkg -type f ! -name "*.pyc" ! -name RECORD -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0r sha256sum'
}

@test "make sif BUILDER=docker: docker build from BASE_IMAGE, docker save, docker-archive; the images run a hetjob" {
    docker_site
    require_slurm
    local t0=$SECONDS run_dir
    # FORCE=1: no layer of an earlier docker build either, so pip resolves now, as apptainer will
    run env BASE_IMAGE="$SITE_BASE" IMAGE_DIR="$DIMG" make -C "$ROOT" --no-print-directory sif AGENT=dummy AGENTS_DIR="$ROOT/agents" BUILDER=docker FORCE=1
    echo "$output"
    assert_success
    echo "# docker builds of the grading and dummy agent images: $((SECONDS - t0)) s" >&3
    grep -q '^### docker build: docker build --network host --no-cache ' "$DIMG/logs/mlebench-grading.build.log"
    assert_output --partial "building mlebench-grading.sif with docker from $SITE_BASE"
    assert_output --partial "building the docker image mlebench-env from $SITE_BASE"
    assert_output --partial "building agent-dummy.sif with docker from mlebench-env (mlebench-env)"
    grep -q "^### docker build: docker build .*--build-arg BASE_IMAGE=$SITE_BASE" "$DIMG/logs/mlebench-grading.build.log"
    grep -q "^### docker build: docker build --platform=linux/amd64 .*--build-arg BASE_IMAGE=$SITE_BASE -t mlebench-env " "$DIMG/logs/mlebench-env.docker.log"
    grep -qx "### docker build: docker build --platform=linux/amd64 --network host --no-cache -t dummy $ROOT/agents/dummy/ --build-arg SUBMISSION_DIR=/home/submission --build-arg LOGS_DIR=/home/logs --build-arg CODE_DIR=/home/code --build-arg AGENT_DIR=/home/agent" \
        "$DIMG/logs/agent-dummy.build.log"
    grep -q '^### docker save: ' "$DIMG/logs/mlebench-grading.build.log"
    grep -q '^### apptainer build from docker-archive: .*docker-archive://' "$DIMG/logs/agent-dummy.build.log"
    printf '%s\n' "DATA_DIR=\"$T/data\"" "GRADING_SIF=\"$DIMG/mlebench-grading.sif\"" \
        "AGENT_SIF=\"$DIMG/agent-dummy.sif\"" "OUTPUT_BASE=\"$T/runs\"" TIME_LIMIT_SECS=300 TIME_MARGIN_SECS=10 \
        >"$T/docker.env"
    run bash -c "cd '$ROOT' && MLEBENCH_HPC_CONFIG='$T/docker.env' timeout 300 sbatch --wait --output='$T/docker-het.out' scripts_hpc/slurm_hetjob.sh '$COMP'"
    cat "$T/docker-het.out"
    assert_success
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/docker-het.out" | tail -n1)
    grep -q '"valid": true' "$run_dir/logs/validation_verdict.json"
    grep -q "\"agent_sif\": \"$DIMG/agent-dummy.sif\"" "$run_dir/metadata.json"
    run "$ROOT/.venv/bin/mlebench-hpc" grade "$run_dir" --data-dir "$T/data"
    assert_success
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["total_valid_submissions"] == 1, r' \
        "$run_dir/grading_report.json"
}

@test "a builder change alone rebuilds nothing, FORCE=1 rebuilds, and both builders make the same images" {
    docker_site
    docker_images
    local sif old
    for sif in mlebench-grading agent-dummy; do img_fingerprint "$DIMG/$sif.sif" >"$T/$sif.docker.fp"; done
    run env BASE_IMAGE="$SITE_BASE" IMAGE_DIR="$DIMG" make -C "$ROOT" --no-print-directory sif AGENT=dummy AGENTS_DIR="$ROOT/agents" BUILDER=apptainer
    assert_success
    assert_output --partial "mlebench-grading.sif is up to date"
    assert_output --partial "agent-dummy.sif is up to date"
    refute_output --partial "building "
    old=$(cat "$DIMG/mlebench-grading.sif.sha256")
    run env BASE_IMAGE="$SITE_BASE" IMAGE_DIR="$DIMG" make -C "$ROOT" --no-print-directory sif AGENT=dummy AGENTS_DIR="$ROOT/agents" BUILDER=apptainer FORCE=1
    assert_success
    assert_output --partial "building mlebench-grading.sif with apptainer from $SITE_BASE"
    assert_output --partial "building mlebench-env.sif with apptainer from $SITE_BASE"
    assert_output --partial "building agent-dummy.sif with apptainer from mlebench-env ($DIMG/mlebench-env.sif)"
    [[ $(cat "$DIMG/mlebench-grading.sif.sha256") != "$old" ]]
    for sif in mlebench-grading agent-dummy; do
        img_fingerprint "$DIMG/$sif.sif" >"$T/$sif.apptainer.fp"
        diff "$T/$sif.docker.fp" "$T/$sif.apptainer.fp"
    done
    # the fingerprints are real: versions, the package's files, the entrypoint
    grep -qE '^pandas==[0-9]' "$T/mlebench-grading.docker.fp"
    grep -qE '^mlebench-hpc==' "$T/mlebench-grading.docker.fp"
    grep -q '/mlebench_hpc/server/app.py$' "$T/mlebench-grading.docker.fp"
    grep -qE '^[0-9a-f]{64}  /home/agent/start.sh$' "$T/agent-dummy.docker.fp"
    grep -qE '^755 f /opt/conda/bin/conda $' "$T/agent-dummy.docker.fp"
    grep -qE '^pip==' "$T/agent-dummy.docker.fp"
}

@test "BUILDER=auto: a daemon that cannot get the base does not take over; no base gives one line with the three ways" {
    docker_site
    local port
    port=$(img_free_port)
    run env BASE_IMAGE="127.0.0.1:$port/nothing/here:1" bash "$ROOT/scripts_hpc/build_images.sh" --image-dir "$T/none"
    echo "$output"
    [ "$status" -eq 2 ]
    assert_output --partial "builder: apptainer (docker answers but cannot get 127.0.0.1:$port/nothing/here:1)"
    [[ ${lines[-1]} == "mlebench-hpc: error: no base image: "*"take one of three ways: (1)"*"(2)"*"(3)"* ]]
    [[ $(grep -ci error <<<"$output") == 1 ]]
    # root without BASE_IMAGE builds from the local rootfs: auto keeps apptainer and the good images
    run bash "$ROOT/scripts_hpc/build_images.sh" --builder auto --image-dir "$IMAGES"
    assert_success
    assert_output --partial "builder: apptainer (the base the local rootfs"
    assert_output --partial "mlebench-grading.sif is up to date"
    assert_output --partial "agent-dummy.sif is up to date"
    refute_output --partial "building "
    # the site's base, which the daemon has: auto takes docker, and the images are up to date
    docker_images
    run env BASE_IMAGE="$SITE_BASE" bash "$ROOT/scripts_hpc/build_images.sh" --builder auto --image-dir "$DIMG"
    assert_success
    assert_output --partial "builder: docker (the daemon answers and has $SITE_BASE)"
    refute_output --partial "building "
}

@test "a failed build stops at its step with one line naming it and its log, and keeps the previous SIF" {
    docker_site
    docker_images
    local rootfs=$T/no-python old log=$DIMG/logs/mlebench-grading.build.log
    # a base without python3 and without apt: the first build step that needs them fails
    img_dash_rootfs "$rootfs"
    tar -C "$rootfs" -cf - . | docker import - mlebench-hpc-test/no-python:1 >/dev/null
    old=$(sha256sum "$DIMG/mlebench-grading.sif")
    run env BASE_IMAGE=mlebench-hpc-test/no-python:1 bash "$ROOT/scripts_hpc/build_images.sh" --builder docker --image-dir "$DIMG"
    echo "$output"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: building mlebench-grading.sif: docker build failed (exit "*"): see $log" ]]
    [[ $(grep -ci error <<<"$output") == 1 ]]
    refute_output --partial "mv:"
    refute_output --partial "docker save"
    [[ $(sha256sum "$DIMG/mlebench-grading.sif") == "$old" ]]
    run ! compgen -G "$DIMG/.*.partial.*"
    # the same base as a local rootfs for apptainer: its %post fails the same way
    run env BASE_IMAGE="$rootfs" bash "$ROOT/scripts_hpc/build_images.sh" --builder apptainer --image-dir "$DIMG"
    echo "$output"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: building mlebench-grading.sif: apptainer build failed (exit "*"): see $log" ]]
    [[ $(grep -ci error <<<"$output") == 1 ]]
    [[ $(sha256sum "$DIMG/mlebench-grading.sif") == "$old" ]]
    run ! compgen -G "$DIMG/.*.partial.*"
    docker image rm mlebench-hpc-test/no-python:1 >/dev/null
}
