#!/usr/bin/env bats
# The user's seat: no root and no Docker. Root plays the site admin once (setup_file: an ordinary
# user with /etc/subuid and /etc/subgid ranges, as `usermod --add-subuids` gives); from then on
# every step runs as that user (runuser, a clean environment), never root, on the site that
# `make cluster-up` made (Slurm, Apptainer, the registry on 127.0.0.1:5000 with the base image):
# a clone of this checkout (its committed HEAD) into the user's home, `make install`, a config
# made from scripts_hpc/config.example.env with only BASE_IMAGE, DATA_DIR and OUTPUT_BASE edited,
# `make sif`, `mlebench-hpc doctor`, the hetjob, the grading job + agent with auto:JOBID, a demo x 2
# seeds sweep, `make grade`, the leak attacks of test_leaks.bats, and `make demo` with only
# BASE_IMAGE set. The tests run in order: each builds on the one before.

bats_require_minimum_version 1.5.0
load helpers

readonly SITE_BASE=127.0.0.1:5000/mlebench-hpc/base:bookworm

setup_file() {
    [[ $(id -u) == 0 ]] || skip "needs root to play the admin who creates the user (CI runs it as root)"
    require_slurm
    require_apptainer
    "$REPO_ROOT/.venv/bin/mlebench-hpc" base-image check "$SITE_BASE" >/dev/null 2>&1 \
        || _unavailable "the site registry" MLEBENCH_REQUIRE_SLURM "$SITE_BASE not served (as root: make cluster-up)"
    export SEAT=${MH_TEST_SEAT_USER:-mhseat}
    # A fresh user each run: nothing cached from an earlier one (images, venv, runs).
    if id "$SEAT" >/dev/null 2>&1; then
        userdel -r "$SEAT" >/dev/null 2>&1 || fail_setup "user $SEAT exists and cannot be removed (processes left?)"
    fi
    local f start
    for f in /etc/subuid /etc/subgid; do sed -i "/^$SEAT:/d" "$f"; done
    useradd -m -s /bin/bash "$SEAT"
    for f in /etc/subuid /etc/subgid; do  # the next free range, as an admin would hand it out
        grep -q "^$SEAT:" "$f" && continue  # useradd gave one already (SUB_UID_COUNT in login.defs)
        start=$(awk -F: 'BEGIN {m = 100000} {e = $2 + $3; if (e > m) m = e} END {print m}' "$f")
        echo "$SEAT:$start:65536" >>"$f"
    done
    [[ $(grep -c "^$SEAT:" /etc/subuid) == 1 && $(grep -c "^$SEAT:" /etc/subgid) == 1 ]]
    export SEAT_HOME
    SEAT_HOME=$(getent passwd "$SEAT" | cut -d: -f6)
    export CLONE=$SEAT_HOME/mlebench-hpc
    # The checkout the user clones: this one when the user can read it, else a copy the admin
    # publishes (a CI checkout may live in root's private home).
    export SRC=$REPO_ROOT
    if ! as_seat_raw test -r "$REPO_ROOT/Makefile" || ! as_seat_raw git -c safe.directory='*' -C "$REPO_ROOT" rev-parse -q HEAD >/dev/null; then
        SRC=$(mktemp -d /tmp/mh-seat-src.XXXXXX)/mlebench-hpc.git
        git clone -q --bare --no-local "$REPO_ROOT" "$SRC"
        chmod -R a+rX "$(dirname "$SRC")"
        dirname "$SRC" >"$BATS_FILE_TMPDIR/published"
    fi
    echo "# user $SEAT ($SEAT_HOME) clones $SRC" >&3
}

