#!/usr/bin/env bats
# Agents on an LLM endpoint, on the real local Slurm with real Apptainer containers, as an ordinary
# user. The LLM is the OpenAI-compatible stand-in (tests/llm_standin/server.py, with SO_REUSEPORT as
# vLLM and llama.cpp set it) run through LLM_CMD behind the job's proxy (llm-proxy): the LLM server
# job found by auto:JOBID, with a joiner on its backend's port (tests/llm_standin/joiner.py) that
# must receive nothing (its control: the same joiner on the bare stand-in takes part of the
# requests), per-run keys (refused once their run ended), the agent stopped when its server job
# ends; the three-part hetjob (LLM_BASE_URL=job); the key's only way into the agent (its 0600 env
# file); llm-ready refusing a wrong model or a dead URL before the agent starts; the AIDE image.
# shellcheck disable=SC2030,SC2031 # each @test's exports stay in it, by design

load helpers

MODEL="standin-sklearn"

setup_file() {
    require_slurm
    require_apptainer
    require_test_user
    export DIR
    DIR=$(user_checkout) || { echo "could not install the checkout as $TEST_USER" >&2; return 1; }
    export CLI=$DIR/.venv/bin/mlebench-hpc UPY=$DIR/.venv/bin/python
    local images=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images} s
    [[ -f $images/mlebench-grading.sif && -f $images/agent-dummy.sif ]] \
        || _unavailable images MLEBENCH_REQUIRE_APPTAINER "no grading or dummy image in $images: make sif"
    export T
    T=$(mktemp -d /tmp/mh-llm.XXXXXX)
    echo "$T" >"$BATS_FILE_TMPDIR/tdir"
    chmod 755 "$T"
    mkdir -p "$T/images"
    # the user's own copies (hard links where the file system allows): root's cache is not theirs
    for s in mlebench-grading.sif agent-dummy.sif agent-aide.sif; do
        [[ -f $images/$s ]] || continue
        ln -f "$images/$s" "$T/images/$s" 2>/dev/null || cp "$images/$s" "$T/images/$s"
    done
    chmod 644 "$T"/images/*.sif
    export IMAGES=$T/images
    (( EUID == 0 )) && chown "$TEST_USER:" "$T"
    as_test_user "$CLI" prepare-demo --data-dir "$T/data" >"$T/comps"
    export COMP
    COMP=$(head -n1 "$T/comps")
    # An agent that uses its endpoint as AIDE does, from its environment only: GET /models with the
    # key (and once without, the control: the server then refuses), $2 chat completions, the names
    # of its LLM_* variables and its key (an agent may keep what it was given: the test tries it once
    # the run ended), then a sleep ($1 s, long enough for ps on the host to see it), then the dummy agent.
    cat >"$T/llm_agent.sh" <<'AGENT'
#!/bin/bash
set -eu
python3 - "${2:-0}" <<'PY'
import json, os, sys, urllib.error, urllib.request
base, model, key = os.environ["LLM_BASE_URL"], os.environ["LLM_MODEL"], os.environ.get("LLM_API_KEY")
def call(path, key, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
status, body = call("/models", key)
without, _ = call("/models", None)
chat = {"model": model, "messages": [{"role": "user", "content": "# Task description\nsolve it"}]}
chats = []
for _ in range(int(sys.argv[1])):
    code, answer = call("/chat/completions", key, chat)
    chats.append([code, (answer or {}).get("model")])
with open("/home/logs/llm_check.json", "w") as f:
    json.dump({"url": base, "model": model, "status": status, "chats": chats,
               "models": [m["id"] for m in (body or {}).get("data", [])], "status_without_key": without}, f)
with open("/home/logs/llm_key.txt", "w") as f:
    f.write(key or "")
PY
env | sed -n 's/^\(LLM_[A-Z_]*\)=.*/\1/p' | sort >/home/logs/llm_env_names.txt
# $3 = first: the dummy agent's valid submission first, then the sleep (a run that dies with one)
if [[ ${3:-} == first ]]; then /home/agent/start.sh; sleep "${1:-0}"; exit 0; fi
sleep "${1:-0}"
exec /home/agent/start.sh
AGENT
    chmod 0755 "$T/llm_agent.sh"
    export STANDIN="$UPY $DIR/tests/llm_standin/server.py"
    # The agents: variants of the dummy agent running llm_agent.sh (ARGS: its sleep, its chats), and
    # AIDE with 3 steps in 900 s.
    export AGENTS=$T/agents
    probe_agents "$AGENTS" >/dev/null
    probe_variant "$AGENTS" llm/check12 "/opt/llm_agent.sh 4.321 12"
    probe_variant "$AGENTS" llm/chat3 "/opt/llm_agent.sh 0 3"
    probe_variant "$AGENTS" llm/sleep300 "/opt/llm_agent.sh 300"
    probe_variant "$AGENTS" llm/submit-sleep300 "/opt/llm_agent.sh 300 0 first"
    cat >>"$AGENTS/aide/config.yaml" <<'YAML'

