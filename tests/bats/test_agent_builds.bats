#!/usr/bin/env bats
# Agent directories in upstream MLE-bench's format, built for real: the fixture
# tests/agents/upstream-style (what upstream's Dockerfiles use: the four ARG/ENV pairs, RUN mkdir,
# conda run -n agent pip install -r, COPY ., WORKDIR) with BUILDER=apptainer as an ordinary user, on
# a mlebench-env SIF built in the test from the site registry's base (what `make cluster-up`
# serves), and with BUILDER=docker as root (the seed's commands): both images read without running
# them (SifImage), what upstream's scripts call run inside them, and the two compared. Refused
# instructions, a failing RUN and ENV=upstream without internet, each in one line.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

readonly SITE_BASE=127.0.0.1:5000/mlebench-hpc/base:bookworm
AGENT=upstream-style

setup_file() {
    require_apptainer
    require_test_user
    "$REPO_ROOT/.venv/bin/mlebench-hpc" base-image check "$SITE_BASE" >/dev/null 2>&1 \
        || _unavailable "the site registry" MLEBENCH_REQUIRE_APPTAINER "$SITE_BASE not served (as root: make cluster-up)"
    export DIR T
    DIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    T=$(mktemp -d /tmp/mh-agent-builds.XXXXXX)
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    chmod 755 "$T"
    mkdir -p "$T/user" "$T/docker"
    [[ $EUID != 0 ]] || chown "$TEST_USER:" "$T/user"
    export UIMG=$T/user/images DIMG=$T/docker/images
    # The user's build: mlebench-env.sif from the registry base, then the agent on top of it.
    local t0=$SECONDS
    MH_USER_ENV=(BASE_IMAGE="$SITE_BASE" MLEBENCH_HPC_CACHE="$T/user/cache")
    as_test_user bash "$DIR/scripts_hpc/build_images.sh" --agent "$AGENT" --agents-dir "$DIR/tests/agents" \
        --builder apptainer --agent-only --image-dir "$UIMG" >"$T/user/build.out" 2>&1 \
        || { cat "$T/user/build.out" >&2; return 1; }
    echo "# apptainer, as $TEST_USER: mlebench-env + $AGENT in $((SECONDS - t0)) s" >&3
}

teardown_file() {
    [[ -f $BATS_FILE_TMPDIR/tdir ]] && rm -rf "$(cat "$BATS_FILE_TMPDIR/tdir")"
    return 0
}

# as_user CMD: a shell command line as the test user, with the site's base.
as_user() {
    # shellcheck disable=SC2034 # read by as_test_user
    MH_USER_ENV=(BASE_IMAGE="$SITE_BASE" MLEBENCH_HPC_CACHE="$T/user/cache")
    as_test_user bash -c "$1"
}

docker_site() {
    [[ $(id -u) == 0 ]] || skip "the Docker builder needs root or the docker group (CI runs this as root)"
    { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; } \
        || _unavailable "a Docker daemon" MLEBENCH_REQUIRE_SLURM "docker info fails (as root: make cluster-up)"
}

# Files of a SIF, read from the file (never run): "kind mode path [target]" for every path below
# the given tops, and the sha256 of each regular file.
sif_listing() {
    "$REPO_ROOT/.venv/bin/python" - "$@" <<'EOF'
import hashlib, sys
from pathlib import Path
from mlebench_hpc.images.sif import SifImage

with SifImage(Path(sys.argv[1])) as img:
    for top in sys.argv[2:]:
        for e in img.walk(top, 100_000):
            digest = hashlib.sha256(img.read(e.path, 1 << 30)).hexdigest() if e.kind == "file" else ""
            print(e.kind, oct(e.mode), e.path, e.target or "", digest)
EOF
}

