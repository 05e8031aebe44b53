#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # stderr: set by bats' run --separate-stderr; bash -c scripts expand inside
# What every entry script shares: its usage is its own header comment (--help, and after a usage
# error), MLEBENCH_HPC_DEBUG=1 traces it with file and line (never the token), and the config's
# SLURM_PARTITION, SLURM_GPU_PARTITION, SLURM_ACCOUNT and SLURM_QOS hold for every job: passed by
# submit_sweep.sh, checked at the start of a job submitted by hand, on the real Slurm as a user.

bats_require_minimum_version 1.5.0
load helpers

ENTRY=(slurm_grading_server.sh slurm_agent.sh slurm_hetjob.sh slurm_llm_server.sh slurm_sweep_task.sh
    submit_sweep.sh)
COMP=demo-diabetes

teardown() { cancel_tracked_jobs; }
teardown_file() { user_seat_teardown; }

# The header's first usage line of a script, as --help prints it.
usage_line() { sed -n 's/^# \(usage: .*\)/\1/p' "$REPO_ROOT/scripts_hpc/$1" | head -n1; }

@test "every entry script: --help prints its header (usage included, no #SBATCH line) and exits 0" {
    local s
    for s in "${ENTRY[@]}"; do
        run env -u SLURM_JOB_ID bash "$REPO_ROOT/scripts_hpc/$s" --help
        [ "$status" -eq 0 ] || { echo "$s: exit $status: $output"; false; }
        [[ ${lines[0]} == "$(sed -n '2s/^# //p' "$REPO_ROOT/scripts_hpc/$s")" ]] || { echo "$s: ${lines[0]}"; false; }
        [[ -n $(usage_line "$s") ]]
        assert_line "$(usage_line "$s")"
        refute_output --partial "SBATCH"
        refute_output --partial "shellcheck"
    done
}

@test "every script of scripts_hpc/, provision/ and bench/: --help from its header, and MLEBENCH_HPC_DEBUG=1 traces it with its file and line" {
    local s n count=0
    for s in "$REPO_ROOT"/scripts_hpc/*.sh "$REPO_ROOT"/scripts_hpc/provision/*.sh "$REPO_ROOT"/bench/*.sh; do
        [[ $s != */lib.sh ]] || continue
        n=${s##*/}
        run --separate-stderr env -u SLURM_JOB_ID MLEBENCH_HPC_DEBUG=1 timeout 30 bash "$s" --help
        [ "$status" -eq 0 ] || { echo "$n: exit $status: $stderr"; false; }
        [[ ${lines[0]} == "$(sed -n '2s/^# //p' "$s")" ]] || { echo "$n: ${lines[0]}"; false; }
        grep -q "^+* $n:[0-9]*: " <<<"$stderr" || { echo "$n: no trace: $stderr"; false; }
        count=$((count + 1))
    done
    (( count >= 19 ))
}

@test "a usage error: one error line, then the header's usage lines, exit 2" {
    local s
    for s in slurm_grading_server.sh slurm_agent.sh slurm_hetjob.sh slurm_sweep_task.sh submit_sweep.sh; do
        run --separate-stderr env -u SLURM_JOB_ID bash "$REPO_ROOT/scripts_hpc/$s"
        [ "$status" -eq 2 ] || { echo "$s: exit $status: $stderr"; false; }
        [[ -z $output ]]
        mapfile -t err <<<"$stderr"
        [[ ${err[0]} == "mlebench-hpc: error: "* && ${err[0]} != *usage:* ]] || { echo "$s: ${err[0]}"; false; }
        [[ ${err[1]} == "$(usage_line "$s")" ]] || { echo "$s: ${err[1]}"; false; }
        # the rest is the usage block's continuation lines only
        for line in "${err[@]:2}"; do [[ $line == " "* ]] || { echo "$s: $line"; false; }; done
    done
    run --separate-stderr bash "$REPO_ROOT/scripts_hpc/submit_sweep.sh" --seeds
    [ "$status" -eq 2 ]
    [[ $stderr == "mlebench-hpc: error: --seeds needs a value"$'\n'"usage: "* ]]
}

