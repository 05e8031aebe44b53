# shellcheck shell=bash
# mlebench-hpc: the LLM endpoint of agents that use one (AIDE) and the LLM server (issue 10).
# Sourced by scripts_hpc/lib.sh after the other lib/*.sh (uses mh_log, mh_die, mh_runtime, mh_meta,
# mh_stop_pid, mh_stop_step and mh_in_hetjob_batch). Config keys: LLM_BASE_URL (http(s)://host:port/v1, auto:<jobid>
# of an LLM server job, or `job`: this job starts the server as a step), LLM_MODEL,
# LLM_API_KEY_FILE, LLM_SIF, LLM_MODEL_DIR, LLM_CMD, LLM_READY_TIMEOUT.

# ------------------------------------------------------------------ the server's command line
# A free TCP port of this node (a server that cannot bind port 0 itself, like vLLM, gets it;
# the tiny race with another process is caught by the readiness check's --pid).
mh_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()'
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

# The LLM server: LLM_CMD run by `bash -c` in LLM_SIF (on the host when LLM_SIF is empty or
# without apptainer), with LLM_MODEL, LLM_MODEL_DIR, LLM_HOST, LLM_PORT and LLM_NUM_GPUS in its
# environment, the weights read-only, caches in scratch and the Hugging Face libraries offline
# (weights come from LLM_MODEL_DIR, never from the network). A key from LLM_API_KEY_FILE reaches
# it as LLM_API_KEY and VLLM_API_KEY through a 0600 env file. Fills MH_CMD. Args: model port scratch
# shellcheck disable=SC2034 # MH_CMD is read by the caller
mh_llm_cmd() {
    local model=$1 port=$2 scratch=$3 gpus cache key_env=""
    gpus=$(mh_gpu_count)
    if [[ -n ${LLM_API_KEY_FILE:-} ]]; then
        key_env=$scratch/llm-key.env
        (umask 077 && printf 'LLM_API_KEY=%s\nVLLM_API_KEY=%s\n' "$(head -n1 "$LLM_API_KEY_FILE")" \
            "$(head -n1 "$LLM_API_KEY_FILE")" >"$key_env")
    fi
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        cache=/tmp  # --workdir: the container's /tmp is $scratch/tmp on disk
    else
        cache=$scratch
    fi
    local envs=(LLM_MODEL="$model" LLM_MODEL_DIR="${LLM_MODEL_DIR:-}" LLM_HOST=0.0.0.0 LLM_PORT="$port"
        LLM_NUM_GPUS="$gpus" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$cache/hf"
        XDG_CACHE_HOME="$cache/cache" VLLM_CACHE_ROOT="$cache/vllm" TRITON_CACHE_DIR="$cache/triton"
        VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1)
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        local flags=(--contain --cleanenv --no-home --pid --ipc --workdir "$scratch" --pwd /tmp) e
        [[ -n ${LLM_MODEL_DIR:-} ]] && flags+=(--bind "$LLM_MODEL_DIR:$LLM_MODEL_DIR:ro")
        for e in "${envs[@]}"; do flags+=(--env "$e"); done
        [[ -n $key_env ]] && flags+=(--env-file "$key_env")
        if (( gpus > 0 )); then flags+=(--nv); fi
        # shellcheck disable=SC2206 # extra flags are meant to split
        local extra=(${APPTAINER_EXTRA_FLAGS:-})
        MH_CMD=(apptainer exec "${flags[@]}" "${extra[@]}" "$LLM_SIF" bash -c "$LLM_CMD")
    else
        mkdir -p "$cache"
        if [[ -n $key_env ]]; then  # the key from the file, never on a command line
            # shellcheck disable=SC2016 # expanded by the inner bash
            MH_CMD=(bash -c 'set -a; source "$1"; set +a; shift; exec env "$@"' llm "$key_env" "${envs[@]}" bash -c "$LLM_CMD")
        else
            MH_CMD=(env "${envs[@]}" bash -c "$LLM_CMD")
        fi
    fi
}

