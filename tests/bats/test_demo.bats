#!/usr/bin/env bats
# `make demo`, the README's first command, end to end: Slurm + Apptainer when present (as in CI),
# else the same script locally. It must end with a graded valid submission and the run directory.

load helpers

@test "make demo ends with a graded valid submission and prints the run directory last" {
    run make -C "$REPO_ROOT" --no-print-directory demo
    assert_success
    run_dir=${lines[${#lines[@]} - 1]}
    [ -d "$run_dir" ]
    [ -f "$run_dir/submission/submission.csv" ]
    assert_output --partial "valid 1"
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['total_valid_submissions'], r['competition_reports'][0]['valid_submission'])" "$run_dir/grading_report.json"
    assert_output "1 True"
    [ -f "$REPO_ROOT/.demo/config.env" ]
}
