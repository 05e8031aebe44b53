# shellcheck shell=bash
# mlebench-hpc: the one library every sbatch script sources. Config loading, logging, cleanup,
# and the apptainer command lines: binds and flags live here and nowhere else, so the grading
# job, the agent job, the hetjob, the sweep and the leak tests all start containers alike.
# Callers: set -euo pipefail; export MH_SCRIPTS=<dir of this file>; source it.

# ------------------------------------------------------------------ logging
mh_log() { printf '[mlebench-hpc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# One line that says what is wrong and what to do; exit 2 (config/usage errors).
mh_die() { printf 'mlebench-hpc: error: %s\n' "$*" >&2; exit 2; }

# ------------------------------------------------------------------ project + CLI
# MH_ROOT: checkout; MH_CLI: the mlebench-hpc command (the checkout's venv first).
mh_init() {
    MH_ROOT=$(cd "$MH_SCRIPTS/.." && pwd)
    if [[ -x $MH_ROOT/.venv/bin/mlebench-hpc ]]; then
        MH_CLI=$MH_ROOT/.venv/bin/mlebench-hpc
    elif command -v mlebench-hpc >/dev/null 2>&1; then
        MH_CLI=$(command -v mlebench-hpc)
    else
        mh_die "the mlebench-hpc helpers are not installed: run 'make install' in $MH_ROOT"
    fi
    export MH_ROOT MH_CLI
}

# ------------------------------------------------------------------ config
# The config in force, read and checked by the one Python loader (unknown keys, bad syntax,
# missing images, unprepared competitions: one line each) and evaluated here as quoted
# assignments: every key with its default filled in, MH_CONFIG and MH_STATE_BASE. Defaults live
# in helpers/mlebench_hpc/config.py only. Usage: mh_load_config [--need KEY]... [--competition C]...
mh_load_config() {
    local out
    out=$("$MH_CLI" config --shell "$@") || exit 2
    eval "$out"
}

# Everything an entry script does before its own work: the CLI, the runtime, and the config
# validated for COMP with the images it needs (only when containers are used). Sets MH_RUNTIME.
# Args: comp [image key]...
mh_setup() {
    local comp=$1 key need=()
    shift
    [[ -n ${MH_CLI:-} ]] || mh_init
    MH_RUNTIME=$(mh_runtime)
    if [[ $MH_RUNTIME == apptainer ]]; then for key in "$@"; do need+=(--need "$key"); done; fi
    mh_load_config "${need[@]}" --competition "$comp"
    [[ $MH_RUNTIME == apptainer ]] || mh_warn_no_isolation
    export MH_RUNTIME
}

# ------------------------------------------------------------------ runtime
# apptainer (default when installed) or none (no isolation: demo fallback, said loudly).
mh_runtime() {
    case ${MLEBENCH_HPC_RUNTIME:-auto} in
        apptainer) command -v apptainer >/dev/null 2>&1 \
            || mh_die "MLEBENCH_HPC_RUNTIME=apptainer but apptainer is not on PATH: module load apptainer"
            echo apptainer ;;
        none) echo none ;;
        auto) if command -v apptainer >/dev/null 2>&1; then echo apptainer; else echo none; fi ;;
        *) mh_die "MLEBENCH_HPC_RUNTIME must be apptainer, none or auto, not '${MLEBENCH_HPC_RUNTIME}'" ;;
    esac
}

mh_warn_no_isolation() {
    mh_log "WARNING: ######################################################################"
    mh_log "WARNING: running WITHOUT containers: isolation is OFF, the agent could read the answers."
    mh_log "WARNING: fine for a demo; never for results you publish (install apptainer)."
    mh_log "WARNING: ######################################################################"
}

# Job id of this run: Slurm's, else a local one (same code path without Slurm).
mh_job_id() {
    if [[ -n ${MH_JOB_ID:-} ]]; then echo "$MH_JOB_ID"
    elif [[ -n ${SLURM_JOB_ID:-} ]]; then echo "$SLURM_JOB_ID"
    else echo "local-$(date +%Y%m%d%H%M%S)-$$"; fi
}

mh_require_prepared() {
    local comp=$1 part=$2
    [[ -d $DATA_DIR/$comp/prepared/$part ]] \
        || mh_die "competition $comp is not prepared in $DATA_DIR ($part/ missing): run 'mlebench prepare -c $comp'"
}

