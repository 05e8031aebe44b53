#!/usr/bin/env bats
# Upstream's per-split figures end to end on the real cluster, as an ordinary user: a demo sweep
# of 2 competitions x 3 seeds with one pair cancelled before it ran, graded by `make grade` with
# and without --pad-missing. The per-split figures must equal what upstream's
# experiments/aggregate_grading_reports.py printed for the same outcomes
# (tests/conformance/aggregation/sweep/: made once from a report of this very sweep; the test first
# checks that this run's outcomes are those upstream read), with the leaderboard row, the cost in
# GPU-hours, and report.html rendered by Chromium showing summary.csv's numbers.

load helpers

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    user_seat results
    probe_agents "$T/agents" >/dev/null
    # demo-breast-cancer: the sample submission (valid, no medal); demo-diabetes: least squares in
    # plain Python (a bronze medal), so the figures have medals, and a SEM once padded
    local ols
    ols=$(printf '%q' "$(<"$BATS_TEST_DIRNAME/probes/ols_diabetes.py")")
    # shellcheck disable=SC2016 # expanded by the agent's shell
    probe_variant "$T/agents" probe/ols 'if [ "$COMPETITION_ID" = demo-diabetes ]; then python3 -c '"$ols"'; else /home/agent/start.sh; fi'
    printf '%s\n' "DATA_DIR=\"$T/data\"" "IMAGE_DIR=\"$T/images\"" "OUTPUT_BASE=\"$T/runs\"" \
        "AGENTS_DIR=\"$T/agents\"" "AGENT_ID=probe/ols" \
        "TIME_LIMIT_SECS=300" "TIME_MARGIN_SECS=10" "APPTAINER_EXTRA_FLAGS=\"$EXTRA_FLAGS\"" >"$T/config.env"
    # the sweep's own competition list, in the order upstream's split file was given
    cp "$BATS_TEST_DIRNAME/../conformance/aggregation/sweep/demo.txt" "$T/demo.txt"
    if (( EUID == 0 )); then chown -R "$TEST_USER:" "$T"; fi
    export G=results$$
    local out job
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/config.env")
    out=$(cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/demo.txt" \
        --seeds 3 --max-parallel 2 --group "$G" -- --gres=gpu:1 --cpus-per-task=1 --mem=1G --time=10 2>&1) \
        || { echo "$out" >&2; return 1; }
    job=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $job ]] || { echo "no job id in: $out" >&2; return 1; }
    # (demo-diabetes, seed 1) is task 4: cancelled while it waits behind the cap, it never runs
    as_test_user scancel "${job}_4"
    echo "$job" >"$T/job"
}

teardown_file() {
    local u
    u=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    scancel --name="mlebench-sweep-$G" 2>/dev/null || true
    [[ $u == /tmp/mh-results.* ]] && rm -rf "$u"
    return 0
}

# wait (bounded) until no task of the sweep is queued
wait_sweep() {
    local job start=$SECONDS
    job=$(<"$T/job")
    while squeue -h -j "$job" 2>/dev/null | grep -q .; do
        (( SECONDS - start < 300 )) || { squeue -r -j "$job" >&2; echo "sweep still queued after 300 s" >&2; return 1; }
        sleep 1
    done
}

user_make_grade() {
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/config.env")
    as_test_user make -s -C "$DIR" grade RUN="$T/runs/$G" "$@"
}

