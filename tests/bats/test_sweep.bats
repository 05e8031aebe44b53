#!/usr/bin/env bats
# Each @test runs in its own subshell by design: a test's exports are meant to stay in it.
# $SB holds several sbatch options and is split on purpose.
# shellcheck disable=SC2030,SC2031,SC2086
# Sweeps on the real local Slurm (make cluster-up): one array of (competition, seed) tasks, each
# running its own grading server and agent. The concurrency cap is read from squeue while the
# array runs; cancel + re-run, and a time-out + requeue, are done for real. Two agents swept into
# one group by an ordinary user, over a split named as upstream names it, are told apart by status,
# grade and resume.

load helpers

setup_file() {
    require_slurm
    export CLI=$REPO_ROOT/.venv/bin/mlebench-hpc
    export SUBMIT=$REPO_ROOT/scripts_hpc/submit_sweep.sh
    export T=$BATS_FILE_TMPDIR
    # unique group names: other test runs may share this cluster
    export SFX=$$
    "$CLI" prepare-demo --data-dir "$T/data" >"$T/demo.txt"
    [[ $(wc -l <"$T/demo.txt") -ge 2 ]]
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
TIME_LIMIT_SECS=300
TIME_MARGIN_SECS=10
EOF
    }
    # the dummy agent after a pause, so that tasks overlap and squeue can see them run
    probe_agents "$T/agents" >/dev/null
    { base; probe_lines "$T/agents" probe/pause3 'sleep 3 && /home/agent/start.sh'; } >"$T/sweep.env"
    { base; probe_lines "$T/agents" probe/pause8 'sleep 8 && /home/agent/start.sh'; } >"$T/slow.env"
    # first attempt: leaves files and hangs until the time limit; a later attempt finds them and submits
    { base; probe_lines "$T/agents" probe/requeue 'if [ -f /home/code/attempt1 ]; then cp /home/code/attempt1 /home/logs/attempt2.txt && cp /home/data/sample_submission.csv /home/submission/submission.csv; else echo attempt1 > /home/code/attempt1 && echo partial > /home/logs/attempt1.txt && sleep 600; fi'; } >"$T/requeue.env"
    export MLEBENCH_HPC_CONFIG=$T/sweep.env
    # small tasks, no GPU: up to 8 could run at once on the two test nodes, so the cap is what limits
    export SB="--gres=none --cpus-per-task=1 --mem=1G --time=10"
    if [[ $MLEBENCH_HPC_RUNTIME == apptainer ]]; then two_agents_setup "$images"; fi
}

