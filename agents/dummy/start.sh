#!/usr/bin/env bash
# Dummy (smoke-test) agent: proves the plumbing, not machine learning.
# Copies the public sample submission to submission/submission.csv, asks the grading server
# whether it is valid through validate_submission.sh (the overlay-rewritten copy), records the
# verdict in logs/, leaves a file in code/ and logs/, and exits 0 only when the server said valid.
# AGENT_HOME (default /home) prefixes every path, so it also runs without a container.
# `start.sh --run CMD` (an argparse kwarg `run: CMD` of a variant) runs CMD with bash instead: the
# tests' attack and fault agents are variants of this one (tests/bats/helpers.bash: probe_variant).
set -euo pipefail
if [[ ${1:-} == --run ]]; then
    [[ $# == 2 ]] || { echo "usage: start.sh [--run COMMAND]" >&2; exit 2; }
    exec bash -c "$2"
fi
(( $# == 0 )) || { echo "start.sh: unknown arguments '$*' (usage: start.sh [--run COMMAND])" >&2; exit 2; }

HOME_DIR=${AGENT_HOME:-/home}
DATA=$HOME_DIR/data
SUBMISSION=$HOME_DIR/submission/submission.csv
LOGS=$HOME_DIR/logs
CODE=$HOME_DIR/code
VALIDATE=${VALIDATE_SCRIPT:-$HOME_DIR/validate_submission.sh}
VERDICT=$LOGS/validation_verdict.json

log() { printf '[dummy-agent %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOGS/dummy_agent.log" >&2; }

mkdir -p "$HOME_DIR/submission" "$LOGS" "$CODE"
log "user $(id -un 2>/dev/null || id -u), competition ${COMPETITION_ID:-unset}, data in $DATA"
[[ -f $DATA/sample_submission.csv ]] || { log "ERROR: $DATA/sample_submission.csv not found: is the public data bound at $DATA?"; exit 2; }

cp "$DATA/sample_submission.csv" "$SUBMISSION"
log "wrote $SUBMISSION ($(wc -l <"$SUBMISSION") lines) from the sample submission"
# What a real agent would leave behind: its code and its own log.
cat >"$CODE/solution.sh" <<CODE
# dummy agent solution: the sample submission is the prediction
cp "\$AGENT_HOME/data/sample_submission.csv" "\$AGENT_HOME/submission/submission.csv"
CODE

# /home/agent is the run's own writable copy, as upstream's dummy checks (touch $AGENT_DIR/...)
echo "$COMPETITION_ID" >"${AGENT_DIR:-$HOME_DIR/agent}/agent_was_here.txt"
log "validating with $VALIDATE"
rc=0
bash "$VALIDATE" "$SUBMISSION" >"$VERDICT.tmp" 2>>"$LOGS/dummy_agent.log" || rc=$?
mv -f "$VERDICT.tmp" "$VERDICT"
log "server answered (curl exit $rc): $(cat "$VERDICT")"
# Upstream's server answers {"result": "Submission is valid."}; ours adds "valid": true. Read with
# grep, not Python: an agent image need not carry an interpreter for this.
verdict=invalid
if grep -Eq '"valid"[[:space:]]*:[[:space:]]*true' "$VERDICT"; then
    verdict=valid
elif ! grep -q '"valid"' "$VERDICT" && grep -Eq '"result"[[:space:]]*:[[:space:]]*"Submission is valid\."' "$VERDICT"; then
    verdict=valid
fi
log "verdict: $verdict"
[[ $rc == 0 && $verdict == valid ]]
