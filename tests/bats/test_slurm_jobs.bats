#!/usr/bin/env bats
# The real sbatch scripts on the real local Slurm (make cluster-up), with real Apptainer images
# when they exist. Nothing here is faked: jobs are submitted with sbatch and inspected with
# squeue/scontrol, the agent validates over HTTP against the real grading server.

load helpers

setup_file() {
    require_slurm
    export ROOT=$BATS_TEST_DIRNAME/../..
    ROOT=$(cd "$ROOT" && pwd)
    export CLI=$ROOT/.venv/bin/mlebench-hpc
    export T=$BATS_FILE_TMPDIR
    "$CLI" prepare-demo --data-dir "$T/data" >"$T/comps"
    export COMP
    COMP=$(head -n1 "$T/comps")
    export OTHER
    OTHER=$(sed -n 2p "$T/comps")
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    if command -v apptainer >/dev/null && [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]]; then
        export MLEBENCH_HPC_RUNTIME=apptainer
    else
        export MLEBENCH_HPC_RUNTIME=none
    fi
    cat >"$T/config.env" <<EOF
DATA_DIR="$T/data"
GRADING_SIF="$images/mlebench-grading.sif"
AGENT_SIF="$images/agent-dummy.sif"
OUTPUT_BASE="$T/runs"
RUN_GROUP="bats"
TIME_LIMIT_SECS=300
TIME_MARGIN_SECS=10
EOF
    # A slow agent: writes a partial submission and a log, then works "forever".
    sed 's|^RUN_GROUP=.*|RUN_GROUP="slow"|' "$T/config.env" >"$T/slow.env"
    probe_agents "$T/agents" >/dev/null
    probe_lines "$T/agents" probe/slow 'cp /home/data/sample_submission.csv /home/submission/submission.csv && echo partial > /home/logs/partial.log && sleep 600' >>"$T/slow.env"
    export MLEBENCH_HPC_CONFIG=$T/config.env
}

teardown_file() {
    # leave no job of ours behind
    local ids
    mapfile -t ids < <(squeue -h -o '%i %k' 2>/dev/null | awk -v t="$BATS_FILE_TMPDIR" 'index($0, t) {print $1}' || true)
    (( ${#ids[@]} == 0 )) || scancel "${ids[@]}" 2>/dev/null || true
}

# sbatch from the checkout, output into the test dir; prints the job id
submit() {
    local out=$1; shift
    (cd "$ROOT" && sbatch --parsable --output="$out" --comment="$T" "$@") | cut -d';' -f1
}

wait_url() {
    local comp=$1 id=$2 start=$SECONDS
    until [[ -s $T/runs/.state/${comp}_$id/url ]]; do
        (( SECONDS - start < 120 )) || { cat "$T/grade-$id.out" >&2; return 1; }
        sleep 0.5
    done
    cat "$T/runs/.state/${comp}_$id/url"
}

@test "grading + agent pair with auto:JOBID ends with a valid submission graded" {
    g=$(submit "$T/grade-%j.out" scripts_hpc/slurm_grading_server.sh "$COMP")
    a=$(submit "$T/agent-%j.out" scripts_hpc/slurm_agent.sh "$COMP" "auto:$g")
    wait_job "$a" 240
    run cat "$T/agent-$a.out"
    [[ $(job_state "$a") == COMPLETED ]] || { echo "$output"; false; }
    assert_output --partial "make -C"
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/agent-$a.out" | tail -n1)
    [ -f "$run_dir/submission/submission.csv" ]
    run grep -c 'POST /validate' "$T/grade-$g.out"
    [ "$output" -ge 1 ]
    # overlays rewrote every localhost:5000 and the agent validated against the real URL
    url=$(cat "$T/runs/.state/${COMP}_$g/url")
    run grep -rl 'localhost:5000' "$run_dir/overlay"
    assert_failure
    run grep -rl "$url" "$run_dir/overlay"
    assert_success
    run "$CLI" grade "$run_dir" --data-dir "$T/data"
    assert_success
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1])); c=r['competition_reports'][0]; print(c['valid_submission'], r['total_valid_submissions'])" "$run_dir/grading_report.json"
    assert_output "True 1"
    scancel "$g"
    wait_job "$g" 60
    [ ! -e "$T/runs/.state/${COMP}_$g/url" ]
}

