#!/usr/bin/env bats
# The cost of a run as Slurm allocated it, recorded by the job's own scripts at its end, on the
# real local Slurm, by an ordinary user, in the real images: a hetjob with a GPU (the test
# cluster's fake gpu:1 gres) on the agent's component, a hetjob cancelled mid-run, and a small
# sweep watched with `status --watch` until it ends. Jobs are submitted together in setup_file.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

COMP=demo-diabetes

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    user_seat cost
    probe_agents "$T/agents" >/dev/null

    config gpu ""
    config slow 'cp /home/data/sample_submission.csv /home/submission/submission.csv && sleep 600'
    config sweep ""
    # The agent's component asks for the cluster's GPU: Slurm allocates it, apptainer gets --nv.
    user_hetjob gpu --gres=gpu:1
    user_hetjob slow --gres=none
    printf '%s\n' "$COMP" >"$T/cfg/sweep.list"
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/sweep.env") out
    out=$(cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/sweep.list" \
        --seeds 2 --max-parallel 1 --group sweep -- --gres=none --cpus-per-task=1 --mem=1G --time=10) || {
        echo "$out" >&2
        return 1
    }
    sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out" | tee "$T/sweep.job" >>"$T/jobs"
}

teardown_file() { user_seat_teardown; }

# config NAME CMD: the user's config for NAME (CMD: a probe variant of the dummy agent, or its own start)
config() {
    user_config "$1"
    [[ -z $2 ]] || probe_lines "$T/agents" "probe/$1" "$2" >>"$T/cfg/$1.env"
}

# user_hetjob NAME AGENT_GRES: sbatch slurm_hetjob.sh as the user; job id in $T/NAME.job
user_hetjob() {
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$1.env") id
    id=$(cd "$T" && as_test_user sbatch --parsable --output="$T/out/$1.out" --time=10 --mem=1G --cpus-per-task=1 \
        : --time=10 "$2" --cpus-per-task=2 --mem=1G "$DIR/scripts_hpc/slurm_hetjob.sh" "$COMP") || return 1
    echo "${id%%;*}" >"$T/$1.job"
    echo "${id%%;*}" >>"$T/jobs"
}

# The site keeps Slurm accounting (make cluster-up provisions slurmdbd unless MLEBENCH_SLURM_ACCOUNTING=0).
accounting() { [[ $(scontrol show config | sed -n 's/^AccountingStorageType *= *//p') != accounting_storage/none ]]; }

run_of() { echo "$T/runs/$1/${COMP}_$(cat "$T/$1.job")"; }

# py RUN EXPR: print EXPR over m (RUN's metadata.json)
py() { python3 -c "import json, sys; m = json.load(open(sys.argv[1] + '/metadata.json')); print($2)" "$1"; }

@test "status --watch redraws plain lines while the sweep runs and ends with it, exit 0" {
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/sweep.env") start=$SECONDS
    # while the first task runs (one at a time), status counts it from Slurm's allocation so far
    until as_test_user "$UCLI" status "$T/runs/sweep" >"$T/status.out" && grep -q ' 1 running from Slurm)' "$T/status.out"; do
        (( SECONDS - start < 120 )) || { cat "$T/status.out"; false; }
        sleep 0.5
    done
    grep -E '^cost so far: CPU-hours [0-9.]+, GPU-hours 0.000 \([0-9]+ runs? recorded at their end, 1 running from Slurm\)$' "$T/status.out"
    run -0 as_test_user timeout 300 "$UCLI" status --watch --interval 1 "$T/runs/sweep"
    echo "$output"
    # not a terminal: no progress bar, no carriage return; one stamped line per draw
    [[ $output != *$'\r'* && $output != *'[#'* ]]
    assert_line --index 0 --regexp '^\[[0-9]{2}:[0-9]{2}:[0-9]{2}\] 2 pairs: .*; elapsed [0-9]+:[0-9]{2}:[0-9]{2}, GPU-hours [0-9.]+$'
    assert_line "sweep ended:"
    assert_line "2 pairs: 2 finished"
    assert_line --partial "cost so far: CPU-hours"
    # it drew while the sweep was still running, and stopped only when it had ended
    grep -qE '^\[.*(pending|running)' <<<"$output"
    [[ $(grep -E '^\[' <<<"$output" | tail -n1) == *"2 pairs: 2 finished;"* ]]
    run -0 as_test_user "$UCLI" status "$T/runs/sweep"
    assert_line --partial "(2 runs recorded at their end, 0 running from Slurm)"
    # each task's own allocation, recorded at its end: one component (server and agent together)
    for r in "$T"/runs/sweep/"${COMP}"_*; do
        run -0 py "$r" "m['cost']['source'], [c['name'] for c in m['cost']['components']], m['cost']['components'][0]['with'], m['cost']['gpu_hours']"
        assert_output "allocation ['agent'] ['grading'] 0.0"
    done
}

