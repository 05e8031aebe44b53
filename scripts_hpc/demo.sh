#!/usr/bin/env bash
# make demo: the main job on an embedded default, on whatever this machine has.
# Prepares the demo competitions, builds or reuses the images (when apptainer is installed),
# writes .demo/config.env, runs the heterogeneous job on the first demo competition with the
# smoke-test agent (through Slurm when sbatch answers, else locally with the same script),
# grades the run and prints the report. The last line is the run directory.
set -euo pipefail
export MH_SCRIPTS
MH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts_hpc/lib.sh
source "$MH_SCRIPTS/lib.sh"
mh_help "$@"
mh_init
cd "$MH_ROOT"

demo=$MH_ROOT/.demo
mkdir -p "$demo"
mh_log "preparing the demo competitions in $demo/data"
mapfile -t comps < <("$MH_CLI" prepare-demo --data-dir "$demo/data")
(( ${#comps[@]} > 0 )) || mh_die "prepare-demo printed no competition"
comp=${DEMO_COMPETITION:-${comps[0]}}

# Images go where the defaults (helpers/mlebench_hpc/config.py) say, unless IMAGE_DIR is set.
cat >"$demo/config.env" <<CFG
# written by make demo; use it with MLEBENCH_HPC_CONFIG=.demo/config.env
DATA_DIR="$demo/data"
${IMAGE_DIR:+IMAGE_DIR=\"$IMAGE_DIR\"}
OUTPUT_BASE="$demo/runs"
RUN_GROUP="demo"
TIME_LIMIT_SECS=600
STEP_LIMIT=10
TIME_MARGIN_SECS=30
CFG
export MLEBENCH_HPC_CONFIG=$demo/config.env
if command -v apptainer >/dev/null 2>&1 && [[ ${MLEBENCH_HPC_RUNTIME:-auto} != none ]]; then
    export MLEBENCH_HPC_RUNTIME=apptainer
    mh_log "building or reusing the images"
    bash "$MH_SCRIPTS/build_images.sh" --agent dummy --builder "${BUILDER:-auto}" >&2
else
    export MLEBENCH_HPC_RUNTIME=none
    mh_warn_no_isolation
fi
mh_log "config: $MLEBENCH_HPC_CONFIG"

out=$demo/hetjob-$comp.out
if command -v sbatch >/dev/null 2>&1 && sinfo -h >/dev/null 2>&1; then
    mh_log "submitting: sbatch --wait scripts_hpc/slurm_hetjob.sh $comp"
    rc=0
    sbatch --wait --output="$out" scripts_hpc/slurm_hetjob.sh "$comp" >&2 || rc=$?
    cat "$out" >&2
else
    mh_log "no Slurm here: running the same script locally"
    rc=0
    bash scripts_hpc/slurm_hetjob.sh "$comp" >"$out" 2>&1 || rc=$?
    cat "$out" >&2
fi
run=$(sed -n 's/^MLEBENCH_RUN_DIR=//p' "$out" | tail -n1)
[[ -n $run ]] || mh_die "the job printed no run directory (exit code $rc): see $out"
(( rc == 0 )) || mh_log "the job exited with code $rc: grading what it left"
"$MH_CLI" grade "$run" --data-dir "$demo/data" >&2
echo "$run"
