#!/usr/bin/env bats
# The agent image is an attacker too: an image built From the dummy agent with its own
# `sh` first on PATH and its own environment script, both of which look for the answers through
# other processes' /proc/<pid>/root, forge an overlay record (the answers as /home/agent/answers.csv)
# and print a forged integrity record. Run by an ordinary user through the real hetjob: the host
# never runs anything of the image outside the agent's isolation (the overlay scan reads the SIF
# file; the integrity check is a static host binary with the image's environment scripts masked), so
# no answer byte reaches the run and the record is the real checker's. The controls run the same
# image where a host lets the image's code run (an overlay scan by `apptainer exec ... sh` without
# --pid, an integrity check under the image's own shell): there it reads the answers and fakes the
# record.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

bats_require_minimum_version 1.5.0
load helpers

COMP=demo-breast-cancer

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    require_root # building the hostile image plays its author; everything a user does runs as the user
    export DIR
    DIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    export UCLI=$DIR/.venv/bin/mlebench-hpc
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]] ||
        _unavailable "images" MLEBENCH_REQUIRE_APPTAINER "images missing in $images: run make sif"
    export T
    T=$(mktemp -d /tmp/mh-hostile.XXXXXX)
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    chmod 755 "$T"
    mkdir -p "$T/images" "$T/cfg" "$T/out" "$T/runs"
    cp "$images/mlebench-grading.sif" "$T/images/"
    chown "$TEST_USER:" "$T" "$T/cfg" "$T/out" "$T/runs"
    as_test_user "$UCLI" prepare-demo --data-dir "$T/data" >/dev/null
    export PRIV=$T/data/$COMP/prepared/private
    build_hostile_image "$images/agent-dummy.sif" "$T/images/agent-hostile.sif"
    chmod 644 "$T"/images/*.sif
    export EXTRA_FLAGS=""
    as_test_user test -r /dev/fuse -a -w /dev/fuse || EXTRA_FLAGS="--unsquash"
    probe_agents "$T/agents" >/dev/null
    probe_variant "$T/agents" probe/hostile "bash /home/agent/hostile_agent.sh"
    local who
    for who in user root; do
        cat >"$T/cfg/hostile-$who.env" <<EOF
DATA_DIR="$T/data"
GRADING_SIF="$T/images/mlebench-grading.sif"
AGENT_SIF="$T/images/agent-hostile.sif"
OUTPUT_BASE="$T/runs-$who"
RUN_GROUP="hostile"
TIME_LIMIT_SECS=600
TIME_MARGIN_SECS=10
APPTAINER_EXTRA_FLAGS="$EXTRA_FLAGS"
AGENTS_DIR="$T/agents"
AGENT_ID="probe/hostile"
EOF
    done
    mkdir -p "$T/runs-user" && chown "$TEST_USER:" "$T/cfg/hostile-user.env" "$T/runs-user"
    # The user, through the real hetjob; and root with root's checkout: apptainer without a user
    # namespace (root, or a setuid installation) is where a scan running the image's sh could read
    # other processes' roots.
    local id sb=(--time=15 --mem=1G --cpus-per-task=1 : --time=15 --gres=none --cpus-per-task=1 --mem=1G)
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$T/cfg/hostile-user.env")
    id=$(cd "$T" && as_test_user sbatch --parsable --output="$T/out/hostile-user.out" "${sb[@]}" \
        "$DIR/scripts_hpc/slurm_hetjob.sh" "$COMP") || return 1
    echo "${id%%;*}" >>"$T/jobs"
    id=$(cd "$T" && MLEBENCH_HPC_CONFIG=$T/cfg/hostile-root.env sbatch --parsable \
        --output="$T/out/hostile-root.out" "${sb[@]}" "$REPO_ROOT/scripts_hpc/slurm_hetjob.sh" "$COMP") || return 1
    echo "${id%%;*}" >>"$T/jobs"
}

teardown_file() {
    local t
    t=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    [[ -f $t/jobs ]] && xargs -r scancel <"$t/jobs" 2>/dev/null
    [[ -n ${MH_KEEP:-} ]] || [[ $t != /tmp/mh-hostile.* ]] || rm -rf "$t"
    return 0
}

# build_hostile_image BASE_SIF OUT_SIF: the dummy agent plus a hostile sh, environment script and agent.
build_hostile_image() {
    local box=$T/sandbox
    apptainer build --sandbox "$box" "$1" >/dev/null 2>&1
    mkdir -p "$box/usr/local/bin"
    # Looks for the answers through every visible process's root; on success forges the record an
    # overlay scan run through this sh would read, for /home/agent/answers.csv (mode size path NUL
    # bytes), and leaves a copy where it can.
    cat >"$box/usr/local/bin/sh" <<EOF
#!/bin/dash
for r in /proc/[0-9]*/root; do
    f="\$r$PRIV/test.csv"
    if [ -r "\$f" ]; then
        echo "HOSTILE-SH read the answers through \$r" >&2
        printf '644 %s /home/agent/answers.csv\\0' "\$(wc -c <"\$f")"
        cat "\$f"
        cp "\$f" /home/code/stolen-by-sh.csv 2>/dev/null
        break
    fi
done
exec /bin/dash "\$@"
EOF
    chmod 755 "$box/usr/local/bin/sh"
    # Runs before any command apptainer starts in this image: tries the same, and prints a forged
    # integrity record (what a checker that takes the last line of the container's output records).
    cat >"$box/.singularity.d/env/99-zz-hostile.sh" <<EOF
seen=no
for r in /proc/[0-9]*/root; do
    if [ -r "\$r$PRIV/test.csv" ]; then seen=yes; cp "\$r$PRIV/test.csv" /home/code/stolen-by-env.csv 2>/dev/null; fi
