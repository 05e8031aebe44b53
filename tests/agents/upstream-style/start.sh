#!/bin/bash
# As upstream's start scripts: the agent env, then the work (here: the sample submission). Records
# what it was given, for the tests: its arguments, its environment, the secret's digest (never the
# secret), what it found in its own /home/agent, and the server's verdict through upstream's
# /home/validate_submission.sh.
set -x
eval "$(conda shell.bash hook)"
conda activate agent
python -c "import sys; print(sys.prefix)"
printf '%s\n' "$@" >"$LOGS_DIR/argv.txt"
for v in COMPETITION_ID TIME_LIMIT_SECS STEP_LIMIT MODE SUBMISSION_DIR LOGS_DIR CODE_DIR AGENT_DIR GREETING; do
    printf '%s=%s\n' "$v" "${!v-<unset>}"
done >"$LOGS_DIR/env.txt"
{ set +x; } 2>/dev/null
if [ -n "${MY_API_KEY:-}" ]; then printf '%s' "$MY_API_KEY" | sha256sum | cut -d' ' -f1 >"$LOGS_DIR/secret.sha256"; fi
set -x
ls -A "$AGENT_DIR" >"$LOGS_DIR/agent_dir_before.txt"
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$AGENT_DIR/run-marker"
cp "$AGENT_DIR/run-marker" "$LOGS_DIR/run-marker"
touch "$AGENT_DIR/agent_was_here.txt"
cp /home/data/sample_submission.csv "$SUBMISSION_DIR/submission.csv"
bash /home/validate_submission.sh "$SUBMISSION_DIR/submission.csv" >"$LOGS_DIR/verdict.json"
cat "$LOGS_DIR/verdict.json"
