#!/usr/bin/env bash
# One heterogeneous job: component 0 (CPU) runs the grading server, component 1 (GPU) the agent
# and, with LLM_BASE_URL=job in the config, the LLM server (LLM_CMD) as a step beside it.
# usage: sbatch scripts_hpc/slurm_hetjob.sh <competition>
#        bash   scripts_hpc/slurm_hetjob.sh <competition>      (no Slurm: same code path)
# Per-component options on the command line: sbatch -p cpu : -p gpu scripts_hpc/slurm_hetjob.sh C
# The servers are stopped when the agent ends, whatever happened; the job's exit code is the agent's.
#SBATCH --job-name=mlebench-het
#SBATCH --output=%x-%j.out
#SBATCH --time=1-01:00:00
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH hetjob
#SBATCH --time=1-01:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
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
[[ -n $comp ]] || mh_usage_error "no competition given"
mh_setup "$comp" GRADING_SIF AGENT_SIF
# The config's partitions, account and QOS: the grading server's component on CPUs, the agent's on
# a GPU; without components (a sweep task's one allocation) the whole job runs the agent.
if mh_in_hetjob_batch; then
    mh_check_slurm_site slurm_hetjob.sh cpu gpu || exit 2
else
    mh_check_slurm_site slurm_hetjob.sh gpu || exit 2
fi
# LLM_BASE_URL=job: this job runs the LLM server too; its config is checked before anything starts.
[[ ${LLM_BASE_URL:-} != job ]] || mh_llm_server_checks "${LLM_MODEL:-}"
# Both steps use this id for the state and run directories.
MH_JOB_ID=$(mh_job_id)
export MH_JOB_ID
state=$(mh_run_state "$comp" "$MH_JOB_ID")
# This job's cost goes into the run's metadata at its end, unless a sweep task around it owns it.
mh_cost_owner hetjob
if mh_in_hetjob_batch; then cost_components=grading,agent; else cost_components='agent+grading'; fi
[[ ${LLM_BASE_URL:-} != job ]] || cost_components+=+llm

server_pid=""
cleanup() {
    # the server is step 0 of this job: the first srun of this script
    if mh_in_hetjob_batch && [[ -n $server_pid ]]; then
        mh_stop_step "$server_pid" "$SLURM_JOB_ID.0"
        if ((MH_STEP_GONE)); then
            mh_log "ERROR: the grading server exited during the run with code ${MH_STEP_RC:-unknown}: see its lines above"
        else
            mh_log "grading server step ended (exit code ${MH_STEP_RC:-unknown})"
        fi
    else
        mh_stop_pid "$server_pid"
    fi
    server_pid=""
    mh_llm_stop_job_server || true  # LLM_BASE_URL=job: the LLM server step (lib/llm.sh)
}
# The cost first: a signal's end may be cut short by Slurm's KILL while the servers stop.
trap 'mh_record_cost hetjob "$cost_components" --competition "$comp"; cleanup' EXIT
trap 'mh_log "stop requested"; exit 143' TERM INT
# A requeued run has the same id: never read the URL its previous attempt left behind.
rm -f "$state/url"
mh_step_prefix 0
"${MH_STEP[@]}" bash "$MH_SCRIPTS/slurm_grading_server.sh" "$comp" &
server_pid=$!
url=$(mh_wait_url_file "$state/url" "$server_pid" 300 "the grading server")
mh_log "grading server is at $url"
# The LLM server (LLM_BASE_URL=job) shares the agent's component: see README "AIDE on a local model".
[[ ${LLM_BASE_URL:-} != job ]] || mh_llm_start_job_server
rc=0
# The agent's readiness wait also watches the server: by job id under Slurm, by pid without.
if mh_in_hetjob_batch; then export MH_GRADING_JOB=$MH_JOB_ID; else export MH_GRADING_PID=$server_pid; fi
export MH_GRADING_TOKEN_FILE=$state/token
mh_step_prefix 1
mh_llm_watch_job_server  # LLM_BASE_URL=job: the agent is stopped when its LLM server ends
"${MH_STEP[@]}" bash "$MH_SCRIPTS/slurm_agent.sh" "$comp" "$url" || rc=$?
if ! kill -0 "$server_pid" 2>/dev/null; then
    server_rc=0
    wait "$server_pid" || server_rc=$?
    server_pid=""
    mh_log "ERROR: the grading server exited during the run with code $server_rc: see its lines above"
    died=$("$MH_CLI" run died --competition "$comp" --which grading --exit-code "$server_rc" --state-dir "$state" \
        ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"}) || died=MH_SERVER_DEATH=none
    eval "$died"
    # Killed by the agent's own uploads: the attempt stands as the agent left it, exit code included.
    [[ $MH_SERVER_DEATH == agent ]] || (( rc != 0 )) || rc=1
fi
if ! mh_llm_stop_job_server; then
    code=()
    [[ ! $MH_LLM_DIED_RC =~ ^[0-9]+$ ]] || code=(--exit-code "$MH_LLM_DIED_RC")
    "$MH_CLI" run died --competition "$comp" --which llm "${code[@]}" ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} \
        >/dev/null || true
    (( rc != 0 )) || rc=1
fi
mh_log "agent exited with code $rc; stopping the grading server"
cleanup
# The job output ends with where the results are and how to grade them (`run start` noted the run).
[[ ! -s $state/run_dir ]] || mh_print_outro "$(head -n1 "$state/run_dir")"
exit "$rc"
