#!/usr/bin/env bash
# cluster_down.sh: `make cluster-down`. Stops what cluster_up.sh started: the local Slurm test
# cluster (slurm_stop.sh: cancels its jobs, stops its daemons by PID, kills leftover processes of
# its jobs, removes the /etc/slurm links that point at it), then the Docker daemon and the
# registry (registry_down.sh). Apptainer stays installed (it runs no daemon).
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

if [[ $(id -u) != 0 ]]; then
    echo "cluster_down.sh: needs root (stops root's Slurm and Docker daemons): run 'sudo make cluster-down';" \
        "on a real cluster there is nothing to stop" >&2
    exit 2
fi
rc=0
bash "$HERE/slurm_stop.sh" "$@" || rc=$?
bash "$HERE/registry_down.sh" || rc=$?
exit "$rc"