# Two variants of the dummy agent swept into one group by the test user, submitted now (they run
# beside the tests above): probe/valid submits the sample submission everywhere, probe/half writes a
# header-only (invalid) one for demo-diabetes. The set is a split named as upstream names it.
two_agents_setup() {
    local images=$1 s flags=""
    require_test_user
    export UDIR
    UDIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    export U
    U=$(mktemp -d /tmp/mh-sweep-agents.XXXXXX)
    echo "$U" >"$BATS_FILE_TMPDIR/udir"
    chmod 755 "$U"
    mkdir -p "$U/images" "$U/mle-bench/experiments/splits"
    for s in mlebench-grading.sif agent-dummy.sif; do
        ln -f "$images/$s" "$U/images/$s" 2>/dev/null || cp "$images/$s" "$U/images/$s"
    done
    chmod 644 "$U"/images/*.sif
    head -n2 "$T/demo.txt" >"$U/mle-bench/experiments/splits/demo.txt"  # upstream's format: ids only
    probe_agents "$U/agents" >/dev/null
    probe_variant "$U/agents" probe/valid '/home/agent/start.sh'
    # shellcheck disable=SC2016 # expanded by the agent's shell
    probe_variant "$U/agents" probe/half 'if [ "$COMPETITION_ID" = demo-diabetes ]; then head -n1 /home/data/sample_submission.csv > /home/submission/submission.csv; else /home/agent/start.sh; fi'
    probe_variant "$U/agents" probe/third '/home/agent/start.sh'
    as_test_user test -r /dev/fuse -a -w /dev/fuse || flags="--unsquash"
    # AGENT_SIF empty: IMAGE_DIR/agent-dummy.sif, the image of the variants' agent
    printf '%s\n' "DATA_DIR=\"$U/data\"" "IMAGE_DIR=\"$U/images\"" "OUTPUT_BASE=\"$U/runs\"" \
        "MLEBENCH_DIR=\"$U/mle-bench\"" "AGENTS_DIR=\"$U/agents\"" "AGENT_ID=probe/valid" \
        "TIME_LIMIT_SECS=300" "TIME_MARGIN_SECS=10" "APPTAINER_EXTRA_FLAGS=\"$flags\"" >"$U/config.env"
    if (( EUID == 0 )); then chown -R "$TEST_USER:" "$U"; fi
    as_test_user "$UDIR/.venv/bin/mlebench-hpc" prepare-demo --data-dir "$U/data" >/dev/null
    export UG=agents$SFX
    for s in valid half; do
        user_sweep --agent-id "probe/$s" >"$U/submit-$s.txt" 2>&1 || { cat "$U/submit-$s.txt" >&2; return 1; }
    done
}

# user_sweep ARGS...: submit_sweep.sh as the test user into the two-agent group, over the split "demo"
user_sweep() {
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$U/config.env")
    (cd "$U" && as_test_user bash "$UDIR/scripts_hpc/submit_sweep.sh" --competitions demo --seeds 1 --max-parallel 2 \
        --group "$UG" "$@" -- --gres=none --cpus-per-task=1 --mem=1G --time=10)
}

teardown_file() {
    local g u
    for g in all resume requeue dry bad; do
        scancel --name="mlebench-sweep-bats$SFX-$g" 2>/dev/null || true
    done
    scancel --name="mlebench-sweep-agents$SFX" 2>/dev/null || true
    u=$(cat "$BATS_FILE_TMPDIR/udir" 2>/dev/null) || return 0
    [[ $u == /tmp/mh-sweep-agents.* ]] && rm -rf "$u"
    return 0
}

# job id from submit_sweep.sh's output
job_of() { sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$1"; }

# wait (bounded) until no task of the array is queued
wait_array() {
    local job=$1 limit=${2:-240} start=$SECONDS
    while squeue -h -j "$job" 2>/dev/null | grep -q .; do
        (( SECONDS - start < limit )) || { echo "array $job still queued after ${limit}s" >&2; squeue -r -j "$job" >&2; return 1; }
        sleep 0.5
    done
}

# number of runs of a group whose metadata says finished
finished_runs() { grep -l '"status": "finished"' "$1"/*/metadata.json 2>/dev/null | wc -l; }

