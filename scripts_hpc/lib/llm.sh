# shellcheck shell=bash
# mlebench-hpc: the LLM endpoint of agents that use one (AIDE) and the LLM server.
# Sourced by scripts_hpc/lib.sh after the other lib/*.sh (uses mh_log, mh_die, mh_runtime,
# mh_stop_pid, mh_stop_step and mh_in_hetjob_batch). Config keys: LLM_BASE_URL (http(s)://host:port/v1, auto:<jobid>
# of an LLM server job, or `job`: this job starts the server as a step), LLM_MODEL,
# LLM_API_KEY_FILE, LLM_SIF, LLM_MODEL_DIR, LLM_CMD, LLM_READY_TIMEOUT.
# The server's container command line is mh_llm_cmd (lib/containers.sh); keys are read and written
# only by Python (`llm-proxy backend-env`, `llm-ready --env-file`), never here.

# ------------------------------------------------------------------ the server
# A free TCP port of 127.0.0.1, for the backend (a server that cannot bind port 0 itself, like
# vLLM, gets it). Whoever binds it meanwhile cannot take a request: the proxy checks every connection.
mh_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# GPUs this step may use: CUDA_VISIBLE_DEVICES, else Slurm's count, else 0.
mh_gpu_count() {
    local ids=${CUDA_VISIBLE_DEVICES:-${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}}
    if [[ -n $ids && $ids != NoDevFiles ]]; then
        local arr
        IFS=, read -r -a arr <<<"$ids"
        echo "${#arr[@]}"
    else
        echo "${SLURM_GPUS_ON_NODE:-0}"
    fi
}

# What the LLM server needs before it is started (the server job, and the hetjob before its
# grading server with LLM_BASE_URL=job): one line and exit 2 for the first problem. Arg: model
mh_llm_server_checks() {
    local model=$1
    [[ -n $model ]] || mh_die "no model for the LLM server: set LLM_MODEL in $MH_CONFIG, or give it: sbatch scripts_hpc/slurm_llm_server.sh <model>"
    [[ -n ${LLM_CMD:-} ]] || mh_die "LLM_CMD is empty in $MH_CONFIG: set the server command (see scripts_hpc/config.example.env)"
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} && ! -f $LLM_SIF ]]; then
        mh_die "LLM_SIF=$LLM_SIF does not exist: run 'make sif LLM=vllm', or set LLM_SIF=\"\" to run LLM_CMD on the host"
    fi
    if [[ -n ${LLM_MODEL_DIR:-} && ! -d $LLM_MODEL_DIR ]]; then
        mh_die "LLM_MODEL_DIR=$LLM_MODEL_DIR is not a directory: put the weights there (nothing is downloaded at run time)"
    fi
    if [[ -n ${LLM_API_KEY_FILE:-} && ! -r $LLM_API_KEY_FILE ]]; then
        mh_die "LLM_API_KEY_FILE=$LLM_API_KEY_FILE cannot be read: fix the path"
    fi
}

# ------------------------------------------------------------------ the agent's endpoint
# Before the agent starts: resolve LLM_BASE_URL (a URL, auto:<jobid>, or `job`: the URL of the
# server this job started, MH_LLM_JOB_URL), register this run's own key with our server (auto: and
# job; a server you run yourself gets LLM_API_KEY_FILE's key), check that /v1/models lists LLM_MODEL
# with that key, waiting at most LLM_READY_TIMEOUT, and write the agent's LLM lines to ENV_FILE
# (0600, by llm-ready); one line and exit 2 when not. Sets MH_LLM_URL (empty without an endpoint),
# MH_LLM_ENV, MH_LLM_KEY_FILE (removed by mh_llm_release), MH_LLM_SERVER_JOB and
# MH_LLM_SERVER_URL_FILE (auto:, for mh_llm_watch_server_job). Args: run_id env_file
mh_llm_check_endpoint() {
    local run_id=$1 env_file=$2
    MH_LLM_URL="" MH_LLM_ENV="" MH_LLM_KEY_FILE="" MH_LLM_SERVER_JOB="" MH_LLM_SERVER_URL_FILE=""
    local spec=${LLM_BASE_URL:-}
    [[ -n $spec ]] || return 0
    local args=(--model "${LLM_MODEL:-}" --timeout "${LLM_READY_TIMEOUT:-900}" --state-dir "$MH_STATE_BASE"
        --run-id "$run_id" --env-file "$env_file" --shell)
    if [[ $spec == job ]]; then
        [[ -n ${MH_LLM_JOB_URL:-} ]] || mh_die "LLM_BASE_URL=job starts an LLM server only in scripts_hpc/slurm_hetjob.sh: submit that, or run 'sbatch scripts_hpc/slurm_llm_server.sh' and set LLM_BASE_URL=auto:<its job id>"
        spec=$MH_LLM_JOB_URL
        args+=(--server-state "$(mh_llm_state "$MH_JOB_ID")")
    elif [[ $spec != auto:* && -n ${LLM_API_KEY_FILE:-} ]]; then
        args+=(--api-key-file "$LLM_API_KEY_FILE")  # your own server: your key
    fi
    local out
    out=$("$MH_CLI" llm-ready "$spec" "${args[@]}") || exit 2
    eval "$out"
    MH_LLM_ENV=$env_file
    mh_log "LLM endpoint $MH_LLM_URL serves $LLM_MODEL${MH_LLM_KEY_FILE:+ (with a key of this run only)}"
}

