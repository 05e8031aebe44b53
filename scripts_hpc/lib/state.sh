# shellcheck shell=bash
# Host-only state of a run: its token, the agent's env file, the grading server's URL file, and
# metadata.json, written only through `mlebench-hpc run <phase>` / `run-metadata` (Python owns the data).

# A fresh random token in FILE (mode 0600): the grading server accepts /validate only with it, so
# another run's agent on the same node cannot use this run's server. Arg: file
mh_new_token() {
    local file=$1 token
    token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#token} == 64 ]] || mh_die "could not read 32 random bytes from /dev/urandom"
    (umask 077 && printf '%s\n' "$token" >"$file.tmp" && mv -f "$file.tmp" "$file")
}

# The agent's env file for this run (mode 0600, host-only): `run start` wrote the variant's env vars,
# its secrets and GRADING_SERVER_TOKEN; the LLM endpoint's lines go after them. Sets MH_AGENT_ENV.
# Arg: the env file
mh_agent_env_file() {
    local out=$1
    [[ -f $out ]] || mh_die "the run's env file $out is missing: 'mlebench-hpc run start' writes it"
    (umask 077 && mh_llm_env_lines >>"$out") || mh_die "cannot write the agent's env file $out"
    MH_AGENT_ENV=$out
    export MH_AGENT_ENV
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

# The grading server died before the agent ended, with the reason in metadata.json `failure`
# (`run server-died` changes only a run whose agent recorded its start). Died while validating the
# agent's uploads (the server's host-only STATE/inflight.json): the agent's doing, the attempt
# counts as the agent left it. Otherwise the attempt failed whatever the agent did (a resume runs
# the pair again). Sets MH_SERVER_DEATH=agent|infrastructure|none. Args: run_dir server_exit_code state_dir
# shellcheck disable=SC2034 # MH_SERVER_DEATH is read by the caller
mh_record_server_death() {
    local out
    MH_SERVER_DEATH=none
    [[ -f $1/metadata.json ]] || return 0
    out=$("$MH_CLI" run server-died "$1" --exit-code "$2" --state-dir "$3" ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"}) || return 0
    eval "$out"
}

# Keys of RUN/metadata.json as MH_META_<key> variables (empty when absent), in one Python start.
# Args: run_dir key...
mh_run_read() {
    local out
    out=$("$MH_CLI" run read "$@") || mh_die "cannot read $1/metadata.json"
    eval "$out"
}

# How many times this run was requeued so far (metadata requeue_count, 0 when absent).
mh_sweep_requeue_count() {
    mh_run_read "$1" requeue_count
    [[ ${MH_META_requeue_count:-} =~ ^[0-9]+$ ]] && echo "$MH_META_requeue_count" || echo 0
}
