# shellcheck shell=bash
# The CLI, the config and the runtime. Values come from the one Python loader (config.py):
# bash never parses the config file itself and sets no default.

# MH_ROOT: checkout; MH_CLI: the mlebench-hpc command (the checkout's venv first).
mh_init() {
    MH_ROOT=$(cd "$MH_SCRIPTS/.." && pwd)
    if [[ -x $MH_ROOT/.venv/bin/mlebench-hpc ]]; then
        MH_CLI=$MH_ROOT/.venv/bin/mlebench-hpc
    elif command -v mlebench-hpc >/dev/null 2>&1; then
        MH_CLI=$(command -v mlebench-hpc)
    else
        mh_die "the mlebench-hpc helpers are not installed: run 'make install' in $MH_ROOT"
    fi
    export MH_ROOT MH_CLI
}

# The config in force, read and checked by the one Python loader (unknown keys, bad syntax,
# missing images, unprepared competitions: one line each) and evaluated here as quoted
# assignments: every key with its default filled in, MH_CONFIG and MH_STATE_BASE. Defaults live
# in helpers/mlebench_hpc/config.py only. Usage: mh_load_config [--need KEY]... [--competition C]...
mh_load_config() {
    local out
    out=$("$MH_CLI" config --shell "$@") || exit 2
    eval "$out"
}

# Everything an entry script does before its own work: the CLI, the runtime, and the config
# validated for COMP with the images it needs (only when containers are used). Sets MH_RUNTIME.
# A step of a job whose script already checked the config for COMP and these images inherits the
# values (exported) instead of starting Python again: MH_CONFIG_CHECKED="COMP:KEY KEY".
# Args: comp [image key]...
mh_setup() {
    local comp=$1 key need=() inherited=1 checked=${MH_CONFIG_CHECKED:-}
    shift
    [[ -n ${MH_CLI:-} ]] || mh_init
    MH_RUNTIME=$(mh_runtime)
    [[ $checked == "$comp:"* && -n ${MH_STATE_BASE:-} ]] || inherited=0
    for key in "$@"; do
        [[ $MH_RUNTIME == apptainer ]] && need+=(--need "$key")
        [[ " ${checked#*:} " == *" $key "* ]] || inherited=0
    done
    if (( ! inherited )); then
        mh_load_config "${need[@]}" --competition "$comp"
        MH_CONFIG_CHECKED="$comp:$*"
        export MH_CONFIG_CHECKED
    fi
    [[ $MH_RUNTIME == apptainer ]] || mh_warn_no_isolation
    export MH_RUNTIME
}

# apptainer (default when installed) or none (no isolation: demo fallback, said loudly).
mh_runtime() {
    case ${MLEBENCH_HPC_RUNTIME:-auto} in
        apptainer) command -v apptainer >/dev/null 2>&1 \
            || mh_die "MLEBENCH_HPC_RUNTIME=apptainer but apptainer is not on PATH: module load apptainer"
            echo apptainer ;;
        none) echo none ;;
        auto) if command -v apptainer >/dev/null 2>&1; then echo apptainer; else echo none; fi ;;
        *) mh_die "MLEBENCH_HPC_RUNTIME must be apptainer, none or auto, not '${MLEBENCH_HPC_RUNTIME}'" ;;
    esac
}

mh_require_prepared() {
    local comp=$1 part=$2
    [[ -d $DATA_DIR/$comp/prepared/$part ]] \
        || mh_die "competition $comp is not prepared in $DATA_DIR ($part/ missing): run 'mlebench prepare -c $comp'"
}
