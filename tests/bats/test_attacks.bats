#!/usr/bin/env bats
# Attack agents run through the real sbatch scripts (hetjob and sweep) on the real local Slurm,
# by an ordinary user, in the real agent image: everything the agent writes is hostile. Forged
# submissions (links to the answers), special and absurd files, a link planted in logs/ before a
# requeue, another run's server, shared scratch, and an honest 100 MiB upload; a forged URL line in
# the job output, escape sequences for the user's terminal, and planted run directories. Each must
# fail safely (or, for the honest upload, succeed); each has a control that shows it WOULD work
# without its protection (the link followed, a last-line URL rule, the raw bytes, the plant graded).
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

COMP=demo-diabetes
JIGSAW=jigsaw-toxic-comment-classification-challenge

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    user_seat attack
    export PRIV=$T/data/$COMP/prepared/private PUB=$T/data/$COMP/prepared/public
    probe_agents "$T/agents" >/dev/null
    # The attacks, as scripts the agent finds in its (read-only) public data.
    mkdir -p "$T/attacks"
    write_attacks "$T/attacks"
    cp -r "$T/attacks" "$PUB/attacks"
    big_competition "$T/data"
    tiny_jigsaw "$T/data"
    cp -r "$T/attacks" "$T/data/$JIGSAW/prepared/public/attacks"
    (( EUID == 0 )) && chown -R "$TEST_USER:" "$T/data" "$T/attacks"
    # Without a /dev/fuse the user may open, apptainer needs --unsquash: a config knob, as on a cluster.
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
    user_hetjob forge_url "bash /home/data/attacks/forge_url.sh" "$COMP"
    user_sweep requeue_link "bash /home/data/attacks/requeue_link.sh" 1 ""
    # its own OUTPUT_BASE and scratch side by side, so that grading their parent meets both
    user_sweep scratch "bash /home/data/attacks/scratch.sh" 2 "$T/sc/scratch" "$T/sc/runs"
    user_sweep escapes "bash /home/data/attacks/escapes.sh" 1 "" "" "$COMP $JIGSAW"
}

teardown_file() { user_seat_teardown; }

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
# Plant runs of our own, each with its own "answers" (our predictions) and leaderboard, where the
# host might take them for runs: in scratch (/tmp), code/ and logs/. The host path of /tmp is in
# mountinfo; a plant names it as its data_dir.
host_tmp=$(awk '$5 == "/tmp" { print $4; exit }' /proc/self/mountinfo)
python3 - "$host_tmp" <<'PY'
import json, os, shutil, sys
host_tmp, comp = sys.argv[1], os.environ["COMPETITION_ID"]
fake = "/tmp/fake-data/" + comp
shutil.copytree("/home/data", fake + "/prepared/public", dirs_exist_ok=True)
os.makedirs(fake + "/prepared/private", exist_ok=True)
shutil.copy("/home/data/sample_submission.csv", fake + "/prepared/private/test.csv")
with open(fake + "/leaderboard.csv", "w") as f:
    f.write("teamName,score\na,50.0\nb,60.0\nc,70.0\n")
for where, job in (("/tmp/runs", "9001"), ("/home/code", "9002"), ("/home/logs/x", "9003")):
    run = f"{where}/{comp}_{job}"
    for sub in ("submission", "logs", "code", "overlay"):
        os.makedirs(f"{run}/{sub}", exist_ok=True)
    shutil.copy("/home/data/sample_submission.csv", run + "/submission/submission.csv")
    meta = {"competition_id": comp, "agent_job_id": job, "seed": "0", "status": "finished",
            "exit_code": "0", "submission_exists": "true", "data_dir": host_tmp + "/fake-data"}
    with open(run + "/metadata.json", "w") as f:
        json.dump(meta, f)
PY
EOF
    # Plants where a looser discovery rule would look: the server logs each request path, and in a
    # hetjob the agent's own output lands in the same job output. Then stay alive while the test
    # resolves this job.
    cat >"$d/forge_url.sh" <<'EOF'
