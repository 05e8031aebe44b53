#!/usr/bin/env bash
# What recording a run's cost adds to the end of a job: the wall time of `mlebench-hpc run cost`
# (one Python start, one `scontrol show job -d`, the cgroup read, one metadata write) inside a real
# two-component hetjob on the cluster in force, N times; prints each and the mean.
# usage: bash bench/cost_record.sh [N]     (a Slurm cluster: make cluster-up; make install)
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts_hpc/lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"
cd "$(dirname "$0")/.."
n=${1:-5}
command -v sbatch >/dev/null || { echo "cost_record: sbatch is not on PATH: is Slurm installed here?" >&2; exit 2; }
[[ -x .venv/bin/mlebench-hpc ]] || { echo "cost_record: run make install first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/run"
echo '{"status": "finished"}' >"$work/run/metadata.json"
cat >"$work/job.sh" <<JOB
#!/usr/bin/env bash
set -euo pipefail
for i in \$(seq $n); do
    t0=\$EPOCHREALTIME
    "$PWD/.venv/bin/mlebench-hpc" run cost "$work/run" --job "\$SLURM_JOB_ID" --components grading,agent
    awk -v a="\$t0" -v b="\$EPOCHREALTIME" 'BEGIN { printf "run cost: %.3f s\n", b - a }'
done
JOB
sbatch --wait --quiet --output="$work/out" --time=5 --mem=500M --cpus-per-task=1 \
    : --time=5 --mem=500M --cpus-per-task=1 --gres=gpu:1 "$work/job.sh" \
    || { cat "$work/out" >&2; echo "cost_record: the job failed (above)" >&2; exit 1; }
cat "$work/out"
awk '/^run cost:/ { s += $3; k++ } END { printf "mean: %.3f s per record (%d records, 2-component hetjob)\n", s / k, k }' "$work/out"
python3 -c "import json, sys; c = json.load(open(sys.argv[1]))['cost']; print('recorded:', {k: c[k] for k in ('source', 'elapsed_s', 'cpu_hours', 'gpu_hours', 'peak_mem_mb')})" "$work/run/metadata.json"
