#!/usr/bin/env bash
# An OpenAI-compatible LLM server for agents (vLLM by default), on a free port of a GPU node.
# usage: sbatch scripts_hpc/slurm_llm_server.sh [<model>]      (default: LLM_MODEL of the config)
#        bash   scripts_hpc/slurm_llm_server.sh [<model>]      (no Slurm: same code path)
# Runs LLM_CMD (bash -c) in LLM_SIF, or on the host when LLM_SIF is empty, with LLM_MODEL,
# LLM_MODEL_DIR, LLM_HOST, LLM_PORT and LLM_NUM_GPUS set. Once GET /v1/models lists the model it
# prints LLM_SERVER_URL=http://<node>:<port>/v1 and writes it to OUTPUT_BASE/.state/llm/<jobid>/url:
# agents find it with LLM_BASE_URL=auto:<jobid>. scancel (SIGTERM) stops the server cleanly (exit 0).
# slurm_hetjob.sh runs it as a step beside the agent when LLM_BASE_URL=job.
#SBATCH --job-name=mlebench-llm
#SBATCH --output=%x-%j.out
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --gres=gpu:1
#SBATCH --time=1-02:00:00
set -euo pipefail
# sbatch runs a spool copy of this file: find the checkout's scripts_hpc/ (lib.sh) from Slurm's record.
d=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -f $d/lib.sh ]] || d=$(dirname "$(scontrol show job -o "${SLURM_JOB_ID:-0}" 2>/dev/null | grep -o 'Command=[^ ]*' | head -n1 | cut -d= -f2)")
[[ -f $d/lib.sh ]] || d=${SLURM_SUBMIT_DIR:-.}/scripts_hpc
[[ -f $d/lib.sh ]] || { echo "mlebench-hpc: error: cannot find scripts_hpc/lib.sh: submit from the checkout" >&2; exit 2; }
export MH_SCRIPTS=$d
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"

[[ -n ${MH_CLI:-} ]] || mh_init
MH_RUNTIME=$(mh_runtime)
mh_load_config
model=${1:-${LLM_MODEL:-}}
mh_llm_server_checks "$model"
key_args=()
[[ -z ${LLM_API_KEY_FILE:-} ]] || key_args=(--api-key-file "$LLM_API_KEY_FILE")

job=$(mh_job_id)
state=$MH_STATE_BASE/llm/$job
scratch=${SCRATCH_DIR:-${TMPDIR:-/tmp}}/mlebench-llm-$job
mkdir -p "$state" "$scratch/tmp"
rm -f "$state/url"  # a requeued job has the same id: never serve the previous attempt's URL
if [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_HET_SIZE:-} ]]; then
    scontrol update JobId="$SLURM_JOB_ID" Comment="llm_model=$model" >/dev/null 2>&1 || true
fi

port=$(mh_free_port)
mh_llm_cmd "$model" "$port" "$scratch"
server_pid=""
cleanup() {
    # Its own process group: a server's workers (vLLM starts several) go with it.
    mh_stop_group "$server_pid" 60
    server_pid=""
    rm -f "$state/url"
    rm -rf "$scratch"
}
trap cleanup EXIT
# Asked to stop (scancel, the end of the hetjob's agent): a normal end, exit 0, said once however
# many signals come. A server that fails on its own keeps its exit code below.
trap 'trap "" TERM INT; mh_log "LLM server stopped on request"; exit 0' TERM INT
mh_log "LLM server for $model (job $job, $(mh_gpu_count) GPU(s), $([[ $MH_RUNTIME == apptainer && -n ${LLM_SIF:-} ]] && echo "image $LLM_SIF" || echo "on the host")) on node ${SLURMD_NODENAME:-$(hostname)}, port $port"
t0=$SECONDS
setsid "${MH_CMD[@]}" &
server_pid=$!
url=$("$MH_CLI" llm-ready - --local-port "$port" --model "$model" --timeout "${LLM_READY_TIMEOUT:-900}" \
    --pid "$server_pid" --url-file "$state/url" "${key_args[@]}") || exit 2
echo "LLM_SERVER_URL=$url"
hint=""  # a job of its own is found by its id; a hetjob's step (LLM_BASE_URL=job) is its agent's alone
[[ -z ${SLURM_JOB_ID:-} || -n ${SLURM_HET_SIZE:-} ]] || hint=" (agents: LLM_BASE_URL=auto:$SLURM_JOB_ID)"
mh_log "LLM server ready after $((SECONDS - t0)) s: $url$hint"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
mh_log "LLM server exited with code $rc"
exit "$rc"