@test "a hetjob with a GPU on the agent's component records its cost at its end: GPU-hours = GPUs x elapsed" {
    id=$(cat "$T/gpu.job")
    wait_job "$id" 240
    run=$(run_of gpu)
    run -0 py "$run" "m['status'], '--nv' in m['apptainer_flags']"
    assert_output "finished True"   # apptainer runs with --nv on a node without a real GPU
    run -0 py "$run" "m['cost']['source'], m['cost']['slurm_job_id'], m['cost']['hardware']"
    assert_output "allocation $id {'cpus': 2, 'gpu_type': None, 'gpus': 1, 'mem_mb': 1024.0, 'nodes': ['$(slurm_job_field "$id+1" NodeList)']}"
    # the figures against Slurm's own record of the job (kept MinJobAge after its end)
    runtime=$(slurm_job_field "$id+1" RunTime)
    python3 - "$run/metadata.json" "$runtime" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cost"]
h, m, s = (int(x) for x in sys.argv[2].split(":"))
grading, agent = c["components"]
assert (grading["name"], grading["gpus"], agent["name"], agent["gpus"]) == ("grading", 0, "agent", 1), c
assert abs(agent["elapsed_s"] - (h * 3600 + m * 60 + s)) <= 2, (agent, sys.argv[2])
assert abs(c["gpu_hours"] - 1 * agent["elapsed_s"] / 3600) < 1e-9, c
assert abs(c["cpu_hours"] - (1 * grading["elapsed_s"] + 2 * agent["elapsed_s"]) / 3600) < 1e-9, c
# peak memory from each node's job cgroup, read by the job's own scripts
assert grading["peak_mem_mb"] > 1 and agent["peak_mem_mb"] > 1 and c["peak_mem_mb"] == max(grading["peak_mem_mb"], agent["peak_mem_mb"]), c
PY
}

@test "make grade shows the run's cost in its totals and grading_report.json" {
    id=$(cat "$T/gpu.job")
    wait_job "$id" 240
    run=$(run_of gpu)
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/gpu.env")
    run -0 as_test_user make -s -C "$DIR" grade RUN="$run" DATA_DIR="$T/data"
    local source=allocation from="Slurm allocations"
    accounting && source=sacct from="Slurm accounting"
    gpu=$(python3 -c "import json, sys; print('%.3f' % json.load(open(sys.argv[1]))['cost']['gpu_hours'])" "$run/grading_report.json")
    assert_line --regexp "^cost: elapsed 0:[0-9]{2}:[0-9]{2}, CPU-hours [0-9.]+, GPU-hours $gpu, peak memory [0-9]+ MiB \(1 run, from $from\)$"
    run -0 python3 - "$run" "$source" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1] + "/metadata.json"))
rep = json.load(open(sys.argv[1] + "/grading_report.json"))
cost = rep["competition_reports"][0]["cost"]
assert cost["source"] == sys.argv[2] and rep["cost"]["source"] == sys.argv[2], (cost, rep["cost"])
assert sys.argv[2] == "sacct" or cost == meta["cost"]
assert rep["cost"]["gpu_hours"] == cost["gpu_hours"] > 0 and rep["cost"]["runs_with_cost"] == 1
PY
}

@test "where the site keeps Slurm accounting, sacct gives the run the hours its job recorded at its end" {
    accounting || skip "this cluster keeps no Slurm accounting (make cluster-up with MLEBENCH_SLURM_ACCOUNTING=0)"
    id=$(cat "$T/gpu.job")
    wait_job "$id" 240
    run=$(run_of gpu)
    # the ordinary user's own sacct answers for the job's components (AllocTRES with the GPU)
    run -0 as_test_user sacct -j "$id" -X -n --parsable2 --format=JobID,AllocTRES
    assert_line --regexp "^$id\+1\|.*gres/gpu=1"
    run -0 as_test_user "$UCLI" grade "$run" --data-dir "$T/data" --no-summary --no-progress
    python3 - "$run" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1] + "/metadata.json"))["cost"]
acct = json.load(open(sys.argv[1] + "/grading_report.json"))["competition_reports"][0]["cost"]
assert acct["source"] == "sacct" and meta["source"] == "allocation", (acct, meta)
strip = lambda c: [(x["name"], x["cpus"], x["mem_mb"], x["gpus"]) for x in c["components"]]
assert strip(acct) == strip(meta) and acct["hardware"]["gpus"] == meta["hardware"]["gpus"] == 1, (acct, meta)
# the job's record is taken just before it ends: sacct's elapsed may be a few seconds more
assert 0 <= acct["elapsed_s"] - meta["elapsed_s"] <= 5, (acct["elapsed_s"], meta["elapsed_s"])
assert abs(acct["gpu_hours"] - acct["components"][1]["elapsed_s"] / 3600) < 1e-9, acct
assert acct["peak_mem_mb"] and acct["peak_mem_mb"] > 1, acct  # TRESUsageInMax of the steps (jobacct_gather)
PY
}

@test "a hetjob cancelled mid-run still records its cost from its trap" {
    id=$(cat "$T/slow.job")
    run=$(run_of slow)
    local start=$SECONDS
    until [[ -f $run/metadata.json ]] && grep -q '"status": "running"' "$run/metadata.json"; do
        (( SECONDS - start < 180 )) || { cat "$T/out/slow.out"; false; }
        sleep 1
    done
    run -0 py "$run" "'cost' in m"  # control: nothing is recorded while the job runs
    assert_output "False"
    sleep 3
    as_test_user scancel "$id"
    wait_job "$id" 60
    run -0 py "$run" "m['status'], m['cost']['source'], m['cost']['gpu_hours'], m['cost']['elapsed_s'] >= 3"
    assert_output "cancelled allocation 0.0 True"
}
