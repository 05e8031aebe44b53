#!/usr/bin/env bash
# The agent for one competition, in the agent container, validating over HTTP.
# usage: sbatch scripts_hpc/slurm_agent.sh <competition> <http://host:port | auto:GRADING_JOBID>
#        bash   scripts_hpc/slurm_agent.sh <competition> <url>           (no Slurm: same code path)
# Output: OUTPUT_BASE/<group>/<competition>_<jobid>/{submission,logs,code,overlay}/ + metadata.json
# The agent's budget ends TIME_MARGIN_SECS (config) before this job's time limit: no --signal needed.
#SBATCH --job-name=mlebench-agent
#SBATCH --output=%x-%j.out
#SBATCH --time=1-01:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
set -euo pipefail
# sbatch runs a spool copy of this file: find the checkout's scripts_hpc/ (lib.sh) from Slurm's record.
d=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -f $d/lib.sh ]] || d=$(dirname "$(scontrol show job -o "${SLURM_JOB_ID:-0}" 2>/dev/null | grep -o 'Command=[^ ]*' | head -n1 | cut -d= -f2)")
[[ -f $d/lib.sh ]] || d=${SLURM_SUBMIT_DIR:-.}/scripts_hpc
[[ -f $d/lib.sh ]] || { echo "mlebench-hpc: error: cannot find scripts_hpc/lib.sh: submit from the checkout" >&2; exit 2; }
export MH_SCRIPTS=$d
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

mh_help "$@"
comp=${1:-}
spec=${2:-}
[[ -n $comp && -n $spec ]] || mh_usage_error "give the competition and its grading server"

