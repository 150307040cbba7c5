#!/usr/bin/env bash
# The test command (README, CI): installs yolotr into .venv and runs the whole test suite.
#   bash launch/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh .venv
export OMP_WAIT_POLICY=PASSIVE WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true
status=0
.venv/bin/python -m pytest -ra --durations=40 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "launch/test.sh: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