@test "sweep of the demo competitions x 2 seeds: never more than --max-parallel 2 running, all valid" {
    local g=bats$SFX-all start=$SECONDS
    run bash "$SUBMIT" --competitions "$T/demo.txt" --seeds 2 --max-parallel 2 --group "$g" -- $SB
    assert_success
    assert_output --partial "4 tasks, at most 2 at once"
    assert_output --partial "group dir: $T/runs/$g"
    job=$(job_of "$output")
    [[ -n $job ]]
    max=0 capped=0
    while squeue -h -j "$job" 2>/dev/null | grep -q .; do
        n=$(squeue -h -r -j "$job" -t RUNNING 2>/dev/null | wc -l)
        (( n > max )) && max=$n
        squeue -h -r -j "$job" -t PENDING -o '%r' 2>/dev/null | grep -q JobArrayTaskLimit && capped=1
        (( SECONDS - start < 240 )) || { echo "sweep not done after 240s" >&2; false; }
        sleep 0.3
    done
    echo "# sweep of 4 tasks: $((SECONDS - start))s wall, at most $max running, cap seen: $capped" >&3
    (( max >= 1 && max <= 2 ))
    run "$CLI" status "$T/runs/$g"
    assert_success
    echo "$output"
    [[ $(grep -c 'finished (exit 0, submission present)' <<<"$output") == 4 ]]
    for f in "$T/runs/$g"/*/logs/validation_verdict.json; do grep -q '"valid": true' "$f"; done
    [[ $(find "$T/runs/$g" -mindepth 1 -maxdepth 1 -type d -name "*_${job}_*" | wc -l) == 4 ]]
    run "$CLI" grade "$T/runs/$g" --no-summary
    assert_success
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["total_runs"] == 4 and r["total_valid_submissions"] == 4, r' \
        "$T/runs/$g/grading_report.json"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert len(s["tasks"]) == 4 and s["submissions"][0]["array_job_id"] == sys.argv[2], s' \
        "$T/runs/$g/sweep.json" "$job"
}

@test "cancelled half-way, the same command resubmits only the unfinished pairs" {
    local g=bats$SFX-resume
    export MLEBENCH_HPC_CONFIG=$T/slow.env
    run bash "$SUBMIT" --competitions "$T/demo.txt" --seeds 2 --max-parallel 2 --group "$g" -- $SB
    assert_success
    job=$(job_of "$output")
    start=$SECONDS
    until (( $(finished_runs "$T/runs/$g") >= 1 )); do
        (( SECONDS - start < 120 )) || { echo "no task finished in 120s" >&2; false; }
        sleep 0.3
    done
    scancel "$job"
    wait_array "$job" 60
    done_before=$(finished_runs "$T/runs/$g")
    echo "finished before the re-run: $done_before"; grep -h '"status"' "$T/runs/$g"/*/metadata.json
    (( done_before >= 1 && done_before < 4 ))
    run "$CLI" status "$T/runs/$g"
    echo "$output"
    assert_output --regexp "cancelled"
    run bash "$SUBMIT" --competitions "$T/demo.txt" --seeds 2 --max-parallel 2 --group "$g" -- $SB
    assert_success
    assert_output --partial "$((4 - done_before)) tasks"
    job2=$(job_of "$output")
    [[ $job2 != "$job" ]]
    # the resubmitted pairs are exactly those without a finished run
    python3 - "$T/runs/$g" "$job2" <<'PY'
import json, pathlib, sys
g = pathlib.Path(sys.argv[1])
metas = [json.loads(p.read_text()) for p in g.glob("*/metadata.json")]
done = {(m["competition_id"], int(m["seed"])) for m in metas if m.get("status") == "finished"}
sweep = json.loads((g / "sweep.json").read_text())
again = {(t["competition"], t["seed"]) for t in sweep["tasks"] if t["array_job_id"] == sys.argv[2]}
pairs = {(t["competition"], t["seed"]) for t in sweep["tasks"]}
assert len(pairs) == 4 and again == pairs - done and not again & done, (again, done)
PY
    wait_array "$job2" 180
    run "$CLI" status "$T/runs/$g"
    echo "$output"
    [[ $(grep -c 'finished (exit 0, submission present)' <<<"$output") == 4 ]]
    # and a third run of the command has nothing left to do
    run bash "$SUBMIT" --competitions "$T/demo.txt" --seeds 2 --max-parallel 2 --group "$g" -- $SB
    assert_success
    assert_output --partial "nothing to submit"
}

@test "time limit near: the task is requeued into the same run dir, which keeps the earlier files" {
    local g=bats$SFX-requeue start=$SECONDS
    export MLEBENCH_HPC_CONFIG=$T/requeue.env
    head -n1 "$T/demo.txt" >"$T/one.txt"
    # 3 minutes, USR1 TIME_MARGIN_SECS+60 = 70 s before the end; Slurm sends it up to a minute early,
    # so 50-110 s after the start: always after the agent's first attempt wrote its files
    run bash "$SUBMIT" --competitions "$T/one.txt" --seeds 1 --group "$g" -- --gres=none --cpus-per-task=1 --mem=1G --time=3
    assert_success
    job=$(job_of "$output")
    # wait for the requeue: back to PENDING with a restart counted
    until [[ $(slurm_job_field "${job}_0" Restarts) == 1 && $(slurm_job_field "${job}_0" JobState) == PENDING ]]; do
        (( SECONDS - start < 180 )) || { echo "not requeued after 180s" >&2; cat "$T/runs/$g/.sweep/logs/"* >&2; false; }
        sleep 0.5
    done
    echo "# requeued after $((SECONDS - start))s" >&3
    run_dir=$(find "$T/runs/$g" -mindepth 1 -maxdepth 1 -type d -name "*_${job}_0")
    [[ -n $run_dir ]]
    grep -q '"status": "requeued"' "$run_dir/metadata.json"
    grep -q '"requeue_count": 1' "$run_dir/metadata.json"
    [[ -f $run_dir/code/attempt1 && -f $run_dir/logs/attempt1.txt ]]
    run "$CLI" status "$T/runs/$g"
    assert_output --partial "requeued 1 time, pending"
    # Slurm itself starts it again after its begin time (cred_expire, 30 s on the test cluster).
    # Releasing it earlier by hand races the revoked credential of the first attempt and makes
    # Slurm fail the job ("Job credential revoked"), so the test waits like a user would.
    # It waits for the second attempt's own record: squeue may briefly not list a task between
    # requeue states, so an empty queue alone does not mean it ran.
    until grep -q '"status": "finished"' "$run_dir/metadata.json"; do
        (( SECONDS - start < 300 )) || {
            echo "second attempt did not finish" >&2
            scontrol show job "${job}_0" >&2 || true
            cat "$run_dir/metadata.json" "$T/runs/$g/.sweep/logs/"* >&2 || true
            false
        }
        sleep 1
    done
    wait_array "$job" 120
    echo "# requeue test: $((SECONDS - start))s" >&3
    # one run dir only, holding both attempts' files and the submission
    [[ $(find "$T/runs/$g" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l) == 1 ]]
    [[ -f $run_dir/logs/attempt1.txt && -f $run_dir/logs/attempt2.txt && -f $run_dir/submission/submission.csv ]] ||
        { ls -R "$run_dir"; cat "$run_dir/metadata.json" "$T/runs/$g/.sweep/logs/"*; false; }
    run "$CLI" status "$T/runs/$g"
    echo "$output"
    assert_output --partial "requeued 1 time, finished (exit 0, submission present)"
}

