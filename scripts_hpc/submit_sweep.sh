#!/usr/bin/env bash
# Submit a sweep: every (competition, seed) pair of a competition set x N seeds, for one agent, as
# ONE Slurm array, at most K tasks running at once (--array=...%K). Each task runs its own grading
# server and agent (slurm_sweep_task.sh). Re-running the same command resumes: only pairs of that
# agent without a finished run (and not failed twice, and not still queued) are submitted. Several
# agents in one group: run it once per --agent-id with the same --group; their numbers never mix.
# SET: a file of one competition id per line, or a split by name (split75, low, ...; `all` is
# split75 where all.txt is gone): $MLEBENCH_DIR/experiments/splits/'s, else upstream's as shipped.
# The config's SLURM_GPU_PARTITION (else SLURM_PARTITION), SLURM_ACCOUNT and SLURM_QOS go to sbatch;
# options after -- go to sbatch too, and win.
# usage: bash scripts_hpc/submit_sweep.sh --competitions SET --seeds N [--agent-id ID]
#             [--max-parallel K] [--group NAME] [--max-requeues R] [--dry-run] [-- extra sbatch args]
set -euo pipefail
export MH_SCRIPTS
MH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

list="" seeds="" max_parallel=4 group="" dry_run=0 max_requeues=5 agent_id=""
extra=()
# An option's value: the next argument, which must be there. Args: option value-or-nothing...
value_of() { (( $# >= 2 )) || mh_usage_error "$1 needs a value"; printf '%s' "$2"; }
while (( $# )); do
    case $1 in
        --competitions|--competition-set) list=$(value_of "$@"); shift 2 ;;
        --seeds) seeds=$(value_of "$@"); shift 2 ;;
        --agent-id) agent_id=$(value_of "$@"); shift 2; [[ -n $agent_id ]] || mh_usage_error "--agent-id needs an id" ;;
        --max-parallel) max_parallel=$(value_of "$@"); shift 2 ;;
        --group) group=$(value_of "$@"); shift 2 ;;
        --max-requeues) max_requeues=$(value_of "$@"); shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) mh_help --help ;;
        *) mh_usage_error "unknown argument '$1'" ;;
    esac
done
[[ -n $list ]] || mh_usage_error "--competitions SET is required (a file or a split name)"
# The site's options come from the config only: every task checks it runs under them.
for a in "${extra[@]}"; do
    case $a in
        -p|-p*|--partition|--partition=*|-A|-A*|--account|--account=*|-q|-q*|--qos|--qos=*)
            mh_die "'$a' after --: set SLURM_GPU_PARTITION (or SLURM_PARTITION), SLURM_ACCOUNT and SLURM_QOS in ${MLEBENCH_HPC_CONFIG:-your config} instead: every task checks it runs under them" ;;
    esac
done
[[ $seeds =~ ^[1-9][0-9]*$ ]] || mh_die "--seeds must be a positive integer, not '$seeds'"
[[ $max_parallel =~ ^[1-9][0-9]*$ ]] || mh_die "--max-parallel must be a positive integer, not '$max_parallel'"
[[ $max_requeues =~ ^[0-9]+$ ]] || mh_die "--max-requeues must be a non-negative integer, not '$max_requeues'"
[[ -z $group || $group =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || mh_die "--group '$group': use letters, digits, '.', '_' and '-' only"

mh_init
# The agent: the config's AGENT_ID unless --agent-id (the environment's value wins over the file's),
# checked with its secrets and its image before anything is created or submitted.
[[ -n $agent_id ]] && export AGENT_ID=$agent_id
runtime=$(mh_runtime)
need=(--need AGENT_ID)
[[ $runtime == apptainer ]] && need+=(--need GRADING_SIF --need AGENT_SIF)
mh_load_config "${need[@]}"
agent_id=$AGENT_ID

# The set resolved (a file here, else a split of MLEBENCH_DIR or shipped) and checked as a whole (every bad id
# on its own line) before anything is created or submitted.
list=$("$MH_CLI" sweep-plan --check-only --competitions "$list" --mlebench-dir "${MLEBENCH_DIR:-}" \
    --data-dir "$DATA_DIR") || exit 2
# Default group from the set's name: the same command resumes the same sweep, whatever the agent.
if [[ -z $group ]]; then
    group=$(basename "$list"); group=sweep-${group%.*}
    [[ $group =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || mh_die "cannot name a group after '$list': give --group NAME"
fi
gdir=$OUTPUT_BASE/$group
sdir=$gdir/.sweep

if (( dry_run )); then
    plan_dir=$(mktemp -d)
    trap 'rm -rf "$plan_dir"' EXIT
    tasks=$plan_dir/tasks.tsv
else
    mkdir -p "$sdir/logs"
    # One submitter per group at a time: two would plan the same pairs.
    exec 9>"$sdir/lock"
    flock -n 9 || mh_die "another submit_sweep.sh is submitting to $gdir: wait for it and re-run"
    n=$(( $(find "$sdir" -maxdepth 1 -name 'tasks-*.tsv' | wc -l) + 1 ))
    tasks=$sdir/tasks-$n.tsv
fi

count=$("$MH_CLI" sweep-plan --group-dir "$gdir" --competitions "$list" --seeds "$seeds" \
    --agent-id "$agent_id" --data-dir "$DATA_DIR" --tasks-out "$tasks") || exit 2
if (( count == 0 )); then
    rm -f "$tasks"
    echo "nothing to submit: every pair of agent $agent_id in $group is finished, failed twice or still queued"
    echo "status:    $MH_CLI status $gdir"
    echo "group dir: $gdir"
    exit 0
fi

# The task's own #SBATCH lines hold its resources; --requeue and --open-mode here too, so that a
# submitter's SBATCH_NO_REQUEUE or SBATCH_OPEN_MODE (which beat #SBATCH lines) cannot undo them.
cmd=(sbatch --parsable --array="0-$((count - 1))%$max_parallel" --job-name="mlebench-sweep-$group"
    --output="$sdir/logs/%A_%a.out" --open-mode=append --requeue --signal="B:USR1@$(( TIME_MARGIN_SECS + 60 ))"
    --export="ALL,MH_MAX_REQUEUES=$max_requeues,MH_SWEEP_SCRIPTS=$MH_SCRIPTS")
# Each task runs an agent: the config's GPU partition (else SLURM_PARTITION), account and QOS.
mh_slurm_site_args gpu
cmd+=("${MH_SLURM_ARGS[@]}" "${extra[@]}" "$MH_SCRIPTS/slurm_sweep_task.sh" "$tasks" "$group")

if (( dry_run )); then
    echo "dry run: nothing submitted. Would run:"
    printf ' %q' "${cmd[@]}"; echo
    echo "agent: $agent_id"
    echo "tasks (index, competition, seed, agent):"
    cat "$tasks"
    echo "group dir: $gdir"
    exit 0
fi

job=$("${cmd[@]}") || mh_die "sbatch refused the sweep array (see the line above): fix the sbatch arguments and re-run"
job=${job%%;*}
"$MH_CLI" sweep-plan --group-dir "$gdir" --competitions "$list" --seeds "$seeds" --agent-id "$agent_id" \
    --max-parallel "$max_parallel" --record "$job" --tasks "$tasks" --command "$(printf '%q ' "${cmd[@]}")"
echo "submitted array job $job: $count tasks, at most $max_parallel at once (agent $agent_id)"
echo "status:    $MH_CLI status $gdir"
echo "grade:     make -C $MH_ROOT grade RUN=$gdir"
echo "group dir: $gdir"