"aide/llm-test":
  start: aide/start.sh
  dockerfile: aide/Dockerfile
  kwargs_type: omegaconf
  env_vars:
    TIME_LIMIT_SECS: 900
    STEP_LIMIT: 3
  kwargs:
    agent.steps: 3
YAML
    chmod -R a+rX "$AGENTS"
}

teardown() {
    # what a test started as the user on the host, by its pid
    local f
    for f in "$BATS_TEST_TMPDIR"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
    return 0
}

teardown_file() {
    local ids t
    t=$(cat "$BATS_FILE_TMPDIR/tdir" 2>/dev/null) || return 0
    mapfile -t ids < <(squeue -h -o '%i %k' 2>/dev/null | awk -v t="$t" 'index($0, t) {print $1}' || true)
    (( ${#ids[@]} == 0 )) || scancel "${ids[@]}" 2>/dev/null || true
    [[ $t == /tmp/mh-llm.* ]] && rm -rf "$t"
    return 0
}

# config NAME [LINE]...: $T/NAME.env, the base config (group NAME, stand-in as LLM_CMD logging to
# $T/NAME.requests.jsonl) plus LINEs; later lines win.
config() {
    local name=$1
    shift
    {
        printf 'DATA_DIR="%s"\nGRADING_SIF="%s"\nAGENT_SIF="%s"\n' "$T/data" "$IMAGES/mlebench-grading.sif" "$IMAGES/agent-dummy.sif"
        printf 'OUTPUT_BASE="%s"\nRUN_GROUP="%s"\nTIME_LIMIT_SECS=300\nTIME_MARGIN_SECS=10\n' "$T/runs" "$name"
        printf 'LLM_MODEL=%s\nLLM_SIF=""\nLLM_READY_TIMEOUT=60\n' "$MODEL"
        printf "LLM_CMD='exec %s --model \"\$LLM_MODEL\" --host \"\$LLM_HOST\" --port \"\$LLM_PORT\" --log %s'\n" \
            "$STANDIN" "$T/$name.requests.jsonl"
        printf 'APPTAINER_EXTRA_FLAGS="--bind %s:/opt/llm_agent.sh:ro"\nAGENTS_DIR="%s"\n' "$T/llm_agent.sh" "$AGENTS"
        printf '%s\n' "$@"
    } >"$T/$name.env"
    echo "$T/$name.env"
}

# submit CONFIG OUTPUT SBATCH_ARGS...: sbatch as the user, from their checkout, with this config;
# prints the job id
submit() {
    local cfg=$1 out=$2
    shift 2
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$cfg" MLEBENCH_HPC_RUNTIME=apptainer)
    (cd "$DIR" && as_test_user sbatch --parsable --output="$out" --comment="$T" "$@") | cut -d';' -f1
}

# user_bg NAME CMD...: CMD in the background as the user; its pid in $BATS_TEST_TMPDIR/NAME.pid
# (teardown stops it)
user_bg() {
    local name=$1 i
    shift
    rm -f "$T/$name.pid"
    # shellcheck disable=SC2016 # expanded by the user's bash
    as_test_user bash -c 'echo $$ >"$0"; exec "$@"' "$T/$name.pid" "$@" >/dev/null 2>&1 3>&- &
    for (( i = 0; i < 100; i++ )); do [[ -s $T/$name.pid ]] && break; sleep 0.1; done
    cp "$T/$name.pid" "$BATS_TEST_TMPDIR/$name.pid"
}

# free_port: a port nothing listens on
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_file FILE [SECONDS] [LOG]: until FILE is non-empty (print LOG when it never comes)
wait_file() {
    local f=$1 limit=${2:-120} log=${3:-/dev/null} start=$SECONDS
    until [[ -s $f ]]; do
        (( SECONDS - start < limit )) || { echo "no $f after ${limit}s" >&2; cat "$log" >&2; return 1; }
        sleep 0.5
    done
}

# joined FILE KEY: a number from the joiner's counts
joined() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

meta() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m.get(sys.argv[2]))" "$1/metadata.json" "$2"; }

# The agents' own resources are small: a CPU, no GPU.
SMALL=(--gres=gpu:0 --cpus-per-task=1 --mem=1G --time=15)

@test "control: a second socket on the port of a server with SO_REUSEPORT (no proxy) gets part of the requests, keys included" {
    local port
    port=$(free_port)
    # shellcheck disable=SC2086 # STANDIN: the interpreter and the script
    user_bg standin $STANDIN --model "$MODEL" --reuse-port --port "$port" --api-key k-control
    until curl -s -o /dev/null "http://127.0.0.1:$port/v1/models"; do sleep 0.2; done
    user_bg joiner "$UPY" "$DIR/tests/llm_standin/joiner.py" join --port "$port" --counts "$T/control.joiner.json"
    wait_file "$T/control.joiner.json" 30
    local i models=()
    for (( i = 0; i < 20; i++ )); do
        models+=("$(curl -s -H 'Authorization: Bearer k-control' -H 'Content-Type: application/json' \
            -d "{\"model\": \"$MODEL\", \"messages\": []}" "http://127.0.0.1:$port/v1/chat/completions" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin).get("model"))')")
    done
    echo "answered by: ${models[*]}"
    n=$(joined "$T/control.joiner.json" with_data)
    (( n > 0 && n < 20 ))
    [[ $(joined "$T/control.joiner.json" keys) == "$n" ]]  # each carried the key
    [[ " ${models[*]} " == *" joined "* ]]  # and the attacker's answer reached the client
}

@test "LLM server job, agents with auto:JOBID: per-run keys only, a joiner on its backend's port gets nothing, its port cannot be bound, the agent stops with the job" {
    local key=mh-llm-key-$RANDOM$RANDOM$RANDOM
    # a leading blank line: the backend and the proxy must still agree on the key (one key reader)
    (umask 077 && printf '\n%s\n' "$key" >"$T/llm.key")
    if (( EUID == 0 )); then chown "$TEST_USER:" "$T/llm.key"; fi
    local cfg cfgb
    cfg=$(config auto "LLM_API_KEY_FILE=$T/llm.key" \
        "LLM_CMD='exec $STANDIN --reuse-port --model \"\$LLM_MODEL\" --host \"\$LLM_HOST\" --port \"\$LLM_PORT\" --log $T/auto.requests.jsonl'" \
        "AGENT_ID=llm/check12")
    llm=$(submit "$cfg" "$T/llm-%j.out" --gres=gpu:0 --cpus-per-task=1 --mem=1G --time=15 "$DIR/scripts_hpc/slurm_llm_server.sh")
    wait_file "$T/runs/.state/llm/$llm/url" 120 "$T/llm-$llm.out"
    url=$(cat "$T/runs/.state/llm/$llm/url")
    bport=$(sed -n 's/.*, port \([0-9]*\) of 127.0.0.1 behind the proxy.*/\1/p' "$T/llm-$llm.out")
    pport=${url##*:} pport=${pport%/v1}
    [[ $bport =~ ^[0-9]+$ && $pport =~ ^[0-9]+$ ]]
    # The user's own process on the node joins the backend's port, and cannot bind the proxy's.
    user_bg joiner "$UPY" "$DIR/tests/llm_standin/joiner.py" join --port "$bport" --counts "$T/auto.joiner.json"
    wait_file "$T/auto.joiner.json" 30
    run as_test_user "$UPY" "$DIR/tests/llm_standin/joiner.py" try-bind --port "$pport"
    assert_output '{"0.0.0.0": "EADDRINUSE", "127.0.0.1": "EADDRINUSE", "::": "EADDRINUSE", "::1": "EADDRINUSE"}'
    sed -i "/^LLM_BASE_URL=/d; \$a LLM_BASE_URL=auto:$llm" "$cfg"
    cfgb=$(config autob "LLM_BASE_URL=auto:$llm" "AGENT_ID=llm/sleep300")
    g=$(submit "$cfg" "$T/grade-%j.out" --mem=1G --cpus-per-task=1 --time=15 "$DIR/scripts_hpc/slurm_grading_server.sh" "$COMP")
    a=$(submit "$cfg" "$T/agent-%j.out" "${SMALL[@]}" "$DIR/scripts_hpc/slurm_agent.sh" "$COMP" "auto:$g")
    b=$(submit "$cfgb" "$T/agent-%j.out" "${SMALL[@]}" "$DIR/scripts_hpc/slurm_agent.sh" "$COMP" "auto:$g")
    # Everything the host's ps shows while the agent job lives.
    while squeue -h -j "$a" 2>/dev/null | grep -q .; do ps -e -o args= >>"$T/ps.txt"; sleep 0.2; done
    cat "$T/agent-$a.out"
    [[ $(job_state "$a") == COMPLETED ]]
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/agent-$a.out" | tail -n1)
    # the agent used the server job's URL with its own key, 12 completions answered by the stand-in
    # itself, and the proxy refused it without a key
    run python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['url'], c['model'], c['status'], c['models'], c['status_without_key'], c['chats'] == [[200, c['model']]] * 12)" "$run_dir/logs/llm_check.json"
    assert_output "$url $MODEL 200 ['$MODEL'] 401 True"
    run cat "$run_dir/logs/llm_env_names.txt"
    assert_output $'LLM_API_KEY\nLLM_BASE_URL\nLLM_MODEL'
    [[ $(meta "$run_dir" llm_base_url) == "$url" && $(meta "$run_dir" llm_base_url_config) == "auto:$llm" ]]
    [[ $(meta "$run_dir" status) == finished ]]
    # The joiner got connections (the join was real) and not one byte on them; the job said so.
    kill "$(cat "$BATS_TEST_TMPDIR/joiner.pid")"
    cat "$T/auto.joiner.json"
    (( $(joined "$T/auto.joiner.json" connections) > 0 ))
    [[ $(joined "$T/auto.joiner.json" with_data) == 0 && $(joined "$T/auto.joiner.json" bytes) == 0 ]]
    grep -q "ERROR: a connection to the LLM server's port 127.0.0.1:$bport was accepted by process .*someone joined its port" "$T/llm-$llm.out"
    # The run's key is its own, and refused once the run ended (its file is gone); the server's too.
    run_key=$(cat "$run_dir/logs/llm_key.txt")
    [[ ${#run_key} -ge 40 && $run_key != "$key" ]]
    [ ! -e "$T/runs/.state/llm/$llm/keys/${COMP}_$a" ]
    run curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $run_key" "$url/models"
    assert_output 401
    run curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$url/models"
    assert_output 401
    # ps saw the agent (the control: its sleep) and never a key; the server's key is nowhere on disk
    # but in the user's own file (the env files are removed when the agent ends)
    grep -q '^sleep 4.321' "$T/ps.txt"
    run grep -c -e "$key" -e "$run_key" "$T/ps.txt"
    assert_output 0
    run grep -rl -- "$key" "$T/runs" "$T/agent-$a.out" "$T/llm-$llm.out" "$T/grade-$g.out"
    assert_failure
    [ ! -e "$T/runs/.state/${COMP}_$a/agent.env" ] && [ ! -e "$T/runs/.state/${COMP}_$a/llm.env" ]
    # Agent B (sleeping 300 s in its container) runs with its own key; cancelling the LLM job
    # stops it within seconds, and its run failed for that reason.
    local t=0
    until grep -q 'starting the agent' "$T/agent-$b.out" 2>/dev/null; do (( t++ < 240 )) || false; sleep 0.5; done
    [ -s "$T/runs/.state/llm/$llm/keys/${COMP}_$b" ]
    local t0=$SECONDS
    scancel "$llm"
    wait_job "$b" 90
    echo "agent B ended $((SECONDS - t0)) s after the LLM job was cancelled"
    cat "$T/agent-$b.out"
    (( SECONDS - t0 < 60 ))
    grep -q "the LLM server job $llm ended during the run: stopping the agent" "$T/agent-$b.out"
    [[ $(job_state "$b") == FAILED ]]
    run_b=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/agent-$b.out" | tail -n1)
    run python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['failure']['cause'])" "$run_b/metadata.json"
    assert_output llm_server_died
    scancel "$g"
    wait_job "$llm" 60
    # the server job stopped on scancel without an error and took its URL and keys with it
    grep -q 'LLM server stopped on request' "$T/llm-$llm.out"
    [ ! -e "$T/runs/.state/llm/$llm/url" ] && [ ! -e "$T/runs/.state/llm/$llm/keys" ]
}

@test "three-part hetjob (LLM_BASE_URL=job): LLM server beside the agent, valid submission, everything stopped, no error line" {
    local cfg
    cfg=$(config job "LLM_BASE_URL=job" "AGENT_ID=llm/chat3")
    j=$(submit "$cfg" "$T/het-%j.out" scripts_hpc/slurm_hetjob.sh "$COMP")
    wait_job "$j" 240
    cat "$T/het-$j.out"
    [[ $(job_state "$j") == COMPLETED ]]
    n1=$(scontrol show job -o "${j}+1" | grep -o ' NodeList=[^ ]*' | cut -d= -f2)
    # the LLM server ran as a step on the agent's node, and the agent used it
    grep -q "LLM server for $MODEL (job $j, [0-9]* GPU(s), on the host) on node $n1," "$T/het-$j.out"
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/het-$j.out" | tail -n1)
    url=$(meta "$run_dir" llm_base_url)
    [[ $url == http://*/v1 && $(meta "$run_dir" llm_base_url_config) == job ]]
    run python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['url'], c['status'], c['models'], c['status_without_key'], c['chats'])" "$run_dir/logs/llm_check.json"
    assert_output "$url 200 ['$MODEL'] 401 [[200, '$MODEL'], [200, '$MODEL'], [200, '$MODEL']]"
    # through the step's proxy, with the run's own key
    run grep -c "POST /v1/chat/completions 200 run=${COMP}_$j " "$T/het-$j.out"
    assert_output 3
    # a graded valid submission
    as_test_user "$CLI" grade "$run_dir" --data-dir "$T/data" >/dev/null
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; print(r['valid_submission'])" "$run_dir/grading_report.json"
    assert_output True
    # both servers were asked to stop and did, with nothing left behind and no error line
    grep -q 'LLM server stopped on request' "$T/het-$j.out"
    grep -q '\[llm-standin\] stopped' "$T/het-$j.out"
    grep -q 'grading server step ended (exit code 0)' "$T/het-$j.out"
    run grep -in error "$T/het-$j.out"
    assert_failure
    [ ! -e "$T/runs/.state/llm/$j/url" ] && [ ! -e "$T/runs/.state/llm/$j/keys" ]
    run pgrep -f "server.py --model $MODEL .*$T/job.requests.jsonl"
    assert_failure
}

@test "three-part hetjob whose LLM server dies during the run: the agent is stopped, an ERROR line, the run failed" {
    local cfg
    # the agent would wait 300 s (as AIDE would retry its dead endpoint until its time limit)
    cfg=$(config dies "LLM_BASE_URL=job" "AGENT_ID=llm/sleep300" \
        "LLM_CMD='timeout 12 $STANDIN --model \"\$LLM_MODEL\" --host \"\$LLM_HOST\" --port \"\$LLM_PORT\"'")
    local t0=$SECONDS
    j=$(submit "$cfg" "$T/het-%j.out" scripts_hpc/slurm_hetjob.sh "$COMP")
    wait_job "$j" 240
    cat "$T/het-$j.out"
    (( SECONDS - t0 < 120 ))
    [[ $(job_state "$j") == FAILED ]]
    grep -q 'the LLM server ended during the run: stopping the agent' "$T/het-$j.out"
    grep -q 'ERROR: the LLM server exited during the run with code 124' "$T/het-$j.out"
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/het-$j.out" | tail -n1)
    [[ $(meta "$run_dir" status) == failed ]]
    run python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['failure']['cause'])" "$run_dir/metadata.json"
    assert_output llm_server_died
    grep -q 'grading server step ended (exit code 0)' "$T/het-$j.out"
}

@test "a sweep task whose LLM server dies after the agent submitted: a failed attempt in status, grade and the resume" {
    local cfg out job g run
    # the agent writes a valid submission, then waits for a model that dies 12 s after it started
    cfg=$(config sweepdies "LLM_BASE_URL=job" "AGENT_ID=llm/submit-sleep300" \
        "LLM_CMD='timeout 12 $STANDIN --model \"\$LLM_MODEL\" --host \"\$LLM_HOST\" --port \"\$LLM_PORT\"'")
    echo "$COMP" >"$T/sweepdies.txt"
    # shellcheck disable=SC2034 # read by as_test_user
    local MH_USER_ENV=(MLEBENCH_HPC_CONFIG="$cfg" MLEBENCH_HPC_RUNTIME=apptainer)
    sweep() {
        (cd "$T" && as_test_user bash "$DIR/scripts_hpc/submit_sweep.sh" --competitions "$T/sweepdies.txt" \
            --seeds 1 --group sweepdies "$@" -- --gres=gpu:1 --cpus-per-task=2 --mem=2G --time=10 --comment="$T")
    }
    out=$(sweep --max-parallel 1)
    job=$(sed -n 's/^submitted array job \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $job ]] || { echo "$out"; false; }
    wait_job "$job" 240
    g=$T/runs/sweepdies
    run=$g/${COMP}_${job}_0
    cat "$g/.sweep/logs/${job}_0.out"
    grep -q 'ERROR: the LLM server exited during the run with code 124' "$g/.sweep/logs/${job}_0.out"
    # the record: failed, for the LLM's death, with the submission the agent had made
    run python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['status'], m['submission_exists'], m['failure']['cause'], type(m['seed']).__name__)" "$run/metadata.json"
    assert_output "failed True llm_server_died int"
    # status: failed, with why, although the run has a submission (the LLM's death fails the attempt)
    run as_test_user "$CLI" status "$g"
    echo "$output"
    assert_line --partial "${job}_0  failed (exit 143, submission present): the LLM server died (exit 124)"
    assert_line "1 pairs: 1 failed"
    # grade: a failed attempt, not scored (its submission is valid: the control)
    run as_test_user "$CLI" grade "$g" --data-dir "$T/data" --no-progress
    echo "$output"
    assert_line --partial "$(basename "$run"): failed attempt, not graded: the LLM server died (exit 124)"
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; print(r['valid_submission'], r['submission_exists'])" "$g/grading_report.json"
    assert_output "False True"
    run as_test_user "$DIR/.venv/bin/python" -c "import sys; from pathlib import Path; from mlebench_hpc.grading import load_competition as load; print(load(sys.argv[1], Path(sys.argv[2])).score(Path(sys.argv[3])) is not None)" "$COMP" "$T/data" "$run/collected/submission.csv"
    assert_output True
    # the resume runs the pair again
    run sweep --dry-run
    echo "$output"
    assert_line --regexp "^0	$COMP	0	llm/submit-sleep300$"
}

@test "llm-ready before the agent: a wrong model or a dead URL is one line, and the agent never starts" {
    # shellcheck disable=SC2086 # STANDIN: the interpreter and the script
    user_bg standin $STANDIN --model "$MODEL" --host 0.0.0.0 --port 0 --url-file "$T/standin.url" \
        --log "$T/ready.requests.jsonl"
    wait_file "$T/standin.url" 30
    url=$(cat "$T/standin.url")
    local base
    base=$(config ready)
    g=$(submit "$base" "$T/grade-%j.out" scripts_hpc/slurm_grading_server.sh "$COMP")
    wrong=$(config wrong "LLM_BASE_URL=$url" "LLM_MODEL=not-served")
    a1=$(submit "$wrong" "$T/agent-%j.out" scripts_hpc/slurm_agent.sh "$COMP" "auto:$g")
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    dead=$(config dead "LLM_BASE_URL=http://$(hostname -s):$port/v1" "LLM_READY_TIMEOUT=3")
    a2=$(submit "$dead" "$T/agent-%j.out" scripts_hpc/slurm_agent.sh "$COMP" "auto:$g")
    wait_job "$a1" 120
    wait_job "$a2" 120
    scancel "$g"
    cat "$T/agent-$a1.out" "$T/agent-$a2.out"
    [[ $(job_state "$a1") == FAILED && $(job_state "$a2") == FAILED ]]
    run grep -ic error "$T/agent-$a1.out"
    assert_output 1
    grep -i error "$T/agent-$a1.out" | grep -q "serves $MODEL, not not-served: set LLM_MODEL"
    run grep -ic error "$T/agent-$a2.out"
    assert_output 1
    grep -i error "$T/agent-$a2.out" | grep -q "did not list $MODEL within 3s"
    # the agent never started: no such line, no run directory
    run grep -l 'starting the agent' "$T/agent-$a1.out" "$T/agent-$a2.out"
    assert_failure
    [ ! -e "$T/runs/wrong/${COMP}_$a1" ] && [ ! -e "$T/runs/dead/${COMP}_$a2" ]
}

@test "the AIDE image on the stand-in (LLM_BASE_URL=job): graded valid submission, ends on its own, only the endpoint asked" {
    [[ -f $IMAGES/agent-aide.sif ]] \
        || _unavailable "AIDE image" MLEBENCH_REQUIRE_APPTAINER "no $IMAGES/agent-aide.sif: make sif AGENT=aide"
    local cfg limit=900
    cfg=$(config aide "LLM_BASE_URL=job" "AGENT_ID=aide/llm-test" "AGENT_SIF=$IMAGES/agent-aide.sif" \
        'APPTAINER_EXTRA_FLAGS=""')  # the variant: 3 steps in 900 s
    local t0=$SECONDS
    j=$(submit "$cfg" "$T/het-%j.out" --time=20 : --time=20 scripts_hpc/slurm_hetjob.sh "$COMP")
    wait_job "$j" 600
    echo "AIDE hetjob: $((SECONDS - t0)) s from sbatch to the end of the job"
    cat "$T/het-$j.out"
    [[ $(job_state "$j") == COMPLETED ]]
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/het-$j.out" | tail -n1)
    [[ $(meta "$run_dir" status) == finished && $(meta "$run_dir" exit_code) == 0 ]]
    # it ended on its own, well before its time limit (the entrypoint's own count)
    secs=$(sed -n 's/.*agent exited with code 0 after \([0-9]*\)s.*/\1/p' "$T/het-$j.out" | tail -n1)
    [[ -n $secs ]] && (( secs < limit / 3 ))
    # graded: a valid submission
    as_test_user "$CLI" grade "$run_dir" --data-dir "$T/data" >/dev/null
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; print(r['valid_submission'], r['score'] is not None)" "$run_dir/grading_report.json"
    assert_output "True True"
    # Only the configured endpoint was asked: every model call AIDE's journal records (one code
    # call and one review per node) is in the stand-in's log, for this model, each through the
    # step's proxy with the run's own key (its log line per request); the report used the same model.
    bport=$(sed -n 's/.*, port \([0-9]*\) of 127.0.0.1 behind the proxy.*/\1/p' "$T/het-$j.out")
    proxied=$(grep -c "POST /v1/chat/completions 200 run=${COMP}_$j " "$T/het-$j.out")
    journal=$(compgen -G "$run_dir/logs/aide/*-exp/journal.json" | head -n1)
    run python3 - "$T/aide.requests.jsonl" "$journal" "$MODEL" "127.0.0.1:$bport" "$proxied" <<'PY'
import collections, json, sys
log, journal, model, hostport, proxied = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
reqs = [json.loads(line) for line in open(log)]
chat = [r for r in reqs if r["path"] == "/v1/chat/completions"]
kinds = collections.Counter(r["kind"] for r in chat)
nodes = len(json.load(open(journal))["nodes"])
bad = [r for r in chat if r.get("model") != model or r["status"] != 200]
hosts = {r["host"] for r in reqs}
print("nodes", nodes, "code", kinds["draft"] + kinds["improve"] + kinds["debug"], "review", kinds["review"],
      "report", kinds["report"], "bad", len(bad), "hosts", sorted(hosts) == [hostport], "proxied", proxied == len(chat),
      "requests", len(reqs))
PY
    echo "$output"
    [[ $output =~ ^nodes\ ([0-9]+)\ code\ ([0-9]+)\ review\ ([0-9]+)\ report\ 1\ bad\ 0\ hosts\ True\ proxied\ True\ requests ]]
    (( BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] == BASH_REMATCH[2] && BASH_REMATCH[1] == BASH_REMATCH[3] ))
    compgen -G "$run_dir/logs/aide/*-exp/report.md" >/dev/null
    run grep -in error "$T/het-$j.out"
    assert_failure
}