@test "--dry-run prints the sbatch command and the tasks, and submits nothing" {
    local g=bats$SFX-dry
    run bash "$SUBMIT" --competitions "$T/demo.txt" --seeds 2 --max-parallel 3 --group "$g" --dry-run -- $SB
    assert_success
    assert_output --partial "dry run: nothing submitted"
    assert_output --partial "--array=0-3%3"
    [[ $(grep -cE $'^[0-3]\tdemo-' <<<"$output") == 4 ]]
    [[ -z $(squeue -h --name="mlebench-sweep-$g" 2>/dev/null) ]]
    [[ ! -e $T/runs/$g ]]
}

@test "--competitions low with no MLEBENCH_DIR: upstream's split as shipped, 22 competitions" {
    local g=bats$SFX-low c
    # the 22 competitions "prepared" (empty dirs: a dry run reads no data)
    while read -r c || [[ -n $c ]]; do
        mkdir -p "$T/lowdata/$c/prepared/public" "$T/lowdata/$c/prepared/private"
    done <"$REPO_ROOT/helpers/mlebench_hpc/data/splits/low.txt"
    sed "s|^DATA_DIR=.*|DATA_DIR=\"$T/lowdata\"|" "$T/sweep.env" >"$T/low.env"
    MLEBENCH_HPC_CONFIG=$T/low.env run env -u MLEBENCH_DIR bash "$SUBMIT" --competitions low --seeds 3 \
        --group "$g" --dry-run -- $SB
    assert_success
    assert_output --partial "dry run: nothing submitted"
    assert_output --partial "--array=0-65"
    [[ $(grep -cE $'^[0-9]+\t[a-z0-9-]+\t[0-2]' <<<"$output") == 66 ]]
    assert_output --partial $'\taerial-cactus-identification\t'
    [[ ! -e $T/runs/$g ]]
    # all: split75, said in one note line
    MLEBENCH_HPC_CONFIG=$T/low.env run env -u MLEBENCH_DIR bash "$SUBMIT" --competitions all --seeds 1 \
        --group "$g" --dry-run -- $SB
    assert_failure 2  # split75's other 53 competitions are not prepared here
    assert_output --partial "note: upstream renamed all.txt to split75.txt"
}

@test "a list with unknown competitions fails before submitting, naming every bad id" {
    local g=bats$SFX-bad
    printf '# comment\n%s\n\nno-such-competition\nanother-unknown-one  # note\n' "$(head -n1 "$T/demo.txt")" >"$T/bad.txt"
    run bash "$SUBMIT" --competitions "$T/bad.txt" --seeds 2 --group "$g"
    assert_failure 2
    assert_output --partial "no-such-competition"
    assert_output --partial "another-unknown-one"
    refute_output --partial "$(head -n1 "$T/demo.txt"):"
    [[ -z $(squeue -h --name="mlebench-sweep-$g" 2>/dev/null) ]]
    [[ ! -e $T/runs/$g ]]
}

