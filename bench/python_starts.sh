#!/usr/bin/env bash
# How many times one local hetjob run starts Python, the grading server and the agent included
# (issue 11's goal: at most 5). Runs `bash scripts_hpc/slurm_hetjob.sh <comp>` without Slurm under
# `strace -f -e trace=execve` on the demo config (make demo first) and prints each start and the count.
# usage: bash bench/python_starts.sh [competition]     (needs strace; MLEBENCH_HPC_CONFIG to override)
set -euo pipefail
cd "$(dirname "$0")/.."
comp=${1:-demo-breast-cancer}
command -v strace >/dev/null || { echo "python_starts: strace is not installed (apt-get install strace)" >&2; exit 2; }
export MLEBENCH_HPC_CONFIG=${MLEBENCH_HPC_CONFIG:-$PWD/.demo/config.env}
[[ -f $MLEBENCH_HPC_CONFIG ]] || { echo "python_starts: no config $MLEBENCH_HPC_CONFIG: run make demo first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Not a Slurm job: the same script runs its steps locally (SLURM_* from a calling job would change that).
env -u SLURM_JOB_ID -u SLURM_HET_SIZE -u SLURM_STEP_ID \
    strace -f -qq -e trace=execve -o "$work/trace" bash scripts_hpc/slurm_hetjob.sh "$comp" >"$work/out" 2>&1 \
    || { tail -n 20 "$work/out" >&2; echo "python_starts: the hetjob failed (above)" >&2; exit 1; }
# A start = a successful execve of a Python interpreter or of a Python entry point (mlebench-hpc).
grep -v ENOENT "$work/trace" | grep -E 'execve\("[^"]*/(python3?(\.[0-9]+)?|mlebench-hpc)"' \
    | sed -E 's/^[0-9]+ +//' | cut -c1-160 | tee "$work/starts"
echo "python starts: $(wc -l <"$work/starts") (goal <= 5) for one local hetjob run of $comp"
