# shellcheck shell=bash
# The apptainer command lines: binds and flags live here and nowhere else, so the grading job,
# the agent job, the hetjob, the sweep and the leak tests all start containers alike. The
# integrity check runs the agent's exact command line with only its final command replaced.

# Grading server: only this competition's private dir, read-only, at the upstream layout; the
# run's token (STATE/token, made by mh_new_token) and uploads streamed to STATE/uploads on disk (the
# container's /tmp is a 64 MiB tmpfs for users). Fills MH_CMD. Args: comp state_dir
mh_grading_cmd() {
    local comp=$1 state=$2 runtime
    runtime=$(mh_runtime)
    local server_args=(--competition-id "$comp" --host 0.0.0.0 --port 0
        --idle-timeout "$GRADING_IDLE_TIMEOUT" --max-upload-mb "$UPLOAD_LIMIT_MB"
        --validate-workers "$GRADING_VALIDATE_WORKERS" --validate-budget-mb "$GRADING_VALIDATE_BUDGET_MB")
    # The workers' budgets share the job's memory (--cleanenv: the server cannot see Slurm's variables)
    local mem
    mem=$(mh_job_mem_mb)
    if [[ -n $mem ]]; then server_args+=(--memory-limit-mb "$mem"); fi
    if [[ $runtime == apptainer ]]; then
        server_args+=(--token-file /state/token --tmp-dir /state/uploads --inflight-file /state/inflight.json)
    else
        server_args+=(--token-file "$state/token" --tmp-dir "$state/uploads" --inflight-file "$state/inflight.json")
    fi
    if [[ $runtime == apptainer ]]; then
        local binds=(--bind "$DATA_DIR/$comp/prepared/private:/private/data/$comp/prepared/private:ro"
            --bind "$state:/state")
        if [[ -n $MLEBENCH_DIR ]]; then binds+=(--bind "$MLEBENCH_DIR:/opt/mle-bench:ro"); fi
        # shellcheck disable=SC2206 # extra flags are meant to split
        local extra=($APPTAINER_EXTRA_FLAGS)
        MH_CMD=(apptainer exec --contain --cleanenv --no-home --pwd / "${binds[@]}" "${extra[@]}"
            "$GRADING_SIF" python3 /opt/mlebench-hpc/run_grading_server.py
            "${server_args[@]}" --data-dir /private/data --url-file /state/url)
    else
        MH_CMD=("$MH_ROOT/.venv/bin/python" "$MH_ROOT/environment/run_grading_server.py"
            "${server_args[@]}" --data-dir "$DATA_DIR" --url-file "$state/url")
    fi
}