@test "hetjob: components on different nodes, agent validates, server stopped, exit code is the agent's" {
    j=$(submit "$T/het-%j.out" scripts_hpc/slurm_hetjob.sh "$COMP")
    wait_job "$j" 240
    cat "$T/het-$j.out"
    [[ $(job_state "$j") == COMPLETED ]]
    n0=$(scontrol show job -o "${j}+0" | grep -o ' NodeList=[^ ]*' | cut -d= -f2)
    n1=$(scontrol show job -o "${j}+1" | grep -o ' NodeList=[^ ]*' | cut -d= -f2)
    [ -n "$n0" ] && [ -n "$n1" ] && [ "$n0" != "$n1" ]
    # and the steps really ran there: the server on component 0's node, the agent on component 1's
    grep -q "grading server for $COMP (job $j, runtime [a-z]*) on node $n0" "$T/het-$j.out"
    run grep -c 'POST /validate' "$T/het-$j.out"
    [ "$output" -ge 1 ]
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/het-$j.out" | tail -n1)
    [ -f "$run_dir/submission/submission.csv" ]
    run grep -rl 'localhost:5000' "$run_dir/overlay"
    assert_failure
    run python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['exit_code'], m['status'], m['agent_node'])" "$run_dir/metadata.json"
    assert_output "0 finished $n1"
    [ ! -e "$T/runs/.state/${COMP}_$j/url" ]
    # A normal end prints no line with "error" (users grep job outputs for it): the server's step
    # was asked to stop and ended with exit code 0, without Slurm's CANCELLED line.
    run grep -in error "$T/het-$j.out"
    assert_failure
    grep -q 'grading server stopped on request' "$T/het-$j.out"
    grep -q 'grading server step ended (exit code 0)' "$T/het-$j.out"
}

@test "hetjob whose grading server dies during the run: the job output says so with error lines" {
    sed 's|^RUN_GROUP=.*|RUN_GROUP="dies"|' "$T/config.env" >"$T/dies.env"
    probe_lines "$T/agents" probe/dies 'sleep 20' >>"$T/dies.env"
    j=$(MLEBENCH_HPC_CONFIG=$T/dies.env submit "$T/het-%j.out" --export=ALL,MLEBENCH_HPC_CONFIG="$T/dies.env" scripts_hpc/slurm_hetjob.sh "$COMP")
    wait_url "$COMP" "$j" >/dev/null
    # kill it once the agent runs: a server dead before that is readiness's case (it waits out its
    # bound), not a death during the run
    local t=$SECONDS
    until grep -q 'starting the agent' "$T/het-$j.out" 2>/dev/null; do
        (( SECONDS - t < 120 )) || { cat "$T/het-$j.out"; false; }
        sleep 0.5
    done
    # The server process of this job's step 0 (this test started it: a descendant of the step's
    # task, whose environment names the job and step; not one of its validation workers, whose
    # parents are python3 too), killed as a crash would.
    local server="" p task="" start=$SECONDS
    until [[ -n $server ]]; do
        (( SECONDS - start < 60 )) || { cat "$T/het-$j.out"; false; }
        for p in $(pgrep -f slurm_grading_server.sh); do
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$j" || continue
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_STEP_ID=0" && task=$p
        done
        if [[ -n $task ]]; then
            for p in $(ps -e -o pid= -o ppid= | awk -v t="$task" '{k[$2] = k[$2] " " $1} END {
                    todo = t; while (todo != "") { split(todo, a, " "); todo = ""
                        for (i in a) { print a[i]; todo = todo " " k[a[i]] } } }'); do
                [[ $(cat "/proc/$p/comm" 2>/dev/null) == python3* ]] || continue
                [[ $(cat "/proc/$(ps -o ppid= -p "$p" | tr -d ' ')/comm" 2>/dev/null) == python3* ]] || server=$p
            done
        fi
        sleep 0.5
    done
    kill -KILL "$server"
    wait_job "$j" 120
    cat "$T/het-$j.out"
    grep -q 'grading server exited with code 137' "$T/het-$j.out"
    grep -qE '^srun: error: .*Exited with exit code 137' "$T/het-$j.out"
    grep -q 'ERROR: the grading server exited during the run with code 137' "$T/het-$j.out"
}

