# shellcheck shell=bash
# Host-only state of a run: its token, the agent's env file and the grading server's URL file. The
# run's record (metadata.json) and its directory belong to `mlebench-hpc run <phase>` (Python).

# A fresh random token in FILE (mode 0600): the grading server accepts /validate only with it, so
# another run's agent on the same node cannot use this run's server. Arg: file
mh_new_token() {
    local file=$1 token
    mh_trace_pause
    token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#token} == 64 ]] || mh_die "could not read 32 random bytes from /dev/urandom"
    (umask 077 && printf '%s\n' "$token" >"$file.tmp" && mv -f "$file.tmp" "$file")
    mh_trace_resume
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

# The host-only state dirs below MH_STATE_BASE: a run's (token, URL file, env files: COMP_JOB) and an
# LLM server job's (llm/JOB). Python finds them by the same names (run/discovery.py, llm/endpoint.py).
# Args: comp job | job
mh_run_state() { printf '%s/%s_%s' "$MH_STATE_BASE" "$1" "$2"; }
mh_llm_state() { printf '%s/llm/%s' "$MH_STATE_BASE" "$1"; }

# Wait (bounded) for a server's URL file while its process lives: the grading server's, and the LLM
# server's of LLM_BASE_URL=job. Prints the URL (the file's first line). Args: file pid timeout_secs
# what (for the error: "the grading server")
mh_wait_url_file() {
    local file=$1 pid=$2 timeout=$3 what=$4 start=$SECONDS
    while [[ ! -s $file ]]; do
        kill -0 "$pid" 2>/dev/null || mh_die "$what exited before publishing its URL: see its lines above"
        (( SECONDS - start < timeout )) || mh_die "$what published no URL within ${timeout}s: see its lines above"
        sleep 0.5
    done
    head -n1 "$file"
}
