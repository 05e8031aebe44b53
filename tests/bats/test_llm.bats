#!/usr/bin/env bats
# Agents on an LLM endpoint, on the real local Slurm with real Apptainer containers. The LLM is
# the OpenAI-compatible stand-in (tests/llm_standin/server.py) run through LLM_CMD, as a site
# runs vLLM or llama.cpp: the LLM server job found by auto:JOBID, the three-part hetjob
# (LLM_BASE_URL=job), the key's only way into the agent (its 0600 env file), llm-ready refusing
# a wrong model or a dead URL before the agent starts, and the AIDE image end to end.

load helpers

MODEL="standin-sklearn"

setup_file() {
    require_slurm
    require_apptainer
    export ROOT=$BATS_TEST_DIRNAME/../..
    ROOT=$(cd "$ROOT" && pwd)
    export CLI=$ROOT/.venv/bin/mlebench-hpc
    export T=$BATS_FILE_TMPDIR
    "$CLI" prepare-demo --data-dir "$T/data" >"$T/comps"
    export COMP
    COMP=$(head -n1 "$T/comps")
    export IMAGES=${MH_TEST_IMAGE_DIR:-$HOME/.cache/mlebench-hpc/images}
    [[ -f $IMAGES/mlebench-grading.sif && -f $IMAGES/agent-dummy.sif ]] \
        || _unavailable images MLEBENCH_REQUIRE_APPTAINER "no grading or dummy image in $IMAGES: make sif"
    export MLEBENCH_HPC_RUNTIME=apptainer
    # An agent that uses its endpoint as AIDE does, from its environment only: GET /models with the
    # key (and once without, the control: the stand-in then refuses), the names of its LLM_*
    # variables, then a sleep ($1 s, long enough for ps on the host to see it), then the dummy agent.
    cat >"$T/llm_agent.sh" <<'EOF'
#!/bin/bash
set -eu
python3 - <<'PY'
import json, os, urllib.error, urllib.request
url = os.environ["LLM_BASE_URL"] + "/models"
def get(key):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
status, body = get(os.environ.get("LLM_API_KEY"))
without, _ = get(None)
with open("/home/logs/llm_check.json", "w") as f:
    json.dump({"url": os.environ["LLM_BASE_URL"], "model": os.environ["LLM_MODEL"], "status": status,
               "models": [m["id"] for m in (body or {}).get("data", [])], "status_without_key": without}, f)
PY
env | sed -n 's/^\(LLM_[A-Z_]*\)=.*/\1/p' | sort >/home/logs/llm_env_names.txt
sleep "${1:-0}"
exec /home/agent/start.sh
EOF
    chmod 0755 "$T/llm_agent.sh"
    export STANDIN="$ROOT/.venv/bin/python $ROOT/tests/llm_standin/server.py"
}

teardown() {
    # the stand-in a test started on the host, by its pid
    if [[ -f $BATS_TEST_TMPDIR/standin.pid ]]; then kill "$(cat "$BATS_TEST_TMPDIR/standin.pid")" 2>/dev/null || true; fi
}