@test "scancel mid-run: server stopped, partial submission and logs kept" {
    j=$(MLEBENCH_HPC_CONFIG=$T/slow.env submit "$T/het-%j.out" --export=ALL,MLEBENCH_HPC_CONFIG="$T/slow.env" scripts_hpc/slurm_hetjob.sh "$COMP")
    run_dir=$T/runs/slow/${COMP}_$j
    start=$SECONDS
    until [[ -f $run_dir/logs/partial.log ]]; do
        (( SECONDS - start < 180 )) || { cat "$T/het-$j.out"; false; }
        sleep 1
    done
    scancel "$j"
    wait_job "$j" 60
    [ -f "$run_dir/submission/submission.csv" ]
    [ -f "$run_dir/logs/partial.log" ]
    run python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['status'])" "$run_dir/metadata.json"
    assert_output "cancelled"
    # no grading server of this job left anywhere
    [ ! -e "$T/runs/.state/${COMP}_$j/url" ]
    run pgrep -f "run_grading_server.py.*$T"
    assert_failure
}

@test "grading server killed: the agent job fails fast with a clear message" {
    g=$(submit "$T/grade-%j.out" scripts_hpc/slurm_grading_server.sh "$COMP")
    wait_url "$COMP" "$g" >/dev/null
    scancel "$g"
    wait_job "$g" 60
    start=$SECONDS
    a=$(submit "$T/agent-%j.out" scripts_hpc/slurm_agent.sh "$COMP" "auto:$g")
    wait_job "$a" 90
    (( SECONDS - start < 60 ))
    [[ $(job_state "$a") == FAILED ]]
    run cat "$T/agent-$a.out"
    assert_output --partial "$g"
    assert_output --regexp "CANCELLED|ended"
}

@test "auto: with a nonexistent job fails at once with one line" {
    run "$ROOT/scripts_hpc/slurm_agent.sh" "$COMP" auto:99999999
    assert_failure
    assert_output --partial "99999999"
    [ "${#lines[@]}" -le 3 ]
}

@test "auto: with a finished job and with a job of another competition both fail clearly" {
    f=$(cd "$ROOT" && sbatch --parsable --output=/dev/null --wrap true)
    wait_job "$f" 60
    run "$ROOT/scripts_hpc/slurm_agent.sh" "$COMP" "auto:$f"
    assert_failure
    assert_output --partial "$f"
    g=$(submit "$T/grade-%j.out" scripts_hpc/slurm_grading_server.sh "$OTHER")
    wait_url "$OTHER" "$g" >/dev/null
    run "$ROOT/scripts_hpc/slurm_agent.sh" "$COMP" "auto:$g"
    scancel "$g"
    assert_failure
    assert_output --partial "$OTHER"
}

@test "two grading servers on one node at once: distinct ports, both healthy" {
    g1=$(submit "$T/grade-%j.out" --nodelist="$(hostname -s)" scripts_hpc/slurm_grading_server.sh "$COMP")
    g2=$(submit "$T/grade-%j.out" --nodelist="$(hostname -s)" scripts_hpc/slurm_grading_server.sh "$COMP")
    u1=$(wait_url "$COMP" "$g1")
    u2=$(wait_url "$COMP" "$g2")
    scancel "$g1" "$g2" || true
    [ "$u1" != "$u2" ]
    [ "${u1##*:}" != "${u2##*:}" ]
}

@test "config errors: unknown key, missing image, unprepared competition, each one line, exit 2" {
    printf 'DATA_DIR="%s"\nOUTPUT_BASE="%s"\nNOT_A_KEY=1\n' "$T/data" "$T/runs" >"$T/bad.env"
    MLEBENCH_HPC_CONFIG=$T/bad.env run bash "$ROOT/scripts_hpc/slurm_grading_server.sh" "$COMP"
    [ "$status" -eq 2 ]
    assert_output --partial "unknown key NOT_A_KEY"
    printf 'DATA_DIR="%s"\nOUTPUT_BASE="%s"\nGRADING_SIF="%s"\n' "$T/data" "$T/runs" "$T/nope.sif" >"$T/bad2.env"
    MLEBENCH_HPC_RUNTIME=apptainer MLEBENCH_HPC_CONFIG=$T/bad2.env run bash "$ROOT/scripts_hpc/slurm_grading_server.sh" "$COMP"
    if command -v apptainer >/dev/null; then
        [ "$status" -eq 2 ]
        assert_output --partial "make sif"
    fi
    run bash "$ROOT/scripts_hpc/slurm_grading_server.sh" not-a-prepared-competition
    [ "$status" -eq 2 ]
    assert_output --partial "not prepared"
}
