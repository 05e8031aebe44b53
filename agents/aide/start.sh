#!/usr/bin/env bash
# AIDE agent, following upstream MLE-bench's agents/aide/start.sh conventions:
# TIME_LIMIT_SECS and STEP_LIMIT from the environment; full instructions = instructions.txt
# (paths made relative) + additional_notes.txt (variables substituted) + the competition's
# description.md; AIDE's outputs end up in /home/logs, /home/code and /home/submission.
# Differences, because the Apptainer image is read-only and AIDE comes from PyPI (aideml):
#   - AIDE works in AIDE_WORKDIR (default /tmp/aide, the job's scratch), not in /home/agent;
#   - PyPI's aideml names its experiment "<n>-exp" and keeps the latest submission in
#     working/submission.csv: it is copied to /home/submission every AIDE_SYNC_SECS and at the end,
#     and best_solution.py to /home/code;
#   - the agent's own time-out leaves AIDE_MARGIN_SECS for that final copy.
# API keys (OPENAI_API_KEY, ...) come only from the environment (the launcher's 0600 --env-file);
# nothing here prints them or puts them on a command line. Extra arguments go to `aide`
# (e.g. agent.code.model=gpt-4o-2024-08-06).
set -euo pipefail

HOME_DIR=${AGENT_HOME:-/home}
AGENT_DIR=${AGENT_DIR:-$HOME_DIR/agent}
SUBMISSION_DIR=$HOME_DIR/submission LOGS_DIR=$HOME_DIR/logs CODE_DIR=$HOME_DIR/code
WORK=${AIDE_WORKDIR:-/tmp/aide}
TIME_LIMIT_SECS=${TIME_LIMIT_SECS:-86400}
STEP_LIMIT=${STEP_LIMIT:-500}
MARGIN=${AIDE_MARGIN_SECS:-60}
SYNC_SECS=${AIDE_SYNC_SECS:-60}
export STEP_LIMIT

log() { printf '[aide-start %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

if [[ -z ${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${OPENROUTER_API_KEY:-}${GEMINI_API_KEY:-} ]]; then
    die "no API key in the environment: put OPENAI_API_KEY=... (or ANTHROPIC_/OPENROUTER_/GEMINI_API_KEY) in a 0600 file and set AGENT_ENV_FILE in the config"
fi
[[ -f $HOME_DIR/data/description.md ]] || die "$HOME_DIR/data/description.md not found: is the public data bound at $HOME_DIR/data?"
mkdir -p "$WORK" "$SUBMISSION_DIR" "$LOGS_DIR" "$CODE_DIR"

# determine hardware available (as upstream)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name --format=csv,noheader >/dev/null 2>&1; then
    HARDWARE=$(nvidia-smi --query-gpu=name --format=csv,noheader | sed 's/^[ \t]*//; s/[ \t]*$//' \
        | sort | uniq -c | sed 's/^ *\([0-9]*\) *\(.*\)$/\1 \2/' | paste -sd ', ' -)
else
    HARDWARE="a CPU"
fi
export HARDWARE
python3 -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'WARNING: No GPU')" || true

format_time() {
    local t=$1
    echo "$((t / 3600))hrs $(((t % 3600) / 60))mins $((t % 60))secs"
}
TIME_LIMIT=$(format_time "$TIME_LIMIT_SECS")
export TIME_LIMIT

# full instructions: general ones with /home/ paths made relative, agent notes, competition text
instructions=$HOME_DIR/instructions.txt
if [[ ${OBFUSCATE:-} == true ]]; then instructions=$HOME_DIR/instructions_obfuscated.txt; fi
desc=$HOME_DIR/data/description.md
if [[ ${OBFUSCATE:-} == true && -f $HOME_DIR/data/description_obfuscated.md ]]; then desc=$HOME_DIR/data/description_obfuscated.md; fi
full=$WORK/full_instructions.txt
{
    sed 's|/home/||g' "$instructions"
    echo ""
    # shellcheck disable=SC2016 # envsubst takes the variable names literally
    envsubst '${HARDWARE} ${TIME_LIMIT} ${STEP_LIMIT}' <"$AGENT_DIR/additional_notes.txt"
    printf "\nCOMPETITION INSTRUCTIONS\n------\n\n"
    cat "$desc"
} >"$full"
cp "$full" "$LOGS_DIR/full_instructions.txt"

# Copy AIDE's latest submission and best solution out of its workspace (atomically).
sync_outputs() {
    local f
    for f in "$WORK"/workspaces/*-exp/working/submission.csv; do
        [[ -f $f ]] || continue
        cp -f "$f" "$SUBMISSION_DIR/.submission.csv.tmp" && mv -f "$SUBMISSION_DIR/.submission.csv.tmp" "$SUBMISSION_DIR/submission.csv"
    done
    for f in "$LOGS_DIR"/aide/*-exp/best_solution.py; do
        [[ -f $f ]] && cp -f "$f" "$CODE_DIR/best_solution.py"
    done
    return 0
}

budget=$((TIME_LIMIT_SECS > 2 * MARGIN ? TIME_LIMIT_SECS - MARGIN : TIME_LIMIT_SECS))
cd "$WORK"
( while sleep "$SYNC_SECS"; do sync_outputs; done ) &
syncer=$!
trap 'kill "$syncer" 2>/dev/null || true; sync_outputs' EXIT

rc=0
timeout "$budget" aide data_dir="$HOME_DIR/data/" desc_file="$full" exp_name=exp \
    log_dir="$LOGS_DIR/aide" workspace_dir="$WORK/workspaces" copy_data=False \
    agent.steps="$STEP_LIMIT" exec.timeout=32400 \
    agent.search.max_debug_depth=20 agent.search.debug_prob=1 \
    "$@" || rc=$?
if ((rc == 124)); then log "Timed out after $(format_time "$budget")"; fi
exit "$rc"