@test "two agents in one group, as a user: status, grade and resume each count only their own runs" {
    [[ $MLEBENCH_HPC_RUNTIME == apptainer ]] || require_apptainer
    [[ -n ${U:-} ]] || { echo "setup_file did not submit the two-agent sweep" >&2; false; }
    local gdir=$U/runs/$UG valid half a
    valid=$(job_of "$(<"$U/submit-valid.txt")") half=$(job_of "$(<"$U/submit-half.txt")")
    [[ -n $valid && -n $half && $valid != "$half" ]] || { cat "$U"/submit-*.txt; false; }
    grep -q "2 tasks, at most 2 at once (agent probe/valid)" "$U/submit-valid.txt"
    wait_array "$valid" 300
    wait_array "$half" 300
    # each run records its agent from its task's row, before anything could fail
    python3 - "$gdir" "$valid" "$half" <<'PY'
import json, pathlib, sys
g, valid, half = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
agents = {}
for p in g.glob("*/metadata.json"):
    m = json.loads(p.read_text())
    agents.setdefault(m["sweep_array_job_id"], set()).add(m["agent_id"])
assert agents == {valid: {"probe/valid"}, half: {"probe/half"}}, agents
sweep = json.loads((g / "sweep.json").read_text())
tasks = {(t["array_job_id"], t["agent_id"]) for t in sweep["tasks"]}
assert tasks == {(valid, "probe/valid"), (half, "probe/half")}, tasks
assert {s["asked"]["split"] for s in sweep["submissions"]} == {"demo"}
PY
    run user_status
    assert_success
    echo "$output"
    assert_line --index 0 --regexp '^agent +competition +seed +job +state$'
    assert_line "agent probe/half: 2 pairs: 2 finished"
    assert_line "agent probe/valid: 2 pairs: 2 finished"
    [[ $(grep -c "^probe/half .*${half}_" <<<"$output") == 2 && $(grep -c "^probe/valid .*${valid}_" <<<"$output") == 2 ]]
    run as_test_user make -C "$UDIR" grade RUN="$gdir" DATA_DIR="$U/data"
    assert_success
    echo "$output"
    assert_output --partial "agent probe/valid: runs 2, with submission 2, valid 2"
    assert_output --partial "agent probe/half: runs 2, with submission 2, valid 1"
    # each agent's numbers are exactly its own runs': the run dirs its report names, their verdicts
    python3 - "$gdir" <<'PY'
import json, pathlib, sys
g = pathlib.Path(sys.argv[1])
report = json.loads((g / "grading_report.json").read_text())
assert report["agents"] == ["probe/half", "probe/valid"] and "total_runs" not in report, list(report)
for agent, expected_valid in (("probe/valid", 2), ("probe/half", 1)):
    own = {p.parent for p in g.glob("*/metadata.json") if json.loads(p.read_text())["agent_id"] == agent}
    mine = report["by_agent"][agent]
    assert {pathlib.Path(r["run_dir"]) for r in mine["competition_reports"]} == own, agent
    assert {r["agent_id"] for r in mine["competition_reports"]} == {agent}
    assert mine["total_runs"] == 2 and mine["total_valid_submissions"] == expected_valid, mine
    assert json.loads((g / report["agent_reports"][agent]).read_text()) == mine
half = {r["competition_id"]: r["valid_submission"] for r in report["by_agent"]["probe/half"]["competition_reports"]}
assert half == {"demo-diabetes": False, "demo-breast-cancer": True}, half
PY
    grep -q "^probe/valid,OVERALL," "$gdir/summary.csv"
    grep -q "^probe/half,OVERALL," "$gdir/summary.csv"
    grep -q "Competition set: upstream's split demo (2 competitions)" "$gdir/summary.md"
    # a resume per agent submits nothing; a third agent in the same group still has every pair to run
    for a in probe/valid probe/half; do
        run user_sweep --agent-id "$a"
        assert_success
        assert_output --partial "nothing to submit: every pair of agent $a in $UG"
    done
    run user_sweep --agent-id probe/third --dry-run
    assert_success
    [[ $(grep -cE $'^[01]\tdemo-[a-z-]+\t0\tprobe/third$' <<<"$output") == 2 ]] || { echo "$output"; false; }
    # an id in no config.yaml is refused before anything is submitted
    run user_sweep --agent-id probe/nope
    assert_failure 2
    assert_output --partial "agent id 'probe/nope' is not in any config.yaml"
}

# user_status: `mlebench-hpc status` of the two-agent group, as the test user
user_status() {
    as_test_user "$UDIR/.venv/bin/mlebench-hpc" status "$U/runs/$UG"
}
