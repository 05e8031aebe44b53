# shellcheck shell=bash
# Job ids, steps of a heterogeneous job, and the agent's time budget. Slurm state is read only
# through the Python helpers (mlebench_hpc.slurm.query); the functions here are pure or act on steps.

# Job id of this run: Slurm's, else a local one (same code path without Slurm).
mh_job_id() {
    if [[ -n ${MH_JOB_ID:-} ]]; then echo "$MH_JOB_ID"
    elif [[ -n ${SLURM_JOB_ID:-} ]]; then echo "$SLURM_JOB_ID"
    else echo "local-$(date +%Y%m%d%H%M%S)-$$"; fi
}

# True in the batch script of a heterogeneous job (Slurm sets SLURM_HET_SIZE there, not in
# a plain job; its steps have SLURM_STEP_ID).
mh_in_hetjob_batch() { [[ -n ${SLURM_HET_SIZE:-} && -z ${SLURM_STEP_ID:-} ]]; }

# This job's memory on this node in MiB (the grading server runs in het component 0, or alone),
# from Slurm's --mem or --mem-per-cpu; nothing when Slurm does not say.
mh_job_mem_mb() {
    local mem=${SLURM_MEM_PER_NODE_HET_GROUP_0:-${SLURM_MEM_PER_NODE:-}}
    if [[ -z $mem && ${SLURM_MEM_PER_CPU:-} =~ ^[0-9]+$ && ${SLURM_CPUS_ON_NODE:-} =~ ^[0-9]+$ ]]; then
        mem=$((SLURM_MEM_PER_CPU * SLURM_CPUS_ON_NODE))
    fi
    [[ $mem =~ ^[1-9][0-9]*$ ]] && echo "$mem"
    return 0
}

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

# The agent's wall-clock budget: TIME_LIMIT_SECS, cut so that it ends TIME_MARGIN_SECS before
# Slurm's own limit (time to copy logs and write metadata). Sets MH_AGENT_SECS.
# A requeued run continues its budget: agent time used by earlier attempts (metadata
# agent_secs_used, arg 1) is subtracted, so requeues never add up to more than upstream's limit.
# Pure (no Slurm call): the job's time left comes as squeue prints it (arg 2, from `run start`).
# Args: used_secs [slurm_time_left]
mh_agent_budget() {
    local used=${1:-0} left
    MH_AGENT_SECS=$(( TIME_LIMIT_SECS - used ))
    (( used == 0 )) || mh_log "earlier attempts used ${used}s of the ${TIME_LIMIT_SECS}s budget"
    left=$(mh_slurm_secs "${2:-}")
    if [[ -n $left ]] && (( left - TIME_MARGIN_SECS < MH_AGENT_SECS )); then
        MH_AGENT_SECS=$(( left > TIME_MARGIN_SECS * 2 ? left - TIME_MARGIN_SECS : left / 2 ))
        mh_log "agent budget cut to ${MH_AGENT_SECS}s to end ${TIME_MARGIN_SECS}s before the Slurm limit"
    fi
    export MH_AGENT_SECS
}

# Slurm time ([[D-]HH:]MM:SS) -> seconds; empty for UNLIMITED/unknown.
mh_slurm_secs() {
    local t=${1:-} d=0 h=0 m=0 s=0 p=()
    [[ $t =~ ^([0-9]+-)?[0-9]+(:[0-9]+){0,2}$ ]] || return 0
    if [[ $t == *-* ]]; then d=${t%%-*}; t=${t#*-}; fi
    IFS=: read -r -a p <<<"$t"
    case ${#p[@]} in
        3) h=${p[0]}; m=${p[1]}; s=${p[2]} ;;
        2) m=${p[0]}; s=${p[1]} ;;
        1) s=${p[0]} ;;
    esac
    echo $(( 10#$d * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s ))
}

# The cost of the allocation is recorded once, by the outermost script of the job (sweep task,
# hetjob, or agent job alone): the first to call this owns it. Arg: owner name
mh_cost_owner() {
    [[ -n ${MH_COST_BY:-} ]] || MH_COST_BY=$1
    export MH_COST_BY
}

# At the job's end (also from its signal traps): what the job's allocation cost, into RUN's
# metadata.json (`run cost`: scontrol's allocation, the job's cgroup peak on this node). Only the
# owner's call records, and only under Slurm with a run record; a failure is a warning, never the
# run's result. A step of a hetjob (OWNER is not the owner) records its own node's peak memory.
# Args: owner run_dir components (grading,agent+llm: Slurm's order, '+' shares a component)
mh_record_cost() {
    local owner=$1 run=$2 components=$3 job
    [[ -n ${SLURM_JOB_ID:-} && -f $run/metadata.json ]] || return 0
    # an array task by its array id (its own id is the whole array's for task 0's record)
    job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
    if [[ ${MH_COST_BY:-} == "$owner" ]]; then
        "$MH_CLI" run cost "$run" --job "${job:-$SLURM_JOB_ID}" --components "$components" \
            ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} || mh_log "WARNING: the job's cost was not recorded"
    elif [[ -n ${SLURM_STEP_ID:-} ]]; then
        "$MH_CLI" run cost "$run" --job "$SLURM_JOB_ID" --peak-of "${components%%+*}" \
            ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} || true
    fi
    return 0
}
