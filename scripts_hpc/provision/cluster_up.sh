#!/usr/bin/env bash
# cluster_up.sh: `make cluster-up`, the site admin's step. Brings up on this machine, for
# development and CI, what a cluster offers its users: a local Slurm (slurm_start.sh), a real
# Apptainer (install_apptainer.sh), and a Docker daemon with an image registry on 127.0.0.1:5000
# that holds the base image 127.0.0.1:5000/mlebench-hpc/base:bookworm (registry_up.sh; it prints
# the BASE_IMAGE line users put in their config). Root only: on a real cluster, use its Slurm,
# Apptainer and registry and point the config at them.
# Idempotent: a cluster already up with the same config is only health-checked.
#
# Afterwards plain sbatch/squeue/scontrol work in any shell (config linked into /etc/slurm):
# nodes "$(hostname -s)" and "localhost", partition "debug", 1 fake gpu gres per node.
# Knobs: MLEBENCH_SLURM_* (see slurm_start.sh), MLEBENCH_SKIP_APPTAINER=1 (Slurm only),
# MLEBENCH_SKIP_DOCKER=1 and the others of registry_up.sh.
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly T_START=$EPOCHREALTIME

log() { printf '[cluster_up %(%T)T] %s\n' -1 "$*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

if [[ $(id -u) != 0 ]]; then
    echo "cluster_up.sh: needs root (installs Slurm, Apptainer and Docker, starts daemons): run 'sudo make" \
        "cluster-up'; on a real cluster use its Slurm instead and set SLURM_PARTITION in your config" >&2
    exit 2
fi

bash "$HERE/slurm_start.sh"

apptainer_works() { command -v apptainer >/dev/null && apptainer version >/dev/null 2>&1; }
if [[ ${MLEBENCH_SKIP_APPTAINER:-0} == 1 ]]; then
    log "MLEBENCH_SKIP_APPTAINER=1: not checking Apptainer"
elif apptainer_works; then
    log "apptainer $(apptainer version) already works"
elif [[ -f $HERE/install_apptainer.sh ]]; then
    t0=$EPOCHREALTIME
    bash "$HERE/install_apptainer.sh"
    apptainer_works || { log "ERROR: install_apptainer.sh ran but 'apptainer version' fails"; exit 2; }
    log "apptainer $(apptainer version) installed in $(since "$t0") s"
else
    log "WARNING: no apptainer and no $HERE/install_apptainer.sh to install it;" \
        "Apptainer tests will be skipped"
fi
# The site's image registry with the base image; it needs debootstrap (install_apptainer.sh).
if [[ ${MLEBENCH_SKIP_DOCKER:-0} == 1 || ${MLEBENCH_SKIP_APPTAINER:-0} == 1 ]]; then
    log "MLEBENCH_SKIP_DOCKER/MLEBENCH_SKIP_APPTAINER: no Docker daemon, no registry"
else
    t0=$EPOCHREALTIME
    bash "$HERE/registry_up.sh"
    log "Docker daemon + registry up in $(since "$t0") s"
fi
log "up in $(since "$T_START") s; try: sinfo; sbatch --wrap hostname"