# Agent: public data read-only, the run's submission/logs/code writable, its own copy of the
# image's /home/agent writable (`run start` made it: RUN/agent), overlays read-only over the image's
# localhost:5000 files, our entrypoint bound read-only from this checkout (the image needs nothing of
# ours), scratch on disk (--workdir: /tmp is not the 64 MiB tmpfs), its own PID namespace, a clean
# environment and no host home. The command is the variant's (MH_AGENT_ARGV from `run start`:
# bash /home/agent/start.sh <kwargs>, as upstream runs it). Fills MH_CMD, MH_BINDS, MH_AGENT_FLAGS and
# MH_AGENT_ENV_NAMES. Args: comp run_dir url
mh_agent_cmd() {
    local comp=$1 run=$2 url=$3 runtime host_file ctr_path e
    runtime=$(mh_runtime)
    ((${#MH_AGENT_ARGV[@]})) || mh_die "mh_agent_cmd: no agent command (MH_AGENT_ARGV from 'mlebench-hpc run start')"
    local envs=(COMPETITION_ID="$comp" TIME_LIMIT_SECS="$MH_AGENT_SECS" STEP_LIMIT="$STEP_LIMIT"
        GRADING_SERVER="$url")
    MH_AGENT_ENV_NAMES=()
    for e in "${envs[@]}"; do MH_AGENT_ENV_NAMES+=("${e%%=*}"); done
    if [[ $runtime == apptainer ]]; then
        local scratch
        scratch=$(mh_scratch_dir "$run")
        mkdir -p "$scratch"
        # upstream's agents/.shared_env
        envs+=(SUBMISSION_DIR=/home/submission LOGS_DIR=/home/logs CODE_DIR=/home/code AGENT_DIR=/home/agent)
        MH_AGENT_ENV_NAMES+=(SUBMISSION_DIR LOGS_DIR CODE_DIR AGENT_DIR)
        MH_BINDS=("$DATA_DIR/$comp/prepared/public:/home/data:ro"
            "$run/submission:/home/submission" "$run/logs:/home/logs" "$run/code:/home/code"
            "$run/agent:/home/agent")
        if [[ -f $run/overlay/overlays.tsv ]]; then
            while IFS=$'\t' read -r host_file ctr_path; do
                [[ -n $host_file ]] && MH_BINDS+=("$host_file:$ctr_path:ro")
            done <"$run/overlay/overlays.tsv"
        fi
        MH_BINDS+=("$MH_ROOT/environment/entrypoint_hpc.sh:$MH_ENTRYPOINT:ro")
        local flags=(--contain --cleanenv --no-home --pid --ipc --workdir "$scratch" --pwd /home)
        local b
        for b in "${MH_BINDS[@]}"; do flags+=(--bind "$b"); done
        for e in "${envs[@]}"; do flags+=(--env "$e"); done
        # The variant's env vars and secrets, the token, the LLM endpoint: from the run's 0600 file
        # (`run start`, mh_agent_env_file), never on a command line that ps shows.
        if [[ -n ${MH_AGENT_ENV:-} ]]; then flags+=(--env-file "$MH_AGENT_ENV"); fi
        if [[ -n ${SLURM_JOB_GPUS:-${SLURM_STEP_GPUS:-${CUDA_VISIBLE_DEVICES:-}}} ]]; then flags+=(--nv); fi
        # shellcheck disable=SC2206
        local extra=($APPTAINER_EXTRA_FLAGS)
        MH_CMD=(apptainer exec "${flags[@]}" "${extra[@]}" "$AGENT_SIF" bash "$MH_ENTRYPOINT" "${MH_AGENT_ARGV[@]}")
        MH_AGENT_FLAGS=("${flags[@]}" "${extra[@]}")
    else
        # No container: the staged image root (`run start` lays it out) with the overlays copied over
        # it; AGENT_HOME prefixes every /home path (our own agents' scripts honour it).
        local home=$run/.agent-root/home d a argv=()
        ln -sfn "$DATA_DIR/$comp/prepared/public" "$home/data"
        for d in submission logs code; do ln -sfn "$run/$d" "$home/$d"; done
        if [[ -f $run/overlay/overlays.tsv ]]; then
            while IFS=$'\t' read -r host_file ctr_path; do
                [[ -n $host_file ]] && cp -f "$host_file" "$home/${ctr_path#/home/}"
            done <"$run/overlay/overlays.tsv"
        fi
        for a in "${MH_AGENT_ARGV[@]}"; do argv+=("${a//\/home\//$home/}"); done
        envs+=(SUBMISSION_DIR="$home/submission" LOGS_DIR="$home/logs" CODE_DIR="$home/code" AGENT_DIR="$home/agent")
        # the run's env file (quoted by its one writer, `run start`) sourced into the agent's environment
        # shellcheck disable=SC2016 # expanded by the inner bash
        MH_CMD=(env -i PATH="$PATH" HOME="$home" AGENT_HOME="$home" "${envs[@]}"
            bash -c 'if [ -n "$1" ]; then set -a; . "$1"; set +a; fi; shift; exec "$@"' agent-env "${MH_AGENT_ENV:-}"
            bash "$MH_ROOT/environment/entrypoint_hpc.sh" "${argv[@]}")
        mh_warn_no_isolation
        MH_AGENT_FLAGS=()
    fi
}

# Where the entrypoint is bound in the agent container: a path of ours no image is asked to have.
MH_ENTRYPOINT=/.mlebench-hpc/entrypoint_hpc.sh

# The LLM server (the backend behind `mlebench-hpc llm-proxy`): LLM_CMD run by `bash -c` in LLM_SIF
# (on the host when LLM_SIF is empty or without apptainer), bound to 127.0.0.1 only (LLM_HOST), with
# LLM_MODEL, LLM_MODEL_DIR, LLM_PORT and LLM_NUM_GPUS in its environment, the weights read-only,
# caches in scratch and the Hugging Face libraries offline (nothing is downloaded at run time). Its
# key comes from ENV_FILE (0600, written by `llm-proxy backend-env`), never from a command line.
# Fills MH_CMD. Args: model port scratch env_file
mh_llm_cmd() {
    local model=$1 port=$2 scratch=$3 key_env=$4 gpus cache
    gpus=$(mh_gpu_count)
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        cache=/tmp  # --workdir: the container's /tmp is $scratch/tmp on disk
    else
        cache=$scratch
    fi
    local envs=(LLM_MODEL="$model" LLM_MODEL_DIR="${LLM_MODEL_DIR:-}" LLM_HOST=127.0.0.1 LLM_PORT="$port"
        LLM_NUM_GPUS="$gpus" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$cache/hf"
        XDG_CACHE_HOME="$cache/cache" VLLM_CACHE_ROOT="$cache/vllm" TRITON_CACHE_DIR="$cache/triton"
        VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1)
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        local flags=(--contain --cleanenv --no-home --pid --ipc --workdir "$scratch" --pwd /tmp) e
        [[ -n ${LLM_MODEL_DIR:-} ]] && flags+=(--bind "$LLM_MODEL_DIR:$LLM_MODEL_DIR:ro")
        for e in "${envs[@]}"; do flags+=(--env "$e"); done
        flags+=(--env-file "$key_env")
        if (( gpus > 0 )); then flags+=(--nv); fi
        # shellcheck disable=SC2206 # extra flags are meant to split
        local extra=(${APPTAINER_EXTRA_FLAGS:-})
        MH_CMD=(apptainer exec "${flags[@]}" "${extra[@]}" "$LLM_SIF" bash -c "$LLM_CMD")
    else
        mkdir -p "$cache"
        # shellcheck disable=SC2016 # expanded by the inner bash
        MH_CMD=(bash -c 'set -a; source "$1"; set +a; shift; exec env "$@"' llm "$key_env" "${envs[@]}" bash -c "$LLM_CMD")
    fi
}

# The agent's writable scratch (bound at /tmp and /var/tmp): SCRATCH_DIR/<group>/<run dir name>
# when SCRATCH_DIR is set, else RUN/.scratch; never shared between runs. Arg: run_dir
mh_scratch_dir() {
    local run=$1
    if [[ -n ${SCRATCH_DIR:-} ]]; then
        echo "$SCRATCH_DIR/$(basename "$(dirname "$run")")/$(basename "$run")"
    else
        echo "$run/.scratch"
    fi
}

# The agent's exact container command (MH_CMD from mh_agent_cmd) with its final command replaced:
# fills MH_SWAPPED. Everything before the image (flags, binds, env) stays as the agent gets it.
# Usage: mh_agent_cmd_replace [EXTRA_FLAG]... -- CMD [ARG]...   (extra flags go before the image,
# e.g. the read-only bind of the checker script; nothing else changes)
mh_agent_cmd_replace() {
    local extra=() i sif_at=-1
    while (( $# )) && [[ $1 != -- ]]; do extra+=("$1"); shift; done
    [[ ${1:-} == -- ]] || mh_die "mh_agent_cmd_replace: missing -- before the command"
    shift
    for i in "${!MH_CMD[@]}"; do
        if [[ ${MH_CMD[$i]} == "$AGENT_SIF" ]]; then sif_at=$i; break; fi
    done
    (( sif_at > 0 )) || mh_die "mh_agent_cmd_replace: AGENT_SIF ($AGENT_SIF) is not in MH_CMD: call mh_agent_cmd first"
    MH_SWAPPED=("${MH_CMD[@]:0:sif_at}" "${extra[@]}" "$AGENT_SIF" "$@")
}

# Host identity (device:inode) of a path, as the integrity checker compares it.
mh_path_identity() { stat -L -c %d:%i "$1" 2>/dev/null; }

# The static integrity checker `make install` built from this checkout (scripts_hpc/build_checker.sh),
# refused when it was built from another version of environment/integrity_check.c. Prints its path.
mh_checker() {
    local bin=$MH_ROOT/.venv/libexec/mlebench-hpc/integrity-check want
    [[ -x $bin && -f $bin.source ]] \
        || mh_die "the integrity checker $bin is missing: run 'make install' in $MH_ROOT"
    want=$(sha256sum "$MH_ROOT/environment/integrity_check.c" | cut -d' ' -f1)
    [[ $(<"$bin.source") == "$want" ]] \
        || mh_die "the integrity checker $bin was built from another environment/integrity_check.c: run 'make install' in $MH_ROOT"
    echo "$bin"
}

# Run the integrity checker inside the agent container with exactly the agent's flags and binds just
# before the agent starts, and store its JSON with the apptainer version, flags and binds in
# RUN/metadata.json as `integrity` (`mlebench-hpc run check`). No code of the agent
# image runs: the checker is a static host binary bound read-only after every other bind, and the
# image's environment scripts (/.singularity.d/env/*.sh, which apptainer runs before any command) are
# masked by an empty directory, so the image can neither fake the record nor act before the agent.
# Needs MH_CMD, MH_AGENT_FLAGS and MH_BINDS from mh_agent_cmd. Returns 1 when a leak was seen
# (MLEBENCH_HPC_INTEGRITY=warn: log it and return 0). Args: comp run_dir url
mh_integrity_check() {
    local comp=$1 run=$2 url=$3 runtime
    runtime=$(mh_runtime)
    if [[ $runtime != apptainer ]]; then
        "$MH_CLI" run check "$run" --no-container ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"}
        return 0
    fi
    local checker ctr=/.mlebench-hpc-check/integrity-check noenv
    checker=$(mh_checker) || return 2
    local args=() p id name
    # Host paths the agent must not reach, each with its host identity.
    for p in "$DATA_DIR/$comp/prepared/private" "$DATA_DIR" "$MH_STATE_BASE" "$OUTPUT_BASE" "$HOME" \
             "$HOME/.kaggle" ${MLEBENCH_DIR:+"$MLEBENCH_DIR"}; do
        id=$(mh_path_identity "$p") && args+=(-p "$id:$p")
    done
    # No bind may come from these (the run dirs under $HOME are bound on purpose, so not $HOME itself).
    for p in "$DATA_DIR/$comp/prepared/private" "$MH_STATE_BASE" "$HOME/.kaggle" ${MLEBENCH_DIR:+"$MLEBENCH_DIR"}; do
        args+=(-m "$(readlink -m "$p")")   # mountinfo shows resolved paths
    done
    # Every variable the agent is given on purpose: its --env names and its env file's names.
    for name in "${MH_AGENT_ENV_NAMES[@]}"; do args+=(-e "$name"); done
    local env_file=${MH_AGENT_ENV:-}
    if [[ -n $env_file && -r $env_file ]]; then
        while IFS= read -r name; do args+=(-e "$name"); done < <(
            sed -n 's/^[[:space:]]*\(export[[:space:]]\+\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)=.*/\2/p' "$env_file")
    fi
    # This shell is a host process of the job: the agent must not see it (--pid).
    local start canary
    start=$(sed 's/.*) //' "/proc/$$/stat" | awk '{print $20}')
    args+=(-s "$$:$start" -c run_grading_server)
    canary=MLEBENCH_HPC_CANARY_$RANDOM$RANDOM
    args+=(-k "$canary")

    noenv=$(mktemp -d "${TMPDIR:-/tmp}/mlebench-noenv.XXXXXX")
    mh_agent_cmd_replace --bind "$noenv:/.singularity.d/env:ro" --bind "$checker:$ctr:ro" -- "$ctr" "${args[@]}"
    local rc=0 version outfile errfile
    version=$(apptainer --version 2>/dev/null || echo unknown)
    # Its output goes to host-only files, then into the record: the host never writes into a
    # directory the agent can write (a link planted in logs/ would make it truncate any file).
    outfile=$(mktemp "${TMPDIR:-/tmp}/mlebench-integrity.XXXXXX")
    errfile=$(mktemp "${TMPDIR:-/tmp}/mlebench-integrity.XXXXXX")
    env "$canary=leak" timeout 120 "${MH_SWAPPED[@]}" >"$outfile" 2>"$errfile" || rc=$?
    rmdir "$noenv" 2>/dev/null || true
    local verdict=0
    "$MH_CLI" run check "$run" --output "$outfile" --stderr "$errfile" \
        --checker "$checker" \
        --rc "$rc" --apptainer-version "$version" --url "$url" ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} \
        "${MH_AGENT_FLAGS[@]/#/--flag=}" "${MH_BINDS[@]/#/--bind=}" || verdict=$?
    rm -f "$outfile" "$errfile"
    if (( verdict == 0 )); then
        mh_log "integrity check passed (private paths, host env and host processes out of reach)"
        return 0
    fi
    mh_log "INTEGRITY CHECK FAILED: the agent could reach something it must not: see 'integrity' in $run/metadata.json"
    [[ ${MLEBENCH_HPC_INTEGRITY:-enforce} == warn ]] && return 0
    return 1
}