# --- the run: shared by the standalone agent job and the hetjob's (and sweep's) agent step
mh_setup "$comp" AGENT_SIF
mh_check_slurm_site slurm_agent.sh gpu || exit 2
mh_cost_owner agent  # a hetjob or sweep task around this run records the job's cost instead
mh_require_prepared "$comp" public
# The static integrity checker of this checkout (`make install`): missing or stale, say so before anything starts.
if [[ $MH_RUNTIME == apptainer ]]; then mh_checker >/dev/null || exit 2; fi
job=$(mh_job_id)
# The agent's LLM endpoint, when it has one: /v1/models lists LLM_MODEL with this run's own key, or
# one line and exit 2 (lib/llm.sh). The key is withdrawn when the run ends, however it ends.
MH_RUN_STATE=$(mh_run_state "$comp" "$job")
mh_llm_check_endpoint "${MH_RUN_STATE##*/}" "$MH_RUN_STATE/llm.env"
trap mh_llm_release EXIT
# Host-only: the state dir of this run holds the agent's env file (its variant's env vars and
# secrets, the token, the LLM endpoint).
mkdir -p "$MH_RUN_STATE"
# The agent variant (AGENT_ID), the server, the run dir with a fresh /home/agent, the start record,
# the overlays and the agent's budget: one Python start (`run start`), its values as shell assignments.
start_out=$("$MH_CLI" run start "$comp" "$spec" --job "$job" --runtime "$MH_RUNTIME" \
    --env-file "$MH_RUN_STATE/agent.env" \
    ${MH_GRADING_JOB:+--grading-job "$MH_GRADING_JOB"} ${MH_GRADING_PID:+--grading-pid "$MH_GRADING_PID"} \
    ${MH_LLM_URL:+--llm-url "$MH_LLM_URL"} ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"}) || exit 2
eval "$start_out"
run=$MH_RUN
mh_log "run directory: $run (agent ${AGENT_ID}: ${MH_AGENT_ARGV[*]})"
mh_agent_env_file "$MH_RUN_STATE/agent.env"
# The variant's budget (its env_vars TIME_LIMIT_SECS and STEP_LIMIT, else the config's); MH_AGENT_SECS
# is what is left of it for this attempt, ending TIME_MARGIN_SECS before Slurm's limit.
TIME_LIMIT_SECS=$MH_TIME_LIMIT STEP_LIMIT=$MH_STEP_LIMIT
export MH_AGENT_SECS
if (( MH_AGENT_SECS <= 0 )); then
    mh_log "the agent's budget of ${TIME_LIMIT_SECS}s is used up by earlier attempts: not starting it again"
    stop_out=$("$MH_CLI" run stop "$run" --because budget-used ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"})
    eval "$stop_out"
    mh_print_outro "$run"
    exit "$MH_EXIT"
fi
mh_agent_cmd "$comp" "$run" "$MH_URL"

# Before the agent starts: prove, from inside a container with exactly its flags, that no
# private path, host variable or server process is reachable; the record goes into metadata.
if ! mh_integrity_check "$comp" "$run" "$MH_URL"; then
    stop_out=$("$MH_CLI" run stop "$run" --because integrity-failed ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"})
    eval "$stop_out"
    mh_print_outro "$run"
    exit "$MH_EXIT"
fi

agent_pid=""
filters=()  # the host filters of the agent's output (below)
agent_t0=$SECONDS
# Agent seconds used by this run so far: earlier attempts plus this one.
agent_used() { echo $(( MH_USED_BEFORE + SECONDS - agent_t0 )); }
# The job's cost (alone), or this hetjob step's peak memory, is recorded at the end however it ends
# (the step's peak with `run finish` when that ran: peak_done).
mh_cost_peak_args agent agent
peak_done=0
on_exit() {
    mh_stop_pid "$agent_pid"; rm -f "$MH_RUN_STATE/agent.env"; mh_llm_release
    (( peak_done )) || mh_record_cost agent agent "$run"
}
# Stopped by a signal: record first (Slurm sends SIGKILL KillWait seconds after SIGTERM, and the
# record must survive it), then stop the agent and collect what it wrote so far (upstream grades
# what is there). The job's exit code is the one `run stop` gives (1 when even that failed).
# Args: what stopped it (`run stop --because`), why in words
on_stop() {
    trap '' TERM INT USR1
    mh_log "$2"
    local stop_out
    stop_out=$("$MH_CLI" run stop "$run" --because "$1" --agent-secs-used "$(agent_used)" \
        ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"}) || stop_out=MH_EXIT=1
    eval "$stop_out"
    mh_print_outro "$run"
    mh_stop_pid "$agent_pid"
    mh_wait_exit 5 "${filters[@]}"
    "$MH_CLI" run finish "$run" "${MH_COST_PEAK[@]}" ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} \
        && peak_done=${#MH_COST_PEAK[@]}
    exit "$MH_EXIT"
}
on_term() { on_stop signal "stop requested (signal)"; }
on_time_limit() { on_stop time-limit "Slurm time limit near (USR1)"; }
trap on_exit EXIT
trap on_term TERM INT
trap on_time_limit USR1

mh_log "starting the agent for $comp (budget ${MH_AGENT_SECS}s, runtime $MH_RUNTIME)"
# What the agent prints reaches the job output, which people read in a terminal: its stdout and
# stderr each go through a host filter (line by line, control characters escaped); its own
# logs/agent_output.log stays raw. $! below stays the agent's pid, for signals. The filters ignore
# TERM and INT (scancel signals every process of the step) and end when the agent's output does.
exec {agent_out}> >(trap '' TERM INT; mh_printable_stream)
filters+=("$!")
exec {agent_err}> >(trap '' TERM INT; mh_printable_stream >&2)
filters+=("$!")
# A hard outer bound in case the agent ignores the entrypoint's own time-out.
timeout --signal=TERM --kill-after=30 "$(( MH_AGENT_SECS + 60 ))" "${MH_CMD[@]}" \
    >&"$agent_out" 2>&"$agent_err" {agent_out}>&- {agent_err}>&- &
agent_pid=$!
exec {agent_out}>&- {agent_err}>&-
mh_llm_watch_server_job "$agent_pid"  # LLM_BASE_URL=auto:<jobid>: the agent is stopped when that job ends
rc=0
wait "$agent_pid" || rc=$?
agent_pid=""
mh_llm_unwatch_server_job
# the agent's last lines are out before ours (bounded: a leftover process may hold the pipe)
mh_wait_exit 10 "${filters[@]}"
# The status comes from the exit code (`run finish`); an LLM server job that ended under the agent
# (LLM_BASE_URL=auto:) fails the attempt whatever the agent did.
llm_gone=()
(( ! MH_LLM_SERVER_GONE )) || llm_gone=(--llm-job-ended "$MH_LLM_SERVER_JOB")
# The agent has ended: a signal from here on must not turn its recorded end into a stop.
trap '' TERM INT USR1
finish_out=$("$MH_CLI" run finish "$run" --exit-code "$rc" --agent-secs-used "$(agent_used)" "${llm_gone[@]}" \
    "${MH_COST_PEAK[@]}" ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"})
peak_done=${#MH_COST_PEAK[@]}
eval "$finish_out"
mh_log "agent exited with code $rc ($MH_STATUS)"
mh_print_outro "$run"
exit "$MH_EXIT"
