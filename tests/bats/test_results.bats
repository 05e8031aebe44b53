#!/usr/bin/env bats
# Issue 19's whole path on the real cluster, as an ordinary user: a demo sweep of 2 competitions x
# 3 seeds with one pair cancelled before it ran, graded by `make grade` with and without
# --pad-missing. The per-split figures must equal what upstream's experiments/aggregate_grading_
# reports.py printed for the same outcomes (tests/conformance/aggregation/sweep/: made once from a
# report of this very sweep; the test first checks that this run's outcomes are those upstream
# read), with the leaderboard row, the cost in GPU-hours, and report.html rendered by Chromium
# showing summary.csv's numbers.

load helpers

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images} s flags=""
    [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]] || {
        echo "images missing in $images (tests/run_all.sh builds them)" >&2; return 1; }
    export UDIR
    UDIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    export U
    U=$(mktemp -d /tmp/mh-results.XXXXXX)
    echo "$U" >"$BATS_FILE_TMPDIR/udir"
    chmod 755 "$U"
    mkdir -p "$U/images"
    for s in mlebench-grading.sif agent-dummy.sif; do
        ln -f "$images/$s" "$U/images/$s" 2>/dev/null || cp "$images/$s" "$U/images/$s"
    done
    chmod 644 "$U"/images/*.sif
    probe_agents "$U/agents" >/dev/null
    # demo-breast-cancer: the sample submission (valid, no medal); demo-diabetes: least squares in
    # plain Python (a bronze medal), so the figures have medals, and a SEM once padded
    local ols
    ols=$(printf '%q' "$(<"$BATS_TEST_DIRNAME/probes/ols_diabetes.py")")
    # shellcheck disable=SC2016 # expanded by the agent's shell
    probe_variant "$U/agents" probe/ols 'if [ "$COMPETITION_ID" = demo-diabetes ]; then python3 -c '"$ols"'; else /home/agent/start.sh; fi'
    as_test_user test -r /dev/fuse -a -w /dev/fuse || flags="--unsquash"
    printf '%s\n' "DATA_DIR=\"$U/data\"" "IMAGE_DIR=\"$U/images\"" "OUTPUT_BASE=\"$U/runs\"" \
        "AGENTS_DIR=\"$U/agents\"" "AGENT_ID=probe/ols" \
        "TIME_LIMIT_SECS=300" "TIME_MARGIN_SECS=10" "APPTAINER_EXTRA_FLAGS=\"$flags\"" >"$U/config.env"
    if (( EUID == 0 )); then chown -R "$TEST_USER:" "$U"; fi
    as_test_user "$UDIR/.venv/bin/mlebench-hpc" prepare-demo --data-dir "$U/data" >"$U/demo.txt"
    # the sweep's own competition list, in the order upstream's split file was given
    cp "$BATS_TEST_DIRNAME/../conformance/aggregation/sweep/demo.txt" "$U/demo.txt"
    export G=results$$
    local out job
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$U/config.env")
    out=$(cd "$U" && as_test_user bash "$UDIR/scripts_hpc/submit_sweep.sh" --competitions "$U/demo.txt" \
        --seeds 3 --max-parallel 2 --group "$G" -- --gres=none --cpus-per-task=1 --mem=1G --time=10 2>&1) \
        || { echo "$out" >&2; return 1; }
    job=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $job ]] || { echo "no job id in: $out" >&2; return 1; }
    # (demo-diabetes, seed 1) is task 4: cancelled while it waits behind the cap, it never runs
    as_test_user scancel "${job}_4"
    echo "$job" >"$U/job"
}

teardown_file() {
    local u
    u=$(cat "$BATS_FILE_TMPDIR/udir" 2>/dev/null) || return 0
    scancel --name="mlebench-sweep-$G" 2>/dev/null || true
    [[ $u == /tmp/mh-results.* ]] && rm -rf "$u"
    return 0
}

# wait (bounded) until no task of the sweep is queued
wait_sweep() {
    local job start=$SECONDS
    job=$(<"$U/job")
    while squeue -h -j "$job" 2>/dev/null | grep -q .; do
        (( SECONDS - start < 300 )) || { squeue -r -j "$job" >&2; echo "sweep still queued after 300 s" >&2; return 1; }
        sleep 1
    done
}

user_make_grade() {
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$U/config.env")
    as_test_user make -s -C "$UDIR" grade RUN="$U/runs/$G" "$@"
}

# compare grading_report.json's aggregates[SET] with upstream's printed JSON in VECTOR
same_as_upstream() {
    python3 - "$U/runs/$G/grading_report.json" "$1" "$2" "$3" <<'PY'
import json, sys
report, set_name, vector, printed = sys.argv[1:]
ours = json.load(open(report))["aggregates"][set_name]
up = json.load(open(vector))
# the outcomes upstream read must be this run's, in the order upstream reads them
flags = ["competition_id", "gold_medal", "silver_medal", "bronze_medal", "above_median",
         "submission_exists", "valid_submission"]
rows = sorted(json.load(open(report))["competition_reports"], key=lambda r: str(r["competition_id"]))
got = [[r[k] for k in flags] for r in rows]
assert got == up["outcomes"], f"this run's outcomes {got} are not the ones upstream read {up['outcomes']}"
for key in ("num_seeds_averaged", "num_competitions_per_seed"):
    assert ours[key] == up["aggregate"][key], (key, ours[key], up["aggregate"][key])
assert ours["metrics"] == up["aggregate"]["metrics"], (ours["metrics"], up["aggregate"]["metrics"])
# and make grade printed them: the set's row holds upstream's any-medal mean ± SEM and interval
m = up["aggregate"]["metrics"]["any_medal_percentage"]
cells = [f"{m['mean']:.1f} ± {m['standard_error']:.1f}", f"[{m['ci_lower']:.1f}, {m['ci_upper']:.1f}]"]
rows = [line for line in open(printed).read().splitlines() if line.startswith(set_name + " ")]
assert len(rows) == 1 and all(c in rows[0] for c in cells), (cells, rows)
print(f"{set_name}: {ours['num_seeds_averaged']} seeds, equal to upstream's {vector.rsplit('/', 1)[-1]}")
PY
}

@test "demo sweep 2 x 3 with a cancelled pair: make grade's per-split figures are upstream's, with and without --pad-missing" {
    wait_sweep
    run ls "$U/runs/$G"
    echo "$output"
    run user_make_grade
    echo "$output"
    assert_success
    printf '%s\n' "$output" >"$BATS_FILE_TMPDIR/grade.txt"
    run same_as_upstream demo.txt "$BATS_TEST_DIRNAME/../conformance/aggregation/sweep/complete_seeds.json" "$BATS_FILE_TMPDIR/grade.txt"
    echo "$output"
    assert_success
    run user_make_grade ARGS=--pad-missing
    echo "$output"
    assert_success
    printf '%s\n' "$output" >"$BATS_FILE_TMPDIR/grade-pad.txt"
    run same_as_upstream demo.txt "$BATS_TEST_DIRNAME/../conformance/aggregation/sweep/pad_missing.json" "$BATS_FILE_TMPDIR/grade-pad.txt"
    echo "$output"
    assert_success
}
