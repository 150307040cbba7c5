#!/usr/bin/env bash
# The test command (README, CI): installs yolotr into .venv and runs the whole test suite.
#   bash launch/test.sh [pytest args...]     (with arguments: one pytest run of exactly those)
#
# Without arguments the suite runs as two pytest processes side by side: the trainer's multi-process tests
# (tests/engine: mostly torchrun starts, rendezvous and waits, which leave a core idle) and everything else (model,
# data, eval, CLI, launcher and study tests; new test folders land here), which also takes the signal, stall, full-disk
# and rank-launch tests of tests/engine (`moved`) so that the two end together. Each
# has its own session fixtures and temporary folders; the second one's output is printed when both have ended.
# Exit: the first failure's code; a run that collected no test is a failure, not a pass.
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

# The multi-process files of tests/engine that run beside the others, so that the two halves end together.
moved=(tests/engine/test_preemption.py tests/engine/test_ctrl_c.py tests/engine/test_stalls.py
       tests/engine/test_full_disk.py tests/engine/test_ranks_from_the_cli.py)
processes=()
for path in "${moved[@]}"; do processes+=(--ignore="$path"); done
processes+=(tests/engine)
others=("${moved[@]}")
for path in tests/*; do  # every test folder and top-level test file but tests/engine: pytest's --ignore=tests/engine
    case "$path" in        # would also drop the moved file named beside it
        tests/engine | tests/__pycache__) ;;
        tests/test_*.py) others+=("$path") ;;
        *) if [ -d "$path" ]; then others+=("$path"); fi ;;
    esac
done
others_log=$(mktemp "${TMPDIR:-/tmp}/yolotr-tests.XXXXXX")
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
