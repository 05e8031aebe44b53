#!/usr/bin/env bash
# The agent for one competition, in the agent container, validating over HTTP.
# usage: sbatch scripts_hpc/slurm_agent.sh <competition> <http://host:port | auto:GRADING_JOBID>
#        bash   scripts_hpc/slurm_agent.sh <competition> <url>           (no Slurm: same code path)
# Output: OUTPUT_BASE/<group>/<competition>_<jobid>/{submission,logs,code,overlay}/ + metadata.json
# The agent's budget ends TIME_MARGIN_SECS (config) before this job's time limit: no --signal needed.
#SBATCH --job-name=mlebench-agent
#SBATCH --output=%x-%j.out
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
#SBATCH --time=1-01:00:00
set -euo pipefail
# sbatch runs a spool copy of this file: find the checkout's scripts_hpc/ (lib.sh) from Slurm's record.
d=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -f $d/lib.sh ]] || d=$(dirname "$(scontrol show job -o "${SLURM_JOB_ID:-0}" 2>/dev/null | grep -o 'Command=[^ ]*' | head -n1 | cut -d= -f2)")
[[ -f $d/lib.sh ]] || d=${SLURM_SUBMIT_DIR:-.}/scripts_hpc
[[ -f $d/lib.sh ]] || { echo "mlebench-hpc: error: cannot find scripts_hpc/lib.sh: submit from the checkout" >&2; exit 2; }
export MH_SCRIPTS=$d
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

comp=${1:-}
spec=${2:-}
[[ -n $comp && -n $spec ]] \
    || mh_die "usage: sbatch scripts_hpc/slurm_agent.sh <competition> <http://host:port | auto:GRADING_JOBID>"
mh_run_agent "$comp" "$spec"
