# shellcheck shell=bash
# mlebench-hpc: the one library every sbatch script sources; it loads scripts_hpc/lib/*.sh, one
# file per concern. Callers: set -euo pipefail; export MH_SCRIPTS=<dir of this file>; source it.
#   lib/log.sh         mh_log, mh_die, the no-isolation warning, the outro of every agent job
#   lib/config.sh      the CLI, the config (from the Python loader), the runtime
#   lib/slurm.sh       job ids, hetjob steps, the agent's time budget (pure)
#   lib/containers.sh  the apptainer command lines and the integrity check: flags live only here
#   lib/state.sh       token, agent env file, URL file, run metadata (through `mlebench-hpc run`)
#   lib/process.sh     stopping processes and process groups
# The files sit next to this one whoever sources it (a test may not set MH_SCRIPTS).
MH_SCRIPTS=${MH_SCRIPTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck source=scripts_hpc/lib/log.sh
source "$MH_SCRIPTS/lib/log.sh"
# shellcheck source=scripts_hpc/lib/config.sh
source "$MH_SCRIPTS/lib/config.sh"
# shellcheck source=scripts_hpc/lib/slurm.sh
source "$MH_SCRIPTS/lib/slurm.sh"
# shellcheck source=scripts_hpc/lib/containers.sh
source "$MH_SCRIPTS/lib/containers.sh"
# shellcheck source=scripts_hpc/lib/state.sh
source "$MH_SCRIPTS/lib/state.sh"
# shellcheck source=scripts_hpc/lib/process.sh
source "$MH_SCRIPTS/lib/process.sh"

# ------------------------------------------------------------------ LLM server (issue 10)
# A free TCP port of this node (a server that cannot bind port 0 itself, like vLLM, gets it;
# the tiny race with another process is caught by the readiness check's --pid).
mh_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()'
}

# GPUs this step may use: CUDA_VISIBLE_DEVICES, else Slurm's count, else 0.
mh_gpu_count() {
    local ids=${CUDA_VISIBLE_DEVICES:-${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}}
    if [[ -n $ids && $ids != NoDevFiles ]]; then
        local arr
        IFS=, read -r -a arr <<<"$ids"
        echo "${#arr[@]}"
    else
        echo "${SLURM_GPUS_ON_NODE:-0}"
    fi
}

# The LLM server: LLM_CMD run by `bash -c` in LLM_SIF (on the host when LLM_SIF is empty or
# without apptainer), with LLM_MODEL, LLM_MODEL_DIR, LLM_HOST, LLM_PORT and LLM_NUM_GPUS in its
# environment, the weights read-only, caches in scratch and the Hugging Face libraries offline
# (weights come from LLM_MODEL_DIR, never from the network). A key from LLM_API_KEY_FILE reaches
# it as LLM_API_KEY and VLLM_API_KEY through a 0600 env file. Fills MH_CMD. Args: model port scratch
mh_llm_cmd() {
    local model=$1 port=$2 scratch=$3 gpus cache key_env=""
    gpus=$(mh_gpu_count)
    if [[ -n ${LLM_API_KEY_FILE:-} ]]; then
        key_env=$scratch/llm-key.env
        (umask 077 && printf 'LLM_API_KEY=%s\nVLLM_API_KEY=%s\n' "$(head -n1 "$LLM_API_KEY_FILE")" \
            "$(head -n1 "$LLM_API_KEY_FILE")" >"$key_env")
    fi
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        cache=/tmp  # --workdir: the container's /tmp is $scratch/tmp on disk
    else
        cache=$scratch
    fi
    local envs=(LLM_MODEL="$model" LLM_MODEL_DIR="${LLM_MODEL_DIR:-}" LLM_HOST=0.0.0.0 LLM_PORT="$port"
        LLM_NUM_GPUS="$gpus" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$cache/hf"
        XDG_CACHE_HOME="$cache/cache" VLLM_CACHE_ROOT="$cache/vllm" TRITON_CACHE_DIR="$cache/triton"
        VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1)
    if [[ $(mh_runtime) == apptainer && -n ${LLM_SIF:-} ]]; then
        local flags=(--contain --cleanenv --no-home --pid --ipc --workdir "$scratch" --pwd /tmp) e
        [[ -n ${LLM_MODEL_DIR:-} ]] && flags+=(--bind "$LLM_MODEL_DIR:$LLM_MODEL_DIR:ro")
        for e in "${envs[@]}"; do flags+=(--env "$e"); done
        [[ -n $key_env ]] && flags+=(--env-file "$key_env")
        if (( gpus > 0 )); then flags+=(--nv); fi
        # shellcheck disable=SC2206 # extra flags are meant to split
        local extra=(${APPTAINER_EXTRA_FLAGS:-})
        MH_CMD=(apptainer exec "${flags[@]}" "${extra[@]}" "$LLM_SIF" bash -c "$LLM_CMD")
    else
        mkdir -p "$cache"
        if [[ -n $key_env ]]; then  # the key from the file, never on a command line
            # shellcheck disable=SC2016 # expanded by the inner bash
            MH_CMD=(bash -c 'set -a; source "$1"; set +a; shift; exec env "$@"' llm "$key_env" "${envs[@]}" bash -c "$LLM_CMD")
        else
            MH_CMD=(env "${envs[@]}" bash -c "$LLM_CMD")
        fi
    fi
}
