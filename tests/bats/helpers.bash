# shellcheck shell=bash
# Shared bats setup. In every tests/bats/*.bats file: `load helpers`.
#
# Gives: bats-support, bats-assert and bats-file; REPO_ROOT; skips that say why
# (`require_slurm`, `require_apptainer`, `require_root`); Slurm job helpers that keep tests
# bounded and leave no job behind (`sbatch_track` + `cancel_tracked_jobs` in teardown,
# `slurm_job_field`, `slurm_wait_job`).
#
# MLEBENCH_REQUIRE_SLURM=1 / MLEBENCH_REQUIRE_APPTAINER=1 (set by tests/run_all.sh after it
# brought the cluster up as root) turn those skips into failures: CI must run these tests.

# Debian installs the libraries under /usr/lib/bats; the npm fallback of run_all.sh sets its own.
export BATS_LIB_PATH=${BATS_LIB_PATH:-/usr/lib/bats:/usr/local/lib/bats}
bats_load_library bats-support
bats_load_library bats-assert
bats_load_library bats-file

REPO_ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
export REPO_ROOT

# _unavailable WHAT REQUIRE_VAR REASON: skip with REASON, or fail when REQUIRE_VAR=1.
_unavailable() {
    if [[ ${!2:-0} == 1 ]]; then
        echo "$1 required ($2=1) but unavailable: $3" >&2
        return 1
    fi
    skip "$3"
}

require_slurm() {
    command -v sbatch >/dev/null ||
        _unavailable Slurm MLEBENCH_REQUIRE_SLURM "no Slurm: sbatch not on PATH (as root: make cluster-up)"
    # sinfo without a controller retries for seconds: probe once per bats run, not per test.
    local probe=${BATS_RUN_TMPDIR:-$BATS_TMPDIR}/.mlebench_sinfo_probe
    if [[ ! -f $probe ]]; then
        if timeout 10 sinfo -h -o '%P' >/dev/null 2>&1; then echo ok >"$probe"; else echo no >"$probe"; fi
    fi
    [[ $(<"$probe") == ok ]] ||
        _unavailable Slurm MLEBENCH_REQUIRE_SLURM \
            "no Slurm: sinfo cannot reach a controller (as root: make cluster-up)"
}

require_apptainer() {
    command -v apptainer >/dev/null ||
        _unavailable Apptainer MLEBENCH_REQUIRE_APPTAINER \
            "no Apptainer: apptainer not on PATH (as root: make cluster-up)"
    timeout 30 apptainer version >/dev/null 2>&1 ||
        _unavailable Apptainer MLEBENCH_REQUIRE_APPTAINER "no Apptainer: 'apptainer version' fails"
}

require_root() {
    [[ $(id -u) == 0 ]] || skip "needs root"
}

# sbatch_track SBATCH_ARGS...: submit with --parsable, print the job id, remember it for
# cancel_tracked_jobs. Use `timeout` around --wait submissions so a stuck job cannot hang CI.
sbatch_track() {
    local out id
    out=$(sbatch --parsable "$@") || return
    id=${out%%;*}
    echo "$id" >>"$BATS_TEST_TMPDIR/.slurm_jobs"
    echo "$id"
}

# cancel_tracked_jobs: teardown helper; cancels whatever sbatch_track submitted in this test.
cancel_tracked_jobs() {
    local ids
    [[ -s $BATS_TEST_TMPDIR/.slurm_jobs ]] || return 0
    mapfile -t ids <"$BATS_TEST_TMPDIR/.slurm_jobs"
    scancel "${ids[@]}" 2>/dev/null || true
}

