#!/usr/bin/env bats
# An agent that posts uploads sized to kill its grading server under the grading component's
# --mem=1G (a fence the local cluster enforces with the memory cgroup, as a real one does), through
# the real hetjob and a sweep, by an ordinary user, in the real agent image.
# Protected (the default: validation in workers, each with a memory budget): the server lives, the
# big validations answer "invalid" naming the budget, the run has no failure and grades as normal.
# Control, the same uploads against a server that validates in its own process
# (GRADING_VALIDATE_WORKERS=0: no workers, no budget): the server is killed, the run records the
# death attributed to the agent's own requests (not an infrastructure failure), it grades as a
# normal attempt, and a sweep's resume does not run it again.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

COMP=demo-diabetes

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    if ! memory_fenced; then
        _unavailable "a memory fence" MLEBENCH_REQUIRE_SLURM \
            "the cluster does not enforce --mem (as root: make cluster-up, on a host whose memory cgroup is writable)"
    fi
    user_seat memory
    mkdir -p "$T/data/$COMP/prepared/public/attacks"
    write_attack "$T/data/$COMP/prepared/public/attacks/oom.sh"
    (( EUID == 0 )) && chown -R "$TEST_USER:" "$T/data"
    # Submitted together; each test waits for its own.
    user_hetjob protected 2
    user_hetjob unprotected 0
    user_sweep sweep_unprotected 0
}

# The cluster enforces each job's --mem (task/cgroup with ConstrainRAMSpace).
memory_fenced() {
    local conf
    conf=$(scontrol show config 2>/dev/null) || return 1
    grep -Eq '^TaskPlugin += .*task/cgroup' <<<"$conf" && grep -Eq '^ConstrainRAMSpace += yes' <<<"$conf"
}

teardown_file() { user_seat_teardown; }

# The agent: a 210 MB CSV with the sample's header (14 million rows of text ids, about 1 GiB once
# parsed), posted twice at once with its token; then the sample as its submission, validated last.
write_attack() {
    cat >"$1" <<'EOF'
python3 - <<'PY'
header = open("/home/data/sample_submission.csv").readline()
with open("/tmp/big.csv", "w") as f:
    f.write(header)
    for start in range(0, 14_000_000, 100_000):
        f.write("".join("x%09d,1.5\n" % i for i in range(start, start + 100_000)))
PY
for k in 1 2; do
    curl -sS -m 180 -H "X-Grading-Token: $GRADING_SERVER_TOKEN" -F file=@/tmp/big.csv \
        "$GRADING_SERVER/validate" >/home/logs/big$k.json 2>&1 &
done
wait
rm -f /tmp/big.csv
cp /home/data/sample_submission.csv /home/submission/submission.csv
bash /home/validate_submission.sh /home/submission/submission.csv >/home/logs/final.json 2>&1 || true
exit 0
EOF
}

# config NAME WORKERS: the user's config (validation workers: 2 = protected, 0 = in the server).
config() {
    user_config "$1" "GRADING_VALIDATE_WORKERS=$2"
    [[ -d $T/agents ]] || probe_agents "$T/agents" >/dev/null
    probe_lines "$T/agents" "probe/$1" "bash /home/data/attacks/oom.sh" >>"$T/cfg/$1.env"
}

# user_hetjob NAME WORKERS: sbatch slurm_hetjob.sh as the user, the grading component fenced at 1G.
user_hetjob() {
    local id
    config "$1" "$2"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$1.env")
    id=$(cd "$T" && as_test_user sbatch --parsable --output="$T/out/$1.out" --time=10 --mem=1G --cpus-per-task=1 \
        : --time=10 --gres=none --cpus-per-task=1 --mem=1G "$DIR/scripts_hpc/slurm_hetjob.sh" "$COMP") || return 1
    echo "${id%%;*}" >"$T/$1.job"
    echo "${id%%;*}" >>"$T/jobs"
}