# When the run ends (whatever ended it): stop the watcher, withdraw this run's key from the LLM
# server (from then on the proxy answers it 401) and remove the agent's LLM env lines.
mh_llm_release() {
    mh_stop_pid "${MH_LLM_SERVER_WATCH_PID:-}"
    MH_LLM_SERVER_WATCH_PID=""
    rm -f "${MH_LLM_KEY_FILE:-}" "${MH_LLM_ENV:-}"
}

# The agent's LLM lines of its 0600 env file (mh_agent_env_file): LLM_BASE_URL (resolved),
# LLM_MODEL and LLM_API_KEY (this run's own key, or for a server you run yourself LLM_API_KEY_FILE's),
# as llm-ready wrote them. Nothing without an endpoint (checked by mh_llm_check_endpoint first).
mh_llm_env_lines() {
    [[ -n ${MH_LLM_ENV:-} ]] || return 0
    cat "$MH_LLM_ENV"
}

# While the agent runs with LLM_BASE_URL=auto:<jobid>: when that LLM server job ends (its URL file
# goes, or Slurm says so), stop the agent (SIGTERM to AGENT_PID) instead of letting it send prompts
# to a port anyone on that node may now bind. mh_llm_unwatch_server_job says whether it fired.
# Sets MH_LLM_SERVER_WATCH_PID. Arg: agent_pid
mh_llm_watch_server_job() {
    MH_LLM_SERVER_WATCH_PID=""
    [[ -n ${MH_LLM_SERVER_JOB:-} && -n ${MH_LLM_SERVER_URL_FILE:-} ]] || return 0
    local agent=$1 job=$MH_LLM_SERVER_JOB file=$MH_LLM_SERVER_URL_FILE
    (
        "$MH_CLI" llm-watch "$job" --url-file "$file" &
        w=$!
        trap 'kill "$w" 2>/dev/null; exit 0' TERM
        wait "$w" || exit 0  # stopped, or it could not watch: nothing to do
        mh_log "the LLM server job $job ended during the run: stopping the agent, which cannot go on without it"
        kill -TERM "$agent" 2>/dev/null || true
        exit 10
    ) &
    MH_LLM_SERVER_WATCH_PID=$!
}

# After the agent ended: stop the watcher; MH_LLM_SERVER_GONE=1 when it was the one that stopped
# the agent.
# shellcheck disable=SC2034 # MH_LLM_SERVER_GONE is read by the caller
mh_llm_unwatch_server_job() {
    local w=${MH_LLM_SERVER_WATCH_PID:-} rc=0
    MH_LLM_SERVER_GONE=0 MH_LLM_SERVER_WATCH_PID=""
    [[ -n $w ]] || return 0
    if mh_llm_pid_running "$w"; then kill -TERM "$w" 2>/dev/null || true; fi
    wait "$w" || rc=$?
    if (( rc == 10 )); then MH_LLM_SERVER_GONE=1; fi
}