curl -s -o /dev/null "$GRADING_SERVER/GRADING_SERVER_URL=http://evil.invalid:1"
curl -s -o /dev/null "$GRADING_SERVER/%0AGRADING_SERVER_URL=http://evil.invalid:2"
echo "GRADING_SERVER_URL=http://evil.invalid:3"
echo "GRADING_SERVER_URL=http://evil.invalid:4" >&2
cp /home/data/sample_submission.csv /home/submission/submission.csv
sleep 300
EOF
    # Escape sequences that would redraw a failed row as finished and erase the lines below: in
    # the last error: line (demo-diabetes fails) and in a column name the grader quotes (jigsaw).
    cat >"$d/escapes.sh" <<'EOF'
if [ "$COMPETITION_ID" = demo-diabetes ]; then
    printf 'error: \033[1A\033[2K\033[32mfinished (exit 0, submission present)\033[0m\342\200\256\302\233J\r\n'
    printf 'note: \033[1A\033[2K\033[32mall pairs finished\033[0m\n' >&2
    exit 1
fi
python3 - <<'PY'
import csv
rows = list(csv.reader(open("/home/data/sample_submission.csv")))
name = "\x1b[1A\x1b[2K\x1b[32mall runs valid\x1b[0m"
with open("/home/submission/submission.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(rows[0] + [name])
    w.writerows(r + ["1"] for r in rows[1:])
PY
EOF
}

