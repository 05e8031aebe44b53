#!/usr/bin/env bash
# One task of a sweep array (submitted by submit_sweep.sh, not by hand): runs the grading server
# and the agent of one (agent, competition, seed) pair in this one allocation (the hetjob script in
# its non-heterogeneous mode; Slurm cannot make arrays of heterogeneous jobs). The task row names the
# agent variant (AGENT_ID); a row without one uses the config's.
# usage: sbatch --array=0-N%K scripts_hpc/slurm_sweep_task.sh <tasks.tsv> <group>
#        MH_TASK_INDEX=i bash scripts_hpc/slurm_sweep_task.sh <tasks.tsv> <group>   (no Slurm)
# Run dir: OUTPUT_BASE/<group>/<competition>_<arrayjob>_<task>/ (the same after a requeue).
# Time limit near (USR1) or preemption (TERM): the agent is stopped, the run is marked requeued
# and the task requeued into the same run dir, keeping what the agent wrote.
#SBATCH --job-name=mlebench-sweep
#SBATCH --output=mlebench-sweep-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --time=1-01:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
#SBATCH --requeue
#SBATCH --signal=B:USR1@600
set -euo pipefail
# Slurm may send USR1 up to a minute early, even before we are ready: never let it kill us.
usr1_early=0
trap 'usr1_early=1' USR1
# sbatch runs a spool copy of this file: find the checkout's scripts_hpc/ (lib.sh) from Slurm's record.
# submit_sweep.sh passes its own directory (scontrol shows every task of an array under one id).
d=${MH_SWEEP_SCRIPTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
[[ -f $d/lib.sh ]] || d=$(dirname "$(scontrol show job -o "${SLURM_JOB_ID:-0}" 2>/dev/null | grep -o 'Command=[^ ]*' | head -n1 | cut -d= -f2)")
[[ -f $d/lib.sh ]] || d=${SLURM_SUBMIT_DIR:-.}/scripts_hpc
[[ -f $d/lib.sh ]] || { echo "mlebench-hpc: error: cannot find scripts_hpc/lib.sh: submit from the checkout" >&2; exit 2; }
export MH_SCRIPTS=$d
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

mh_help "$@"
tasks=${1:-}
group=${2:-}
[[ -f $tasks && -n $group ]] || mh_usage_error "give the tasks file of submit_sweep.sh and the group"
index=${SLURM_ARRAY_TASK_ID:-${MH_TASK_INDEX:-}}
[[ $index =~ ^[0-9]+$ ]] || mh_usage_error "no array index: run through sbatch --array or set MH_TASK_INDEX"
# The same id (and so the same run dir) after a requeue: array job id + index, not the task's own id.
if [[ -n ${SLURM_ARRAY_JOB_ID:-} ]]; then MH_JOB_ID=${SLURM_ARRAY_JOB_ID}_$index; else MH_JOB_ID=$(mh_job_id)_$index; fi
# This attempt's number: once a later attempt owns the run dir, this one's writes are dropped.
MH_ATTEMPT=${SLURM_RESTART_COUNT:-0}
export MH_JOB_ID MH_ATTEMPT
mh_init
# The task's row, the config checked for its pair (the pair's steps inherit it), the run dir and the
# record of this attempt's start: one Python start (`run prepare`), its values as shell assignments.
prepared=$("$MH_CLI" run prepare "$tasks" "$group" --index "$index" --job-id "$MH_JOB_ID" \
    --runtime "$(mh_runtime)" --attempt "$MH_ATTEMPT") || exit 2
eval "$prepared"
comp=$MH_COMP
run=$MH_RUN
if [[ -n $MH_SKIP ]]; then
    mh_log "sweep task $index: $MH_SKIP"
    exit 0
fi
# submit_sweep.sh passed the config's partition, account and QOS: a difference is the site's (a
# job_submit rule) or a config edited since, never the agent's attempt: a warning, and the run goes on.
mh_check_slurm_site --warn slurm_sweep_task.sh gpu
# The task's allocation holds the server, the agent (and an LLM server of this job): its cost is the run's.
mh_cost_owner sweep
cost_components='agent+grading'
[[ ${LLM_BASE_URL:-} != job ]] || cost_components+=+llm
max_requeues=${MH_MAX_REQUEUES:-5}

# Slurm's name for this task (MH_JOB_ID is it in an array), for its restart count
slurm_task=${SLURM_ARRAY_JOB_ID:+$MH_JOB_ID}
slurm_task=${slurm_task:-${SLURM_JOB_ID:-}}
mh_log "sweep task $index: agent $AGENT_ID, $comp seed $MH_SEED, run directory $run (restart $MH_ATTEMPT)"

pair_pid=""
requeueing=0
stop_pair() { mh_stop_group "$pair_pid" 20; }
record_cost() { mh_record_cost sweep "$cost_components" "$run"; }
# an agent that already exited keeps its verdict (a requeued rerun then skips it: `run prepare`)
mark_requeued() { "$MH_CLI" run requeued "$run" --attempt "$MH_ATTEMPT" || true; }
on_usr1() {
    if (( MH_REQUEUES >= max_requeues )); then
        mh_log "time limit near, but this run was requeued $MH_REQUEUES times already (limit $max_requeues): letting it end"
        return 0
    fi
    mh_log "time limit near (USR1): stopping the agent and requeueing into $run"
    requeueing=1
    stop_pair
    mark_requeued
    record_cost  # this attempt's allocation; the next adds its own
    scontrol requeue "${SLURM_JOB_ID:?}" || mh_log "scontrol requeue failed: the pair will be resubmitted by the next submit_sweep.sh"
    exit 0
}
on_term() {
    (( requeueing )) && exit 0   # our own requeue ends this allocation
    record_cost  # first: Slurm's KILL follows KillWait seconds after the signal
    # Preemption and an admin's requeue count a restart before they signal us; scancel and the
    # time limit do not (the job state reads COMPLETING in every case, so it cannot tell).
    local restarts=""
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        restarts=$("$MH_CLI" slurm-restarts "$slurm_task" 2>/dev/null || true)
    fi
    stop_pair
    if [[ -n $restarts ]] && (( restarts > ${SLURM_RESTART_COUNT:-0} )); then
        mh_log "stopped by Slurm for a requeue (restart $restarts): marking the run requeued"
        mark_requeued
    else
        mh_log "stopped (scancel or time limit): the run keeps the status the agent recorded"
    fi
    exit 143
}
# after our own requeue Slurm holds the task again: its record was taken before (on_usr1)
trap 'stop_pair; (( requeueing )) || record_cost' EXIT
trap on_usr1 USR1
trap on_term TERM INT
(( usr1_early )) && on_usr1
# Its own process group, so that one signal reaches the server, the agent and their children.
setsid bash "$MH_SCRIPTS/slurm_hetjob.sh" "$comp" &
pair_pid=$!
rc=0
while :; do
    # wait returns early when a trapped signal arrives; go on waiting while the pair lives
    if wait "$pair_pid"; then rc=0; else rc=$?; fi
    kill -0 "$pair_pid" 2>/dev/null || break
done
pair_pid=""
# A pair that failed before its agent started (server, discovery, readiness) is a failed run; the
# agent recorded its own end otherwise (and a pair that exited 0 had its agent finish).
(( rc == 0 )) || "$MH_CLI" run ended "$run" --exit-code "$rc" --attempt "$MH_ATTEMPT" || true
mh_log "sweep task $index ($comp seed $MH_SEED) ended with code $rc"
exit "$rc"