done
[ -d /home/logs ] && echo "hostile env script ran: saw answers \$seen, \$(ls -d /proc/[0-9]* | wc -l) processes" >>/home/logs/hostile-env.log 2>/dev/null
echo '{"ok":true,"checker":"forged by the image","paths":[],"processes":{"host_process_visible":false}}'
EOF
    # The agent: submits whatever answers it could get, else the sample; uses sh inside the run too.
    cat >"$box/home/agent/hostile_agent.sh" <<'EOF'
for f in /home/agent/answers.csv /home/code/stolen-by-sh.csv /home/code/stolen-by-env.csv; do
    if [ -s "$f" ]; then cp "$f" /home/submission/submission.csv; echo "submitted $f"; exit 0; fi
done
sh -c 'cp /home/data/sample_submission.csv /home/submission/submission.csv'
echo "submitted the sample"
bash /home/validate_submission.sh /home/submission/submission.csv
EOF
    apptainer build --force "$2" "$box" >/dev/null 2>&1
    rm -rf "$box"
}

run_dir() { sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/out/hostile-$1.out" | tail -n1; }

# check_run WHO CLI CHECKER [AS...]: the run of WHO (user or root) got no answer byte, a real record.
check_run() {
    local who=$1 cli=$2 checker=$3 run out=$T/out/hostile-$1.out
    run=$(run_dir "$who")
    [[ -n $run && -f $run/metadata.json ]] || { cat "$out"; false; }
    # the scan read the image: the forged record never became an overlay
    run ! grep -q answers.csv "$run/overlay/overlays.tsv"
    [[ ! -e $run/overlay/home/agent/answers.csv ]]
    # the image's code ran only inside the agent's isolation, where it found nothing
    grep -q 'hostile env script ran: saw answers no' "$run/logs/hostile-env.log"
    [[ ! -e $run/code/stolen-by-sh.csv && ! -e $run/code/stolen-by-env.csv ]]
    grep -q 'submitted the sample' "$out"
    run ! grep -q HOSTILE-SH "$out"
    # the record is the host checker's, not the image's forgery, and it names the binary that ran
    python3 - "$run/metadata.json" "$checker" <<'PY'
import hashlib, json, sys
m = json.load(open(sys.argv[1]))
rec = m["integrity"]
assert rec["ok"] is True and rec["checker"] == "mlebench-hpc integrity-check 2", rec
assert rec["checker_sha256"] == hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(), rec
assert "forged" not in json.dumps(rec), rec
assert m["status"] == "finished", m["status"]
PY
    # graded: the sample's score, nowhere near the answers' 1.0
    "${@:4}" "$cli" grade "$run" --data-dir "$T/data" --no-summary --no-progress >/dev/null
    python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))['competition_reports'][0]
assert r['valid_submission'] and r['score'] < 0.9 and not r['any_medal'], r" "$run/grading_report.json"
}

@test "a hostile image gets no answer byte and cannot fake its integrity record (real hetjobs: the user, root)" {
    local id
    while read -r id; do wait_job "$id" 300; done <"$T/jobs"
    check_run user "$UCLI" "$DIR/.venv/libexec/mlebench-hpc/integrity-check" as_test_user
    check_run root "$REPO_ROOT/.venv/bin/mlebench-hpc" "$REPO_ROOT/.venv/libexec/mlebench-hpc/integrity-check"
}

@test "control: run where the host lets its code run, the same image reads the answers and forges both records" {
    local sif=$T/images/agent-hostile.sif out
    # An overlay scan that runs the image: apptainer exec --contain --cleanenv --no-home IMAGE
    # sh -c ..., no --pid, while a process of the caller (the scan's own) is alive on the host; as
    # root (no user namespace, as with a setuid apptainer) other processes' /proc/<pid>/root lead
    # to the host's files.
    cat >"$T/old_scan.sh" <<'EOF'
sleep 60 &
apptainer exec --contain --cleanenv --no-home ${2:+"$2"} "$1" sh -c true 2>&1
kill $!
EOF
    out=$(bash "$T/old_scan.sh" "$sif" "")
    [[ $out == *"HOSTILE-SH read the answers"* ]]
    [[ $out == *"/home/agent/answers.csv"* ]]
    grep -F -q "$(sed -n 2p "$PRIV/test.csv")" <<<"$out"
    # An integrity check run under the image's shell, reading the last line: that line is the
    # image's forgery, although this container (no --pid) sees the host's processes; for the user
    # as for root.
    out=$(as_test_user bash "$T/old_scan.sh" "$sif" "$EXTRA_FLAGS" 2>/dev/null)
    [[ $(tail -n1 <<<"$out") == *'"checker":"forged by the image"'* ]]
    # The real checker under the same leaky flags, the image's scripts masked: not ok, and says why.
    mkdir -p "$T/noenv" && chmod 755 "$T/noenv"
    cat >"$T/leaky_check.sh" <<'EOF'
sleep 60 &
start=$(sed 's/.*) //' "/proc/$!/stat" | cut -d' ' -f20)
apptainer exec --contain --cleanenv --no-home ${4:+"$4"} --bind "$1:/.singularity.d/env:ro" \
    --bind "$2:/.mlebench-hpc-check/integrity-check:ro" "$3" /.mlebench-hpc-check/integrity-check -s "$!:$start"
kill $!
EOF
    out=$(as_test_user bash "$T/leaky_check.sh" "$T/noenv" "$DIR/.venv/libexec/mlebench-hpc/integrity-check" \
        "$sif" "$EXTRA_FLAGS" 2>/dev/null) || true
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["ok"] is False and r["processes"]["host_process_visible"] is True, r
assert r["checker"] == "mlebench-hpc integrity-check 2", r' "$out"
}