@test "MLEBENCH_HPC_DEBUG=1: every command traced with its script's file and line; the token never" {
    local line
    run --separate-stderr env -u SLURM_JOB_ID MLEBENCH_HPC_DEBUG=1 bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh"
    [ "$status" -eq 2 ]
    line=$(grep -n '^mh_help "\$@"$' "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" | cut -d: -f1)
    [[ -n $line ]]
    grep -qx "+ slurm_hetjob.sh:$line: mh_help" <<<"$stderr"
    grep -q '^++* log.sh:[0-9]*: ' <<<"$stderr"  # the library's lines too
    # without the variable: no trace
    run --separate-stderr env -u SLURM_JOB_ID bash "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh"
    [ "$status" -eq 2 ]
    refute grep -q '^+' <<<"$stderr"
    # the token: traced around, never itself (control: the trace does show a value it is given)
    # shellcheck disable=SC2016 # expanded by the inner bash
    run --separate-stderr env MLEBENCH_HPC_DEBUG=1 bash -c 'source "$1/scripts_hpc/lib.sh"; mh_new_token "$2/tok"
        echo "visible-$(wc -c <"$2/tok")"' _ "$REPO_ROOT" "$BATS_TEST_TMPDIR"
    [ "$status" -eq 0 ]
    [[ $(wc -c <"$BATS_TEST_TMPDIR/tok") == 65 ]]
    grep -q 'mh_new_token' <<<"$stderr"
    grep -q 'echo visible-65' <<<"$stderr"
    refute grep -qF "$(cat "$BATS_TEST_TMPDIR/tok")" <<<"$stderr"
}

# ------------------------------------------------------------------ the site's options, for real

# seat: the user's seat (once per file) for the Slurm tests.
seat() {
    require_slurm
    require_apptainer
    require_test_user
    if [[ ! -f $BATS_FILE_TMPDIR/tdir ]]; then user_seat site; fi
    T=$(<"$BATS_FILE_TMPDIR/tdir")
    DIR=$(user_checkout)
    EXTRA_FLAGS=""
    as_test_user test -r /dev/fuse -a -w /dev/fuse || EXTRA_FLAGS="--unsquash"
    export T DIR EXTRA_FLAGS
}

# in_t CMD...: CMD as the user, in T
in_t() { (cd "$T" && as_test_user "$@"); }

# submit NAME CONFIG-LINES... -- SBATCH-ARGS... SCRIPT ARGS...: sbatch as the user with config NAME;
# prints the job id
submit() {
    local name=$1 cfg=()
    shift
    while [[ $1 != -- ]]; do cfg+=("$1"); shift; done
    shift
    user_config "$name" "${cfg[@]}"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$name.env")
    (cd "$T" && as_test_user sbatch --parsable --output="$T/out/$name.out" "$@") | tee -a "$BATS_TEST_TMPDIR/.slurm_jobs"
}

@test "a job submitted by hand under another account than the config's: exit 2 before anything starts, with the sbatch line that fixes it" {
    seat
    local j
    j=$(submit acct SLURM_ACCOUNT=mh-site-acct -- --account=mh-other --time=5 --mem=1G --cpus-per-task=1 \
        "$DIR/scripts_hpc/slurm_grading_server.sh" "$COMP")
    wait_job "$j" 120
    cat "$T/out/acct.out"
    [[ $(job_state "$j") == FAILED ]]
    [[ $(slurm_job_field "$j" ExitCode) == 2:0 ]]
    [[ $(grep -c . "$T/out/acct.out") == 1 ]]
    grep -qx "mlebench-hpc: error: job $j runs with account mh-other (the config: mh-site-acct), not as $T/cfg/acct.env says: submit it with sbatch --account=mh-site-acct scripts_hpc/slurm_grading_server.sh ..., or change the config" "$T/out/acct.out"
    [[ ! -e $T/runs/.state/${COMP}_$j ]]
    # control: submitted as the line says, the same job runs its server
    j=$(submit acct_ok SLURM_ACCOUNT=mh-site-acct SLURM_QOS=normal -- --account=mh-site-acct --time=5 --mem=1G \
        --cpus-per-task=1 "$DIR/scripts_hpc/slurm_grading_server.sh" "$COMP")
    local start=$SECONDS
    until grep -q '^GRADING_SERVER_URL=' "$T/out/acct_ok.out" 2>/dev/null; do
        (( SECONDS - start < 120 )) || { cat "$T/out/acct_ok.out"; false; }
        sleep 1
    done
    [[ $(slurm_job_field "$j" Account) == mh-site-acct ]]
    scancel "$j"
    wait_job "$j" 60
    refute grep -q "mlebench-hpc: error" "$T/out/acct_ok.out"
}

@test "a hetjob on another partition than the config's GPU partition: the check names the component and gives both components' options" {
    seat
    local j
    j=$(submit part SLURM_PARTITION=debug SLURM_GPU_PARTITION=gpu-nowhere -- --time=5 --mem=1G --cpus-per-task=1 \
        : --time=5 --gres=none --cpus-per-task=1 --mem=1G "$DIR/scripts_hpc/slurm_hetjob.sh" "$COMP")
    wait_job "$j" 120
    cat "$T/out/part.out"
    [[ $(grep -c 'mlebench-hpc: error:' "$T/out/part.out") == 1 ]]
    grep -qF "runs with partition debug (the config: gpu-nowhere)" "$T/out/part.out"
    grep -qF "submit it with sbatch --partition=debug : --partition=gpu-nowhere scripts_hpc/slurm_hetjob.sh ..." "$T/out/part.out"
    refute grep -q 'grading server for' "$T/out/part.out"
    [[ ! -e $T/runs/part ]]
}

