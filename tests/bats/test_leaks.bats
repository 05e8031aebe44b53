#!/usr/bin/env bats
# Leak tests: from inside a real agent container, started with exactly the production flags
# (scripts_hpc/lib.sh mh_agent_cmd, only the final agent command replaced by the attack) as an
# ordinary non-root user, every way to the answers must fail. Each test also runs a control: the
# same attempt with the one corresponding isolation removed must SUCCEED, which proves the test
# would catch the leak. The grading server is a real server in the real grading image, run by
# the same user, as on a cluster; the answers carry distinctive values so a leak is recognisable.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    export ROOT
    ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
    export CLI=${MH_TEST_CLI:-$ROOT/.venv/bin/mlebench-hpc}
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    require_apptainer
    if [[ ! -f $images/mlebench-grading.sif || ! -f $images/agent-dummy.sif ]]; then
        _unavailable "agent and grading images" MLEBENCH_REQUIRE_APPTAINER "images missing in $images: run make sif"
    fi
    # The agent user: an ordinary user, made when we are root (as in CI), else ourselves.
    if (( EUID == 0 )); then
        export AGENT_USER=${MH_TEST_AGENT_USER:-mhagent}
        id "$AGENT_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$AGENT_USER"
    else
        export AGENT_USER
        AGENT_USER=$(id -un)
    fi
    export AGENT_HOME
    AGENT_HOME=$(getent passwd "$AGENT_USER" | cut -d: -f6)
    [[ -d $AGENT_HOME ]] || { mkdir -p "$AGENT_HOME"; chown "$AGENT_USER:" "$AGENT_HOME"; }

    # Our own world-traversable dir (bats' tmp dirs are private to root).
    export T
    T=$(mktemp -d /tmp/mh-leak.XXXXXX)
    chmod 755 "$T"
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    mkdir -p "$T/images"
    local s
    for s in mlebench-grading.sif agent-dummy.sif; do
        ln -f "$images/$s" "$T/images/$s" 2>/dev/null || cp "$images/$s" "$T/images/$s"
    done
    chmod 755 "$T/images"; chmod 644 "$T"/images/*.sif

    # Data: the demo competition, answers rewritten to values that cannot occur by chance.
    export COMP=demo-diabetes OTHER_COMP=demo-breast-cancer
    "$CLI" prepare-demo --data-dir "$T/data" >/dev/null
    export PRIV=$T/data/$COMP/prepared/private PUB=$T/data/$COMP/prepared/public
    python3 - "$PRIV/test.csv" "$T/answer_values" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
out = [rows[0]] + [[r[0], f"{4731000.125 + 13 * i:.3f}"] for i, r in enumerate(rows[1:])]
csv.writer(open(sys.argv[1], "w", newline="")).writerows(out)
open(sys.argv[2], "w").write("\n".join(r[1] for r in out[1:]) + "\n")
PY
    export MARKER
    MARKER=$(head -n1 "$T/answer_values")
    ! grep -rqF "$MARKER" "$PUB" || fail_setup "the marker occurs in the public data"
    # The user owns its data, as on a cluster (isolation must not rest on file permissions).
    chown -R "$AGENT_USER:" "$T/data"

    # Planted secrets of the host user: home, Kaggle credentials, an environment variable.
    export HOST_SECRET=hostenv-$RANDOM$RANDOM KAGGLE_SECRET=kagglekey-$RANDOM$RANDOM
    export API_KEY=sk-leaktest-$RANDOM$RANDOM
    if [[ -e $AGENT_HOME/.kaggle && ! -e $AGENT_HOME/.kaggle.mhleak-saved ]]; then
        mv "$AGENT_HOME/.kaggle" "$AGENT_HOME/.kaggle.mhleak-saved"
    fi
    mkdir -p "$AGENT_HOME/.kaggle"
    printf '{"username":"leaktest","key":"%s"}\n' "$KAGGLE_SECRET" >"$AGENT_HOME/.kaggle/kaggle.json"
    echo "$KAGGLE_SECRET" >"$AGENT_HOME/mhleak-home-secret.txt"
    chown -R "$AGENT_USER:" "$AGENT_HOME/.kaggle" "$AGENT_HOME/mhleak-home-secret.txt"
    chmod 700 "$AGENT_HOME/.kaggle"; chmod 600 "$AGENT_HOME/.kaggle/kaggle.json"
    printf 'OPENAI_API_KEY=%s\n' "$API_KEY" >"$T/agent.env"
    chown "$AGENT_USER:" "$T/agent.env"; chmod 600 "$T/agent.env"

    # The config as the sbatch scripts load it (mh_load_config's variables).
    export MH_ROOT=$ROOT MH_CLI=$CLI MLEBENCH_HPC_RUNTIME=apptainer
    export DATA_DIR=$T/data OUTPUT_BASE=$T/runs MH_STATE_BASE=$T/runs/.state RUN_GROUP=leak
    export GRADING_SIF=$T/images/mlebench-grading.sif AGENT_SIF=$T/images/agent-dummy.sif
    export TIME_LIMIT_SECS=600 STEP_LIMIT=10 MH_AGENT_SECS=600
    export AGENT_ENV_FILE=$T/agent.env SCRATCH_DIR="" MLEBENCH_DIR="" GRADING_IDLE_TIMEOUT=0 UPLOAD_LIMIT_MB=16
    export GRADING_VALIDATE_WORKERS=2 GRADING_VALIDATE_BUDGET_MB=auto
    export APPTAINER_EXTRA_FLAGS=${APPTAINER_EXTRA_FLAGS:-}
    # Without a usable /dev/fuse an ordinary user needs --unsquash: a config knob, as in production.
    if ! as_user test -r /dev/fuse -a -w /dev/fuse; then export APPTAINER_EXTRA_FLAGS="$APPTAINER_EXTRA_FLAGS --unsquash"; fi
    mkdir -p "$MH_STATE_BASE/${COMP}_leak" "$T/runs/leak"
    export RUN=$T/runs/leak/${COMP}_1
    mkdir -p "$RUN"/{submission,logs,code,overlay,agent,.scratch}
    chown -R "$AGENT_USER:" "$T/runs"

    # The grading server, in the grading image, run by the same user (lib.sh mh_grading_cmd).
    # shellcheck source=scripts_hpc/lib.sh
    source "$ROOT/scripts_hpc/lib.sh"
    # The run's token and the agent's env file (the variant's secret + token), as the job makes them:
    # a variant that names the secret OPENAI_API_KEY, the user's 0600 file that holds it.
    mh_new_token "$MH_STATE_BASE/${COMP}_leak/token"
    probe_agents "$T/agents" >/dev/null
    # shellcheck disable=SC2016 # a literal ${{ secrets.NAME }}
    printf '\n"probe/leak":\n  start: dummy/start.sh\n  dockerfile: dummy/Dockerfile\n  env_vars:\n    OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}\n' \
        >>"$T/agents/dummy/config.yaml"
    "$CLI" agent env-file probe/leak --agents-dir "$T/agents" --env-file "$T/agent.env" --out "$T/agent-run.env" \
        --set "GRADING_SERVER_TOKEN=$(head -n1 "$MH_STATE_BASE/${COMP}_leak/token")"
    mh_agent_env_file "$T/agent-run.env"
    chown "$AGENT_USER:" "$MH_STATE_BASE/${COMP}_leak/token" "$T/agent-run.env"
    mh_grading_cmd "$COMP" "$MH_STATE_BASE/${COMP}_leak"
    (cd "$T" && exec setsid bash -c 'as_user_cmd "$@"' _ env LEAK_SERVER_SECRET="$HOST_SECRET" "${MH_CMD[@]}") \
        >"$T/server.log" 2>&1 &
    echo $! >"$T/server.pid"
    local i
    for i in $(seq 1 240); do
        [[ -s $MH_STATE_BASE/${COMP}_leak/url ]] && break
        kill -0 "$(cat "$T/server.pid")" 2>/dev/null || { cat "$T/server.log" >&2; fail_setup "grading server died"; }
        sleep 0.5
    done
    export URL
    URL=$(cat "$MH_STATE_BASE/${COMP}_leak/url")
    [[ -n $URL ]] || fail_setup "no grading server URL: $(cat "$T/server.log")"
    # A stand-in for the job step: a host process of the same user holding a secret in its env.
    (cd "$T" && exec setsid bash -c 'as_user_cmd "$@"' _ env LEAK_JOB_SECRET="$HOST_SECRET" sleep 900) \
        >/dev/null 2>&1 &
    echo $! >"$T/jobstep.pid"
    # The overlays (instructions, validate_submission.sh) as `mlebench-hpc run start` makes them.
    "$CLI" overlay --image "$AGENT_SIF" --url "$URL" --out "$RUN/overlay" >/dev/null
    chown -R "$AGENT_USER:" "$RUN/overlay"
    sleep 1
}

teardown_file() {
    local t p
    t=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    local groups=() g i
    for p in "$t/server.pid" "$t/jobstep.pid"; do [[ -f $p ]] && groups+=("$(cat "$p")"); done
    # setsid made each its own process group: stop exactly those groups, KILL after 10 s
    for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null; done
    for i in $(seq 1 100); do
        for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && break; done || break
        sleep 0.1
    done
    for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
    # Apptainer's squashfuse helper leaves those process groups and keeps bats' pipes open (bats
    # then waits forever at the end of the run): end whatever the dedicated test user still runs.
    if [[ $(id -u) == 0 ]]; then pkill -KILL -u "${MH_TEST_AGENT_USER:-mhagent}" 2>/dev/null; fi
    # Run as an ordinary user (the agent user is ourselves): end exactly the helpers that still hold
    # this run's SIFs open.
    local fd
    for p in $(pgrep -u "$(id -u)" squashfuse); do
        for fd in "/proc/$p/fd/"*; do
            if [[ $(readlink "$fd" 2>/dev/null) == "$t/images/"* ]]; then kill -KILL "$p" 2>/dev/null; break; fi
        done
    done
    if [[ -n ${AGENT_HOME:-} && -d $AGENT_HOME ]]; then
        rm -rf "$AGENT_HOME/.kaggle" "$AGENT_HOME/mhleak-home-secret.txt"
        [[ -e $AGENT_HOME/.kaggle.mhleak-saved ]] && mv "$AGENT_HOME/.kaggle.mhleak-saved" "$AGENT_HOME/.kaggle"
    fi
    [[ $t == /tmp/mh-leak.* ]] && rm -rf "$t"
    return 0
}

fail_setup() { echo "leak test setup: $1" >&2; return 1; }

# The command runs as the agent user with the host user's environment (plus a planted secret).
as_user_cmd() {
    local envs=(PATH=/usr/local/bin:/usr/bin:/bin HOME="$AGENT_HOME" USER="$AGENT_USER"
        LOGNAME="$AGENT_USER" LEAK_HOST_SECRET="$HOST_SECRET")
    if (( EUID == 0 )) && [[ -z ${AS_ROOT:-} ]]; then
        runuser -u "$AGENT_USER" -- env -i "${envs[@]}" "$@"
    else
        env -i "${envs[@]}" "$@"
    fi
}
export -f as_user_cmd
as_user() { (cd "$T" 2>/dev/null || cd /; as_user_cmd "$@"); }

# MH_SWAPPED: the agent's production command (mh_agent_cmd) with CMD in place of the agent.
# Controls: --drop FLAG removes one isolation flag, --swap OLD NEW replaces one argument.
agent_argv() {
    local drop=() swap_from=() swap_to=() a i
    while (( $# )); do
        case $1 in
            --drop) drop+=("$2"); shift 2 ;;
            --swap) swap_from+=("$2"); swap_to+=("$3"); shift 3 ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    # shellcheck source=scripts_hpc/lib.sh
    source "$ROOT/scripts_hpc/lib.sh"
    MH_AGENT_ARGV=(bash /home/agent/start.sh)
    mh_agent_cmd "$COMP" "$RUN" "$URL" 2>/dev/null
    mh_agent_cmd_replace -- "$@"
    local out=()
    for a in "${MH_SWAPPED[@]}"; do
        for i in "${!drop[@]}"; do [[ $a == "${drop[$i]}" ]] && continue 2; done
        for i in "${!swap_from[@]}"; do [[ $a == "${swap_from[$i]}" ]] && a=${swap_to[$i]}; done
        out+=("$a")
    done
    MH_SWAPPED=("${out[@]}")
}

# Run CMD in the agent container as the agent user; extra args before -- go to agent_argv.
in_agent() {
    agent_argv "$@"
    as_user timeout 120 "${MH_SWAPPED[@]}"
}

# The production flags really are what this file tests (guards against a vacuous edit).
@test "leak tests use the production agent flags" {
    agent_argv -- true
    local joined=" ${MH_SWAPPED[*]} "
    [[ $joined == *" --contain "* && $joined == *" --cleanenv "* && $joined == *" --no-home "* ]]
    [[ $joined == *" --pid "* && $joined == *" --env-file $T/agent-run.env "* ]]
    [[ $joined == *" $PUB:/home/data:ro "* ]]
    [[ $joined != *"$PRIV"* ]]
}

@test "private dir by its host path: unreachable (control: without --contain it is readable)" {
    run in_agent -- sh -c "cat '$PRIV/test.csv' 2>/dev/null; ls -A '$PRIV' '$DATA_DIR' 2>/dev/null"
    [[ $output != *"$MARKER"* ]]
    [[ $output != *test.csv* && $output != *"$COMP"* ]]
    [ "$status" -ne 0 ]
    run in_agent --drop --contain -- sh -c "cat '$PRIV/test.csv'"
    [ "$status" -eq 0 ]
    [[ $output == *"$MARKER"* ]]
}

@test "search the filesystem for the answer file: nothing found (control: without --contain found)" {
    # every file named like the answers, then its lines holding an answer value
    local search
    search="find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f -name test.csv -print 2>/dev/null \
        | while read -r f; do grep -H -F -f /dev/stdin \"\$f\" <<'V' || true
$(cat "$T/answer_values")
V
done"
    run in_agent -- sh -c "$search"
    [[ $output != *"$MARKER"* ]]
    # and any readable text file anywhere holding the first answer value
    run in_agent -- sh -c "grep -rIlF '$MARKER' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; echo done"
    [[ $output == "done" ]]
    run in_agent --drop --contain -- sh -c "$search"
    [[ $output == *"$MARKER"* ]]
}

@test "host \$HOME and ~/.kaggle/kaggle.json: unreachable (control: without --no-home and --contain readable)" {
    run in_agent -- sh -c "exec 2>/dev/null; cat '$AGENT_HOME/.kaggle/kaggle.json' '$AGENT_HOME/mhleak-home-secret.txt'; \
        cat ~/.kaggle/kaggle.json; ls -A '$AGENT_HOME' ~; grep -rs '$KAGGLE_SECRET' /home /root"
    [[ $output != *"$KAGGLE_SECRET"* ]]
    [[ $output != *mhleak-home-secret* ]]
    # --contain alone gives an empty $HOME and --no-home alone mounts none: both must go for a leak
    run in_agent --drop --no-home -- sh -c "cat '$AGENT_HOME/.kaggle/kaggle.json'"
    [[ $output != *"$KAGGLE_SECRET"* ]]
    run in_agent --drop --contain -- sh -c "cat '$AGENT_HOME/.kaggle/kaggle.json'"
    [[ $output != *"$KAGGLE_SECRET"* ]]
    run in_agent --drop --no-home --drop --contain -- sh -c "cat '$AGENT_HOME/.kaggle/kaggle.json'"
    [ "$status" -eq 0 ]
    [[ $output == *"$KAGGLE_SECRET"* ]]
}

@test "planted host environment variable: invisible (control: without --cleanenv visible)" {
    run in_agent -- sh -c 'env; cat /proc/self/environ | tr "\0" "\n"'
    [ "$status" -eq 0 ]
    [[ $output != *"$HOST_SECRET"* ]]
    [[ $output != *LEAK_HOST_SECRET* ]]
    [[ $output == *"COMPETITION_ID=$COMP"* ]]
    run in_agent --drop --cleanenv -- sh -c 'env'
    [[ $output == *"LEAK_HOST_SECRET=$HOST_SECRET"* ]]
}

@test "/proc/<pid>/root and environ of the grading server and the job step: unreachable (control: without --pid readable)" {
    # Two users run the attack: the agent user (unprivileged apptainer: its own user namespace, which
    # on Linux 6.x already denies /proc/<pid>/{root,environ} of the same user's processes outside it,
    # with or without --pid), and root, as CI's jobs and setuid installs run (no user namespace:
    # --pid is the only barrier, so the control without it must read the answers).
    # host pids of the server's processes and of the job-step stand-in
    local pids="" d
    for d in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q "run_grading_server.*$T\|$T.*run_grading_server"; then
            pids="$pids ${d#/proc/}"
        fi
    done
    pids="$pids $(pgrep -g "$(cat "$T/jobstep.pid")" 2>/dev/null | tr '\n' ' ')"
    [[ -n ${pids// /} ]]
    local attack
    attack=$(cat <<EOF
import glob, os
targets = set("$pids".split())
me = str(os.getpid())
for d in glob.glob("/proc/[0-9]*"):
    try:
        cmd = open(d + "/cmdline", "rb").read()
    except OSError:
        continue
    if b"run_grading_server" in cmd or b"sleep" in cmd:
        targets.add(d.split("/")[-1])
for pid in sorted(targets - {me}):
    base = "/proc/" + pid
    for path in (base + "/environ", base + "/root/private/data/$COMP/prepared/private/test.csv",
                 base + "/root$PRIV/test.csv", base + "/cwd/../data/$COMP/prepared/private/test.csv"):
        try:
            data = open(path, "rb").read().decode(errors="replace")
            print("READ", path, data.replace("\0", " ")[:20000])
        except OSError as exc:
            print("DENIED", path, type(exc).__name__)
EOF
)
    run in_agent -- python3 -c "$attack"
    [[ $output != *"$MARKER"* ]]
    [[ $output != *"$HOST_SECRET"* ]]
    [[ $output != *READ* ]]
    run in_agent --drop --pid -- python3 -c "$attack"
    [[ $output != *"$MARKER"* ]]
    (( EUID == 0 )) || skip "the control needs root (no user namespace); CI runs it"
    AS_ROOT=1 run in_agent -- python3 -c "$attack"
    [[ $output != *"$MARKER"* ]]
    [[ $output != *"$HOST_SECRET"* ]]
    [[ $output != *READ* ]]
    AS_ROOT=1 run in_agent --drop --pid -- python3 -c "$attack"
    [[ $output == *"$MARKER"* ]]
    [[ $output == *"$HOST_SECRET"* ]]
}

@test "grading server: only /health and /validate; no files, no other competition (control: a file server leaks)" {
    local probe
    probe=$(cat <<'EOF'
for p in /private/data/$C/prepared/private/test.csv /$C/prepared/private/test.csv \
         /../../../private/data/$C/prepared/private/test.csv /%2e%2e/%2e%2e/private/data/$C/prepared/private/test.csv \
         /..%2f..%2fprivate%2fdata/$C/prepared/private/test.csv /validate/../../private/data/$C/prepared/private/test.csv \
         "/validate?competition_id=$O" /health/../private "/health?competition=$O" /answers /score /leaderboard \
         /static/test.csv /state/url /etc/passwd; do
    printf '%s ' "GET $p"; curl -s --path-as-is -o /tmp/body -w '%{http_code}\n' "$U$p"; cat /tmp/body; echo
done
printf 'GET /validate '; curl -s -w ' %{http_code}\n' "$U/validate"
printf 'POST other competition '; curl -s -w ' %{http_code}\n' -F "file=@/home/submission/other.csv" \
    -H "X-Grading-Token: $GRADING_SERVER_TOKEN" -F "competition_id=$O" "$U/validate?competition_id=$O&competition=$O"
printf 'POST path traversal filename '; curl -s -w ' %{http_code}\n' -H "X-Grading-Token: $GRADING_SERVER_TOKEN" \
    -F "file=@/home/data/sample_submission.csv;filename=../../private/data/$C/prepared/private/test.csv" "$U/validate"
EOF
)
    cp "$T/data/$OTHER_COMP/prepared/public/sample_submission.csv" "$RUN/submission/other.csv"
    chown "$AGENT_USER:" "$RUN/submission/other.csv"
    run in_agent -- env C="$COMP" O="$OTHER_COMP" U="$URL" sh -c "$probe"
    rm -f "$RUN/submission/other.csv"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *"$MARKER"* ]]
    [[ $output != *"root:x:0"* ]]
    # every path except the two endpoints is a 404; GET /validate is refused
    local n200
    n200=$(grep -v '^GET /health?' <<<"$output" | grep -c '^GET /.* 200$' || true)
    [ "$n200" -eq 0 ]
    grep -q '^GET /validate .*405$' <<<"$output"
    # /health names this server's competition whatever is asked; the other competition is refused
    grep -A1 '^GET /health?' <<<"$output" | grep -q "\"competition\": *\"$COMP\""
    # the server grades only its own competition: the other one's submission is invalid here
    grep '^POST other competition' <<<"$output" | grep -q '"valid": *false'
    # Control: the same probe against a plain file server over the data dir reads the answers.
    local port=$(( 20000 + RANDOM % 20000 ))
    (cd "$T" && exec setsid bash -c 'as_user_cmd "$@"' _ python3 -m http.server "$port" --bind 127.0.0.1 \
        --directory "$T/data") >/dev/null 2>&1 &
    local fs_pid=$!
    local i
    for i in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    run in_agent -- env C="$COMP" O="$OTHER_COMP" U="http://127.0.0.1:$port" sh -c "$probe"
    kill -TERM -- "-$fs_pid" 2>/dev/null || true
    [[ $output == *"$MARKER"* ]]
}

@test "validation messages: no score, no answer values (one id wrong, one value wrong, all wrong)" {
    local sub=$RUN/submission
    python3 - "$PRIV/test.csv" "$sub" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head, body = rows[0], rows[1:]
def write(name, rs):
    csv.writer(open(f"{sys.argv[2]}/{name}", "w", newline="")).writerows([head] + rs)
write("one_id_wrong.csv", [["999999", body[0][1]]] + body[1:])
write("one_value_wrong.csv", [[body[0][0], "1.0"]] + body[1:])
write("all_wrong.csv", [[r[0], "2.5"] for r in body])
write("correct.csv", body)
write("missing_row.csv", body[1:])
write("bad_value.csv", [[body[0][0], "oops"]] + body[1:])
write("duplicate_id.csv", [body[1]] + body[1:])
PY
    chown "$AGENT_USER:" "$sub"/*.csv
    # shellcheck disable=SC2016 # expanded inside the container
    run in_agent -- sh -c 'for f in one_id_wrong one_value_wrong all_wrong correct missing_row bad_value duplicate_id; do
        echo "== $f"; /home/validate_submission.sh /home/submission/$f.csv; echo; done'
    echo "$output"
    [ "$status" -eq 0 ]
    # every verdict arrived (the overlay pointed validate_submission.sh at the real server)
    [ "$(grep -c '"result"' <<<"$output")" -eq 7 ]
    [[ $output != *score* && $output != *medal* && $output != *rank* ]]
    # Answer values must not appear, except those the submission itself holds (its own text).
    local leaked=0 v
    while read -r v; do
        grep -qF -- "$v" <<<"$output" && leaked=$((leaked + 1))
    done <"$T/answer_values"
    [ "$leaked" -eq 0 ]
    # Control: the same detector finds answer values when a message does quote them.
    leaked=0
    local quoted
    quoted="Submission invalid! row 0: expected $(head -n1 "$T/answer_values")"
    while read -r v; do grep -qF -- "$v" <<<"$quoted" && leaked=$((leaked + 1)); done <"$T/answer_values"
    [ "$leaked" -ge 1 ]
    rm -f "$sub"/*.csv
}

@test "agent writes only to submission, logs, code, its own /home/agent copy and scratch (control: without :ro data is writable)" {
    # shellcheck disable=SC2016 # expanded inside the container
    local attack='for p in /home/data/x /home/instructions.txt /home/validate_submission.sh /x /opt/x \
            /opt/mlebench-hpc/x /.mlebench-hpc/entrypoint_hpc.sh /home/x /etc/x /usr/x; do
        if ( echo pwned >> "$p" ) 2>/dev/null; then echo "WROTE $p"; else echo "refused $p"; fi
    done
    for p in /home/submission/w /home/logs/w /home/code/w /home/agent/w /tmp/w /var/tmp/w; do
        if ( echo ok > "$p" ) 2>/dev/null; then echo "wrote $p"; else echo "FAILED $p"; fi
    done'
    run in_agent -- sh -c "$attack"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *WROTE* ]]
    [[ $output != *FAILED* ]]
    [ "$(grep -c '^refused' <<<"$output")" -eq 10 ]
    [ -f "$RUN/submission/w" ] && [ -f "$RUN/logs/w" ] && [ -f "$RUN/code/w" ] && [ -f "$RUN/agent/w" ]
    run ! grep -rq pwned "$PUB" "$RUN/overlay" "$ROOT/environment/entrypoint_hpc.sh"
    rm -f "$RUN"/{submission,logs,code,agent}/w
    # Control: the same write into the data dir succeeds once the bind is not read-only.
    run in_agent --swap "$PUB:/home/data:ro" "$PUB:/home/data" -- sh -c "$attack"
    [[ $output == *"WROTE /home/data/x"* ]]
    rm -f "$PUB/x"
}

@test "API key from the 0600 env file: visible inside, never in host ps (control: --env on the command line shows in ps)" {
    ps_while_running() { # start CMD in the background, sample the host's ps while it runs
        as_user "$@" >"$T/ps_inside.out" 2>&1 &
        local pid=$! i
        : >"$T/ps.out"
        for i in $(seq 1 40); do
            ps -eo args >>"$T/ps.out"
            grep -q 'apptainer\|starter' "$T/ps.out" && grep -q sleep "$T/ps.out" && break
            sleep 0.25
        done
        ps -eo args >>"$T/ps.out"
        wait "$pid" || true
    }
    agent_argv -- sh -c 'printenv OPENAI_API_KEY; sleep 3'
    ps_while_running timeout 60 "${MH_SWAPPED[@]}"
    grep -q "$API_KEY" "$T/ps_inside.out"
    grep -q 'agent-dummy.sif' "$T/ps.out"
    run ! grep -q "$API_KEY" "$T/ps.out"
    # Control: passed with --env instead, the key is in ps for every user of the node to see.
    agent_argv --swap "$T/agent-run.env" /dev/null -- sh -c 'printenv OPENAI_API_KEY; sleep 3'
    local with_env=()
    local a
    for a in "${MH_SWAPPED[@]}"; do
        [[ $a == "$AGENT_SIF" ]] && with_env+=(--env "OPENAI_API_KEY=$API_KEY")
        with_env+=("$a")
    done
    ps_while_running timeout 60 "${with_env[@]}"
    grep -q "$API_KEY" "$T/ps.out"
}

@test "integrity record: ok with the production flags, not ok when --pid, --cleanenv or --contain is dropped" {
    # shellcheck source=scripts_hpc/lib.sh
    source "$ROOT/scripts_hpc/lib.sh"
    MH_AGENT_ARGV=(bash /home/agent/start.sh)
    mh_agent_cmd "$COMP" "$RUN" "$URL" 2>/dev/null
    # mh_integrity_check in a shell like the job's, as the user who runs the jobs (this user:
    # the helpers' venv may live where the agent user cannot read it).
    local driver="source '$ROOT/scripts_hpc/lib.sh'; MH_AGENT_ARGV=(bash /home/agent/start.sh)
        mh_agent_cmd '$COMP' '$RUN' '$URL' 2>/dev/null
        kept=(); for a in \"\${MH_CMD[@]}\"; do [[ \$a == \"\$DROP\" ]] || kept+=(\"\$a\"); done
        MH_CMD=(\"\${kept[@]}\"); mh_integrity_check '$COMP' '$RUN' '$URL'"
    local keep=(MH_ROOT MH_CLI MLEBENCH_HPC_RUNTIME DATA_DIR OUTPUT_BASE MH_STATE_BASE AGENT_SIF STEP_LIMIT
        MH_AGENT_SECS MH_AGENT_ENV SCRATCH_DIR MLEBENCH_DIR APPTAINER_EXTRA_FLAGS)
    local envs=() k
    for k in "${keep[@]}"; do envs+=("$k=${!k}"); done
    run env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "${envs[@]}" DROP=--no-such-flag bash -c "$driver"
    echo "$output"
    [ "$status" -eq 0 ]
    python3 - "$RUN/metadata.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
rec = m["integrity"]
assert rec["ok"] is True, rec
assert rec["apptainer_version"].startswith("apptainer version"), rec
assert "--pid" in rec["apptainer_flags"] and "--contain" in rec["apptainer_flags"], rec
assert any(b.endswith(":/home/data:ro") for b in rec["binds"]), rec
assert all(not p["reachable"] for p in rec["paths"]) and rec["paths"], rec
assert rec["processes"]["host_process_visible"] is False
assert m["apptainer_version"] == rec["apptainer_version"]
PY
    run env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "${envs[@]}" DROP=--pid bash -c "$driver"
    [ "$status" -ne 0 ]
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["integrity"]; assert r["ok"] is False and r["processes"]["host_process_visible"], r' "$RUN/metadata.json"
    run env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "${envs[@]}" DROP=--cleanenv bash -c "$driver"
    [ "$status" -ne 0 ]
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["integrity"]; assert r["ok"] is False and r["canary_visible"], r' "$RUN/metadata.json"
    run env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "${envs[@]}" DROP=--contain bash -c "$driver"
    [ "$status" -ne 0 ]
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["integrity"]; assert r["ok"] is False and any(p["reachable"] for p in r["paths"]), r' "$RUN/metadata.json"
}
