#!/usr/bin/env bash
# Grading server for one competition, in the grading container, on a free port.
# usage: sbatch scripts_hpc/slurm_grading_server.sh <competition>
#        bash   scripts_hpc/slurm_grading_server.sh <competition>      (no Slurm: same code path)
# Publishes GRADING_SERVER_URL=http://<host>:<port> in the job output and in
# OUTPUT_BASE/.state/<competition>_<jobid>/url once it listens; agents find it with auto:<jobid>.
#SBATCH --job-name=mlebench-grade
#SBATCH --output=%x-%j.out
#SBATCH --time=1-02:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
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
mh_setup "$comp" GRADING_SIF
mh_check_slurm_site slurm_grading_server.sh cpu || exit 2
mh_require_prepared "$comp" private

job=$(mh_job_id)
state=$(mh_run_state "$comp" "$job")
mkdir -p "$state"
# A requeued run has the same state dir: none of the last server's files may speak for this one.
rm -f "$state/url" "$state/inflight.json" "$state/exit_code"
# This run's token: only an agent given it (through its 0600 env file) may use this server.
mh_new_token "$state/token"
# Let auto:<jobid> check the competition from Slurm's record too (the state dir name is the other check).
if [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_HET_SIZE:-} ]]; then
    scontrol update JobId="$SLURM_JOB_ID" Comment="competition=$comp" >/dev/null 2>&1 || true
fi

mh_grading_cmd "$comp" "$state"
server_pid=""
cleanup() { mh_stop_pid "$server_pid"; rm -f "$state/url" "$state/token"; }
trap cleanup EXIT
# Asked to stop (the hetjob's end, scancel): a normal end, exit 0, said once however many signals
# come. A server that fails on its own keeps its exit code below.
trap 'trap "" TERM INT; mh_log "grading server stopped on request"; exit 0' TERM INT
mh_log "grading server for $comp (job $job, runtime $MH_RUNTIME) on node ${SLURMD_NODENAME:-$(hostname)}"
"${MH_CMD[@]}" &
server_pid=$!
rc=0
wait "$server_pid" || rc=$?
server_pid=""
mh_log "grading server exited with code $rc"
# The server's own code (137: SIGKILL, e.g. the OOM killer) for the death record: srun only says 1.
printf '%s\n' "$rc" >"$state/exit_code" 2>/dev/null || true
exit "$rc"
