#!/usr/bin/env bats
# Attack agents run through the real sbatch scripts (hetjob and sweep) on the real local Slurm,
# by an ordinary user, in the real agent image: everything the agent writes is hostile. Forged
# submissions (links to the answers), special and absurd files, a link planted in logs/ before a
# requeue, another run's server, shared scratch, and an honest 100 MiB upload. Each must fail
# safely (or, for the honest upload, succeed); the forgery and the truncation each have a control
# that shows they WOULD work if the host followed the link.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

COMP=demo-diabetes

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    export DIR
    DIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    export UCLI=$DIR/.venv/bin/mlebench-hpc
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images} s
    [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]] ||
        _unavailable "images" MLEBENCH_REQUIRE_APPTAINER "images missing in $images: run make sif"

    export T
    T=$(mktemp -d /tmp/mh-attack.XXXXXX)
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    chmod 755 "$T"
    mkdir -p "$T/images" "$T/cfg" "$T/out"
    for s in mlebench-grading.sif agent-dummy.sif; do
        ln -f "$images/$s" "$T/images/$s" 2>/dev/null || cp "$images/$s" "$T/images/$s"
    done
    chmod 644 "$T"/images/*.sif
    (( EUID == 0 )) && chown "$TEST_USER:" "$T" "$T/cfg" "$T/out"
    as_test_user "$UCLI" prepare-demo --data-dir "$T/data" >/dev/null
    export PRIV=$T/data/$COMP/prepared/private PUB=$T/data/$COMP/prepared/public
    probe_agents "$T/agents" >/dev/null
    # The attacks, as scripts the agent finds in its (read-only) public data.
    mkdir -p "$T/attacks"
    write_attacks "$T/attacks"
    cp -r "$T/attacks" "$PUB/attacks"
    big_competition "$T/data"
    (( EUID == 0 )) && chown -R "$TEST_USER:" "$T/data" "$T/attacks"
    # Without a /dev/fuse the user may open, apptainer needs --unsquash: a config knob, as on a cluster.
    export EXTRA_FLAGS=""
    as_test_user test -r /dev/fuse -a -w /dev/fuse || EXTRA_FLAGS="--unsquash"
    echo precious >"$T/victim.txt"
    (( EUID == 0 )) && chown "$TEST_USER:" "$T/victim.txt"

    # Submitted together, each test then waits for its own (the cluster runs several at once).
    local name
    for name in forge_abs forge_rel sparse wide fifo devzero; do
        user_hetjob "$name" "bash /home/data/attacks/$name.sh" "$COMP"
    done
    user_hetjob honest100 "/home/agent/start.sh" spaceship-titanic "--mem=4G"
    user_hetjob victim_server "/home/agent/start.sh && sleep 300" "$COMP"
    user_hetjob cross "bash /home/data/attacks/cross.sh" "$COMP"
    root_hetjob forge_abs_root "bash /home/data/attacks/forge_abs.sh"
    user_sweep requeue_link "bash /home/data/attacks/requeue_link.sh" 1 ""
    user_sweep scratch "bash /home/data/attacks/scratch.sh" 2 "$T/scratch"
}

teardown_file() {
    local t
    t=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    [[ -f $t/jobs ]] && xargs -r scancel <"$t/jobs" 2>/dev/null
    [[ $t == /tmp/mh-attack.* ]] && rm -rf "$t"
    return 0
}

# The attack scripts (run by bash inside the agent container).
write_attacks() {
    local d=$1 rel
    # from OUTPUT_BASE/<group>/<comp>_<job>/submission back to $T, then into the private data
    rel=../../../../data/$COMP/prepared/private/test.csv
    cat >"$d/forge_abs.sh" <<EOF
ln -sf '$PRIV/test.csv' /home/submission/submission.csv
EOF
    cat >"$d/forge_rel.sh" <<EOF
ln -sf '$rel' /home/submission/submission.csv
EOF
    cat >"$d/sparse.sh" <<'EOF'
head -n1 /home/data/sample_submission.csv > /home/submission/submission.csv
truncate -s 2G /home/submission/submission.csv
EOF
    cat >"$d/wide.sh" <<'EOF'
python3 -c "
import sys
n = 1_000_000
with open('/home/submission/submission.csv', 'w') as f:
    f.write(','.join(f'c{i}' for i in range(n)) + '\n')
    for _ in range(20):
        f.write(','.join(['1'] * n) + '\n')
"
EOF
    cat >"$d/fifo.sh" <<'EOF'
mkfifo /home/submission/submission.csv
EOF
    cat >"$d/devzero.sh" <<'EOF'
ln -sf /dev/zero /home/submission/submission.csv
EOF
    # Look for other grading servers on this node (/proc/net/tcp) and try them with our token and
    # without; record what each answered.
    cat >"$d/cross.sh" <<'EOF'
own=${GRADING_SERVER##*:}
cp /home/data/sample_submission.csv /home/submission/submission.csv
for i in $(seq 1 45); do
    for hex in $(awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u); do
        port=$((16#$hex))
        [ "$port" = "$own" ] && continue
        body=$(curl -s -m 2 "http://127.0.0.1:$port/health" 2>/dev/null) || continue
        case $body in *competition*) ;; *) continue ;; esac
        with=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "X-Grading-Token: $GRADING_SERVER_TOKEN" \
            -F file=@/home/submission/submission.csv "http://127.0.0.1:$port/validate")
        without=$(curl -s -m 10 -o /dev/null -w '%{http_code}' \
            -F file=@/home/submission/submission.csv "http://127.0.0.1:$port/validate")
        echo "port $port with-my-token $with without-token $without" >> /home/logs/cross.txt
    done
    [ -s /home/logs/cross.txt ] && exit 0
    sleep 2
done
echo "no other grading server found" >> /home/logs/cross.txt
EOF
    # First attempt: plant a link in logs/ to a file of the user's, then wait to be requeued.
    cat >"$d/requeue_link.sh" <<EOF
if [ -L /home/logs/integrity_check.stderr ]; then
    cp /home/data/sample_submission.csv /home/submission/submission.csv
    exit 0
fi
ln -s '$T/victim.txt' /home/logs/integrity_check.stderr
echo planted > /home/code/planted
sleep 600
EOF
    cat >"$d/scratch.sh" <<'EOF'
echo "$COMPETITION_ID $$" > /tmp/marker-$$-$RANDOM
sleep 10
ls -A /tmp > /home/logs/tmp_listing.txt
cp /home/data/sample_submission.csv /home/submission/submission.csv
EOF
}

# A synthetic spaceship-titanic whose sample submission is a little over 100 MiB.
big_competition() {
    python3 - "$1/spaceship-titanic/prepared" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(root + "/public", exist_ok=True)
os.makedirs(root + "/private", exist_ok=True)
n = 6_600_000
ids = [f"{i // 4:07d}_{i % 4 + 1:02d}" for i in range(n)]
with open(root + "/private/test.csv", "w") as f:
    f.write("PassengerId,Transported\n")
    f.writelines(f"{p},{'True' if i % 3 else 'False'}\n" for i, p in enumerate(ids))
with open(root + "/public/sample_submission.csv", "w") as f:
    f.write("PassengerId,Transported\n")
    f.writelines(f"{p},False\n" for p in ids)
with open(root + "/public/description.md", "w") as f:
    f.write("synthetic spaceship-titanic for the upload test\n")
PY
}

# config NAME CMD [SCRATCH]: the user's config for one attack: the variant probe/NAME runs CMD.
config() {
    cat >"$T/cfg/$1.env" <<EOF
DATA_DIR="$T/data"
GRADING_SIF="$T/images/mlebench-grading.sif"
AGENT_SIF="$T/images/agent-dummy.sif"
OUTPUT_BASE="$T/runs"
RUN_GROUP="$1"
TIME_LIMIT_SECS=600
TIME_MARGIN_SECS=10
SCRATCH_DIR="${3:-}"
APPTAINER_EXTRA_FLAGS="$EXTRA_FLAGS"
EOF
    probe_lines "$T/agents" "probe/$1" "$2" >>"$T/cfg/$1.env"
    (( EUID == 0 )) && chown "$TEST_USER:" "$T/cfg/$1.env"
    return 0
}

# user_hetjob NAME CMD COMP [GRADING_OPTS]: sbatch slurm_hetjob.sh as the user; job id in $T/NAME.job
user_hetjob() {
    local name=$1 cmd=$2 comp=$3 gopts=${4:---mem=1G} id
    config "$name" "$cmd"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$name.env")
    # shellcheck disable=SC2086 # gopts: sbatch options
    id=$(cd "$T" && as_test_user sbatch --parsable --output="$T/out/$name.out" --time=15 $gopts --cpus-per-task=1 \
        : --time=15 --gres=none --cpus-per-task=1 --mem=1G "$DIR/scripts_hpc/slurm_hetjob.sh" "$comp") || return 1
    echo "${id%%;*}" >"$T/$name.job"
    echo "${id%%;*}" >>"$T/jobs"
}

# root_hetjob NAME CMD: the same attack by root, with root's checkout (as CI's jobs run).
root_hetjob() {
    (( EUID == 0 )) || return 0
    local name=$1 id
    config "$name" "$2"
    id=$(cd "$T" && MLEBENCH_HPC_CONFIG=$T/cfg/$name.env sbatch --parsable --output="$T/out/$name.out" --time=15 \
        --mem=1G --cpus-per-task=1 : --time=15 --gres=none --cpus-per-task=1 --mem=1G \
        "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$COMP") || return 1
    echo "${id%%;*}" >"$T/$name.job"
    echo "${id%%;*}" >>"$T/jobs"
}

# user_sweep NAME CMD SEEDS SCRATCH: submit_sweep.sh as the user; array job id in $T/NAME.job
user_sweep() {
    local name=$1 out
    config "$name" "$2" "$4"
    echo "$COMP" >"$T/cfg/$name.list"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/$name.env")
    out=$(cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/$name.list" \
        --seeds "$3" --max-parallel 2 --group "$name" -- --gres=none --cpus-per-task=1 --mem=1G --time=15) || {
        echo "$out" >&2
        return 1
    }
    sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out" >"$T/$name.job"
    cat "$T/$name.job" >>"$T/jobs"
}

# wait_for NAME [SECS]: until the job (or array) NAME has left the queue; prints its output on failure.
wait_for() {
    local id start=$SECONDS
    id=$(<"$T/$1.job")
    while squeue -h -j "$id" 2>/dev/null | grep -q .; do
        (( SECONDS - start < ${2:-240} )) || { echo "job $1 ($id) still queued" >&2; cat "$T/out/$1.out" >&2; return 1; }
        sleep 1
    done
}

run_dir_of() { sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/out/$1.out" | tail -n1; }

# meta RUN EXPR: a Python expression over the run's metadata `m`.
meta() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print($2)" "$1/metadata.json"; }

# grade_as_user RUN: `mlebench-hpc grade` by the run's owner (the user; root for root's run); sets
# $report to one line "valid score medal error".
grade_as_user() {
    local as=(as_test_user) cli=$UCLI
    if [[ $(stat -c %U "$1") == root ]]; then as=(); cli=$REPO_ROOT/.venv/bin/mlebench-hpc; fi
    "${as[@]}" "$cli" grade "$1" --data-dir "$T/data" --no-summary --no-progress >"$T/grade.log" 2>&1 || true
    report=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; \
print(r['valid_submission'], r['score'], r['any_medal'], r['error'])" "$1/grading_report.json")
}

# The control for a forgery: the engine reading the agent's path the naive way (following the link).
naive_score() {
    as_test_user "$DIR/.venv/bin/python" -c "
import sys
from pathlib import Path
from mlebench_hpc.grading import load_competition
c = load_competition('$COMP', Path('$T/data'))
print(c.score(Path(sys.argv[1])), c.score(Path('$PRIV/test.csv')))" "$1/submission/submission.csv"
}

assert_forgery_refused() {
    local name=$1 run
    wait_for "$name"
    run=$(run_dir_of "$name")
    [[ -n $run ]] || { cat "$T/out/$name.out"; false; }
    [ -L "$run/submission/submission.csv" ]
    run meta "$run" "m['submission']['status'], m['submission_exists']"
    assert_output "refused False"
    grade_as_user "$run"
    [[ $report == "False None False submission refused: submission/submission.csv is a symbolic link"* ]] || {
        echo "report: $report"; cat "$T/grade.log"; false; }
    # control: following the link, the engine scores the forgery exactly as the answers themselves
    run naive_score "$run"
    assert_success
    read -r forged perfect <<<"$output"
    [[ $forged == "$perfect" ]]
}

@test "forged submission: a link to the answers' absolute path is refused, never scored (control: followed, it scores as the answers)" {
    assert_forgery_refused forge_abs
}

@test "forged submission: a relative link to the answers is refused (control: followed, it scores as the answers)" {
    assert_forgery_refused forge_rel
}

@test "forged submission as root: refused too (control: followed, it scores as the answers)" {
    (( EUID == 0 )) || skip "not root: the user's test above is the one that counts"
    assert_forgery_refused forge_abs_root
}

@test "a sparse 2 GiB submission: refused by its size, graded in seconds" {
    wait_for sparse
    run=$(run_dir_of sparse)
    [[ $(stat -c %s "$run/submission/submission.csv") == 2147483648 ]]
    run meta "$run" "m['submission']['status'], 'over the limit' in m['submission']['reason']"
    assert_output "refused True"
    local t0=$SECONDS
    grade_as_user "$run"
    (( SECONDS - t0 < 30 ))
    [[ $report == "False None False submission refused:"*"over the limit"* ]] || { echo "$report"; false; }
}

@test "a million columns: refused from the header line, before anything parses it" {
    wait_for wide
    run=$(run_dir_of wide)
    run meta "$run" "m['submission']['status'], m['submission']['reason']"
    assert_output --partial "refused"
    assert_output --partial "header line longer than"
    grade_as_user "$run"
    [[ $report == "False None False submission refused:"* ]] || { echo "$report"; false; }
}

@test "a FIFO and a link to /dev/zero as the submission: refused at once, nothing hangs" {
    wait_for fifo 180
    wait_for devzero 180
    run meta "$(run_dir_of fifo)" "m['status'], m['submission']['status'], m['submission']['reason']"
    assert_output --partial "refused"
    assert_output --partial "FIFO"
    run meta "$(run_dir_of devzero)" "m['submission']['status'], m['submission']['reason']"
    assert_output --partial "refused"
    assert_output --partial "symbolic link"
    grade_as_user "$(run_dir_of fifo)"
    [[ $report == "False None False submission refused:"*FIFO* ]] || { echo "$report"; false; }
}

@test "an honest 100 MiB upload is validated as a user (uploads go to disk, not the 64 MiB tmpfs)" {
    wait_for honest100 400
    run=$(run_dir_of honest100)
    [[ -n $run ]] || { cat "$T/out/honest100.out"; false; }
    size=$(stat -c %s "$run/submission/submission.csv")
    (( size > 100 * 1024 * 1024 ))
    run cat "$run/logs/validation_verdict.json"
    assert_output --partial '"valid": true'
    run meta "$run" "m['status'], m['exit_code'], m['submission']['bytes']"
    assert_output "finished 0 $size"
}

@test "another run's agent on the node finds this run's server and is refused (401), with or without its own token" {
    wait_for cross 300
    run cat "$(run_dir_of cross)/logs/cross.txt"
    local victim_url port
    victim_url=$(cat "$T/runs/.state/${COMP}_$(<"$T/victim_server.job")/url" 2>/dev/null || true)
    [[ -n $victim_url ]] || { echo "the victim's server is gone before the attack ended"; cat "$T/out/victim_server.out"; false; }
    port=${victim_url##*:}
    assert_output --partial "port $port with-my-token 401 without-token 401"
    refute_output --regexp 'with-my-token 200|without-token 200'
    scancel "$(<"$T/victim_server.job")"
}

@test "a link planted in logs/ before a requeue: the requeued run truncates nothing (control: a host write through it would)" {
    local job run
    job=$(<"$T/requeue_link.job")
    run=$T/runs/requeue_link/${COMP}_${job}_0
    for _ in $(seq 1 120); do [[ -f $run/code/planted ]] && break; sleep 1; done
    [[ -L $run/logs/integrity_check.stderr ]]
    as_test_user scontrol requeue "${job}_0"
    wait_for requeue_link 300
    run meta "$run" "m['status'], m['submission_exists'], m['requeue_count']"
    assert_output "finished True 1"
    run cat "$T/victim.txt"
    assert_output "precious"
    # control: the link really leads there: a host write through it empties the victim
    as_test_user bash -c ": 2>'$run/logs/integrity_check.stderr'"
    [[ ! -s $T/victim.txt ]]
}

@test "two sweep tasks with SCRATCH_DIR: each gets its own scratch, neither sees the other's files" {
    wait_for scratch 300
    local job runs=() r dirs
    job=$(<"$T/scratch.job")
    runs=("$T/runs/scratch/${COMP}_${job}_0" "$T/runs/scratch/${COMP}_${job}_1")
    for r in "${runs[@]}"; do
        run grep -c '^marker-' "$r/logs/tmp_listing.txt"
        assert_output 1
        run meta "$r" "m['status']"
        assert_output finished
    done
    dirs=$(find "$T/scratch/scratch" -mindepth 1 -maxdepth 1 -type d | wc -l)
    [[ $dirs == 2 ]]
    # and the two tasks did run at the same time (else sharing could not have shown)
    run python3 - "${runs[@]}" <<'PY'
import json, sys
a, b = (json.load(open(r + "/metadata.json")) for r in sys.argv[1:3])
print(a["start"] < b["end"] and b["start"] < a["end"])
PY
    assert_output True
}