# compare grading_report.json's aggregates[SET] with upstream's printed JSON in VECTOR
same_as_upstream() {
    python3 - "$T/runs/$G/grading_report.json" "$1" "$2" "$3" <<'PY'
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
    run ls "$T/runs/$G"
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

@test "the same sweep: cost from Slurm (GPU-hours = GPUs x elapsed), the leaderboard row printed with hardware and GPU-hours, report.html in Chromium shows summary.csv's numbers" {
    wait_sweep
    run user_make_grade
    assert_success
    printf '%s\n' "$output" >"$BATS_FILE_TMPDIR/grade-lb.txt"
    echo "$output" | sed -n '/^cost:/p;/^leaderboard row/,/^wrote/p'
    # Chromium as the user, on the page make grade wrote (its sandbox on, no --no-sandbox)
    run as_test_user "$DIR/.venv/bin/python" "$DIR/tests/python/report_page.py" "$T/runs/$G/report.html" \
        --fragment '#sort=score:desc' --shot "$T/report.png"
    assert_success
    printf '%s\n' "$output" >"$BATS_FILE_TMPDIR/page.json"
    cp "$T/report.png" "$BATS_FILE_TMPDIR/report.png"
    echo "# screenshot: $BATS_FILE_TMPDIR/report.png" >&3
    run python3 - "$T/runs/$G" "$BATS_FILE_TMPDIR/grade-lb.txt" "$BATS_FILE_TMPDIR/page.json" <<'PY'
import csv, json, sys
group, printed, page = sys.argv[1:]
report = json.load(open(f"{group}/grading_report.json"))
runs = report["competition_reports"]
# cost: every run's job recorded, one GPU each (--gres=gpu:1), GPU-hours = 1 x elapsed
cost = report["cost"]
assert cost["runs_with_cost"] == 5 and cost["runs_without_cost"] == 0, cost
for r in runs:
    c = r["cost"]
    assert c["hardware"]["gpus"] == 1, c
    assert abs(c["gpu_hours"] - c["elapsed_s"] / 3600) < 1e-6, c
assert abs(cost["gpu_hours"] - sum(r["cost"]["gpu_hours"] for r in runs)) < 1e-9, cost
assert cost["gpu_hours"] > 0
text = open(printed).read()
assert f"GPU-hours {cost['gpu_hours']:.3f}" in text, "make grade's cost line"
# the leaderboard row: summary.csv's, printed by make grade, shown by Chromium
lb = next(r for r in csv.DictReader(open(f"{group}/summary.csv")) if r["row_type"] == "LEADERBOARD")
any_medal = report["aggregates"]["demo.txt"]["metrics"]["any_medal_percentage"]
assert lb["lb_own_set_any_medal"] == f"{any_medal['mean']:.2f}% ± {any_medal['standard_error']:.2f}%", lb
assert lb["lb_hardware"].startswith("1 x "), lb
assert float(lb["lb_gpu_hours"]) == round(cost["gpu_hours"], 3), lb
for key in ("elapsed_s", "cpu_hours", "gpu_hours", "peak_mem_mb", "runs_with_cost"):
    assert lb[f"cost_{key}"] == str(cost[key]), (key, lb[f"cost_{key}"], cost[key])
assert "Cost of probe/ols: cost: elapsed" in open(f"{group}/summary.md").read()
lines = text.split("leaderboard row", 1)[1].splitlines()
row = next(line for line in lines if line.startswith("probe/ols "))
for key in ("lb_own_set_any_medal", "lb_hardware", "lb_gpu_hours", "lb_time_limit", "lb_date"):
    assert lb[key] in row, (key, lb[key], row)
dom = json.load(open(page))
(shown,) = dom["tables"]["leaderboard"]
for key, value in lb.items():
    if key.startswith("lb_") and key in shown:
        assert shown[key] == value, (key, shown[key], value)
assert all(shown[k] == lb[k] for k in ("lb_own_set_any_medal", "lb_hardware", "lb_gpu_hours"))
splits = {s["split"]: s for s in dom["tables"]["splits"]}
assert splits["demo.txt"]["any_medal_percentage"] == lb["lb_own_set_any_medal"]
# every run: the report's score and medal, highest score first (the fragment sorted it)
assert dom["sorted"] == "score:desc" and len(dom["tables"]["runs"]) == len(runs) == 5
by_run = {(r["competition_id"], str(r["seed"])): r for r in runs}
for row in dom["tables"]["runs"]:
    r = by_run[(row["competition"], row["seed"])]
    assert abs(float(row["score"]) - r["score"]) < 1e-5, (row, r["score"])
    medal = next((m for m in ("gold", "silver", "bronze") if r[f"{m}_medal"]), None)
    assert row["medal"] == medal or (medal is None and row["medal"] in ("-", "> median")), row
print(f"report.html in Chromium: {len(dom['tables']['runs'])} runs, leaderboard and splits as summary.csv")
PY
    echo "$output"
    assert_success
}
