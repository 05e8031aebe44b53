#!/bin/bash

# This script is a tool for agents to submit a file to the grading server for validation.

# validate_submission.sh
# Usage: ./validate_submission.sh user_submission.csv
#
# Same text and behaviour as upstream MLE-bench's script. The URL below is rewritten to the
# real grading server (an overlay file bound over this one) before the agent starts.
# The grading server answers 401 without the run's token: GRADING_SERVER_TOKEN (set in the
# agent's environment) is sent as a header.

SUBMISSION_FILE=$1
SERVER_URL="http://localhost:5000/validate"

if [ -z "$SUBMISSION_FILE" ]; then
    echo "Usage: $0 <submission_file>"
    exit 1
fi

if [ ! -f "$SUBMISSION_FILE" ]; then
    echo "File $SUBMISSION_FILE does not exist."
    exit 1
fi

if [ -n "${GRADING_SERVER_TOKEN:-}" ]; then
    curl -sS -X POST -H "X-Grading-Token: ${GRADING_SERVER_TOKEN}" -F "file=@${SUBMISSION_FILE}" "${SERVER_URL}"
else
    curl -sS -X POST -F "file=@${SUBMISSION_FILE}" "${SERVER_URL}"
fi
