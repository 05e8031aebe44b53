#!/usr/bin/env bash
# tests/lint.sh: `make lint`. shellcheck -x on every shell script of the checkout (tracked or not,
# git-ignored files excluded) and ruff on the Python. Installs shellcheck via apt when missing
# and root. Exit 0 only when both are clean.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[lint] %s\n' "$*"; }

# Git pathspecs: '*' also matches '/', so 'scripts_hpc/*.sh' covers every depth.
readonly SHELL_GLOBS=('scripts_hpc/*.sh' 'scripts_hpc/*.env' 'bench/*.sh' 'environment/*.sh' 'agents/*/*.sh' 'tests/*.sh' 'tests/*.bash' 'tests/*.bats' '.ci/run')

shell_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files --cached --others --exclude-standard -- "${SHELL_GLOBS[@]}"
    else
        find scripts_hpc tests -name '*.sh' -o -name '*.bash'
        find environment agents -maxdepth 2 -name '*.sh'
        echo .ci/run
    fi 2>/dev/null | sort -u | while read -r f; do [[ -f $f ]] && echo "$f"; done
}

if ! command -v shellcheck >/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing shellcheck (apt)"
    [[ ${MLEBENCH_APT_UPDATED:-0} == 1 ]] || apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 install shellcheck >/dev/null
fi

rc=0
mapfile -t files < <(shell_files)
if ! command -v shellcheck >/dev/null; then
    log "FAIL: shellcheck not installed: apt-get install shellcheck (or run as root)"
    rc=1
elif ((${#files[@]} == 0)); then
    log "FAIL: no shell scripts found (run from the checkout)"
    rc=1
elif shellcheck -x --source-path=SCRIPTDIR "${files[@]}"; then
    log "shellcheck: ${#files[@]} files clean"
else
    log "FAIL: shellcheck found problems (above)"
    rc=1
fi

ruff=.venv/bin/ruff
[[ -x $ruff ]] || ruff=$(command -v ruff || true)
if [[ -z $ruff ]]; then
    log "FAIL: ruff not found: run 'make install'"
    rc=1
elif "$ruff" check helpers tests bench environment && "$ruff" format --check -q helpers tests bench environment; then
    log "ruff: clean"
else
    log "FAIL: ruff found problems (above)"
    rc=1
fi
exit "$rc"