@test "the check's rules without a cluster: accounts and QOS in any case, a hetjob component's partition list, a value Slurm does not report" {
    # the rules alone (the real jobs are the tests around this one): Slurm's variables as a job has them
    check() {
        env -i PATH="$PATH" bash -c 'source "$1/scripts_hpc/lib.sh"; shift; export "$@"
            SLURM_PARTITION=${SP:-} SLURM_GPU_PARTITION=${SGP:-} SLURM_ACCOUNT=${SA:-} SLURM_QOS=${SQ:-}
            if [[ -n ${SLURM_HET_SIZE:-} ]]; then mh_check_slurm_site x.sh cpu gpu; else mh_check_slurm_site x.sh gpu; fi' \
            _ "$REPO_ROOT" SLURM_JOB_ID=7 "$@"
    }
    run check SA=ProjA SLURM_JOB_ACCOUNT=proja SQ=High SLURM_JOB_QOS=high
    assert_success
    run check SA=proja SLURM_JOB_ACCOUNT=projb
    [ "$status" -eq 2 ]
    assert_output --partial "account projb (the config: proja)"
    # a hetjob component reports its whole list, the partition it runs in first
    run check SLURM_HET_SIZE=2 SP=cpu SGP=gpu,gpu-long SLURM_JOB_PARTITION_HET_GROUP_0=cpu \
        SLURM_JOB_PARTITION_HET_GROUP_1=gpu-long,gpu
    assert_success
    run check SLURM_HET_SIZE=2 SP=cpu SGP=gpu,gpu-long SLURM_JOB_PARTITION_HET_GROUP_0=cpu \
        SLURM_JOB_PARTITION_HET_GROUP_1=debug
    [ "$status" -eq 2 ]
    assert_output --partial "submit it with sbatch --partition=cpu : --partition=gpu,gpu-long scripts_hpc/x.sh ..."
    # no QOS reported (no accounting): not checked; a step is never checked; --warn goes on
    run check SQ=high
    assert_success
    run check SA=a SLURM_JOB_ACCOUNT=b SLURM_STEP_ID=0
    assert_success
    run env -i PATH="$PATH" SLURM_JOB_ID=7 SLURM_JOB_ACCOUNT=b bash -c 'source "$1/scripts_hpc/lib.sh"; SLURM_ACCOUNT=a
        mh_check_slurm_site --warn x.sh gpu && echo "went on"' _ "$REPO_ROOT"
    assert_success
    assert_output --partial "WARNING: job 7 runs with account b (the config: a)"
    assert_line "went on"
}

@test "submit_sweep.sh: the config's account and QOS reach every task; site options after -- are refused; a config changed since only warns" {
    seat
    local out job
    printf '%s\n' "$COMP" >"$T/cfg/site.list"
    user_config sweep_site SLURM_ACCOUNT=mh-sweep-acct SLURM_QOS=normal
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/sweep_site.env")
    # the site's options belong to the config: after -- they are refused before anything is made
    run --separate-stderr in_t bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/site.list" \
        --seeds 1 --group site -- --account=mh-other
    [ "$status" -eq 2 ]
    [[ $stderr == "mlebench-hpc: error: '--account=mh-other' after --: set SLURM_GPU_PARTITION"* ]]
    [[ ! -e $T/runs/site ]]
    # submitted as it should be, starting in 10 s: meanwhile the config names another account
    out=$(cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/site.list" \
        --seeds 1 --group site -- --begin=now+10 --gres=none --cpus-per-task=1 --mem=1G --time=15)
    echo "$out"
    grep -qF -- "--account=mh-sweep-acct --qos=normal" "$T/runs/site/sweep.json"
    job=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out")
    echo "$job" >>"$BATS_TEST_TMPDIR/.slurm_jobs"
    sed -i 's/^SLURM_ACCOUNT=.*/SLURM_ACCOUNT=mh-changed/' "$T/cfg/sweep_site.env"
    wait_job "$job" 240
    [[ $(slurm_job_field "${job}_0" Account) == mh-sweep-acct ]]
    [[ $(slurm_job_field "${job}_0" QOS) == normal ]]
    cat "$T/runs/site/.sweep/logs/${job}_0.out"
    grep -qF "WARNING: job ${job}_0" "$T/runs/site/.sweep/logs/${job}_0.out" || grep -qF "runs with account mh-sweep-acct (the config: mh-changed)" "$T/runs/site/.sweep/logs/${job}_0.out"
    refute grep -q "mlebench-hpc: error" "$T/runs/site/.sweep/logs/${job}_0.out"
    run as_test_user "$DIR/.venv/bin/mlebench-hpc" status "$T/runs/site"
    echo "$output"
    assert_output --partial "finished (exit 0, submission present)"
}
