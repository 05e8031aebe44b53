#!/usr/bin/env bash
# An OpenAI-compatible LLM server for agents (vLLM by default), on a free port of a GPU node.
# usage: sbatch scripts_hpc/slurm_llm_server.sh [<model>]      (default: LLM_MODEL of the config)
#        bash   scripts_hpc/slurm_llm_server.sh [<model>]      (no Slurm: same code path)
# Runs LLM_CMD (bash -c) in LLM_SIF, or on the host when LLM_SIF is empty, with LLM_MODEL,
# LLM_MODEL_DIR, LLM_HOST (127.0.0.1), LLM_PORT and LLM_NUM_GPUS set, and in front of it
# `mlebench-hpc llm-proxy` on a port no other process can bind, which forwards only the requests of
# runs that registered their own key (and sends the server's key, which only the two know). Once
# GET /v1/models lists the model the proxy prints LLM_SERVER_URL=http://<node>:<port>/v1 and writes
# it to OUTPUT_BASE/.state/llm/<jobid>/url: agents find it with LLM_BASE_URL=auto:<jobid>.
# scancel (SIGTERM) stops both cleanly (exit 0). slurm_hetjob.sh runs it as a step beside the agent
# when LLM_BASE_URL=job.
#SBATCH --job-name=mlebench-llm
#SBATCH --output=%x-%j.out
#SBATCH --time=1-02:00:00
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --gres=gpu:1
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
[[ -n ${MH_CLI:-} ]] || mh_init
MH_RUNTIME=$(mh_runtime)
mh_load_config
mh_check_slurm_site slurm_llm_server.sh gpu || exit 2
model=${1:-${LLM_MODEL:-}}
mh_llm_server_checks "$model"

job=$(mh_job_id)
state=$(mh_llm_state "$job")
scratch=${SCRATCH_DIR:-${TMPDIR:-/tmp}}/mlebench-llm-$job
mkdir -p "$state" "$scratch/tmp"
rm -f "$state/url"  # a requeued job has the same id: never serve the previous attempt's URL
if [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_HET_SIZE:-} ]]; then
    scontrol update JobId="$SLURM_JOB_ID" Comment="llm_model=$model" >/dev/null 2>&1 || true
fi

# The server's key (LLM_API_KEY_FILE's, else a random one for this job) in the backend's 0600 env
# file and the proxy's copy, both written by Python: the key never passes a command line.
key_args=()
[[ -z ${LLM_API_KEY_FILE:-} ]] || key_args=(--api-key-file "$LLM_API_KEY_FILE")
"$MH_CLI" llm-proxy backend-env "$scratch/backend.env" --key-out "$scratch/server.key" "${key_args[@]}" || exit 2
port=$(mh_free_port)
mh_llm_cmd "$model" "$port" "$scratch" "$scratch/backend.env"
server_pid="" proxy_pid=""
cleanup() {
    rm -f "$state/url"  # first: agents watching it stop before the port is free
    mh_stop_pid "$proxy_pid"
    proxy_pid=""
    # Its own process group: a server's workers (vLLM starts several) go with it.
    mh_stop_group "$server_pid" 60
    server_pid=""
    rm -rf "$state/keys" "$scratch"
}
trap cleanup EXIT
# Asked to stop (scancel, the end of the hetjob's agent): a normal end, exit 0, said once however
# many signals come. A server that fails on its own keeps its exit code below.
trap 'trap "" TERM INT; mh_log "LLM server stopped on request"; exit 0' TERM INT
hint=""  # a job of its own is found by its id; a hetjob's step (LLM_BASE_URL=job) is its agent's alone
[[ -z ${SLURM_JOB_ID:-} || -n ${SLURM_HET_SIZE:-} ]] || hint="; agents: LLM_BASE_URL=auto:$SLURM_JOB_ID"
mh_log "LLM server for $model (job $job, $(mh_gpu_count) GPU(s), $([[ $MH_RUNTIME == apptainer && -n ${LLM_SIF:-} ]] && echo "image $LLM_SIF" || echo "on the host")) on node ${SLURMD_NODENAME:-$(hostname)}, port $port of 127.0.0.1 behind the proxy$hint"
setsid "${MH_CMD[@]}" &
server_pid=$!
"$MH_CLI" llm-proxy serve --model "$model" --backend-port "$port" --backend-pid "$server_pid" \
    --server-key-file "$scratch/server.key" --state-dir "$state" --timeout "${LLM_READY_TIMEOUT:-900}" &
proxy_pid=$!
wait -n || true  # the first of the two to end
if mh_llm_pid_running "$server_pid"; then
    rc=0
    wait "$proxy_pid" || rc=$?
    proxy_pid=""
    (( rc != 2 )) || exit 2  # it never got ready: its line above says why
    mh_log "ERROR: the LLM proxy exited with code $rc: stopping the LLM server"
    exit 1
fi
rc=0
wait "$server_pid" || rc=$?
server_pid=""
# The proxy sees it too and exits: 2 when the server never got ready (its line says why).
for (( i = 0; i < 150; i++ )); do mh_llm_pid_running "$proxy_pid" || break; sleep 0.1; done
if ! mh_llm_pid_running "$proxy_pid"; then
    proxy_rc=0
    wait "$proxy_pid" || proxy_rc=$?
    proxy_pid=""
    (( proxy_rc != 2 )) || exit 2
fi
mh_log "LLM server exited with code $rc"
exit "$rc"