teardown_file() {
    local ids
    if [[ -n ${SEAT:-} ]]; then
        mapfile -t ids < <(squeue -h -u "$SEAT" -o '%A' 2>/dev/null | sort -u)
        ((${#ids[@]} == 0)) || scancel "${ids[@]}" 2>/dev/null || true
    fi
    [[ -f $BATS_FILE_TMPDIR/published ]] && rm -rf "$(cat "$BATS_FILE_TMPDIR/published")"
    return 0
}

fail_setup() { echo "user seat setup: $1" >&2; return 1; }

# A command as the user in a clean login-like environment (nothing of root's or bats' leaks in).
as_seat_raw() {
    (cd / && runuser -u "$SEAT" -- env -i HOME="$SEAT_HOME" USER="$SEAT" LOGNAME="$SEAT" SHELL=/bin/bash \
        LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin "$@")
}
# A shell command line as the user, in the clone.
as_seat() { as_seat_raw bash -c "cd ~/mlebench-hpc && $1"; }

# wait (bounded) until the user's job has left the queue
wait_gone() {
    local id=$1 limit=${2:-240} start=$SECONDS
    while squeue -h -j "$id" 2>/dev/null | grep -q .; do
        ((SECONDS - start < limit)) || { echo "job $id still queued after ${limit}s" >&2; return 1; }
        sleep 1
    done
}

timed() { echo "# $1: $(($(date +%s) - $2)) s" >&3; }

@test "as the user: git clone of the checkout and make install" {
    local t0
    t0=$(date +%s)
    run as_seat_raw bash -c "git config --global --add safe.directory '*' && git clone -q '$SRC' ~/mlebench-hpc"
    assert_success
    run as_seat "make install"
    assert_success
    timed "clone + make install" "$t0"
    [[ $(stat -c %U "$CLONE/.venv/bin/mlebench-hpc") == "$SEAT" ]]
}

@test "as the user: a config from config.example.env with only BASE_IMAGE, DATA_DIR and OUTPUT_BASE edited" {
    # each of the three lines uncommented and edited, as a user would (the rest keep their defaults)
    run as_seat "mkdir -p ~/.config/mlebench-hpc && sed -e 's|^# BASE_IMAGE=.*|BASE_IMAGE=\"$SITE_BASE\"|' \
        -e 's|^# DATA_DIR=.*|DATA_DIR=\"~/mle-data\"|' -e 's|^# OUTPUT_BASE=.*|OUTPUT_BASE=\"\$HOME/mle-runs\"|' \
        scripts_hpc/config.example.env >~/.config/mlebench-hpc/config.env"
    assert_success
    # exactly three lines differ from the example
    run diff "$CLONE/scripts_hpc/config.example.env" "$SEAT_HOME/.config/mlebench-hpc/config.env"
    [[ $(grep -c '^>' <<<"$output") == 3 && $(grep -c '^<' <<<"$output") == 3 ]]
    run as_seat ".venv/bin/mlebench-hpc prepare-demo --data-dir ~/mle-data"
    assert_success
    echo "${lines[0]}" >"$BATS_FILE_TMPDIR/comp"
    [[ -d $SEAT_HOME/mle-data/${lines[0]}/prepared/private ]]
}

@test "as the user: make sif builds both images with apptainer --fakeroot from the site registry" {
    local t0
    # no root, so no debootstrap rootfs: one line that names the three ways to a base
    run as_seat "bash scripts_hpc/build_images.sh --base local"
    [ "$status" -eq 2 ]
    [[ ${lines[-1]} == "mlebench-hpc: error: the local base rootfs "*"needs root for debootstrap; take one of three ways: (1)"*"(2)"*"(3)"* ]]
    t0=$(date +%s)
    run as_seat "make sif"
    echo "$output"
    assert_success
    timed "make sif (grading, mlebench-env + dummy agent, apptainer, registry base)" "$t0"
    assert_output --partial "building mlebench-grading.sif with apptainer from $SITE_BASE"
    assert_output --partial "building mlebench-env.sif with apptainer from $SITE_BASE"
    assert_output --partial "building agent-dummy.sif with apptainer from mlebench-env ("
    refute_output --partial "with docker"
    local sif
    for sif in mlebench-grading mlebench-env agent-dummy; do
        [[ $(stat -c %U "$SEAT_HOME/.cache/mlebench-hpc/images/$sif.sif") == "$SEAT" ]]
    done
}

@test "as the user: mlebench-hpc doctor passes, base image and fakeroot included" {
    local comp
    comp=$(cat "$BATS_FILE_TMPDIR/comp")
    run as_seat "echo $comp >~/comps.txt && .venv/bin/mlebench-hpc doctor --competitions ~/comps.txt"
    echo "$output"
    assert_success
    assert_line --regexp '^PASS +fakeroot '
    assert_line --regexp "^PASS +base +BASE_IMAGE=$SITE_BASE: in registry"
    assert_line --regexp '^PASS +image +GRADING_SIF='
    assert_line --regexp '^PASS +image +AGENT_SIF='
    assert_line --regexp "^PASS +data +$comp: prepared"
    assert_line --regexp '^PASS +slurm '
}

@test "as the user: sbatch slurm_hetjob.sh ends with a valid submission and no error line" {
    local comp j out run_dir
    comp=$(cat "$BATS_FILE_TMPDIR/comp")
    run as_seat "sbatch --parsable --output=\$HOME/het-%j.out scripts_hpc/slurm_hetjob.sh $comp"
    assert_success
    j=${output%%;*}
    wait_gone "$j" 300
    out=$SEAT_HOME/het-$j.out
    cat "$out"
    [[ $(slurm_job_field "$j" JobState) == COMPLETED ]]
    [[ $(slurm_job_field "$j" UserId) == "$SEAT"* ]]
    run grep -in error "$out"
    assert_failure
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$out" | tail -n1)
    [[ $run_dir == "$SEAT_HOME/mle-runs/"* && -f $run_dir/submission/submission.csv ]]
    grep -q '"valid": true' "$run_dir/logs/validation_verdict.json"
}

@test "as the user: the grading job plus slurm_agent.sh with auto:JOBID" {
    local comp g a
    comp=$(cat "$BATS_FILE_TMPDIR/comp")
    run as_seat "sbatch --parsable --output=\$HOME/grade-%j.out scripts_hpc/slurm_grading_server.sh $comp"
    assert_success
    g=${output%%;*}
    run as_seat "sbatch --parsable --output=\$HOME/agent-%j.out scripts_hpc/slurm_agent.sh $comp auto:$g"
    assert_success
    a=${output%%;*}
    wait_gone "$a" 300
    cat "$SEAT_HOME/agent-$a.out"
    [[ $(slurm_job_field "$a" JobState) == COMPLETED ]]
    as_seat "scancel $g"
    wait_gone "$g" 60
    grep -q 'POST /validate 200' "$SEAT_HOME/grade-$g.out"
}

@test "as the user: a demo x 2 seeds sweep, then make grade on it" {
    local comp job
    comp=$(cat "$BATS_FILE_TMPDIR/comp")
    run as_seat "echo $comp >~/demo.txt && bash scripts_hpc/submit_sweep.sh --competitions ~/demo.txt --seeds 2 --max-parallel 2"
    echo "$output"
    assert_success
    job=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$output")
    [[ -n $job ]]
    wait_gone "$job" 300
    run as_seat ".venv/bin/mlebench-hpc status ~/mle-runs/sweep-demo"
    echo "$output"
    [[ $(grep -c 'finished (exit 0, submission present)' <<<"$output") == 2 ]]
    run as_seat "make grade RUN=\$HOME/mle-runs/sweep-demo"
    echo "$output"
    assert_success
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["total_runs"] == 2 and r["total_valid_submissions"] == 2, r' \
        "$SEAT_HOME/mle-runs/sweep-demo/grading_report.json"
}

@test "as the user: the leak attacks of test_leaks.bats, against the user's own images" {
    local t0
    t0=$(date +%s)
    run as_seat "MH_TEST_IMAGE_DIR=\$HOME/.cache/mlebench-hpc/images MLEBENCH_REQUIRE_APPTAINER=1 bats --tap tests/bats/test_leaks.bats"
    echo "$output"
    timed "test_leaks.bats as the user" "$t0"
    assert_success
    refute_line --regexp '^not ok '
    local plan skips
    plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' <<<"$output")
    [[ $plan -ge 10 && $(grep -c '^ok ' <<<"$output") == "$plan" ]]
    # every attack ran; only a control that needs root (to go without the user namespace) may skip
    skips=$(grep -E '^ok .* # skip' <<<"$output" || true)
    if [[ -n $skips ]]; then
        run grep -vc '# skip the control needs root' <<<"$skips"
        assert_output 0
    fi
}

@test "as the user: make demo with only BASE_IMAGE set" {
    local t0 run_dir
    t0=$(date +%s)
    # shellcheck disable=SC2016 # the user's shell expands it
    run as_seat_raw env BASE_IMAGE="$SITE_BASE" bash -c 'cd ~/mlebench-hpc && mv ~/.config/mlebench-hpc/config.env ~/config.env.away && make demo; rc=$?; mv ~/config.env.away ~/.config/mlebench-hpc/config.env; exit $rc'
    echo "$output"
    timed "make demo as the user" "$t0"
    assert_success
    run_dir=${lines[${#lines[@]} - 1]}
    [[ $run_dir == "$CLONE/.demo/runs/"* && -f $run_dir/submission/submission.csv ]]
    assert_output --partial "valid 1"
}
