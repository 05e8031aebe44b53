#!/usr/bin/env bash
# cluster_down.sh: `make cluster-down`. Stops the local Slurm test cluster of cluster_up.sh:
# cancels its jobs, stops its daemons by PID, kills leftover processes of its jobs, removes the
# /etc/slurm links that point at it. Apptainer stays installed (it runs no daemon).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

if [[ $(id -u) != 0 ]]; then
    echo "cluster_down.sh: needs root (stops root's Slurm daemons): run 'sudo make cluster-down';" \
        "on a real cluster there is nothing to stop" >&2
    exit 2
fi
exec bash "$HERE/slurm_stop.sh" "$@"
