#!/usr/bin/env bats
# Each @test runs in its own subshell by design: a test's exports are meant to stay in it.
# $SB and $ON_A hold several sbatch options and are split on purpose.
# shellcheck disable=SC2030,SC2031,SC2086
# Faults injected into real sweeps on the local Slurm (make cluster-up): the whole array cancelled,
# a task requeued by the admin (preemption), its grading server killed, its node's slurmd stopped,
# a task killed with SIGKILL. After each (and a resume where one is needed) the group grades to
# exactly the numbers of a clean sweep of the same pairs: one run per (competition, seed).
#
# Every sweep is submitted in setup_file, so that they start side by side; each faulty task's agent
# waits at a gate (until the test writes code/go into its run directory), so that a test injects
# its fault at a known point however long the tests before it took. All tasks but the node test's
# run on one node; the node test's task runs alone on the other, whose slurmd it stops.

load helpers

setup_file() {
    require_slurm
    export CLI=$REPO_ROOT/.venv/bin/mlebench-hpc
    export SUBMIT=$REPO_ROOT/scripts_hpc/submit_sweep.sh
    export T=$BATS_FILE_TMPDIR
    export SFX=$$
    "$CLI" prepare-demo --data-dir "$T/data" >"$T/demo.txt"
    [[ $(wc -l <"$T/demo.txt") -ge 2 ]]
    head -n1 "$T/demo.txt" >"$T/one.txt"
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    if command -v apptainer >/dev/null && [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]]; then
        export MLEBENCH_HPC_RUNTIME=apptainer
    else
        export MLEBENCH_HPC_RUNTIME=none
    fi
    base() {
        cat <<EOF
DATA_DIR="$T/data"
GRADING_SIF="$images/mlebench-grading.sif"
AGENT_SIF="$images/agent-dummy.sif"
OUTPUT_BASE="$T/runs"
TIME_LIMIT_SECS=400
TIME_MARGIN_SECS=10
EOF
    }
    # The gate: the agent says it started, then waits (at most 5 minutes) for the test's go. A
    # resume and the reference sweeps run the same agent id without the gate (another AGENTS_DIR):
    # pairs are (agent, competition, seed), so only the same agent's runs count for a resume.
    probe_agents "$T/agents" >/dev/null
    probe_agents "$T/plain" >/dev/null
    { base; probe_lines "$T/plain" probe/gate '/home/agent/start.sh'; } >"$T/fast.env"
    # shellcheck disable=SC2016 # run by the agent's bash
    { base; probe_lines "$T/agents" probe/gate 'touch /home/code/started; n=0; while [ ! -f /home/code/go ] && [ $n -lt 300 ]; do sleep 1; n=$((n+1)); done; /home/agent/start.sh'; } >"$T/gate.env"
    export SB="--gres=none --cpus-per-task=1 --mem=1G --time=10"
    # Two nodes: B (the node test's) and A (everything else).
    mapfile -t nodes < <(sinfo -h -N -p debug -o '%N' | sort -u)
    (( ${#nodes[@]} >= 2 )) || { echo "the fault tests need the two nodes of the test cluster" >&2; return 1; }
    export NODE_A=${nodes[0]} NODE_B=${nodes[1]}
    export ON_A="--nodelist=$NODE_A"
    submit_group ref4 fast "$T/demo.txt" 2 -- $SB $ON_A
    submit_group ref2 fast "$T/demo.txt" 1 -- $SB $ON_A
    submit_group ref1 fast "$T/one.txt" 1 -- $SB $ON_A
    submit_group cancel gate "$T/demo.txt" 2 --max-parallel 2 -- $SB $ON_A
    submit_group requeue gate "$T/one.txt" 1 -- $SB $ON_A
    submit_group server gate "$T/one.txt" 1 -- $SB $ON_A
    submit_group kill gate "$T/demo.txt" 1 -- $SB $ON_A
    submit_group node gate "$T/one.txt" 1 -- $SB "--nodelist=$NODE_B"
}

teardown_file() {
    local g
    for g in ref4 ref2 ref1 cancel requeue server kill node; do
        scancel --name="mlebench-sweep-fault$SFX-$g" 2>/dev/null || true
    done
    start_slurmd "${NODE_B:-}" || true
}

# submit_group NAME CONFIG LIST SEEDS [submit_sweep options] -- [sbatch options]: job id in $T/NAME.job
submit_group() {
    local name=$1 cfg=$2 list=$3 seeds=$4 out
    shift 4
    out=$(MLEBENCH_HPC_CONFIG=$T/$cfg.env bash "$SUBMIT" --competitions "$list" --seeds "$seeds" \
        --group "fault$SFX-$name" "$@") || { echo "$out" >&2; return 1; }
    job_of "$out" >"$T/$name.job"
    [[ -s $T/$name.job ]] || { echo "$out" >&2; return 1; }
}

# resume NAME LIST SEEDS: the same command again, with the plain agent. Prints submit_sweep's output.
resume() {
    MLEBENCH_HPC_CONFIG=$T/fast.env bash "$SUBMIT" --competitions "$2" --seeds "$3" --group "fault$SFX-$1" \
        -- $SB $ON_A
}

gdir() { echo "$T/runs/fault$SFX-$1"; }
job_of() { sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$1"; }

# wait_for WHAT SECONDS CMD...: until CMD succeeds (bounded); on time-out show the cluster's view.
wait_for() {
    local what=$1 limit=$2 start=$SECONDS
    shift 2
    until "$@"; do
        if (( SECONDS - start >= limit )); then
            echo "not $what after ${limit}s" >&2
            squeue -r -t all -u "$(id -un)" -o '%i %j %T %r %N' >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

queue_empty() { ! squeue -h -j "$1" 2>/dev/null | grep -q .; }
# every job of a group's sweep.json has left the queue
group_idle() {
    local ids
    ids=$(python3 -c 'import json,sys; print(",".join(sorted({t["array_job_id"] for t in json.load(open(sys.argv[1]))["tasks"]})))' "$(gdir "$1")/sweep.json")
    ! squeue -h -j "$ids" 2>/dev/null | grep -q .
}
# the run directory of the task INDEX of array JOB in group NAME
run_of() { find "$(gdir "$1")" -mindepth 1 -maxdepth 1 -type d -name "*_${2}_${3}" | head -n1; }
started() { [[ -n $(run_of "$1" "$2" "$3") && -f $(run_of "$1" "$2" "$3")/code/started ]]; }
go() { touch "$(run_of "$1" "$2" "$3")/code/go"; }
meta_is() { grep -q "\"$2\": \"$3\"" "$1/metadata.json" 2>/dev/null; }
task_is() { meta_is "$(run_of "$1" "$2" "$3")" status "$4"; }
all_started() { local i; for i in "${@:3}"; do started "$1" "$2" "$i" || return 1; done; }
restarts_are() { [[ $(slurm_job_field "$1" Restarts) == "$2" ]]; }
# the attempt (Slurm restart count) that last took the run directory
attempt_is() { grep -q "\"slurm_restart_count\": $2\b" "$1/metadata.json" 2>/dev/null; }

# The group's numbers equal the reference's: report totals, per-run results, summary.csv and the
# overall lines of summary.md. And nothing in the group still says it is running.
same_numbers() {
    local group ref
    group=$(gdir "$1") ref=$(gdir "$2")
    for g in "$group" "$ref"; do
        "$CLI" grade "$g" --data-dir "$T/data" --no-progress >"$g.grade.txt" 2>&1 || { cat "$g.grade.txt" >&2; return 1; }
    done
    python3 - "$group" "$ref" <<'PY'
import json, sys
from pathlib import Path
g, r = (json.loads((Path(p) / "grading_report.json").read_text()) for p in sys.argv[1:3])
for k in g:
    if k.startswith("total_"):
        assert g[k] == r[k], (k, g[k], r[k])
key = lambda x: (x["competition_id"], x["seed"])
pick = ("competition_id", "seed", "score", "valid_submission", "submission_exists", "any_medal", "above_median")
rows = lambda rep: sorted(({f: x[f] for f in pick} for x in rep["competition_reports"]), key=key)
assert rows(g) == rows(r), (rows(g), rows(r))
assert len({key(x) for x in g["competition_reports"]}) == g["total_runs"], "more than one run for a pair"
for d in Path(sys.argv[1]).glob("*/metadata.json"):
    status = json.loads(d.read_text()).get("status")
    assert status not in ("starting", "running", "requeued"), (str(d), status)
PY
    # the leaderboard row is left out: its GPU-hours are what each sweep cost, faults included
    diff <(grep -v ',LEADERBOARD,' "$group/summary.csv") <(grep -v ',LEADERBOARD,' "$ref/summary.csv")
    diff <(grep '^- \*\*' "$group/summary.md") <(grep '^- \*\*' "$ref/summary.md")
}

# the process listening on TCP PORT (from /proc, so that no network tool is needed)
listener_pid() {
    python3 - "$1" <<'PY'
import os, sys
port = int(sys.argv[1])
inodes = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}:
                print(pid)
                sys.exit(0)
        except OSError:
            pass
sys.exit(1)
PY
}

superseded_count() {
    python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["superseded_runs"]))' "$(gdir "$1")/grading_report.json"
}

# slurmd of a node, as the site admin (root) stops and starts it
slurm_conf_value() { scontrol show config | awk -v k="$1" '$1 == k { print $3 }'; }
slurmd_pid() {
    local f
    f=$(slurm_conf_value SlurmdPidFile)
    f=${f//%n/$1}
    [[ -s $f ]] && cat "$f"
}
start_slurmd() {
    local node=$1 pid
    [[ -n $node ]] || return 0
    pid=$(slurmd_pid "$node" || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && return 0
    SLURM_CONF=$(slurm_conf_value SLURM_CONF) setsid /usr/sbin/slurmd -N "$node" </dev/null >/dev/null 2>&1 3>&- || return 1
    scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
}

@test "reference sweeps finish clean, one run per pair" {
    wait_for "ref4 finished" 300 group_idle ref4
    wait_for "ref2 finished" 60 group_idle ref2
    wait_for "ref1 finished" 60 group_idle ref1
    run "$CLI" status "$(gdir ref4)"
    echo "$output"
    assert_output --partial "4 pairs: 4 finished"
    run "$CLI" grade "$(gdir ref4)" --data-dir "$T/data" --no-progress
    assert_success
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["total_runs"] == 4 == r["total_valid_submissions"], r' \
        "$(gdir ref4)/grading_report.json"
}

@test "the whole array cancelled half-way, then resumed: numbers of a clean sweep" {
    local t0=$SECONDS job
    job=$(<"$T/cancel.job")
    wait_for "two tasks started" 240 all_started cancel "$job" 0 1
    go cancel "$job" 0
    wait_for "task 0 finished" 120 task_is cancel "$job" 0 finished
    wait_for "task 2 started" 120 started cancel "$job" 2
    scancel "$job"
    wait_for "array gone" 60 queue_empty "$job"
    run "$CLI" status "$(gdir cancel)"
    echo "$output"
    assert_output --regexp "cancelled"
    run resume cancel "$T/demo.txt" 2
    assert_success
    echo "$output"
    assert_output --partial "3 tasks"
    wait_for "resumed array finished" 240 group_idle cancel
    same_numbers cancel ref4
    [[ $(superseded_count cancel) == 2 ]]
    run "$CLI" status "$(gdir cancel)"
    echo "$output"
    assert_output --partial "4 pairs: 4 finished; 2 earlier attempts superseded"
    echo "# cancel + resume: $((SECONDS - t0))s" >&3
}

@test "scontrol requeue of a running task (preemption): the same run directory finishes" {
    local t0=$SECONDS job run_dir
    job=$(<"$T/requeue.job")
    wait_for "task started" 240 started requeue "$job" 0
    scontrol requeue "${job}_0"
    run_dir=$(run_of requeue "$job" 0)
    wait_for "run marked requeued" 60 meta_is "$run_dir" status requeued
    go requeue "$job" 0
    # Slurm starts it again after the credential lifetime (cred_expire, 30 s on the test cluster)
    wait_for "second attempt finished" 240 meta_is "$run_dir" status finished
    wait_for "array gone" 60 group_idle requeue
    run "$CLI" status "$(gdir requeue)"
    echo "$output"
    assert_output --partial "requeued 1 time, finished (exit 0, submission present)"
    assert_output --partial "1 pairs: 1 finished"
    [[ $(find "$(gdir requeue)" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l) == 1 ]]
    same_numbers requeue ref1
    echo "# requeue: $((SECONDS - t0))s" >&3
}

@test "grading server killed mid-run: validation fails loudly, the run fails with that reason, a resume runs it again" {
    local t0=$SECONDS job run_dir url port pid
    job=$(<"$T/server.job")
    wait_for "task started" 240 started server "$job" 0
    run_dir=$(run_of server "$job" 0)
    url=$(cat "$T/runs/.state/$(basename "$run_dir")/url")
    port=${url##*:}
    pid=$(listener_pid "$port")
    [[ -n $pid ]]
    grep -q run_grading_server "/proc/$pid/cmdline"
    kill -KILL "$pid"
    go server "$job" 0
    wait_for "task ended" 120 queue_empty "$job"
    # loudly: the agent's validation could not reach the server, and said so
    grep -q 'curl exit [1-9]' "$run_dir/logs/dummy_agent.log"
    python3 - "$run_dir/metadata.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["status"] == "failed", m["status"]
assert m["failure"]["cause"] == "grading_server_died", m.get("failure")
assert "grading server died" in m["failure"]["reason"], m["failure"]
PY
    run "$CLI" status "$(gdir server)"
    echo "$output"
    assert_output --partial "grading server died"
    assert_output --partial "1 pairs: 1 failed"
    run resume server "$T/one.txt" 1
    assert_success
    assert_output --partial "1 tasks"
    wait_for "second attempt finished" 180 group_idle server
    same_numbers server ref1
    [[ $(superseded_count server) == 1 ]]
    grep -q "grading server died" "$(gdir server).grade.txt"
    run "$CLI" status "$(gdir server)"
    echo "$output"
    assert_output --partial "attempt 2 of 2, finished (exit 0, submission present)"
    echo "# server killed + resume: $((SECONDS - t0))s" >&3
}

@test "SIGKILL of a task: a stale 'running' is recorded by the next reader, with Slurm's words; a resume runs it again" {
    local t0=$SECONDS job run0 run1
    job=$(<"$T/kill.job")
    wait_for "tasks started" 240 all_started kill "$job" 0 1
    run0=$(run_of kill "$job" 0) run1=$(run_of kill "$job" 1)
    # scancel --signal=KILL: Slurm (22.05) cancels the task as scancel does, TERM first
    scancel --signal=KILL "${job}_0"
    # --batch: SIGKILL to every process of the task at once; nothing can record the end
    scancel --batch --signal=KILL "${job}_1"
    wait_for "tasks ended" 60 queue_empty "$job"
    meta_is "$run1" status running  # stale: the job is gone, its record says running
    run "$CLI" status "$(gdir kill)"
    echo "$output"
    assert_output --partial "while the record said running"
    assert_output --partial "2 pairs: 1 failed, 1 cancelled"
    python3 - "$run1/metadata.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
end = m["slurm_end"]
assert m["status"] == "failed" and end["state"] == "FAILED" and end["exit"] == "signal 9", m
assert end["recorded_by"] == "status" and end["record_said"] == "running", end
PY
    run meta_is "$run0" status running
    assert_failure
    run resume kill "$T/demo.txt" 1
    assert_success
    assert_output --partial "2 tasks"
    wait_for "second attempts finished" 180 group_idle kill
    same_numbers kill ref2
    [[ $(superseded_count kill) == 2 ]]
    echo "# KILL + resume: $((SECONDS - t0))s" >&3
}

@test "a node's slurmd stopped during a task: Slurm requeues it and it finishes elsewhere in time" {
    require_root  # stopping and starting a slurmd is the site admin's part
    local t0=$SECONDS job run_dir pid timeout
    job=$(<"$T/node.job")
    wait_for "task started" 240 started node "$job" 0
    run_dir=$(run_of node "$job" 0)
    pid=$(slurmd_pid "$NODE_B")
    [[ -n $pid ]]
    timeout=$(slurm_conf_value SlurmdTimeout)
    kill -TERM "$pid"
    # Slurm marks the node down after SlurmdTimeout without an answer and requeues its jobs
    wait_for "task requeued" $(( timeout * 3 + 60 )) restarts_are "${job}_0" 1
    start_slurmd "$NODE_B"
    wait_for "second attempt started" 180 attempt_is "$run_dir" 1
    go node "$job" 0
    wait_for "second attempt finished" 180 meta_is "$run_dir" status finished
    wait_for "array gone" 60 group_idle node
    run "$CLI" status "$(gdir node)"
    echo "$output"
    assert_output --partial "1 pairs: 1 finished"
    [[ $(find "$(gdir node)" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l) == 1 ]]
    same_numbers node ref1
    echo "# slurmd stopped (SlurmdTimeout ${timeout}s): $((SECONDS - t0))s" >&3
}
