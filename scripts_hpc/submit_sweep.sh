#!/usr/bin/env bash
# Submit a sweep: every (competition, seed) pair of a list x N seeds as ONE Slurm array, at most K
# tasks running at once (--array=...%K). Each task runs its own grading server and agent
# (slurm_sweep_task.sh). Re-running the same command resumes: only pairs without a finished run
# (and not failed twice, and not still queued) are submitted.
# usage: bash scripts_hpc/submit_sweep.sh --competitions FILE --seeds N [--max-parallel K]
#             [--group NAME] [--max-requeues R] [--dry-run] [-- extra sbatch args]
set -euo pipefail
export MH_SCRIPTS
MH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

usage="usage: bash scripts_hpc/submit_sweep.sh --competitions FILE --seeds N [--max-parallel K] [--group NAME] [--max-requeues R] [--dry-run] [-- sbatch args]"
list="" seeds="" max_parallel=4 group="" dry_run=0 max_requeues=5
extra=()
while (( $# )); do
    case $1 in
        --competitions) list=${2:-}; shift 2 || mh_die "$usage" ;;
        --seeds) seeds=${2:-}; shift 2 || mh_die "$usage" ;;
        --max-parallel) max_parallel=${2:-}; shift 2 || mh_die "$usage" ;;
        --group) group=${2:-}; shift 2 || mh_die "$usage" ;;
        --max-requeues) max_requeues=${2:-}; shift 2 || mh_die "$usage" ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) mh_die "unknown argument '$1'; $usage" ;;
    esac
done
[[ -n $list ]] || mh_die "--competitions FILE is required; $usage"
[[ -f $list ]] || mh_die "competition list $list not found: give a file with one competition id per line"
[[ $seeds =~ ^[1-9][0-9]*$ ]] || mh_die "--seeds must be a positive integer, not '$seeds'"
[[ $max_parallel =~ ^[1-9][0-9]*$ ]] || mh_die "--max-parallel must be a positive integer, not '$max_parallel'"
[[ $max_requeues =~ ^[0-9]+$ ]] || mh_die "--max-requeues must be a non-negative integer, not '$max_requeues'"
list=$(cd "$(dirname "$list")" && pwd)/$(basename "$list")
# Default group from the list's name: the same command resumes the same sweep.
if [[ -z $group ]]; then
    group=$(basename "$list"); group=sweep-${group%.*}
fi
[[ $group =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || mh_die "--group '$group': use letters, digits, '.', '_' and '-' only"

mh_init
runtime=$(mh_runtime)
need=()
[[ $runtime == apptainer ]] && need=(--need GRADING_SIF --need AGENT_SIF)
mh_load_config "${need[@]}"
gdir=$OUTPUT_BASE/$group
sdir=$gdir/.sweep

# The whole list is checked before anything is created or submitted (every bad id on its own line).
"$MH_CLI" sweep-plan --check-only --competitions "$list" --data-dir "$DATA_DIR" --group-dir "$gdir" || exit 2

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
    --data-dir "$DATA_DIR" --tasks-out "$tasks") || exit 2
if (( count == 0 )); then
    rm -f "$tasks"
    echo "nothing to submit: every pair of $group is finished, failed twice or still queued"
    echo "status:    $MH_CLI status $gdir"
    echo "group dir: $gdir"
    exit 0
fi

cmd=(sbatch --parsable --array="0-$((count - 1))%$max_parallel" --job-name="mlebench-sweep-$group"
    --output="$sdir/logs/%A_%a.out" --open-mode=append --requeue
    --signal="B:USR1@$(( TIME_MARGIN_SECS + 60 ))"
    --export="ALL,MH_MAX_REQUEUES=$max_requeues,MH_SWEEP_SCRIPTS=$MH_SCRIPTS")
# Each task runs an agent: the GPU partition when the config names one, else SLURM_PARTITION.
partition=${SLURM_GPU_PARTITION:-${SLURM_PARTITION:-}}
[[ -n $partition ]] && cmd+=(-p "$partition")
[[ -n ${SLURM_ACCOUNT:-} ]] && cmd+=(-A "$SLURM_ACCOUNT")
[[ -n ${SLURM_QOS:-} ]] && cmd+=(-q "$SLURM_QOS")
cmd+=("${extra[@]}" "$MH_SCRIPTS/slurm_sweep_task.sh" "$tasks" "$group")

if (( dry_run )); then
    echo "dry run: nothing submitted. Would run:"
    printf ' %q' "${cmd[@]}"; echo
    echo "tasks (index, competition, seed):"
    cat "$tasks"
    echo "group dir: $gdir"
    exit 0
fi

job=$("${cmd[@]}") || mh_die "sbatch refused the sweep array (see the line above): fix the sbatch arguments and re-run"
job=${job%%;*}
"$MH_CLI" sweep-plan --group-dir "$gdir" --competitions "$list" --seeds "$seeds" \
    --max-parallel "$max_parallel" --record "$job" --tasks "$tasks" --command "$(printf '%q ' "${cmd[@]}")"
echo "submitted array job $job: $count tasks, at most $max_parallel at once"
echo "status:    $MH_CLI status $gdir"
echo "grade:     make -C $MH_ROOT grade RUN=$gdir"
echo "group dir: $gdir"
