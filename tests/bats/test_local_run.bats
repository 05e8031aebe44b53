#!/usr/bin/env bats
# The same sbatch scripts without Slurm (`bash scripts_hpc/slurm_hetjob.sh C`): the code path of
# `make demo` on a laptop. Runs with and without containers; leaves no process behind.

load helpers

setup_file() {
    export CLI=$REPO_ROOT/.venv/bin/mlebench-hpc T=$BATS_FILE_TMPDIR
    "$CLI" prepare-demo --data-dir "$T/data" >"$T/comps"
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    cat >"$T/config.env" <<EOF2
DATA_DIR="$T/data"
GRADING_SIF="$images/mlebench-grading.sif"
AGENT_SIF="$images/agent-dummy.sif"
OUTPUT_BASE="$T/runs"
TIME_LIMIT_SECS=120
EOF2
    export MLEBENCH_HPC_CONFIG=$T/config.env
}

# run the hetjob script locally with RUNTIME; check the run and that nothing is left running
local_run() {
    local comp
    comp=$(head -n1 "$T/comps")
    # no Slurm variables: this is the no-cluster path even inside a CI job
    run env -u SLURM_JOB_ID -u SLURM_HET_SIZE MLEBENCH_HPC_RUNTIME="$1" \
        bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$comp"
    assert_success
    run_dir=$(printf '%s\n' "$output" | sed -n 's/^MLEBENCH_RUN_DIR=//p' | tail -n1)
    [ -f "$run_dir/submission/submission.csv" ]
    assert_output --partial "verdict=valid"
    run grep -rl 'localhost:5000' "$run_dir/overlay"
    assert_failure
    sleep 1
    run pgrep -f "$T/"
    assert_failure
}

@test "hetjob script without Slurm and without containers: valid submission, loud warning, no leftovers" {
    local_run none
    run_dir=$(find "$T"/runs/default -maxdepth 1 -name '*_local-*' | sort | tail -n1)
    grep -q . "$run_dir/submission/submission.csv"
}

@test "hetjob script without Slurm, with Apptainer: valid submission, no leftovers" {
    require_apptainer
    [[ -f $HOME/.cache/mlebench-hpc/images/agent-dummy.sif ]] \
        || _unavailable "the images" MLEBENCH_REQUIRE_APPTAINER "images not built (make sif)"
    local_run apptainer
}

@test "no-container runs warn that isolation is off" {
    comp=$(head -n1 "$T/comps")
    run env -u SLURM_JOB_ID -u SLURM_HET_SIZE MLEBENCH_HPC_RUNTIME=none \
        bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$comp"
    assert_success
    assert_output --partial "isolation is OFF"
}

@test "a requeued run continues its budget: earlier attempts' agent time is subtracted, none left = not started" {
    comp=$(head -n1 "$T/comps")
    run_dir=$T/runs/default/${comp}_requeued1
    mkdir -p "$run_dir"
    echo '{"competition_id": "'"$comp"'", "agent_secs_used": 100}' >"$run_dir/metadata.json"
    run env -u SLURM_JOB_ID -u SLURM_HET_SIZE MH_JOB_ID=requeued1 MLEBENCH_HPC_RUNTIME=none \
        bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$comp"
    assert_success
    assert_output --partial "earlier attempts used 100s of the 120s budget"
    assert_output --partial "TIME_LIMIT_SECS=20"
    used=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['agent_secs_used'])" "$run_dir/metadata.json")
    [ "$used" -ge 100 ] && [ "$used" -le 110 ]

    run_dir=$T/runs/default/${comp}_requeued2
    mkdir -p "$run_dir"
    echo '{"competition_id": "'"$comp"'", "agent_secs_used": 120}' >"$run_dir/metadata.json"
    run env -u SLURM_JOB_ID -u SLURM_HET_SIZE MH_JOB_ID=requeued2 MLEBENCH_HPC_RUNTIME=none \
        bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$comp"
    [ "$status" -eq 124 ]
    assert_output --partial "budget of 120s is used up"
    [ ! -e "$run_dir/submission/submission.csv" ]
}