# slurm_job_field JOBID FIELD: a field of `scontrol show job` (first component of a hetjob),
# e.g. JobState, ExitCode, NodeList. Finished jobs stay visible for MinJobAge (600 s here).
slurm_job_field() {
    scontrol -o show job "$1" 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# slurm_wait_job JOBID [SECONDS]: wait until the job has ended; print its final state.
# Fails (after printing the last state) when it is still not over after SECONDS (default 120).
slurm_wait_job() {
    local id=$1 secs=${2:-120} state deadline
    deadline=$((SECONDS + secs))
    while :; do
        state=$(slurm_job_field "$id" JobState)
        case $state in
            PENDING | RUNNING | CONFIGURING | COMPLETING | SUSPENDED | REQUEUED | RESIZING | "") ;;
            *) echo "$state"; return 0 ;;
        esac
        if ((SECONDS >= deadline)); then
            echo "${state:-UNKNOWN}"
            echo "job $id not finished after ${secs}s (state ${state:-unknown})" >&2
            return 1
        fi
        sleep 0.5
    done
}

# wait_job JOBID [SECONDS]: until the job leaves the queue (bounded, default 180 s);
# job_state JOBID: its state from scontrol afterwards (Slurm keeps ended jobs for MinJobAge).
wait_job() {
    local id=$1 limit=${2:-180} start=$SECONDS
    while squeue -h -j "$id" 2>/dev/null | grep -q .; do
        (( SECONDS - start < limit )) || { echo "job $id still queued after ${limit}s" >&2; return 1; }
        sleep 1
    done
}

job_state() { scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n1 | cut -d= -f2; }

# ---------------------------------------------------------------- the user's seat
# An ordinary account for what users do (root only plays the site admin: it makes the account).
# Root's checkout and venv are not readable by it (a venv under /root, a clone in a private dir),
# so user_checkout gives it its own copy of this working tree with its own `make install`.
TEST_USER=${MH_TEST_AGENT_USER:-mhagent}
export TEST_USER

# require_test_user: as root, make the account (once); otherwise the test user is ourselves.
require_test_user() {
    if (( EUID == 0 )); then
        id "$TEST_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$TEST_USER" || return 1
    else
        TEST_USER=$(id -un)
    fi
    TEST_USER_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
    export TEST_USER TEST_USER_HOME
}

# as_test_user CMD...: CMD as the test user, with a login-like environment (never root's).
# Extra variables: MH_USER_ENV=(VAR=value ...) array in the caller.
as_test_user() {
    local envs=(PATH=/usr/local/bin:/usr/bin:/bin HOME="$TEST_USER_HOME" USER="$TEST_USER"
        LOGNAME="$TEST_USER" LANG=C.UTF-8 "${MH_USER_ENV[@]}")
    if (( EUID == 0 )); then
        runuser -u "$TEST_USER" -- env -i "${envs[@]}" "$@"
    else
        env -i "${envs[@]}" "$@"
    fi
}

# user_checkout: print the test user's copy of this working tree (tracked and new files), with
# `make install` run by the user. Made again only when the tree's content changed.
user_checkout() {
    if (( EUID != 0 )); then echo "$REPO_ROOT"; return 0; fi
    # one copy per working tree (git worktrees side by side must not share one)
    local dest stamp
    dest=$TEST_USER_HOME/mlebench-hpc-test-$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-8)
    stamp=$(cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)
    if [[ ! -f $dest/.test-stamp || $(<"$dest/.test-stamp") != "$stamp" || ! -x $dest/.venv/bin/mlebench-hpc ]]; then
        rm -rf "$dest.new"
        mkdir -p "$dest.new"
        (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
            | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$dest.new"
        [[ -d $dest/.venv ]] && mv "$dest/.venv" "$dest.new/.venv"  # keep the installed packages
        rm -rf "$dest"
        mv "$dest.new" "$dest"
        chown -R "$TEST_USER:" "$dest"
        as_test_user make -C "$dest" install >&2 || return 1
        echo "$stamp" >"$dest/.test-stamp"
    fi
    echo "$dest"
}