# What the LLM server needs before it is started (the server job, and the hetjob before its
# grading server with LLM_BASE_URL=job): one line and exit 2 for the first problem. Arg: model
mh_llm_server_checks() {
    local model=$1
    [[ -n $model ]] || mh_die "usage: sbatch scripts_hpc/slurm_llm_server.sh <model> (or set LLM_MODEL in $MH_CONFIG)"
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
# The key in LLM_API_KEY_FILE: its first non-blank line without spaces (as llm-ready reads it).
mh_llm_key() { sed -n '/[^[:space:]]/{p;q}' "$LLM_API_KEY_FILE" | tr -d '[:space:]'; }

# Before the agent starts: resolve LLM_BASE_URL (a URL, auto:<jobid>, or `job`: the URL of the
# server this job started, MH_LLM_JOB_URL) and check that /v1/models lists LLM_MODEL, waiting at
# most LLM_READY_TIMEOUT; one line and exit 2 when not. Sets MH_LLM_URL (empty without an endpoint).
mh_llm_check_endpoint() {
    MH_LLM_URL=""
    local spec=${LLM_BASE_URL:-}
    [[ -n $spec ]] || return 0
    if [[ $spec == job ]]; then
        [[ -n ${MH_LLM_JOB_URL:-} ]] || mh_die "LLM_BASE_URL=job starts an LLM server only in scripts_hpc/slurm_hetjob.sh: submit that, or run 'sbatch scripts_hpc/slurm_llm_server.sh' and set LLM_BASE_URL=auto:<its job id>"
        spec=$MH_LLM_JOB_URL
    fi
    local args=(--model "${LLM_MODEL:-}" --timeout "${LLM_READY_TIMEOUT:-900}" --state-dir "$MH_STATE_BASE")
    [[ -n ${LLM_API_KEY_FILE:-} ]] && args+=(--api-key-file "$LLM_API_KEY_FILE")
    local url key="" v
    url=$("$MH_CLI" llm-ready "$spec" "${args[@]}") || exit 2
    # apptainer's --env-file reads the agent's env file as shell: only plain characters go there.
    if [[ -n ${LLM_API_KEY_FILE:-} ]]; then key=$(mh_llm_key); fi
    for v in "$url" "$LLM_MODEL" "$key"; do
        [[ $v =~ ^[A-Za-z0-9._~:/@%+,=-]*$ ]] \
            || mh_die "LLM_MODEL, LLM_BASE_URL and the key in LLM_API_KEY_FILE may hold only letters, digits and ._~:/@%+,=-: rename the model or use another key"
    done
    MH_LLM_URL=$url
    mh_log "LLM endpoint $MH_LLM_URL serves $LLM_MODEL"
}

# The endpoint in the run's metadata.json (never the key). Arg: run_dir
mh_llm_meta() {
    [[ -n ${MH_LLM_URL:-} ]] || return 0
    mh_meta "$1" --set llm_base_url="$MH_LLM_URL" --set llm_model="$LLM_MODEL" \
        --set llm_base_url_config="$LLM_BASE_URL"
}

# The agent's LLM lines of its 0600 env file (mh_agent_env_file): LLM_BASE_URL (resolved),
# LLM_MODEL and LLM_API_KEY (the key file's first line, never its path). Nothing without an
# endpoint (checked by mh_llm_check_endpoint first).
mh_llm_env_lines() {
    [[ -n ${MH_LLM_URL:-} ]] || return 0
    printf 'LLM_BASE_URL=%s\nLLM_MODEL=%s\n' "$MH_LLM_URL" "$LLM_MODEL"
    if [[ -n ${LLM_API_KEY_FILE:-} ]]; then printf 'LLM_API_KEY=%s\n' "$(mh_llm_key)"; fi
}

# ------------------------------------------------------------------ LLM_BASE_URL=job
# The hetjob with LLM_BASE_URL=job: the LLM server (slurm_llm_server.sh) as a background step of
# the agent's component 1, sharing its CPUs and GPUs (--overlap), started after the grading server
# (its step 0); without Slurm a background process. Waits (bounded) until it published its URL
# and the URL answers from here, then exports MH_LLM_JOB_URL for the agent step. Sets MH_LLM_PID.
mh_llm_start_job_server() {
    local state=$MH_STATE_BASE/llm/$MH_JOB_ID waited=0 limit=$(( ${LLM_READY_TIMEOUT:-900} + 60 ))
    mkdir -p "$state"
    rm -f "$state/url"  # a requeued job has the same id: never read the previous attempt's URL
    local step=()
    if mh_in_hetjob_batch; then
        step=(srun --het-group=1 --ntasks=1 --overlap --job-name=mlebench-llm --kill-on-bad-exit=1)
    fi
    "${step[@]}" bash "$MH_SCRIPTS/slurm_llm_server.sh" "$LLM_MODEL" &
    MH_LLM_PID=$!
    mh_log "LLM server for $LLM_MODEL starting (LLM_BASE_URL=job)"
    while [[ ! -s $state/url ]]; do
        kill -0 "$MH_LLM_PID" 2>/dev/null || { MH_LLM_PID=""; mh_die "the LLM server exited before it was ready: see its lines above"; }
        (( waited < limit * 2 )) || mh_die "the LLM server published no URL within ${limit}s: see its lines above"
        sleep 0.5
        waited=$((waited + 1))
    done
    local args=(--model "$LLM_MODEL" --timeout 60 --pid "$MH_LLM_PID")
    [[ -n ${LLM_API_KEY_FILE:-} ]] && args+=(--api-key-file "$LLM_API_KEY_FILE")
    MH_LLM_JOB_URL=$("$MH_CLI" llm-ready "$(head -n1 "$state/url")" "${args[@]}") || exit 2
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
            agent_step=$(squeue -h -s -j "${SLURM_JOB_ID_HET_GROUP_1:-}" -o '%i %j' 2>/dev/null \
                | awk '$2 == "mlebench-agent" { print $1; exit }')
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
    squeue -h -s -j "$comp_job" -o '%i %j' 2>/dev/null | awk '$2 == "mlebench-llm" { print $1; exit }'
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

# The LLM server died before the agent ended: the agent lost its model, so the attempt failed
# whatever it wrote (as for a grading server that died). Args: run_dir server_exit_code
mh_llm_record_death() {
    local run=$1 code=$2 reason
    [[ -f $run/metadata.json ]] || return 0
    [[ $code =~ ^[0-9]+$ ]] || code=null
    reason="the LLM server died (exit $code) before the agent ended: the agent lost its model"
    mh_meta "$run" --set status=failed \
        --set-json failure="{\"cause\": \"llm_server_died\", \"reason\": \"$reason\", \"server_exit_code\": $code}"
}