# ------------------------------------------------------------------ LLM_BASE_URL=job
# The hetjob with LLM_BASE_URL=job: the LLM server (slurm_llm_server.sh) as a background step of
# the agent's component 1, sharing its CPUs and GPUs (--overlap), started after the grading server
# (its step 0); without Slurm a background process. Waits (bounded) until it published its URL,
# then exports MH_LLM_JOB_URL for the agent step. Sets MH_LLM_PID.
mh_llm_start_job_server() {
    local state limit=$(( ${LLM_READY_TIMEOUT:-900} + 60 ))
    state=$(mh_llm_state "$MH_JOB_ID")
    mkdir -p "$state"
    rm -f "$state/url"  # a requeued job has the same id: never read the previous attempt's URL
    local step=()
    if mh_in_hetjob_batch; then
        step=(srun --het-group=1 --ntasks=1 --overlap --job-name=mlebench-llm --kill-on-bad-exit=1)
    fi
    "${step[@]}" bash "$MH_SCRIPTS/slurm_llm_server.sh" "$LLM_MODEL" &
    MH_LLM_PID=$!
    mh_log "LLM server for $LLM_MODEL starting (LLM_BASE_URL=job)"
    # its proxy publishes the URL once the backend lists the model; the agent checks it with its key.
    # A server that is gone needs no stopping at the job's end (and is no death during the run).
    MH_LLM_JOB_URL=$(mh_wait_url_file "$state/url" "$MH_LLM_PID" "$limit" "the LLM server") \
        || { kill -0 "$MH_LLM_PID" 2>/dev/null || MH_LLM_PID=""; exit 2; }
    export MH_LLM_JOB_URL
}

# True while process PID runs: one that ended but is not yet reaped by its parent (a zombie, as a
# background srun is while the script waits for the agent) does not count. Arg: pid
mh_llm_pid_running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z ]]
}

# While the agent runs (LLM_BASE_URL=job): when the LLM server ends, stop the agent (its step gets
# SIGTERM, so it records how it ended) instead of letting it wait for a model that is gone until its
# time limit. Names the agent's step (MH_STEP from mh_step_prefix gets --job-name) so that it can be
# found; without Slurm the agent is this script's child running slurm_agent.sh. Sets MH_LLM_WATCH_PID.
mh_llm_watch_job_server() {
    [[ -n ${MH_LLM_PID:-} ]] || return 0
    if (( ${#MH_STEP[@]} )); then MH_STEP+=(--job-name=mlebench-agent); fi
    local llm=$MH_LLM_PID parent=$$
    (
        trap 'exit 0' TERM
        while mh_llm_pid_running "$llm"; do sleep 2; done
        mh_log "the LLM server ended during the run: stopping the agent, which cannot go on without it"
        if mh_in_hetjob_batch; then
            local agent_step
            agent_step=$("$MH_CLI" slurm-step "${SLURM_JOB_ID_HET_GROUP_1:-}" mlebench-agent)
            if [[ -n $agent_step ]]; then scancel --signal=TERM "$agent_step" || true; fi
        else
            pkill -TERM -P "$parent" -f slurm_agent.sh || true
        fi
    ) &
    MH_LLM_WATCH_PID=$!
}

# The step id of the LLM server step (JOBID.STEP of component 1: a hetjob's steps are numbered
# across components but cancelled by their component's job id), found by its name.
mh_llm_step_id() {
    local comp_job=${SLURM_JOB_ID_HET_GROUP_1:-}
    [[ -n $comp_job ]] || return 0
    "$MH_CLI" slurm-step "$comp_job" mlebench-llm
}

# Stop the LLM server this job started (whatever ended the agent) and say how it ended: a normal
# stop prints no error; a server that had died during the run prints one ERROR line, sets
# MH_LLM_DIED_RC (its exit code) and returns 1.
# shellcheck disable=SC2034 # MH_LLM_DIED_RC is read by the caller
mh_llm_stop_job_server() {
    local pid=${MH_LLM_PID:-} step gone=0 rc=""
    mh_stop_pid "${MH_LLM_WATCH_PID:-}"  # the agent has ended: nothing left to stop for the server
    MH_LLM_WATCH_PID=""
    [[ -n $pid ]] || return 0
    MH_LLM_PID=""
    if mh_in_hetjob_batch; then
        step=$(mh_llm_step_id)
        if [[ -n $step ]]; then
            mh_stop_step "$pid" "$step"
            gone=$MH_STEP_GONE rc=$MH_STEP_RC
        elif kill -0 "$pid" 2>/dev/null; then
            mh_stop_pid "$pid"
        else
            gone=1 rc=0; wait "$pid" || rc=$?
        fi
    elif kill -0 "$pid" 2>/dev/null; then
        mh_stop_pid "$pid"  # TERM: the server job stops its server and exits 0
    else
        gone=1 rc=0; wait "$pid" || rc=$?
    fi
    if ((gone)); then
        mh_log "ERROR: the LLM server exited during the run with code ${rc:-unknown}: see its lines above"
        MH_LLM_DIED_RC=${rc:-unknown}
        return 1
    fi
    mh_log "LLM server stopped"
}