# ------------------------------------------------------------------ container command lines
# Grading server: only this competition's private dir, read-only, at the upstream layout; the
# run's token (STATE/token, made by mh_new_token) and uploads streamed to STATE/uploads on disk (the
# container's /tmp is a 64 MiB tmpfs for users). Fills MH_CMD. Args: comp state_dir
mh_grading_cmd() {
    local comp=$1 state=$2 runtime
    runtime=$(mh_runtime)
    local server_args=(--competition-id "$comp" --host 0.0.0.0 --port 0
        --idle-timeout "$GRADING_IDLE_TIMEOUT" --max-upload-mb "$UPLOAD_LIMIT_MB")
    if [[ $runtime == apptainer ]]; then
        server_args+=(--token-file /state/token --tmp-dir /state/uploads)
    else
        server_args+=(--token-file "$state/token" --tmp-dir "$state/uploads")
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

# Agent: public data read-only, the run's submission/logs/code writable, overlays read-only over
# the image's localhost:5000 files, scratch on disk (--workdir: /tmp is not the 64 MiB tmpfs),
# its own PID namespace, a clean environment and no host home. Fills MH_CMD and MH_BINDS.
# Args: comp run_dir url
mh_agent_cmd() {
    local comp=$1 run=$2 url=$3 runtime host_file ctr_path
    runtime=$(mh_runtime)
    local envs=(COMPETITION_ID="$comp" TIME_LIMIT_SECS="$MH_AGENT_SECS" STEP_LIMIT="$STEP_LIMIT"
        GRADING_SERVER="$url")
    if [[ $runtime == apptainer ]]; then
        local scratch
        scratch=$(mh_scratch_dir "$run")
        mkdir -p "$scratch"
        MH_BINDS=("$DATA_DIR/$comp/prepared/public:/home/data:ro"
            "$run/submission:/home/submission" "$run/logs:/home/logs" "$run/code:/home/code")
        if [[ -f $run/overlay/overlays.tsv ]]; then
            while IFS=$'\t' read -r host_file ctr_path; do
                [[ -n $host_file ]] && MH_BINDS+=("$host_file:$ctr_path:ro")
            done <"$run/overlay/overlays.tsv"
        fi
        local flags=(--contain --cleanenv --no-home --pid --ipc --workdir "$scratch" --pwd /home)
        local b e
        for b in "${MH_BINDS[@]}"; do flags+=(--bind "$b"); done
        for e in "${envs[@]}"; do flags+=(--env "$e"); done
        # Token and API keys: from a 0600 file (mh_agent_env_file), never on a command line that ps shows
        local env_file=${MH_AGENT_ENV:-$AGENT_ENV_FILE}
        if [[ -n $env_file ]]; then flags+=(--env-file "$env_file"); fi
        if [[ -n ${SLURM_JOB_GPUS:-${SLURM_STEP_GPUS:-${CUDA_VISIBLE_DEVICES:-}}} ]]; then flags+=(--nv); fi
        # shellcheck disable=SC2206
        local extra=($APPTAINER_EXTRA_FLAGS)
        MH_CMD=(apptainer exec "${flags[@]}" "${extra[@]}" "$AGENT_SIF"
            /opt/mlebench-hpc/entrypoint_hpc.sh bash -c "$AGENT_CMD")
        MH_AGENT_FLAGS=("${flags[@]}" "${extra[@]}")
    else
        # No container: the staged image root (mh_stage_local_image) with the overlays copied over
        # it; AGENT_HOME prefixes every /home path in the agent's scripts.
        local home=$run/.agent-root/home d
        ln -sfn "$DATA_DIR/$comp/prepared/public" "$home/data"
        for d in submission logs code; do ln -sfn "$run/$d" "$home/$d"; done
        if [[ -f $run/overlay/overlays.tsv ]]; then
            while IFS=$'\t' read -r host_file ctr_path; do
                [[ -n $host_file ]] && cp -f "$host_file" "$home/${ctr_path#/home/}"
            done <"$run/overlay/overlays.tsv"
        fi
        # the env file's KEY=value lines (token, API keys) as plain variables: no --env-file here
        local env_file=${MH_AGENT_ENV:-$AGENT_ENV_FILE} line
        if [[ -n $env_file ]]; then
            while IFS= read -r line; do
                [[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] && envs+=("$line")
            done <"$env_file"
        fi
        MH_CMD=(env -i PATH="$PATH" HOME="$home" AGENT_HOME="$home" "${envs[@]}"
            bash "$MH_ROOT/environment/entrypoint_hpc.sh" bash -c "${AGENT_CMD//\/home\//$home/}")
        mh_warn_no_isolation
        MH_AGENT_FLAGS=()
    fi
}

# The agent's wall-clock budget: TIME_LIMIT_SECS, cut so that it ends TIME_MARGIN_SECS before
# Slurm's own limit (time to copy logs and write metadata). Sets MH_AGENT_SECS.
# A requeued run continues its budget: agent time used by earlier attempts (metadata
# agent_secs_used, arg 1) is subtracted, so requeues never add up to more than upstream's limit.
mh_agent_budget() {
    local used=${1:-0}
    MH_AGENT_SECS=$(( TIME_LIMIT_SECS - used ))
    (( used == 0 )) || mh_log "earlier attempts used ${used}s of the ${TIME_LIMIT_SECS}s budget"
    local left
    if [[ -n ${SLURM_JOB_ID:-} ]] && command -v squeue >/dev/null 2>&1; then
        left=$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null | head -n1 || true)
        left=$(mh_slurm_secs "$left")
        if [[ -n $left ]] && (( left - TIME_MARGIN_SECS < MH_AGENT_SECS )); then
            MH_AGENT_SECS=$(( left > TIME_MARGIN_SECS * 2 ? left - TIME_MARGIN_SECS : left / 2 ))
            mh_log "agent budget cut to ${MH_AGENT_SECS}s to end ${TIME_MARGIN_SECS}s before the Slurm limit"
        fi
    fi
    export MH_AGENT_SECS
}

# Slurm time ([[D-]HH:]MM:SS) -> seconds; empty for UNLIMITED/unknown.
mh_slurm_secs() {
    local t=$1 d=0 h=0 m=0 s=0
    [[ $t =~ ^[0-9:-]+$ ]] || return 0
    if [[ $t == *-* ]]; then d=${t%%-*}; t=${t#*-}; fi
    IFS=: read -r -a p <<<"$t"
    case ${#p[@]} in
        3) h=${p[0]}; m=${p[1]}; s=${p[2]} ;;
        2) m=${p[0]}; s=${p[1]} ;;
        1) s=${p[0]} ;;
    esac
    echo $(( 10#$d * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s ))
}

# ------------------------------------------------------------------ tokens, env file, scratch
# A fresh random token in FILE (mode 0600): the grading server accepts /validate only with it, so
# another run's agent on the same node cannot use this run's server. Arg: file
mh_new_token() {
    local file=$1 token
    token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#token} == 64 ]] || mh_die "could not read 32 random bytes from /dev/urandom"
    (umask 077 && printf '%s\n' "$token" >"$file.tmp" && mv -f "$file.tmp" "$file")
}

# The token file of the grading server at URL: the hetjob's own, else auto:JOBID's state dir, else
# the state dir whose url file names URL. Prints nothing when none is found. Args: url [grading_job comp]
mh_token_file_for() {
    local url=$1 job=${2:-} comp=${3:-} f
    if [[ -n ${MH_GRADING_TOKEN_FILE:-} && -f $MH_GRADING_TOKEN_FILE ]]; then echo "$MH_GRADING_TOKEN_FILE"; return 0; fi
    if [[ -n $job && -f $MH_STATE_BASE/${comp}_$job/token ]]; then echo "$MH_STATE_BASE/${comp}_$job/token"; return 0; fi
    for f in "$MH_STATE_BASE"/*/url; do
        [[ -f $f && $(head -n1 "$f") == "$url" && -f ${f%/url}/token ]] && { echo "${f%/url}/token"; return 0; }
    done
    return 0
}

# The agent's env file for this run (mode 0600, host-only): the user's AGENT_ENV_FILE lines (API
# keys) plus GRADING_SERVER_TOKEN and the LLM endpoint's lines. Sets MH_AGENT_ENV. Args: out_file [token_file]
mh_agent_env_file() {
    local out=$1 token_file=${2:-}
    (
        umask 077
        {
            if [[ -n $AGENT_ENV_FILE ]]; then cat "$AGENT_ENV_FILE"; echo; fi
            if [[ -n $token_file ]]; then printf 'GRADING_SERVER_TOKEN=%s\n' "$(head -n1 "$token_file")"; fi
            mh_llm_env_lines  # LLM_BASE_URL, LLM_MODEL, LLM_API_KEY (lib/llm.sh)
        } >"$out"
    ) || mh_die "cannot write the agent's env file $out"
    MH_AGENT_ENV=$out
    export MH_AGENT_ENV
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

# ------------------------------------------------------------------ runs
# OUTPUT_BASE/<group>/<comp>_<jobid>/ with submission/ logs/ code/ overlay/. Prints the path.
mh_make_run_dir() {
    local comp=$1 job=$2 group=${MH_GROUP:-$RUN_GROUP} run
    run=$OUTPUT_BASE/$group/${comp}_$job
    mkdir -p "$run"/{submission,logs,code,overlay}
    echo "$run"
}

# A sweep task exports MH_ATTEMPT (Slurm's restart count): its writes are dropped once a later
# attempt of the same task owns the run directory (an attempt Slurm gave up on may still be running).
mh_meta() { "$MH_CLI" run-metadata ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} "$@" >/dev/null; }

mh_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Print where the results are, the last lines of every agent job.
mh_print_outro() {
    local run=$1
    echo "run directory: $run"
    echo "grade it with: make -C $MH_ROOT grade RUN=$run"
    echo "MLEBENCH_RUN_DIR=$run"
}

# ------------------------------------------------------------------ processes
# Stop a background process and everything it started: TERM, bounded wait, KILL.
mh_stop_pid() {
    local pid=$1 waited=0
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( waited < 100 )); do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# True in the batch script of a heterogeneous job (Slurm sets SLURM_HET_SIZE there, not in
# a plain job; its steps have SLURM_STEP_ID).
mh_in_hetjob_batch() { [[ -n ${SLURM_HET_SIZE:-} && -z ${SLURM_STEP_ID:-} ]]; }

# Stop a background srun step gracefully. srun answers its own SIGTERM by cancelling the step
# at once (SIGKILL before the server can remove its URL file), so signal the step's processes
# through Slurm, wait (bounded) for srun to return, and only then fall back to killing.
# SIGINT, not SIGTERM: slurmstepd writes "error: *** STEP ... CANCELLED ***" into the job output
# for a step sent SIGTERM or SIGKILL, and a normal end must print no error.
# Sets MH_STEP_RC to the step's exit code, and MH_STEP_GONE=1 when it had ended before the
# signal (the server died during the run: a failure, never a normal end).
# Args: srun_pid step_id (JOBID.STEP)
# shellcheck disable=SC2034 # MH_STEP_RC and MH_STEP_GONE are read by the caller
mh_stop_step() {
    local pid=$1 step=$2 waited=0
    MH_STEP_RC="" MH_STEP_GONE=0
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        scancel --signal=INT "$step" >/dev/null 2>&1 || true
        while kill -0 "$pid" 2>/dev/null && (( waited < 150 )); do sleep 0.1; waited=$((waited + 1)); done
        if kill -0 "$pid" 2>/dev/null; then mh_stop_pid "$pid"; return 0; fi
    else
        MH_STEP_GONE=1
    fi
    MH_STEP_RC=0; wait "$pid" || MH_STEP_RC=$?
}

# The command prefix that runs something as a step of het component GROUP inside a
# heterogeneous job, else nothing: the hetjob script has one code path with and without Slurm.
# A prefix, not a wrapper function, so that `$!` of a background step is the process itself.
# Fills MH_STEP. Arg: group
mh_step_prefix() {
    MH_STEP=()
    # shellcheck disable=SC2034 # used by the caller
    if mh_in_hetjob_batch; then MH_STEP=(srun --het-group="$1" --ntasks=1 --kill-on-bad-exit=1); fi
}

# Wait (bounded) for the grading server's URL file while its process lives. Prints the URL.
mh_wait_url_file() {
    local file=$1 pid=$2 timeout=${3:-300} start=$SECONDS
    while [[ ! -s $file ]]; do
        kill -0 "$pid" 2>/dev/null || mh_die "the grading server exited before publishing its URL: see the lines above"
        (( SECONDS - start < timeout )) || mh_die "the grading server published no URL within ${timeout}s: see the lines above"
        sleep 0.5
    done
    cat "$file"
}

# ------------------------------------------------------------------ the agent run
# Everything slurm_agent.sh does, shared by the standalone agent job and the hetjob's agent step:
# resolve the URL, wait until the server answers for this competition, make the run dir,
# rewrite the image's localhost:5000 files to the real URL, run the agent under its budget,
# record metadata whatever happens. Args: comp spec(url|auto:JOBID)
mh_run_agent() {
    local comp=$1 spec=$2 job run url grading_job=${MH_GRADING_JOB:-}
    mh_setup "$comp" AGENT_SIF
    local runtime=$MH_RUNTIME
    mh_require_prepared "$comp" public
    [[ $spec == auto:* ]] && grading_job=${spec#auto:}

    url=$("$MH_CLI" discover-url "$spec" --competition "$comp" --state-dir "$MH_STATE_BASE") || exit 2
    local token_file
    token_file=$(mh_token_file_for "$url" "$grading_job" "$comp")
    [[ -n $token_file ]] || mh_log "WARNING: no token found for $url (a server started by hand?): validating without one"
    "$MH_CLI" wait-ready "$url" --competition "$comp" ${grading_job:+--job "$grading_job"} \
        ${MH_GRADING_PID:+--pid "$MH_GRADING_PID"} ${token_file:+--token-file "$token_file"} --timeout 300 || exit 2
    # The agent's LLM endpoint, when it has one: /v1/models lists LLM_MODEL, or one line and exit 2.
    mh_llm_check_endpoint

    job=$(mh_job_id)
    run=$(mh_make_run_dir "$comp" "$job")
    mh_log "run directory: $run"
    # Host-only: the state dir of this run holds the agent's env file (token, API keys).
    MH_RUN_STATE=$MH_STATE_BASE/${comp}_$job
    mkdir -p "$MH_RUN_STATE"
    mh_agent_env_file "$MH_RUN_STATE/agent.env" "$token_file"
    local started
    started=$(mh_now)
    mh_meta "$run" --set competition_id="$comp" --set group="${MH_GROUP:-$RUN_GROUP}" \
        --set agent_job_id="$job" --set grading_job_id="${grading_job:-}" \
        --set agent_node="${SLURMD_NODENAME:-$(hostname)}" --set grading_server_url="$url" --set runtime="$runtime" \
        --set data_dir="$DATA_DIR" --set config="$MH_CONFIG" --set seed="${MH_SEED:-}" \
        --set-json time_limit_secs="$TIME_LIMIT_SECS" --set start="$started" --set status=running \
        --set slurm_cluster="${SLURM_CLUSTER_NAME:-}" \
        --set network_access="host network: the agent can reach whatever this node reaches"
    mh_llm_meta "$run"

    if [[ $runtime == apptainer ]]; then
        "$MH_CLI" overlay --image "$AGENT_SIF" --url "$url" --out "$run/overlay" >/dev/null || exit 2
        mh_meta "$run" --set agent_sif="$AGENT_SIF" --set grading_sif="${GRADING_SIF:-}" \
            --sha256 agent_sif_sha256="$AGENT_SIF" \
            ${GRADING_SIF:+--sha256 grading_sif_sha256="$GRADING_SIF"}
    else
        mh_stage_local_image "$run/.agent-root"
        "$MH_CLI" overlay --from-dir "$run/.agent-root" --url "$url" --out "$run/overlay" >/dev/null || exit 2
    fi

    MH_USED_BEFORE=$(mh_sweep_meta_get "$run" agent_secs_used)
    [[ $MH_USED_BEFORE =~ ^[0-9]+$ ]] || MH_USED_BEFORE=0
    mh_agent_budget "$MH_USED_BEFORE"
    if (( MH_AGENT_SECS <= 0 )); then
        mh_log "the agent's budget of ${TIME_LIMIT_SECS}s is used up by earlier attempts: not starting it again"
        mh_meta "$run" --set status=timeout --set end="$(mh_now)" --set-json exit_code=124
        mh_print_outro "$run"
        return 124
    fi
    mh_agent_cmd "$comp" "$run" "$url"
    mh_meta "$run" --set-json agent_budget_secs="$MH_AGENT_SECS" \
        --set-json apptainer_flags="$(mh_json_array "${MH_AGENT_FLAGS[@]}")"

    # Before the agent starts: prove, from inside a container with exactly its flags, that no
    # private path, host variable or server process is reachable; the record goes into metadata.
    if ! mh_integrity_check "$comp" "$run" "$url"; then
        mh_meta "$run" --set end="$(mh_now)" --set-json exit_code=3 --set status=integrity_failed
        mh_print_outro "$run"
        return 3
    fi
    local rc=0
    MH_AGENT_PID=""
    MH_RUN=$run
    # Whatever ends us (scancel, time limit, the agent itself), the run keeps what it wrote and says how it ended.
    trap 'mh_stop_pid "${MH_AGENT_PID:-}"; rm -f "$MH_RUN_STATE/agent.env"' EXIT
    # Record first: Slurm sends SIGKILL KillWait seconds after SIGTERM, and the record must survive
    # it; then stop the agent and collect what it wrote so far (upstream grades what is there).
    trap 'mh_log "stop requested (signal)"; mh_meta "$MH_RUN" --set end="$(mh_now)" --set-json exit_code=143 --set status=cancelled --set-json agent_secs_used="$(mh_agent_used)"; mh_print_outro "$MH_RUN"; mh_stop_pid "${MH_AGENT_PID:-}"; mh_meta "$MH_RUN" --collect-submission; exit 143' TERM INT
    trap 'mh_log "Slurm time limit near (USR1)"; mh_meta "$MH_RUN" --set end="$(mh_now)" --set-json exit_code=124 --set status=timeout --set-json agent_secs_used="$(mh_agent_used)"; mh_print_outro "$MH_RUN"; mh_stop_pid "${MH_AGENT_PID:-}"; mh_meta "$MH_RUN" --collect-submission; exit 124' USR1
    mh_log "starting the agent for $comp (budget ${MH_AGENT_SECS}s, runtime $runtime)"
    # A hard outer bound in case the agent ignores the entrypoint's own time-out.
    timeout --signal=TERM --kill-after=30 "$(( MH_AGENT_SECS + 60 ))" "${MH_CMD[@]}" &
    MH_AGENT_PID=$!
    MH_AGENT_T0=$SECONDS
    wait "${MH_AGENT_PID:-}" || rc=$?
    MH_AGENT_PID=""
    local status=finished
    (( rc == 0 )) || status=failed
    (( rc == 124 )) && status=timeout
    mh_meta "$run" --set end="$(mh_now)" --set-json exit_code="$rc" --set status="$status" \
        --set-json agent_secs_used="$(mh_agent_used)" --collect-submission
    mh_log "agent exited with code $rc ($status)"
    mh_print_outro "$run"
    return "$rc"
}

# Agent seconds used by this run so far: earlier attempts plus this one.
mh_agent_used() { echo $(( ${MH_USED_BEFORE:-0} + SECONDS - ${MH_AGENT_T0:-$SECONDS} )); }

# For the no-container path: lay out the files the agent image would hold, so that the same
# overlay code rewrites them. Arg: dir (becomes the image's "/").
mh_stage_local_image() {
    local root=$1 agent=${AGENT_NAME:-dummy}
    mkdir -p "$root/home/agent"
    cp -f "$MH_ROOT/environment/instructions.txt" "$MH_ROOT/environment/instructions_obfuscated.txt" \
        "$MH_ROOT/environment/validate_submission.sh" "$root/home/"
    cp -f "$MH_ROOT/agents/$agent/"* "$root/home/agent/" 2>/dev/null || true
}

# JSON array of strings (for metadata), via python to get the quoting right.
mh_json_array() {
    python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"
}

# --- integrity
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

# Host identity (device:inode) of a path, as integrity_check.sh compares it.
mh_path_identity() { stat -L -c %d:%i "$1" 2>/dev/null; }

# Run environment/integrity_check.sh inside the agent container with exactly the agent's flags (the
# checker script bound read-only for this one run only) just before the agent starts, and store its
# JSON with the apptainer version, flags and binds in RUN/metadata.json as `integrity`.
# Needs MH_CMD, MH_AGENT_FLAGS and MH_BINDS from mh_agent_cmd. Returns 1 when a leak was seen
# (MLEBENCH_HPC_INTEGRITY=warn: log it and return 0). Args: comp run_dir url
mh_integrity_check() {
    local comp=$1 run=$2 url=$3 runtime
    runtime=$(mh_runtime)
    if [[ $runtime != apptainer ]]; then
        mh_meta "$run" --set-json integrity='{"ok": false, "runtime": "none", "reason": "no container: no isolation"}'
        return 0
    fi
    local checker=$MH_ROOT/environment/integrity_check.sh ctr=/opt/mlebench-hpc-check/integrity_check.sh
    [[ -f $checker ]] || mh_die "integrity checker $checker is missing: restore the checkout"
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
    local env_file=${MH_AGENT_ENV:-${AGENT_ENV_FILE:-}}
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

    mh_agent_cmd_replace --bind "$checker:$ctr:ro" -- sh "$ctr" "${args[@]}"
    local out rc=0 version
    version=$(apptainer --version 2>/dev/null || echo unknown)
    # Its stderr goes to a host-only file, then into the record: the host never writes into a
    # directory the agent can write (a link planted in logs/ would make it truncate any file).
    local errfile
    errfile=$(mktemp "${TMPDIR:-/tmp}/mlebench-integrity.XXXXXX")
    out=$(env "$canary=leak" timeout 120 "${MH_SWAPPED[@]}" 2>"$errfile") || rc=$?
    local record
    record=$(python3 - "$out" "$rc" "$version" "$(mh_json_array "${MH_AGENT_FLAGS[@]}")" \
        "$(mh_json_array "${MH_BINDS[@]}")" "$(mh_now)" "$url" "$errfile" <<'PY'
import json, sys
out, rc, version, flags, binds, when, url, errfile = sys.argv[1:9]
with open(errfile, "rb") as f:
    stderr = f.read()[-4096:].decode("utf-8", "replace")
try:
    rec = json.loads(out.strip().splitlines()[-1])
    if not isinstance(rec, dict) or "ok" not in rec:
        raise ValueError("no ok key")
except (ValueError, IndexError) as exc:
    rec = {"ok": False, "error": f"checker exit {rc}, unreadable output ({exc}): see stderr_tail"}
rec.update(apptainer_version=version, apptainer_flags=json.loads(flags), binds=json.loads(binds),
           checked_at=when, grading_server_url=url)
if stderr.strip():
    rec["stderr_tail"] = stderr
print(json.dumps(rec, sort_keys=True))
PY
)
    rm -f "$errfile"
    mh_meta "$run" --set-json integrity="$record" --set apptainer_version="$version"
    if [[ $record == *'"ok": true'* ]]; then
        mh_log "integrity check passed (private paths, host env and host processes out of reach)"
        return 0
    fi
    mh_log "INTEGRITY CHECK FAILED: the agent could reach something it must not: see 'integrity' in $run/metadata.json"
    [[ ${MLEBENCH_HPC_INTEGRITY:-enforce} == warn ]] && return 0
    return 1
}

# --- sweeps
# Stop a process group (a pair started with setsid: its leader's pid is the group id) and
# everything in it: TERM, bounded wait for the leader, then KILL the group. Args: pgid [secs]
mh_stop_group() {
    local pgid=$1 secs=${2:-20} waited=0
    [[ -n $pgid ]] && kill -0 "$pgid" 2>/dev/null || return 0
    kill -TERM -- "-$pgid" 2>/dev/null || true
    while kill -0 "$pgid" 2>/dev/null && (( waited < secs * 10 )); do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    wait "$pgid" 2>/dev/null || true
}

# One key of RUN/metadata.json (empty when absent). Args: run_dir key
mh_sweep_meta_get() {
    python3 - "$1/metadata.json" "$2" <<'PY' 2>/dev/null || true
import json, sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2], "")
except (OSError, ValueError):
    v = ""
print("" if v is None else v)
PY
}

# The grading server died before the agent ended: the agent was denied the validation it was
# promised, so the attempt is failed whatever the agent did (a resume runs the pair again), with
# the reason in metadata.json `failure`. Only a run whose agent recorded its end is changed.
# Args: run_dir server_exit_code
mh_record_server_death() {
    local run=$1 code=$2 status reason
    [[ -f $run/metadata.json ]] || return 0
    status=$(mh_sweep_meta_get "$run" status)
    case $status in finished | failed | timeout | running | starting) ;; *) return 0 ;; esac
    reason="the grading server died (exit $code) before the agent ended: the agent could not validate"
    mh_log "FAILED: $reason"
    mh_meta "$run" --set status=failed \
        --set-json failure="{\"cause\": \"grading_server_died\", \"reason\": \"$reason\", \"server_exit_code\": $code}"
}

# How many times this run was requeued so far (metadata requeue_count, 0 when absent).
mh_sweep_requeue_count() {
    local n
    n=$(mh_sweep_meta_get "$1" requeue_count)
    [[ $n =~ ^[0-9]+$ ]] && echo "$n" || echo 0
}

# ------------------------------------------------------------------ LLM endpoint and server (issue 10)
# shellcheck source=scripts_hpc/lib/llm.sh
source "${BASH_SOURCE[0]%/*}/lib/llm.sh"