# What both builders must agree on, from inside the image: Pythons, the agent env's packages, the
# environment, every file below /home and /opt/conda with its mode and content.
fingerprint() {
    # shellcheck disable=SC2016 # expanded inside the container
    apptainer exec --contain --cleanenv --no-home "$1" sh -c '
        python3 --version; conda run -n agent python --version
        conda run -n agent python -m pip list --format=freeze 2>/dev/null | LC_ALL=C sort
        env | grep -vE "^(APPTAINER|SINGULARITY)_|^(PWD|SHLVL|_|HOME|TERM|LANG|PS1|PROMPT_COMMAND|LD_LIBRARY_PATH)=" | LC_ALL=C sort
        cd / && find /home /opt/conda /etc/pip.conf ! -name "*.pyc" -printf "%m %y %p %l\n" | LC_ALL=C sort
        find /home /opt/conda -type f ! -name "*.pyc" ! -name RECORD -print0 | LC_ALL=C sort -z | xargs -0 sha256sum'
}

@test "an upstream-format agent builds with BUILDER=apptainer as an ordinary user, on a mlebench-env SIF from the registry base" {
    run cat "$T/user/build.out"
    assert_output --partial "building mlebench-env.sif with apptainer from $SITE_BASE"
    assert_output --partial "building agent-$AGENT.sif with apptainer from mlebench-env ($UIMG/mlebench-env.sif)"
    refute_output --partial "mlebench-grading"
    [[ $(stat -c %U "$UIMG/agent-$AGENT.sif") == "$TEST_USER" || $EUID != 0 ]]
    # Docker's order, as the build log shows it: every instruction after FROM, in the Dockerfile's order
    grep -oE '^[A-Z]+' "$REPO_ROOT/tests/agents/$AGENT/Dockerfile" | tail -n +2 >"$T/want-steps"
    sed -n 's|^### Step [0-9]*/[0-9]* : \([A-Z]*\).*|\1|p' "$UIMG/logs/agent-$AGENT.build.log" >"$T/got-steps"
    [[ $(wc -l <"$T/want-steps") -gt 10 ]]
    diff "$T/want-steps" "$T/got-steps"
    # read from the SIF without running it: upstream's files, the agent's, nothing of ours
    sif_listing "$UIMG/agent-$AGENT.sif" /home /opt >"$T/listing"
    grep -qE '^file 0o755 /home/agent/start.sh ' "$T/listing"
    grep -qE '^file 0o755 /home/agent/bin/upstream-style-tool ' "$T/listing"
    grep -qE '^file 0o644 /home/agent/requirements.txt ' "$T/listing"
    grep -qE '^file 0o755 /home/validate_submission.sh ' "$T/listing"
    grep -qE '^file 0o644 /home/instructions(_obfuscated)?.txt ' "$T/listing"
    grep -qE '^dir 0o755 /home/logs ' "$T/listing"
    grep -qE '^dir 0o755 /home/code ' "$T/listing"
    grep -qE '^file 0o755 /opt/conda/bin/conda ' "$T/listing"
    grep -q ' /home/agent/Dockerfile ' "$T/listing"  # the listing is real
    run ! grep -E ' (/home/agent/notes\.secret|/home/agent/[^ ]*\.log|/opt/mlebench-hpc[^ ]*|[^ ]*entrypoint_hpc\.sh) ' "$T/listing"
    # the RUN after WORKDIR ran there, with the agent env
    [[ $("$REPO_ROOT/.venv/bin/python" -c 'import sys; from pathlib import Path; from mlebench_hpc.images.sif import SifImage
with SifImage(Path(sys.argv[1])) as i: print(i.read("/home/agent/built_in.txt", 100).decode().strip(), i.read("/home/agent/built_with.txt", 100).decode().strip())' \
        "$UIMG/agent-$AGENT.sif") == "/home/agent/work /opt/conda/envs/agent" ]]
    # upstream's env has no /home/logs, /home/code, /home/agent before the agent's RUN mkdir (no -p)
    sif_listing "$UIMG/mlebench-env.sif" /home >"$T/env-listing"
    run ! grep -E ' /home/(logs|code|agent)' "$T/env-listing"
    grep -qE '^dir 0o755 /home/submission ' "$T/env-listing"
}

@test "what upstream's scripts call works in the image: conda run, conda activate, envsubst, curl, the ENVs" {
    local sif=$UIMG/agent-$AGENT.sif
    run apptainer exec --contain --cleanenv --no-home "$sif" conda run -n agent python -c 'import sys; print(sys.prefix)'
    assert_success
    assert_output /opt/conda/envs/agent
    # shellcheck disable=SC2016 # expanded inside the container
    run apptainer exec --contain --cleanenv --no-home "$sif" bash -c \
        'eval "$(conda shell.bash hook)"; conda activate agent; command -v python; echo "$CONDA_DEFAULT_ENV"
         conda deactivate; command -v python; conda clean -afy; conda init; echo ok'
    assert_success
    assert_output "/opt/conda/envs/agent/bin/python
agent
/usr/bin/python
ok"
    # shellcheck disable=SC2016 # expanded inside the container
    run apptainer exec --contain --cleanenv --no-home "$sif" bash -c \
        'command -v envsubst curl >/dev/null && echo "$SUBMISSION_DIR $LOGS_DIR $CODE_DIR $AGENT_DIR|$GREETING|${PATH%%:*}"; upstream-style-tool'
    assert_success
    assert_output "/home/submission /home/logs /home/code /home/agent|hello agent|/home/agent/bin
upstream-style tool"
    # what the stand-in cannot do says so, in one line, and fails
    run apptainer exec --contain --cleanenv --no-home "$sif" conda install -y -c conda-forge nodejs
    [ "$status" -eq 2 ]
    [[ ${#lines[@]} == 1 && $output == *"conda stand-in, not conda"*"make sif ENV=upstream"* ]]
}

@test "a second build with unchanged inputs rebuilds nothing (an up-to-date agent needs no mlebench-env)" {
    run as_user "bash '$DIR/scripts_hpc/build_images.sh' --agent $AGENT --agents-dir '$DIR/tests/agents' --builder apptainer --agent-only --image-dir '$UIMG'"
    assert_success
    assert_output --partial "agent-$AGENT.sif is up to date"
    refute_output --partial "building "
}

@test "BUILDER=docker as root: the seed's commands, and the same image as the apptainer builder's" {
    docker_site
    local t0=$SECONDS
    run env BASE_IMAGE="$SITE_BASE" bash "$REPO_ROOT/scripts_hpc/build_images.sh" --agent "$AGENT" \
        --agents-dir "$REPO_ROOT/tests/agents" --builder docker --agent-only --image-dir "$DIMG"
    echo "$output"
    assert_success
    echo "# docker: mlebench-env (image) + $AGENT in $((SECONDS - t0)) s" >&3
    # upstream's README, step by step
    grep -qE "^### docker build: docker build --platform=linux/amd64 --network host .*-t mlebench-env -f .*/mlebench-env/Dockerfile " \
        "$DIMG/logs/mlebench-env.docker.log" || assert_output --partial "docker image mlebench-env is up to date"
    grep -qx "### docker build: docker build --platform=linux/amd64 --network host -t $AGENT $REPO_ROOT/tests/agents/$AGENT/ --build-arg SUBMISSION_DIR=/home/submission --build-arg LOGS_DIR=/home/logs --build-arg CODE_DIR=/home/code --build-arg AGENT_DIR=/home/agent" \
        "$DIMG/logs/agent-$AGENT.build.log"
    grep -q "^### apptainer build from docker-archive: .*docker-archive://" "$DIMG/logs/agent-$AGENT.build.log"
    fingerprint "$UIMG/agent-$AGENT.sif" >"$T/apptainer.fp"
    fingerprint "$DIMG/agent-$AGENT.sif" >"$T/docker.fp"
    diff "$T/apptainer.fp" "$T/docker.fp"
    # the fingerprint is real: versions, the env, the agent's files and their content
    grep -qE '^Python 3\.[0-9]+\.[0-9]+$' "$T/docker.fp"
    grep -qE '^pip==[0-9]' "$T/docker.fp"
    grep -qx 'GREETING=hello agent' "$T/docker.fp"
    grep -qE '^[0-9a-f]{64}  /home/agent/start.sh$' "$T/docker.fp"
    grep -qE '^755 f /opt/conda/bin/conda $' "$T/docker.fp"
}

# bad_agent NAME LINE...: a copy of the fixture (the test user's) whose Dockerfile ends with LINEs;
# prints the Dockerfile line of the first one.
bad_agent() {
    local dir=$T/user/agents/$1
    shift
    printf '%s\n' "$@" >"$T/extra-lines"
    chmod 644 "$T/extra-lines"
    as_user "mkdir -p '$T/user/agents' && rm -rf '$dir' && cp -r '$DIR/tests/agents/$AGENT' '$dir' && cat '$T/extra-lines' >>'$dir/Dockerfile'"
    echo $(($(wc -l <"$dir/Dockerfile") - $# + 1))
}

@test "instructions the apptainer builder cannot carry out are refused before building, one line each" {
    local case n=0 line
    for case in "FROM mlebench-env AS second" "COPY --from=builder /x /y" "ADD https://example.invalid/x /x" \
        "USER nonroot" "SHELL [\"/bin/bash\", \"-c\"]" "VOLUME /data" "ONBUILD RUN true"; do
        n=$((n + 1))
        line=$(bad_agent "bad$n" "$case")
        run as_user "bash '$DIR/scripts_hpc/build_images.sh' --agent bad$n --agents-dir '$T/user/agents' --builder apptainer --agent-only --image-dir '$UIMG'"
        echo "$case -> ${lines[-1]}"
        [ "$status" -eq 2 ]
        [[ ${lines[-1]} == "mlebench-hpc: error: building agent-bad$n.sif: Dockerfile line $line: ${case%% *}"* ]]
        [[ $(grep -ci error <<<"$output") == 1 ]]
        refute_output --partial "apptainer build"
        [[ ! -e $UIMG/agent-bad$n.sif ]]
    done
    # CMD, ENTRYPOINT, EXPOSE are noted, not refused (the translation alone: no build needed)
    bad_agent notes 'CMD ["bash"]' 'ENTRYPOINT ["/x"]' 'EXPOSE 80' >/dev/null
    run as_user "'$DIR/.venv/bin/mlebench-hpc' dockerfile-def '$T/user/agents/notes/Dockerfile' --context '$T/user/agents/notes' --out '$T/user/notes-def' --from mlebench-env='$UIMG/mlebench-env.sif'"
    assert_success
    [[ $(grep -c "not used by mlebench-hpc's launcher" <<<"$output") == 3 ]]
}

@test "a failing RUN fails the build with one line naming its Dockerfile line and the log; the previous SIF stays" {
    local old line log=$UIMG/logs/agent-failing.build.log
    line=$(bad_agent failing 'RUN echo about to fail && exit 3')
    as_user "cp '$UIMG/agent-$AGENT.sif' '$UIMG/agent-failing.sif'"
    old=$(sha256sum "$UIMG/agent-failing.sif")
    # on ENV_IMAGE, the env SIF given by its path (nothing of mlebench-env is built)
    run as_user "ENV_IMAGE='$UIMG/mlebench-env.sif' bash '$DIR/scripts_hpc/build_images.sh' --agent failing --agents-dir '$T/user/agents' --builder apptainer --agent-only --image-dir '$UIMG'"
    echo "$output"
    [ "$status" -eq 2 ]
    assert_output --partial "mlebench-env: ENV_IMAGE=$UIMG/mlebench-env.sif (not built here)"
    [[ ${lines[-1]} == "mlebench-hpc: error: building agent-failing.sif: apptainer build failed at Dockerfile line $line: RUN echo about to fail && exit 3 failed (exit 3): see $log" ]]
    [[ $(grep -ci error <<<"$output") == 1 ]]
    grep -q '^about to fail$' "$log"
    [[ $(sha256sum "$UIMG/agent-failing.sif") == "$old" ]]
    run ! compgen -G "$UIMG/.*.partial.*"
}

@test "ENV=upstream where the internet cannot be reached: one line says so (apptainer as the user, docker as root)" {
    run as_user "MLEBENCH_DIR='$DIR/tests/agents/upstream-env' bash '$DIR/scripts_hpc/build_images.sh' --env upstream --agent $AGENT --agents-dir '$DIR/tests/agents' --builder apptainer --agent-only --image-dir '$T/user/upstream'"
    echo "$output"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: building upstream's mlebench-env ($DIR/tests/agents/upstream-env/environment/Dockerfile) needs the internet"*"cannot be reached from here"*"ENV=light: see "* ]]
    [[ $(grep -ci error <<<"$output") == 1 ]]
    # without MLEBENCH_DIR there is nothing to build: one line
    run as_user "bash '$DIR/scripts_hpc/build_images.sh' --env upstream --agent $AGENT --agents-dir '$DIR/tests/agents' --builder apptainer --agent-only --image-dir '$T/user/upstream'"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == *"ENV=upstream builds \$MLEBENCH_DIR/environment/Dockerfile: set MLEBENCH_DIR"* ]]
    docker_site
    run env MLEBENCH_DIR="$REPO_ROOT/tests/agents/upstream-env" bash "$REPO_ROOT/scripts_hpc/build_images.sh" --env upstream \
        --agent "$AGENT" --agents-dir "$REPO_ROOT/tests/agents" --builder docker --agent-only --image-dir "$T/docker/upstream"
    echo "$output"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: building upstream's mlebench-env"*"needs the internet"*"cannot be reached from here"* ]]
    # the light env's docker image is untouched by the failed build
    [[ $(docker image inspect -f '{{ index .Config.Labels "org.mlebench-hpc.inputs" }}' mlebench-env) =~ ^[0-9a-f]{64}$ ]]
}

# ------------------------------------------------------------------ runs of the built agent
# run_config NAME VARIANT IMAGE: the test user's config for a run of VARIANT of the fixture agent.
run_config() {
    local cfg=$T/user/run/$1.env
    cat >"$cfg" <<EOF
DATA_DIR="$T/user/run/data"
GRADING_SIF="$T/user/run/mlebench-grading.sif"
AGENTS_DIR="$DIR/tests/agents"
AGENT_ID="$2"
AGENT_SIF="$3"
AGENT_ENV_FILE="$T/user/run/secrets.env"
OUTPUT_BASE="$T/user/run/out"
RUN_GROUP="$1"
TIME_LIMIT_SECS=600
TIME_MARGIN_SECS=10
APPTAINER_EXTRA_FLAGS="$EXTRA_FLAGS"
EOF
    [[ $EUID != 0 ]] || chown "$TEST_USER:" "$cfg"
    echo "$cfg"
}

# user_sbatch CONFIG OUT ARGS...: sbatch as the test user with CONFIG; prints the job id.
user_sbatch() {
    local cfg=$1 out=$2 id
    shift 2
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$cfg")
    id=$(cd "$T/user/run" && as_test_user sbatch --parsable --output="$out" "$@") || return 1
    echo "${id%%;*}"
}

run_dir_in() { sed -n 's/^MLEBENCH_RUN_DIR=//p' "$1" | tail -n1; }

# run_seat: the user's run directory for the tests below (once): the grading image, the agent
# images the builds above made, the demo data. Fails (never skips) when a build above left no image.
run_seat() {
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    export EXTRA_FLAGS=""
    as_test_user test -r /dev/fuse -a -w /dev/fuse || EXTRA_FLAGS="--unsquash"
    [[ ! -f $T/user/run/.ready ]] || return 0
    [[ -f $images/mlebench-grading.sif ]] || _unavailable "the grading image" MLEBENCH_REQUIRE_APPTAINER "no $images/mlebench-grading.sif"
    [[ -f $UIMG/agent-$AGENT.sif ]] || { echo "the apptainer build above left no $UIMG/agent-$AGENT.sif" >&2; return 1; }
    mkdir -p "$T/user/run"
    cp "$images/mlebench-grading.sif" "$T/user/run/"
    # the docker-built image as root (the docker build above made it); a user without Docker has none
    if (( EUID == 0 )); then
        [[ -f $DIMG/agent-$AGENT.sif ]] || { echo "the docker build above left no $DIMG/agent-$AGENT.sif" >&2; return 1; }
        cp "$DIMG/agent-$AGENT.sif" "$T/user/run/agent-docker.sif"
    else
        echo "# not root: the argparse variant runs the apptainer-built image" >&3
        cp "$UIMG/agent-$AGENT.sif" "$T/user/run/agent-docker.sif"
    fi
    chmod 644 "$T/user/run/"*.sif
    [[ $EUID != 0 ]] || chown -R "$TEST_USER:" "$T/user/run"
    as_test_user "$DIR/.venv/bin/mlebench-hpc" prepare-demo --data-dir "$T/user/run/data" >/dev/null
    touch "$T/user/run/.ready"
}

@test "the built agent runs through slurm_hetjob.sh as the user: its kwargs, env vars and secret as upstream passes them; upstream's validate_submission.sh; graded valid" {
    require_slurm
    local comp=demo-breast-cancer docker_sif=$T/user/run/agent-docker.sif
    run_seat
    local secret=sk-test-$RANDOM$RANDOM$RANDOM
    as_test_user bash -c "umask 077; printf 'TEST_API_KEY=%s\n' '$secret' >'$T/user/run/secrets.env'"
    local sb=(--time=10 --mem=1G --cpus-per-task=1 : --time=10 --gres=none --cpus-per-task=1 --mem=1G)
    local v name cfg id ids=()
    for v in omegaconf:omegaconf:"$UIMG/agent-$AGENT.sif" argparse:argparse:"$docker_sif" secret:secret:"$UIMG/agent-$AGENT.sif"; do
        name=${v%%:*}; v=${v#*:}
        cfg=$(run_config "$name" "$AGENT/${v%%:*}" "${v#*:}")
        id=$(user_sbatch "$cfg" "$T/user/run/$name.out" "${sb[@]}" "$DIR/scripts_hpc/slurm_hetjob.sh" "$comp")
        ids+=("$id")
    done
    for id in "${ids[@]}"; do wait_job "$id" 300; done
    local run
    for name in omegaconf argparse secret; do
        run=$(run_dir_in "$T/user/run/$name.out")
        [[ -n $run && -f $run/metadata.json ]] || { cat "$T/user/run/$name.out"; false; }
        # upstream's validate_submission.sh (the image's own, overlaid with the URL and the token)
        grep -q '"valid": true' "$run/logs/verdict.json" || { cat "$T/user/run/$name.out"; false; }
        grep -q "http://localhost:5000" "$run/overlay/overlays.tsv" && false
        grep -qx "MODE=$name" "$run/logs/env.txt"
        grep -qx "COMPETITION_ID=$comp" "$run/logs/env.txt"
        grep -qx "AGENT_DIR=/home/agent" "$run/logs/env.txt"
        grep -qx "SUBMISSION_DIR=/home/submission" "$run/logs/env.txt"
        # /home/agent was the image's, written by the agent, and is the run's own
        grep -qx 'built_in.txt' "$run/logs/agent_dir_before.txt"
        [[ -f $run/agent/agent_was_here.txt && $(cat "$run/agent/run-marker") == $(cat "$run/logs/run-marker") ]]
        as_test_user "$DIR/.venv/bin/mlebench-hpc" grade "$run" --data-dir "$T/user/run/data" --no-summary --no-progress >/dev/null
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; assert r['valid_submission'], r" \
            "$run/grading_report.json"
        # the secret: never in the record, the job output or the agent's logs (only its digest)
        run ! grep -rqF "$secret" "$run/metadata.json" "$T/user/run/$name.out" "$run/logs"
    done
    # omegaconf: k=v in the mapping's order; the variant's TIME_LIMIT_SECS and STEP_LIMIT are the budget
    run=$(run_dir_in "$T/user/run/omegaconf.out")
    run cat "$run/logs/argv.txt"
    assert_output $'agent.steps=3\nagent.code.model=local-model\ncopy_data=False\nnote=two words'
    grep -qx "TIME_LIMIT_SECS=300" "$run/logs/env.txt" && grep -qx "STEP_LIMIT=3" "$run/logs/env.txt"
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m['agent_id'] == 'upstream-style/omegaconf' and m['agent_kwargs_type'] == 'omegaconf' and m['time_limit_secs'] == 300, m" "$run/metadata.json"
    # argparse: --k v, from the docker-built image
    run=$(run_dir_in "$T/user/run/argparse.out")
    run cat "$run/logs/argv.txt"
    assert_output $'--max-steps\n2000\n--llm-name\nlocal model\n--shm_size\n100G'
    # no budget in the variant: the config's 600 s, cut to end before the job's 10-minute limit
    grep -qE '^TIME_LIMIT_SECS=5[0-9]{2}$' "$run/logs/env.txt"
    # the secret reached the agent (its digest matches), and its name is all the record says
    run=$(run_dir_in "$T/user/run/secret.out")
    [[ $(cat "$run/logs/secret.sha256") == $(printf '%s' "$secret" | sha256sum | cut -d' ' -f1) ]]
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m['agent_secret_names'] == ['TEST_API_KEY'] and 'MY_API_KEY' in m['agent_env_var_names'], m" "$run/metadata.json"
}

@test "a sweep of a variant with 2 seeds: each run has its own /home/agent; a missing secret and privileged: refused before anything starts" {
    require_slurm
    run_seat
    local cfg out
    cfg=$(run_config sweep "$AGENT/argparse" "$UIMG/agent-$AGENT.sif")
    echo demo-diabetes >"$T/user/run/one.txt"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$cfg")
    out=$(cd "$T/user/run" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/user/run/one.txt" \
        --seeds 2 --max-parallel 2 --group sweep -- --gres=none --cpus-per-task=1 --mem=1G --time=10)
    local array
    array=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $array ]] || { echo "$out"; false; }
    # meanwhile: a variant whose secret the env file lacks, and a privileged one: one line, exit 2,
    # no job step started, no run directory made
    local v line
    for v in missing-secret privileged; do
        cfg=$(run_config "$v" "$AGENT/$v" "$UIMG/agent-$AGENT.sif")
        # shellcheck disable=SC2034 # read by as_test_user
        MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$cfg")
        run as_test_user bash "$DIR/scripts_hpc/slurm_hetjob.sh" demo-diabetes
        [ "$status" -eq 2 ]
        line=$(grep -v '^\[' <<<"$output")
        [[ $(wc -l <<<"$line") == 1 ]]
        case $v in
            missing-secret) [[ $line == *"needs the secret(s) NOT_IN_THE_ENV_FILE"* ]] ;;
            privileged) [[ $line == *"privileged: true"*"no privileged mode"* ]] ;;
        esac
        [[ ! -d $T/user/run/out/$v ]]
    done
    wait_job "$array" 300
    local runs=() r
    mapfile -t runs < <(find "$T/user/run/out/sweep" -mindepth 1 -maxdepth 1 -type d -name 'demo-diabetes_*' | sort)
    [ "${#runs[@]}" -eq 2 ]
    for r in "${runs[@]}"; do
        grep -q '"valid": true' "$r/logs/verdict.json"
        # each found only the image's files in its /home/agent: never the other run's marker
        run ! grep -qx run-marker "$r/logs/agent_dir_before.txt"
        [[ $(cat "$r/agent/run-marker") == $(cat "$r/logs/run-marker") ]]
    done
    [[ $(cat "${runs[0]}/agent/run-marker") != $(cat "${runs[1]}/agent/run-marker") ]]
}
