# shellcheck shell=bash
# Logging: one line per event on stderr; mh_die says what is wrong and what to do, exit 2.

mh_log() { printf '[mlebench-hpc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One line that says what is wrong and what to do; exit 2 (config/usage errors).
mh_die() { printf 'mlebench-hpc: error: %s\n' "$*" >&2; exit 2; }

mh_warn_no_isolation() {
    mh_log "WARNING: ######################################################################"
    mh_log "WARNING: running WITHOUT containers: isolation is OFF, the agent could read the answers."
    mh_log "WARNING: fine for a demo; never for results you publish (install apptainer)."
    mh_log "WARNING: ######################################################################"
}

# Print where the results are, the last lines of every agent job.
mh_print_outro() {
    local run=$1
    echo "run directory: $run"
    echo "grade it with: make -C $MH_ROOT grade RUN=$run"
    echo "MLEBENCH_RUN_DIR=$run"
}