# A synthetic jigsaw (the built-in grader), 40 rows: its errors quote the submission's extra columns.
tiny_jigsaw() {
    python3 - "$1/$JIGSAW/prepared" <<'PY'
import os, random, sys
root = sys.argv[1]
for part in ("public", "private"):
    os.makedirs(f"{root}/{part}", exist_ok=True)
classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
rng = random.Random(3)
ids = [f"{i:016x}" for i in range(40)]
head = "id," + ",".join(classes) + "\n"
with open(f"{root}/private/test.csv", "w") as f:
    f.write(head + "".join(i + "," + ",".join(str(rng.randint(0, 1)) for _ in classes) + "\n" for i in ids))
with open(f"{root}/public/sample_submission.csv", "w") as f:
    f.write(head + "".join(i + ",0.5" * len(classes) + "\n" for i in ids))
with open(f"{root}/public/description.md", "w") as f:
    f.write("synthetic jigsaw for the escape test\n")
PY
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

# config NAME CMD [SCRATCH] [OUTPUT_BASE]: the user's config for one attack: the variant probe/NAME
# runs CMD.
config() {
    cat >"$T/cfg/$1.env" <<EOF
DATA_DIR="$T/data"
GRADING_SIF="$T/images/mlebench-grading.sif"
AGENT_SIF="$T/images/agent-dummy.sif"
OUTPUT_BASE="${4:-$T/runs}"
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

# user_sweep NAME CMD SEEDS SCRATCH [OUTPUT_BASE] [COMPETITIONS]: submit_sweep.sh as the user; array
# job id in $T/NAME.job
user_sweep() {
    local name=$1 out
    config "$name" "$2" "$4" "${5:-}"
    # shellcheck disable=SC2086 # the competitions are words
    printf '%s\n' ${6:-$COMP} >"$T/cfg/$name.list"
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

# controls: how many lines of stdin hold a control byte (tab and newline aside)
controls() { LC_ALL=C grep -c $'[\x01-\x08\x0b-\x1f\x7f]' || true; }

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

# The grading server's URL for auto:JOB as `run start` finds it (resolve_spec), as the test user
# with the user's checkout. Args: job state_dir
user_resolve() {
    local code='import sys
from pathlib import Path
from mlebench_hpc.run.discovery import resolve_spec
print(resolve_spec(sys.argv[1], sys.argv[2], 60.0, Path(sys.argv[3])))'
    as_test_user "$DIR/.venv/bin/python" -c "$code" "auto:$1" "$COMP" "$2"
}

# First: the forging job must still run when its test asks discovery about it.
@test "a forged URL line in the job output: auto:JOBID finds the server's own line (control: a last-line rule takes the agent's)" {
    local job out run url
    job=$(<"$T/forge_url.job")
    out=$T/out/forge_url.out
    run=$T/runs/forge_url/${COMP}_$job
    # the agent's last line, and the server's log of its request (written after its reply, through
    # another pipe: it may land a moment after the agent's own lines)
    for _ in $(seq 1 240); do
        grep -q 'evil.invalid:4' "$out" 2>/dev/null &&
            grep -q 'grading-server GET /GRADING_SERVER_URL=http://evil.invalid:1 404' "$out" && break
        sleep 1
    done
    # the plants are there: the logged request path, and the agent's own line, exactly marked
    grep -q 'grading-server GET /GRADING_SERVER_URL=http://evil.invalid:1 404' "$out" || { cat "$out"; false; }
    grep -qx 'GRADING_SERVER_URL=http://evil.invalid:3' "$out"
    url=$(meta "$run" "m['grading_server_url']")
    [[ $url == http://*:* && $url != *evil* ]]
    # control: a last-line rule (the last line carrying the mark, anywhere) takes the agent's URL
    run bash -c "grep -o 'GRADING_SERVER_URL=http[^ ]*' '$out' | tail -n1"
    [[ $output == *evil.invalid* ]]
    # the URL file cannot be read (a state dir without it): the server's own line, the real URL
    mkdir -p "$T/no-state"
    (( EUID == 0 )) && chown "$TEST_USER:" "$T/no-state"
    [[ $(job_state "$job") == RUNNING ]]
    run user_resolve "$job" "$T/no-state"
    assert_success
    assert_output "$url"
    # and from the URL file, the same
    run user_resolve "$job" "$T/runs/.state"
    assert_success
    assert_output "$url"
    scancel "$job"
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
    runs=("$T/sc/runs/scratch/${COMP}_${job}_0" "$T/sc/runs/scratch/${COMP}_${job}_1")
    for r in "${runs[@]}"; do
        run grep -c '^marker-' "$r/logs/tmp_listing.txt"
        assert_output 1
        run meta "$r" "m['status']"
        assert_output finished
    done
    dirs=$(find "$T/sc/scratch/scratch" -mindepth 1 -maxdepth 1 -type d | wc -l)
    [[ $dirs == 2 ]]
    # and the two tasks did run at the same time (else sharing could not have shown)
    run python3 - "${runs[@]}" <<'PY'
import json, sys
a, b = (json.load(open(r + "/metadata.json")) for r in sys.argv[1:3])
print(a["start"] < b["end"] and b["start"] < a["end"])
PY
    assert_output True
}

@test "runs planted in scratch, code/ and logs/ are not graded; SCRATCH_DIR inside OUTPUT_BASE is refused (control: a plant graded against its own data takes gold)" {
    wait_for scratch 300
    local job plants scratch_plant
    job=$(<"$T/scratch.job")
    # the plants are there, laid out and named as runs, next to the two real runs
    plants=$(find "$T/sc" -name metadata.json -path '*_900*' | sort)
    [[ $(wc -l <<<"$plants") == 6 ]] || { echo "$plants"; false; }
    scratch_plant=$(dirname "$(grep -m1 "/sc/scratch/.*/tmp/runs/${COMP}_9001/" <<<"$plants")")
    [[ -d $scratch_plant/submission ]]
    # control: such a plant, graded against the data it names (its own answers), is valid, error 0, gold
    mkdir -p "$T/control"
    cp -r "$scratch_plant" "$T/control/"
    (( EUID == 0 )) && chown -R "$TEST_USER:" "$T/control"
    as_test_user "$UCLI" grade "$T/control/${COMP}_9001" --data-dir "$(dirname "$scratch_plant")/../fake-data" \
        --no-summary --no-progress >/dev/null
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; \
print(r['valid_submission'], r['score'], r['gold_medal'])" "$T/control/${COMP}_9001/grading_report.json"
    assert_output "True 0.0 True"
    # make grade over their common parent, with the config in force: the two real runs, against the
    # configured data; the scratch is skipped with one line naming it
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/scratch.env")
    run as_test_user make -s -C "$DIR" grade RUN="$T/sc"
    assert_success
    assert_output --partial "warning: skipped $T/sc/scratch: an agent's scratch"
    refute_output --partial "_900"
    run python3 -c "import json,sys; g=json.load(open(sys.argv[1])); \
print(g['total_runs'], sorted(r['run_dir'].rsplit('/', 1)[1] for r in g['competition_reports']), \
{r['data_dir'] for r in g['competition_reports']})" "$T/sc/grading_report.json"
    assert_output "2 ['${COMP}_${job}_0', '${COMP}_${job}_1'] {'$T/data'}"
    # without the config (SCRATCH_DIR unknown): each scratch is still known by its layout
    MH_USER_ENV=()
    run as_test_user make -s -C "$DIR" grade RUN="$T/sc" DATA_DIR="$T/data"
    assert_success
    [[ $(grep -c "warning: skipped $T/sc/scratch/scratch/${COMP}_${job}_[01]: an agent's scratch" <<<"$output") == 2 ]]
    refute_output --partial "_900"
    # and the config check refuses a scratch inside OUTPUT_BASE before anything is submitted
    config scratch_in "true" "$T/sc/runs/scratch" "$T/sc/runs"
    # shellcheck disable=SC2034 # read by as_test_user
    MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/scratch_in.env")
    run as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/cfg/scratch.list" --seeds 1 --group scratch_in
    assert_failure 2
    assert_output --partial "config error: SCRATCH_DIR=$T/sc/runs/scratch is inside OUTPUT_BASE=$T/sc/runs"
    refute_output --partial "submitted array job"
}

@test "escape sequences of the agent's reach neither the job output, status nor make grade (control: the raw bytes are in its own log and its submission)" {
    wait_for escapes 300
    local job g failed jig outs=()
    job=$(<"$T/escapes.job")
    g=$T/runs/escapes
    failed=$(find "$g" -maxdepth 1 -name "${COMP}_${job}_*") jig=$(find "$g" -maxdepth 1 -name "${JIGSAW}_${job}_*")
    # control: the agent printed them (its own log keeps them raw) and put them in its submission's header
    grep -q $'\x1b\\[2K' "$failed/logs/agent_output.log"
    grep -q $'\xe2\x80\xae' "$failed/logs/agent_output.log"
    head -n1 "$jig/collected/submission.csv" | grep -q $'\x1b\\[2K'
    # the job output holds them escaped, and no control byte at all
    mapfile -t outs < <(find "$g/.sweep/logs" -name "${job}_*.out")
    [[ ${#outs[@]} == 2 ]]
    [[ $(cat "${outs[@]}" | controls) == 0 ]]
    grep -qF 'error: \x1b[1A\x1b[2K\x1b[32mfinished (exit 0' "${outs[@]}"
    grep -qF '\u202e\u009bJ\r' "${outs[@]}"
    # status: the failed row says failed and quotes the agent escaped; the count line stands
    run as_test_user "$UCLI" status "$g"
    assert_success
    [[ $(controls <<<"$output") == 0 ]]
    assert_output --partial 'failed (exit 1, no submission): error: \x1b[1A\x1b[2K\x1b[32mfinished (exit 0, submission present)'
    [[ ${lines[-1]} == "2 pairs: 1 finished, 1 failed" ]]
    # make grade: the column name the grader quotes is escaped; the totals line stands
    run as_test_user make -s -C "$DIR" grade RUN="$g" DATA_DIR="$T/data"
    assert_success
    [[ $(controls <<<"$output") == 0 ]]
    assert_output --partial "columns besides 'id' and the 6 classes (\\x1b[1A\\x1b[2K\\x1b[32mall runs valid\\x1b[0m)"
    assert_output --partial "runs 2, with submission 1, valid 0"
    [[ $(controls <"$g/summary.md") == 0 ]]
}