# user_sweep NAME WORKERS [--no-record]: submit_sweep.sh as the user (one pair, the task fenced at
# 1G, server and agent side by side); prints its output, the array job id goes to $T/NAME.job.
sweep() {
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$1.env")
    (cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/$1.list" \
        --seeds 1 --group "$1" -- --gres=none --cpus-per-task=1 --mem=1G --time=10)
}

user_sweep() {
    local out
    config "$1" "$2"
    echo "$COMP" >"$T/cfg/$1.list"
    out=$(sweep "$1") || { echo "$out" >&2; return 1; }
    sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out" >"$T/$1.job"
    cat "$T/$1.job" >>"$T/jobs"
}

# wait_for NAME [SECS]: until the job (or array) NAME has left the queue.
wait_for() {
    local id start=$SECONDS
    id=$(<"$T/$1.job")
    while squeue -h -j "$id" 2>/dev/null | grep -q .; do
        (( SECONDS - start < ${2:-300} )) || { echo "job $1 ($id) still queued" >&2; return 1; }
        sleep 1
    done
}

run_dir_of() { sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/out/$1.out" | tail -n1; }

# meta RUN EXPR: a Python expression over the run's metadata `m`.
meta() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print($2)" "$1/metadata.json"; }

# graded RUN: `mlebench-hpc grade` by the user; prints "valid score_is_a_number error".
graded() {
    as_test_user "$UCLI" grade "$1" --data-dir "$T/data" --no-summary --no-progress >"$T/grade.log" 2>&1 || true
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; \
print(r['valid_submission'], isinstance(r['score'], float), r['error'])" "$1/grading_report.json"
}

@test "uploads sized to kill the server under --mem=1G: it lives, they answer invalid naming the budget, the run grades as normal" {
    wait_for protected
    local run
    run=$(run_dir_of protected)
    [[ -n $run ]] || { cat "$T/out/protected.out"; false; }
    for k in 1 2; do
        run cat "$run/logs/big$k.json"
        assert_output --partial '"valid": false'
        assert_output --regexp 'allows one validation \([0-9]+ MiB'
    done
    run cat "$run/logs/final.json"
    assert_output --partial '"valid": true'
    run grep -c 'answered invalid (budget' "$T/out/protected.out"
    assert_output 2
    refute_output --partial "exited during the run"
    run grep 'validation in 2 workers of' "$T/out/protected.out"
    assert_success
    run meta "$run" "m['status'], m['exit_code'], m.get('failure')"
    assert_output "finished 0 None"
    run graded "$run"
    assert_output "True True None"
}

@test "control: the same uploads kill a server that validates in its own process; the death is the agent's, not the infrastructure's" {
    wait_for unprotected
    local run
    run=$(run_dir_of unprotected)
    [[ -n $run ]] || { cat "$T/out/unprotected.out"; false; }
    run grep 'validation in the server process (--validate-workers 0' "$T/out/unprotected.out"
    assert_success
    run grep 'ERROR: the grading server exited during the run' "$T/out/unprotected.out"
    assert_success
    run cat "$run/logs/final.json"
    refute_output --partial '"valid"'  # nobody answered the agent's last validation
    run meta "$run" "m['status'], m['exit_code'], m['failure']['cause']"
    assert_output "finished 0 grading_server_killed_by_agent_requests"
    run meta "$run" "m['failure']['reason']"
    assert_output --partial "while validating the agent's own uploads (2 uploads"
    run meta "$run" "m['failure']['server_signal']"  # the cgroup's OOM killer
    assert_output SIGKILL
    run graded "$run"
    assert_output "True True None"
}

@test "control in a sweep: the agent's uploads kill its server; status counts the pair finished and a resume runs nothing" {
    wait_for sweep_unprotected
    local gdir=$T/runs/sweep_unprotected run
    run=$(find "$gdir" -mindepth 1 -maxdepth 1 -type d -name "${COMP}_*" | head -n1)
    [[ -n $run ]] || { ls -la "$gdir"; false; }
    run meta "$run" "m['status'], m['failure']['cause']"
    assert_output "finished grading_server_killed_by_agent_requests"
    run as_test_user "$UCLI" status "$gdir"
    assert_output --partial "the agent's own uploads killed its grading server"
    assert_output --partial "1 pairs: 1 finished"
    run sweep sweep_unprotected
    assert_success
    assert_output --partial "nothing to submit"
}
