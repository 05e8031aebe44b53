#!/usr/bin/env bash
# How many times one agent run starts Python, the grading server and the agent included (goal: at
# most 5, for a local hetjob and for a sweep task around it). Runs, without Slurm, under
# `strace -f -e trace=execve` on the demo config (make demo first):
#   hetjob      bash scripts_hpc/slurm_hetjob.sh <comp>
#   sweep task  MH_TASK_INDEX=0 bash scripts_hpc/slurm_sweep_task.sh <tasks.tsv> <group>
# and prints each start and the counts; exit 1 when a count is over the goal. With --slurm (root, on
# the local cluster of `make cluster-up`) the same two as real Slurm jobs, every slurmd traced: a job
# adds its cost record at its end (`run cost`), so the goal there is one more.
# usage: bash bench/python_starts.sh [--slurm] [competition]     (needs strace; MLEBENCH_HPC_CONFIG to override)
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts_hpc/lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"
cd "$(dirname "$0")/.."
slurm=0
if [[ ${1:-} == --slurm ]]; then slurm=1; shift; fi
comp=${1:-demo-breast-cancer}
goal=5
command -v strace >/dev/null || { echo "python_starts: strace is not installed (apt-get install strace)" >&2; exit 2; }
export MLEBENCH_HPC_CONFIG=${MLEBENCH_HPC_CONFIG:-$PWD/.demo/config.env}
[[ -f $MLEBENCH_HPC_CONFIG ]] || { echo "python_starts: no config $MLEBENCH_HPC_CONFIG: run make demo first" >&2; exit 2; }
work=$(mktemp -d)
group=bench-python-starts-$$
# the sweep task's run dir lands in the demo's OUTPUT_BASE: a bench leaves nothing behind
out_base=$(.venv/bin/mlebench-hpc config --shell | sed -n "s/^export OUTPUT_BASE=//p" | tr -d "'")
trap 'rm -rf "$work" "${out_base:?}/$group"' EXIT

# count NAME CMD...: run CMD under strace, print its Python starts; sets n
count() {
    local name=$1
    shift
    # Not a Slurm job: the same scripts run their steps locally (SLURM_* from a calling job would change that).
    env -u SLURM_JOB_ID -u SLURM_HET_SIZE -u SLURM_STEP_ID -u SLURM_ARRAY_JOB_ID -u SLURM_ARRAY_TASK_ID \
        strace -f -qq -e trace=execve -o "$work/$name.trace" "$@" >"$work/$name.out" 2>&1 \
        || { tail -n 20 "$work/$name.out" >&2; echo "python_starts: the $name failed (above)" >&2; exit 1; }
    # A start = a successful execve of a Python interpreter or of a Python entry point (mlebench-hpc).
    grep -v ENOENT "$work/$name.trace" | grep -E 'execve\("[^"]*/(python3?(\.[0-9]+)?|mlebench-hpc)"' \
        | sed -E 's/^[0-9]+ +//' | cut -c1-160 >"$work/$name.starts" || true
    echo "--- $name"
    cat "$work/$name.starts"
    n=$(wc -l <"$work/$name.starts")
}

# slurm_count NAME SBATCH-ARGS...: submit with --wait while strace follows every slurmd; sets n
slurm_count() {
    local name=$1 pids tracer
    shift
    pids=$(pgrep -x slurmd | sed 's/^/-p /' | tr '\n' ' ')
    [[ -n $pids ]] || { echo "python_starts: no slurmd runs here (as root: make cluster-up)" >&2; exit 2; }
    # shellcheck disable=SC2086 # -p PID words
    strace -f -qq -e trace=execve -o "$work/$name.trace" $pids &
    tracer=$!
    sleep 1  # attached before the job starts
    sbatch --wait --output="$work/$name.out" "$@" >/dev/null \
        || { tail -n 20 "$work/$name.out" >&2; kill "$tracer"; echo "python_starts: the $name failed (above)" >&2; exit 1; }
    kill -INT "$tracer"; wait "$tracer" || true
    grep -v ENOENT "$work/$name.trace" | grep -E 'execve\("[^"]*/(python3?(\.[0-9]+)?|mlebench-hpc)"' \
        | sed -E 's/^[0-9]+ +//' | cut -c1-160 >"$work/$name.starts" || true
    echo "--- $name (Slurm)"
    cat "$work/$name.starts"
    n=$(wc -l <"$work/$name.starts")
}

printf '0\t%s\t0\t\n' "$comp" >"$work/tasks.tsv"
if (( slurm )); then
    (( EUID == 0 )) || { echo "python_starts: --slurm attaches strace to slurmd: run it as root" >&2; exit 2; }
    small=(--time=10 --cpus-per-task=1 --mem=1G)
    slurm_count hetjob "${small[@]}" : "${small[@]}" --gres=none scripts_hpc/slurm_hetjob.sh "$comp"
    het=$n
    slurm_count sweep-task --array=0 "${small[@]}" --gres=none --export="ALL,MH_SWEEP_SCRIPTS=$PWD/scripts_hpc" \
        scripts_hpc/slurm_sweep_task.sh "$work/tasks.tsv" "$group"
    task=$n
    echo "python starts under Slurm: hetjob $het, sweep task $task (goal <= $((goal + 1)) each: the cost record) for one run of $comp"
    (( het <= goal + 1 && task <= goal + 1 ))
    exit
fi
count hetjob bash scripts_hpc/slurm_hetjob.sh "$comp"
het=$n
count sweep-task env MH_TASK_INDEX=0 bash scripts_hpc/slurm_sweep_task.sh "$work/tasks.tsv" "$group"
task=$n
echo "python starts: hetjob $het, sweep task $task (goal <= $goal each) for one local run of $comp"
(( het <= goal && task <= goal ))
