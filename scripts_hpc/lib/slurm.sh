# shellcheck shell=bash
# Job ids, steps of a heterogeneous job, and the job's cost. Slurm state is read only through the
# Python helpers (mlebench_hpc.slurm.query, `run start` for the agent's budget); the functions here
# are pure or act on steps.

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

# The cost of the allocation is recorded once, by the outermost script of the job (sweep task,
# hetjob, or agent job alone): the first to call this owns it. Arg: owner name
mh_cost_owner() {
    [[ -n ${MH_COST_BY:-} ]] || MH_COST_BY=$1
    export MH_COST_BY
}

# A step of a hetjob (OWNER is not the owner) records its own node's peak memory with its last phase
# (`run finish --peak-of COMPONENT`): no Python start of its own. Fills MH_COST_PEAK (empty
# otherwise). Args: owner component
mh_cost_peak_args() {
    MH_COST_PEAK=()
    # shellcheck disable=SC2034 # read by the caller
    [[ -z ${SLURM_JOB_ID:-} || -z ${SLURM_STEP_ID:-} || ${MH_COST_BY:-} == "$1" ]] || MH_COST_PEAK=(--peak-of "$2")
}

# At the job's end (also from its signal traps): what the job's allocation cost, into the run's
# metadata.json (`run cost`: scontrol's allocation, the job's cgroup peak on this node). Only the
# owner's call records, and only under Slurm (a run without a record gets none); a failure is a
# warning, never the run's result. A step of a hetjob (OWNER is not the owner) records its own
# node's peak memory. Args: owner components (grading,agent+llm: Slurm's order, '+' shares a
# component) run... (the run directory, or --competition C for this job's run of C)
mh_record_cost() {
    local owner=$1 components=$2 job
    shift 2
    [[ -n ${SLURM_JOB_ID:-} ]] || return 0
    # an array task by its array id (its own id is the whole array's for task 0's record)
    job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
    if [[ ${MH_COST_BY:-} == "$owner" ]]; then
        "$MH_CLI" run cost "$@" --job "${job:-$SLURM_JOB_ID}" --components "$components" \
            ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} || mh_log "WARNING: the job's cost was not recorded"
    elif [[ -n ${SLURM_STEP_ID:-} ]]; then
        "$MH_CLI" run cost "$@" --job "$SLURM_JOB_ID" --peak-of "${components%%+*}" \
            ${MH_ATTEMPT:+--attempt "$MH_ATTEMPT"} || true
    fi
    return 0
}

# The config's partition for a component of KIND (cpu, gpu). Arg: kind
_mh_site_partition() {
    if [[ $1 == gpu ]]; then echo "${SLURM_GPU_PARTITION:-${SLURM_PARTITION:-}}"; else echo "${SLURM_PARTITION:-}"; fi
}

# The site's options of the config for a job whose components are of these kinds (cpu: the grading
# server, gpu: an agent or an LLM server, on SLURM_GPU_PARTITION else SLURM_PARTITION), as sbatch
# arguments, components separated by ':' as sbatch's heterogeneous syntax wants; nothing when the
# config names none. The one place that turns SLURM_PARTITION & co into options. Fills
# MH_SLURM_ARGS. Args: kind...
mh_slurm_site_args() {
    local kind partition sep=()
    MH_SLURM_ARGS=()
    [[ -n ${SLURM_PARTITION:-}${SLURM_GPU_PARTITION:-}${SLURM_ACCOUNT:-}${SLURM_QOS:-} ]] || return 0
    for kind in "$@"; do
        partition=$(_mh_site_partition "$kind")
        MH_SLURM_ARGS+=("${sep[@]}")
        [[ -z $partition ]] || MH_SLURM_ARGS+=(--partition="$partition")
        [[ -z ${SLURM_ACCOUNT:-} ]] || MH_SLURM_ARGS+=(--account="$SLURM_ACCOUNT")
        [[ -z ${SLURM_QOS:-} ]] || MH_SLURM_ARGS+=(--qos="$SLURM_QOS")
        sep=(:)
    done
}

# True when Slurm's value GOT of KEY meets the config's WANT. Slurm lower-cases accounts and
# matches QOS names in any case; a partition list (gpu,gpu-long) is met by any of its partitions,
# and a hetjob component reports its whole list, the one it runs in first. Args: key got want
_mh_site_ok() {
    local key=$1 got=$2 want=$3 p
    if [[ $key != partition ]]; then [[ ${got,,} == "${want,,}" ]]; return; fi
    for p in ${got//,/ }; do [[ ,$want, == *",$p,"* ]] || return 1; done
}

# Once per job, in its batch script (not in its steps or child scripts): the job runs under the
# config's partition, account and QOS. A job submitted by hand never read the config, so a
# mismatch is one line that says how to submit it, and a non-zero return before anything starts.
# With --warn (a job our tools submitted with the config's options: the site, or a config edited
# since, decided otherwise) the line is a warning and the job goes on. A value Slurm does not report
# (no accounting: no QOS) is not checked. Args: [--warn] script kind...
mh_check_slurm_site() {
    local warn=0
    [[ $1 != --warn ]] || { warn=1; shift; }
    local script=$1 kind i=0 suffix partition got want bad=()
    shift
    [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_STEP_ID:-} ]] || return 0
    [[ ${MH_SLURM_SITE_CHECKED:-} != "$SLURM_JOB_ID" ]] || return 0
    for kind in "$@"; do
        suffix=""
        (( $# == 1 )) || suffix=_HET_GROUP_$i
        partition=$(_mh_site_partition "$kind")
        for want in "partition=$partition" "account=${SLURM_ACCOUNT:-}" "qos=${SLURM_QOS:-}"; do
            [[ -n ${want#*=} ]] || continue
            got=SLURM_JOB_${want%%=*}$suffix  # Slurm's own: SLURM_JOB_PARTITION[_HET_GROUP_<i>] & co
            got=${got^^}
            got=${!got:-}
            [[ -z $got ]] || _mh_site_ok "${want%%=*}" "$got" "${want#*=}" \
                || bad+=("${want%%=*} $got (the config: ${want#*=})")
        done
        i=$((i + 1))
    done
    if (( ${#bad[@]} )); then
        local what="" b
        for b in "${bad[@]}"; do what+="${what:+, }$b"; done
        if (( warn )); then
            mh_log "WARNING: job $SLURM_JOB_ID runs with $what, not as ${MH_CONFIG:-the config} says (it was submitted with the config's options: the site or a later config changed them); going on"
        else
            mh_slurm_site_args "$@"
            printf 'mlebench-hpc: error: job %s runs with %s, not as %s says: submit it with sbatch %s scripts_hpc/%s ..., or change the config\n' \
                "$SLURM_JOB_ID" "$what" "${MH_CONFIG:-the config}" "${MH_SLURM_ARGS[*]}" "$script" >&2
            return 2
        fi
    fi
    MH_SLURM_SITE_CHECKED=$SLURM_JOB_ID
    export MH_SLURM_SITE_CHECKED
}