teardown_file() {
    local ids
    mapfile -t ids < <(squeue -h -o '%i %k' 2>/dev/null | awk -v t="$BATS_FILE_TMPDIR" 'index($0, t) {print $1}' || true)
    (( ${#ids[@]} == 0 )) || scancel "${ids[@]}" 2>/dev/null || true
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
        printf 'APPTAINER_EXTRA_FLAGS="--bind %s:/opt/llm_agent.sh:ro"\n' "$T/llm_agent.sh"
        printf '%s\n' "$@"
    } >"$T/$name.env"
    echo "$T/$name.env"
}

# submit CONFIG OUTPUT SBATCH_ARGS...: sbatch from the checkout with this config; prints the job id
submit() {
    local cfg=$1 out=$2
    shift 2
    (cd "$ROOT" && MLEBENCH_HPC_CONFIG=$cfg sbatch --parsable --output="$out" --comment="$T" \
        --export=ALL,MLEBENCH_HPC_CONFIG="$cfg" "$@") | cut -d';' -f1
}

# wait_file FILE [SECONDS] [LOG]: until FILE is non-empty (print LOG when it never comes)
wait_file() {
    local f=$1 limit=${2:-120} log=${3:-/dev/null} start=$SECONDS
    until [[ -s $f ]]; do
        (( SECONDS - start < limit )) || { echo "no $f after ${limit}s" >&2; cat "$log" >&2; return 1; }
        sleep 0.5
    done
}

meta() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m.get(sys.argv[2]))" "$1/metadata.json" "$2"; }

@test "LLM server job, then an agent job with LLM_BASE_URL=auto:JOBID: the key reaches the agent only through its env file" {
    local key=mh-llm-key-$RANDOM$RANDOM$RANDOM
    (umask 077 && echo "$key" >"$T/llm.key")
    # the stand-in takes the key from its environment (STANDIN_API_KEY), never from a command line
    local cfg
    cfg=$(config auto "LLM_API_KEY_FILE=$T/llm.key" \
        "LLM_CMD='STANDIN_API_KEY=\$LLM_API_KEY exec $STANDIN --model \"\$LLM_MODEL\" --host \"\$LLM_HOST\" --port \"\$LLM_PORT\" --log $T/auto.requests.jsonl'" \
        "AGENT_CMD='/opt/llm_agent.sh 4.321'")
    llm=$(submit "$cfg" "$T/llm-%j.out" --gres=gpu:0 --cpus-per-task=1 --mem=1G scripts_hpc/slurm_llm_server.sh)
    sed -i "/^LLM_BASE_URL=/d; \$a LLM_BASE_URL=auto:$llm" "$cfg"
    g=$(submit "$cfg" "$T/grade-%j.out" scripts_hpc/slurm_grading_server.sh "$COMP")
    a=$(submit "$cfg" "$T/agent-%j.out" scripts_hpc/slurm_agent.sh "$COMP" "auto:$g")
    # Everything the host's ps shows while the agent job lives.
    while squeue -h -j "$a" 2>/dev/null | grep -q .; do ps -e -o args= >>"$T/ps.txt"; sleep 0.2; done
    scancel "$g" "$llm"
    wait_job "$llm" 60
    cat "$T/agent-$a.out"
    [[ $(job_state "$a") == COMPLETED ]]
    url=$(sed -n 's/^LLM_SERVER_URL=//p' "$T/llm-$llm.out")
    [[ $url == http://*/v1 ]]
    run_dir=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$T/agent-$a.out" | tail -n1)
    # the agent used the server job's URL, with the key, and the stand-in refused it without
    run python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['url'], c['model'], c['status'], c['models'], c['status_without_key'])" "$run_dir/logs/llm_check.json"
    assert_output "$url $MODEL 200 ['$MODEL'] 401"
    run cat "$run_dir/logs/llm_env_names.txt"
    assert_output $'LLM_API_KEY\nLLM_BASE_URL\nLLM_MODEL'
    [[ $(meta "$run_dir" llm_base_url) == "$url" && $(meta "$run_dir" llm_base_url_config) == "auto:$llm" ]]
    [[ $(meta "$run_dir" status) == finished ]]
    # ps saw the agent (the control: its sleep) and never the key; the key is nowhere on disk but
    # in the user's own file (the env file is removed when the agent ends)
    grep -q '^sleep 4.321' "$T/ps.txt"
    run grep -c -- "$key" "$T/ps.txt"
    assert_output 0
    run grep -rl -- "$key" "$T/runs" "$T/agent-$a.out" "$T/llm-$llm.out" "$T/grade-$g.out"
    assert_failure
    [ ! -e "$T/runs/.state/${COMP}_$a/agent.env" ]
    # the server job stopped on scancel without an error and took its URL file with it
    grep -q 'LLM server stopped on request' "$T/llm-$llm.out"
    [ ! -e "$T/runs/.state/llm/$llm/url" ]
}

@test "three-part hetjob (LLM_BASE_URL=job): LLM server beside the agent, valid submission, everything stopped, no error line" {
    local cfg
    cfg=$(config job "LLM_BASE_URL=job" "AGENT_CMD='/opt/llm_agent.sh'")
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
    run python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['url'], c['status'], c['models'])" "$run_dir/logs/llm_check.json"
    assert_output "$url 200 ['$MODEL']"
    # a graded valid submission
    "$CLI" grade "$run_dir" --data-dir "$T/data" >/dev/null
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; print(r['valid_submission'])" "$run_dir/grading_report.json"
    assert_output True
    # both servers were asked to stop and did, with nothing left behind and no error line
    grep -q 'LLM server stopped on request' "$T/het-$j.out"
    grep -q '\[llm-standin\] stopped' "$T/het-$j.out"
    grep -q 'grading server step ended (exit code 0)' "$T/het-$j.out"
    run grep -in error "$T/het-$j.out"
    assert_failure
    [ ! -e "$T/runs/.state/llm/$j/url" ]
    run pgrep -f "server.py --model $MODEL .*$T/job.requests.jsonl"
    assert_failure
}

@test "three-part hetjob whose LLM server dies during the run: the agent is stopped, an ERROR line, the run failed" {
    local cfg
    # the agent would wait 300 s (as AIDE would retry its dead endpoint until its time limit)
    cfg=$(config dies "LLM_BASE_URL=job" "AGENT_CMD='/opt/llm_agent.sh 300'" \
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

@test "llm-ready before the agent: a wrong model or a dead URL is one line, and the agent never starts" {
    "$ROOT/.venv/bin/python" "$ROOT/tests/llm_standin/server.py" --model "$MODEL" --host 0.0.0.0 --port 0 \
        --url-file "$T/standin.url" --log "$T/ready.requests.jsonl" >/dev/null 2>&1 3>&- &
    local standin=$!
    echo "$standin" >"$BATS_TEST_TMPDIR/standin.pid"
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
    kill "$standin"
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
    cfg=$(config aide "LLM_BASE_URL=job" "AGENT_SIF=$IMAGES/agent-aide.sif" "TIME_LIMIT_SECS=$limit" "STEP_LIMIT=3" \
        'APPTAINER_EXTRA_FLAGS=""')
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
    "$CLI" grade "$run_dir" --data-dir "$T/data" >/dev/null
    run python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['competition_reports'][0]; print(r['valid_submission'], r['score'] is not None)" "$run_dir/grading_report.json"
    assert_output "True True"
    # Only the configured endpoint was asked: every model call AIDE's journal records (one code
    # call and one review per node) is in the stand-in's log, for this model, at the URL the run
    # was given; the report used the same model.
    url=$(meta "$run_dir" llm_base_url)
    journal=$(compgen -G "$run_dir/logs/aide/*-exp/journal.json" | head -n1)
    run python3 - "$T/aide.requests.jsonl" "$journal" "$MODEL" "${url#http://}" <<'PY'
import collections, json, sys
log, journal, model, hostport = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split("/")[0]
reqs = [json.loads(line) for line in open(log)]
chat = [r for r in reqs if r["path"] == "/v1/chat/completions"]
kinds = collections.Counter(r["kind"] for r in chat)
nodes = len(json.load(open(journal))["nodes"])
bad = [r for r in chat if r.get("model") != model or r["status"] != 200]
hosts = {r["host"] for r in reqs}
print("nodes", nodes, "code", kinds["draft"] + kinds["improve"] + kinds["debug"], "review", kinds["review"],
      "report", kinds["report"], "bad", len(bad), "hosts", sorted(hosts) == [hostport])
PY
    echo "$output"
    [[ $output =~ ^nodes\ ([0-9]+)\ code\ ([0-9]+)\ review\ ([0-9]+)\ report\ 1\ bad\ 0\ hosts\ True$ ]]
    (( BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] == BASH_REMATCH[2] && BASH_REMATCH[1] == BASH_REMATCH[3] ))
    compgen -G "$run_dir/logs/aide/*-exp/report.md" >/dev/null
    run grep -in error "$T/het-$j.out"
    assert_failure
}