# user_seat NAME: a test user's seat for a setup_file: DIR (the user's checkout) and UCLI (its CLI),
# T=/tmp/mh-NAME.XXXXXX (recorded in $BATS_FILE_TMPDIR/tdir for teardown_file) with the test
# images linked into T/images, T/cfg and T/out owned by the user, the demo data in T/data, and
# EXTRA_FLAGS (--unsquash where the user cannot use FUSE).
user_seat() {
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images} s
    export DIR UCLI T EXTRA_FLAGS=""
    DIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    UCLI=$DIR/.venv/bin/mlebench-hpc
    [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]] ||
        _unavailable "images" MLEBENCH_REQUIRE_APPTAINER "images missing in $images: run make sif"
    T=$(mktemp -d "/tmp/mh-$1.XXXXXX")
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    chmod 755 "$T"
    mkdir -p "$T/images" "$T/cfg" "$T/out"
    for s in mlebench-grading.sif agent-dummy.sif; do
        ln -f "$images/$s" "$T/images/$s" 2>/dev/null || cp "$images/$s" "$T/images/$s"
    done
    chmod 644 "$T"/images/*.sif
    if (( EUID == 0 )); then chown "$TEST_USER:" "$T" "$T/cfg" "$T/out"; fi
    as_test_user "$UCLI" prepare-demo --data-dir "$T/data" >/dev/null
    as_test_user test -r /dev/fuse -a -w /dev/fuse || EXTRA_FLAGS="--unsquash"
}

# user_seat_teardown: for teardown_file after user_seat: cancel the jobs listed in T/jobs, remove T.
user_seat_teardown() {
    local t
    t=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    [[ -f $t/jobs ]] && xargs -r scancel <"$t/jobs" 2>/dev/null
    [[ $t == /tmp/mh-*.* ]] && rm -rf "$t"
    return 0
}

# user_config NAME [LINE...]: the user's config T/cfg/NAME.env on the seat's data and images, run
# group NAME, a 600 s budget, then each LINE (e.g. GRADING_VALIDATE_WORKERS=2), owned by the user.
user_config() {
    local name=$1
    shift
    {
        printf '%s\n' "DATA_DIR=\"$T/data\"" "GRADING_SIF=\"$T/images/mlebench-grading.sif\"" \
            "AGENT_SIF=\"$T/images/agent-dummy.sif\"" "OUTPUT_BASE=\"$T/runs\"" "RUN_GROUP=\"$name\"" \
            "TIME_LIMIT_SECS=600" "TIME_MARGIN_SECS=10" "APPTAINER_EXTRA_FLAGS=\"$EXTRA_FLAGS\""
        (($# == 0)) || printf '%s\n' "$@"
    } >"$T/cfg/$name.env"
    if (( EUID == 0 )); then chown "$TEST_USER:" "$T/cfg/$name.env"; fi
}

# ---------------------------------------------------------------- agent variants for tests
# probe_agents DIR: an AGENTS_DIR for a test (readable by the test user): this checkout's agents,
# to which probe_variant adds variants. Prints DIR.
probe_agents() {
    mkdir -p "$1"
    cp -r "$REPO_ROOT/agents/." "$1/"
    chmod -R a+rX "$1"
    echo "$1"
}

# probe_variant DIR ID CMD: a variant ID of the dummy agent (DIR/dummy/config.yaml) that runs CMD
# instead (`bash /home/agent/start.sh --run CMD`, an argparse kwarg), in the dummy image: the tests'
# attack and fault agents go through the same variant code path as every agent.
probe_variant() {
    python3 - "$1/dummy/config.yaml" "$2" "$3" <<'PY'
import json, sys
path, vid, cmd = sys.argv[1:]
with open(path, "a") as f:
    f.write(f"\n{json.dumps(vid)}:\n  start: dummy/start.sh\n  dockerfile: dummy/Dockerfile\n"
            f"  kwargs_type: argparse\n  kwargs:\n    run: {json.dumps(cmd)}\n")
PY
}

# probe_lines DIR ID CMD: probe_variant, then the two config lines that select it.
probe_lines() {
    probe_variant "$1" "$2" "$3"
    printf 'AGENTS_DIR="%s"\nAGENT_ID="%s"\n' "$1" "$2"
}
