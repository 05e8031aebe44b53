#!/usr/bin/env bats
# Sanity of the Slurm cluster the other tests run on (as root: `make cluster-up`). Every client
# runs without SLURM_CONF, as a user's shell would: the /etc/slurm link must be enough.

load helpers

setup() {
    require_slurm
    unset SLURM_CONF
}

teardown() {
    cancel_tracked_jobs
}

@test "sinfo: partition debug has the two nodes, idle when no job runs" {
    local deadline=$((SECONDS + 30)) states
    while :; do
        run sinfo -h -N -p debug -o '%N %T'
        assert_success
        states=$(sort -u <<<"$output")
        # Idle is the goal; other tests' jobs may still be completing, so wait for them a little.
        [[ $(grep -c ' idle$' <<<"$states") == 2 ]] && break
        ((SECONDS < deadline)) || break
        sleep 1
    done
    # Exactly two node names, resolving to this host.
    run awk '{ print $1 }' <<<"$states"
    assert_equal "$(wc -l <<<"$output")" 2
    assert_line "$(hostname -s)"
    assert_line localhost
    if [[ -z $(squeue -h -o '%A') ]]; then
        run grep -c ' idle$' <<<"$states"
        assert_output 2
    else
        # A shared development cluster may be busy: nodes must still be up, not down or drained.
        run grep -Evc ' (idle|mixed|allocated|completing)$' <<<"$states"
        assert_output 0
    fi
}

@test "sbatch: a trivial job runs and its exit code comes back" {
    local out=$BATS_TEST_TMPDIR/ok.out id
    # shellcheck disable=SC2016 # expanded by the job, not here
    id=$(sbatch_track -t 2 -o "$out" --wrap 'echo "hello $SLURM_JOB_ID from $SLURMD_NODENAME"')
    run slurm_wait_job "$id" 60
    assert_success
    assert_output COMPLETED
    assert_equal "$(slurm_job_field "$id" ExitCode)" "0:0"
    run cat "$out"
    assert_output --regexp "^hello $id from ($(hostname -s)|localhost)\$"

    # A failing job is reported as failed, with its exit code (the hetjob relies on this).
    run timeout 60 sbatch --wait -t 2 -o /dev/null --wrap 'exit 3'
    assert_failure 3
    id=$(grep -o '[0-9]\+' <<<"$output" | head -n 1)
    echo "$id" >>"$BATS_TEST_TMPDIR/.slurm_jobs"
    assert_equal "$(slurm_job_field "$id" JobState)" FAILED
    assert_equal "$(slurm_job_field "$id" ExitCode)" "3:0"
}

@test "hetjob: both components start, on different nodes, the gpu one with a gres" {
    local script=$BATS_TEST_TMPDIR/het.sh out=$BATS_TEST_TMPDIR/het.out id
    cat >"$script" <<'EOF'
#!/bin/bash
#SBATCH --time=2
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH hetjob
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --gres=gpu:1
srun --het-group=0 bash -c 'echo "component 0 node $SLURMD_NODENAME"'
srun --het-group=1 bash -c 'echo "component 1 node $SLURMD_NODENAME gpus ${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-none}}"'
EOF
    id=$(sbatch_track -o "$out" "$script")
    run slurm_wait_job "$id" 90
    assert_success
    assert_output COMPLETED
    run cat "$out"
    assert_line --regexp '^component 0 node [^ ]+$'
    assert_line --regexp '^component 1 node [^ ]+ gpus [0-9]+$'
    local node0 node1
    node0=$(sed -n 's/^component 0 node \([^ ]*\).*/\1/p' "$out")
    node1=$(sed -n 's/^component 1 node \([^ ]*\).*/\1/p' "$out")
    [[ -n $node0 && -n $node1 ]]
    assert_not_equal "$node0" "$node1"
    # scontrol sees the two components of one job.
    run scontrol -o show job "$id"
    assert_success
    assert_equal "$(grep -c 'HetJobOffset=' <<<"$output")" 2
}

@test "the site's registry holds exactly 127.0.0.1:5000/mlebench-hpc/base:bookworm; registry_up.sh again changes nothing" {
    require_root
    # shellcheck disable=SC2016 # python code
    run "$REPO_ROOT/.venv/bin/python" -c '
import requests
r = "http://127.0.0.1:5000/v2"
print(requests.get(f"{r}/_catalog", timeout=10).json()["repositories"],
      requests.get(f"{r}/mlebench-hpc/base/tags/list", timeout=10).json()["tags"])'
    [[ $status == 0 ]] || _unavailable "the site registry" MLEBENCH_REQUIRE_SLURM "nothing on 127.0.0.1:5000 (as root: make cluster-up)"
    assert_output "['mlebench-hpc/base'] ['bookworm']"
    run bash "$REPO_ROOT/scripts_hpc/provision/registry_up.sh"
    assert_success
    assert_output --partial "127.0.0.1:5000/mlebench-hpc/base:bookworm is up to date"
    assert_line "BASE_IMAGE=127.0.0.1:5000/mlebench-hpc/base:bookworm"
    # ordinary users get no Docker: the daemon's socket is root's and the docker group's
    assert_equal "$(stat -c '%U:%G %a' "${MLEBENCH_DOCKER_SOCKET:-/var/run/docker.sock}")" "root:docker 660"
}
