#!/usr/bin/env bash
# The test command (README, CI): installs yolotr into .venv and runs the whole test suite.
#   bash launch/test.sh [pytest args...]     (with arguments: one pytest run of exactly those)
#
# Without arguments the suite runs as two pytest processes side by side: the trainer's multi-process tests
# (tests/engine: mostly torchrun starts, rendezvous and waits, which leave a core idle) and everything else (model,
# data, eval, CLI, launcher and study tests; new test folders land here). tests/engine is the longer of the two
# (about 1000 s against 450 s on 2 cores), so a test that needs minutes belongs elsewhere. Each has its own session
# fixtures and temporary folders; the second one's output is printed when both have ended. Exit: the first failure's
# code; a run that collected no test is a failure, not a pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh .venv
export OMP_WAIT_POLICY=PASSIVE WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true

check_status() {  # check_status NAME CODE
    if [ "$2" -eq 5 ]; then
        echo "launch/test.sh: pytest collected no tests ($1); that is a failure, not a pass" >&2
        return 1
    fi
    return "$2"
}

if [ "$#" -gt 0 ]; then
    status=0
    .venv/bin/python -m pytest -ra --durations=40 "$@" || status=$?
    check_status "pytest $*" "$status"
    exit $?
fi

processes=(tests/engine)
others_log=$(mktemp "${TMPDIR:-/tmp}/yolotr-tests.XXXXXX")
others=(--ignore=tests/engine tests)
.venv/bin/python -m pytest -ra --durations=20 -p no:cacheprovider "${others[@]}" >"$others_log" 2>&1 &
others_pid=$!
status_processes=0
.venv/bin/python -m pytest -ra --durations=40 -p no:cacheprovider "${processes[@]}" || status_processes=$?
status_others=0
wait "$others_pid" || status_others=$?
echo
echo "===== the other tests (run beside the multi-process ones) ====="
cat "$others_log"
rm -f "$others_log"
final=0
check_status "${processes[*]}" "$status_processes" || final=$?
check_status "the other tests" "$status_others" || { code=$?; [ "$final" -ne 0 ] || final=$code; }
exit "$final"
