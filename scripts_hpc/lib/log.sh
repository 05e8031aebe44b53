# shellcheck shell=bash
# Logging: one line per event on stderr; mh_die says what is wrong and what to do, exit 2; each
# script's usage is its own header comment (mh_help, mh_usage_error). Every script of the project
# sources this file (through lib.sh, or alone: build_checker.sh, provision/, bench/).

# MLEBENCH_HPC_DEBUG=1 (exported, so a job's steps and child scripts trace too): every command from
# here on is printed with its file and line. The token never is (mh_new_token turns the trace off).
if [[ ${MLEBENCH_HPC_DEBUG:-} == 1 ]]; then
    export PS4='+ ${BASH_SOURCE[0]+${BASH_SOURCE[0]##*/}}:${LINENO}: '  # set -u safe: no source from stdin
    set -x
fi

# Around a secret in bash: MLEBENCH_HPC_DEBUG's trace would print it into the job output.
mh_trace_pause() { _MH_TRACED=${-//[^x]/}; set +x; }
mh_trace_resume() { [[ -z ${_MH_TRACED:-} ]] || set -x; }

mh_log() { printf '[mlebench-hpc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One line that says what is wrong and what to do; exit 2 (config/usage errors).
mh_die() { printf 'mlebench-hpc: error: %s\n' "$*" >&2; exit 2; }

# The comment block at the top of the entry script that is running (its documentation), without
# '# ', #SBATCH and shellcheck lines. Under sbatch that script is Slurm's copy of it, same text.
_mh_script_header() {
    sed -n '2,/^[^#]/{/^#SBATCH/d;/^# shellcheck/d;/^#/!d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[-1]}"
}

# --help or -h as the first argument: print the script's header, exit 0. Args: the script's args
mh_help() {
    [[ ${1:-} == --help || ${1:-} == -h ]] || return 0
    _mh_script_header
    exit 0
}

# A usage error: what is wrong in one line, then the header's usage lines; exit 2.
mh_usage_error() {
    printf 'mlebench-hpc: error: %s\n' "$*" >&2
    _mh_script_header | sed -n '/^usage:/,/^[^ ]/{/^usage:/p;/^ /p;}' >&2
    exit 2
}

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

# Copy stdin to stdout line by line, unbuffered, with every control character escaped visibly:
# C0 but tab and newline (\x1b, CR as \r), DEL, and in UTF-8 the C1 controls and the bidi
# overrides, isolates and marks (\u009b, \u202e). For what the agent prints on its way into the job
# output, which users read in a terminal. Host tools only: no interpreter starts.
mh_printable_stream() {
    [[ -n ${_MH_PRINTABLE_SED:-} ]] || _MH_PRINTABLE_SED=$(_mh_printable_sed)
    LC_ALL=C sed -u -e "$_MH_PRINTABLE_SED"
}

# The sed script of mh_printable_stream: lines without a suspicious byte pass untouched.
_mh_printable_sed() {
    local i script='/[\x00-\x08\x0b-\x1f\x7f\xc2\xd8\xe2]/!b;s/\x0d/\\r/g;'
    for ((i = 0; i < 32; i++)); do
        (( i == 9 || i == 10 || i == 13 )) || printf -v script '%ss/\\x%02x/\\\\x%02x/g;' "$script" "$i" "$i"
    done
    script+='s/\x7f/\\x7f/g;'
    for ((i = 0x80; i < 0xa0; i++)); do
        printf -v script '%ss/\\xc2\\x%02x/\\\\u00%02x/g;' "$script" "$i" "$i"
    done
    script+='s/\xd8\x9c/\\u061c/g;s/\xe2\x80\x8e/\\u200e/g;s/\xe2\x80\x8f/\\u200f/g;'
    for i in a b c d e; do script+="s/\\xe2\\x80\\xa$i/\\\\u202$i/g;"; done
    for i in 6 7 8 9; do script+="s/\\xe2\\x81\\xa$i/\\\\u206$i/g;"; done
    printf '%s' "$script"
}
