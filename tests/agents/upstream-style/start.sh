#!/bin/bash
# As upstream's start scripts: the agent env, then the work (here: the sample submission).
set -x
eval "$(conda shell.bash hook)"
conda activate agent
python -c "import sys; print(sys.prefix)"
touch "$AGENT_DIR/agent_was_here.txt"
cp /home/data/sample_submission.csv "$SUBMISSION_DIR/submission.csv"
bash /home/validate_submission.sh "$SUBMISSION_DIR/submission.csv"
