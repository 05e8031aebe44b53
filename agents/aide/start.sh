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
# A local OpenAI-compatible endpoint (vLLM, llama.cpp, SGLang): LLM_BASE_URL (ending in /v1),
# LLM_MODEL and optionally LLM_API_KEY (the launcher's names; aideml's own OPENAI_BASE_URL works
# too). One model then does code, feedback and the report; no API key is needed. aideml 0.2.2
# talks chat completions to OPENAI_BASE_URL only for model names it does not take for OpenAI's,
# Anthropic's or Google's: any other name would silently go to the public API, so it is refused.
# The final report (AIDE_REPORT_SECS, default 300; 0 = none) runs after the steps as its own
# bounded step: aideml retries an unreachable endpoint forever, so it cannot hang the run.
set -euo pipefail

# AIDE is in mlebench-env's agent environment (conda, or the light env's stand-in), as upstream's
if command -v conda >/dev/null 2>&1; then
    eval "$(conda shell.bash hook)"
    conda activate agent
fi

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

REPORT_SECS=${AIDE_REPORT_SECS:-300}
[[ $REPORT_SECS =~ ^[0-9]+$ ]] || die "AIDE_REPORT_SECS must be a number of seconds, got '$REPORT_SECS'"

# The model settings of aideml 0.2.2 (agent.code.model, agent.feedback.model, report.model).
model_args=()
report_model=""
if [[ -n ${LLM_BASE_URL:-} || -n ${OPENAI_BASE_URL:-} ]]; then
    [[ -n ${LLM_MODEL:-} ]] \
        || die "an endpoint is set (LLM_BASE_URL/OPENAI_BASE_URL) but LLM_MODEL is not: set LLM_MODEL to a model the endpoint lists at /v1/models"
    # aideml's provider rules (backend/__init__.py, backend_openai.py): these names never reach OPENAI_BASE_URL
    if [[ $LLM_MODEL =~ ^(gpt-.*|o[0-9]-.*|codex-mini-latest|claude-.*|gemini-.*)$ ]]; then
        die "LLM_MODEL=$LLM_MODEL looks like a hosted model name to aideml, which would send it to the public API, not to the endpoint: serve it under another name (e.g. vllm serve --served-model-name local-$LLM_MODEL)"
    fi
    if [[ -n ${LLM_BASE_URL:-} ]]; then
        export OPENAI_BASE_URL=$LLM_BASE_URL
        # The openai client insists on a key; a local endpoint ignores it. Never forward an
        # OPENAI_API_KEY meant for the public API to another endpoint.
        export OPENAI_API_KEY=${LLM_API_KEY:-no-key-needed}
    else
        export OPENAI_API_KEY=${OPENAI_API_KEY:-no-key-needed}
    fi
    model_args=("agent.code.model=$LLM_MODEL" "agent.feedback.model=$LLM_MODEL" "report.model=$LLM_MODEL")
    report_model=$LLM_MODEL
    log "LLM endpoint $OPENAI_BASE_URL, model $LLM_MODEL (code, feedback, report)"
elif [[ -z ${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${OPENROUTER_API_KEY:-}${GEMINI_API_KEY:-} ]]; then
    die "no LLM configured: set LLM_BASE_URL and LLM_MODEL in the config for an OpenAI-compatible endpoint, or put OPENAI_API_KEY=... (or ANTHROPIC_/OPENROUTER_/GEMINI_API_KEY) in a 0600 file and set AGENT_ENV_FILE"
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
deadline=$((SECONDS + budget))
cd "$WORK"
# The sleep is waited for, so that TERM stops it too (an orphaned sleep would hold the outputs open).
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while true; do
        sleep "$SYNC_SECS" &
        nap=$!
        wait "$nap"
        sync_outputs
    done
) &
syncer=$!
trap 'kill "$syncer" 2>/dev/null || true; sync_outputs' EXIT

rc=0
# generate_report=False: the report is the bounded step below, never part of the agent's run.
timeout "$budget" aide data_dir="$HOME_DIR/data/" desc_file="$full" exp_name=exp \
    log_dir="$LOGS_DIR/aide" workspace_dir="$WORK/workspaces" copy_data=False \
    agent.steps="$STEP_LIMIT" exec.timeout=32400 \
    agent.search.max_debug_depth=20 agent.search.debug_prob=1 \
    "${model_args[@]}" "$@" generate_report=False || rc=$?
if ((rc == 124)); then log "Timed out after $(format_time "$budget")"; fi
sync_outputs

# The final report: at most REPORT_SECS and never past the budget; its failure is logged, not fatal.
report_secs=$((deadline - SECONDS < REPORT_SECS ? deadline - SECONDS : REPORT_SECS))
journal=$(compgen -G "$LOGS_DIR/aide/*-exp/journal.json" | tail -n1 || true)
if ((rc == 0 && report_secs > 0)) && [[ -n $journal ]]; then
    log "writing the final report (at most ${report_secs}s)"
    rrc=0
    timeout --kill-after=10 "$report_secs" python3 "$AGENT_DIR/aide_report.py" --journal "$journal" \
        --desc-file "$full" --model "${report_model:-gpt-4.1}" "$@" || rrc=$?
    if ((rrc != 0)); then log "no final report (exit $rrc$( ((rrc == 124)) && echo ": no answer within ${report_secs}s"))"; fi
fi
exit "$rc"
