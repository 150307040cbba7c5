# Sourced (not run) by launch/launch.sh and launch/torchrun_elastic.sh: what every yolotr launcher sets up the same way.
#
# After sourcing: $venv_bin is the venv's bin folder, $gpus the number of visible GPUs, $quiet_agent the command that
# runs `accelerate launch ...` or `torchrun ...` (launch/quiet_agent.py), and the environment carries
#   PET_SIGNALS_TO_HANDLE          torchrun's elastic agent (also inside `accelerate launch`) catches these and forwards
#                                  them to the workers. SIGUSR1 is not among its defaults: unhandled, it kills the
#                                  agent and orphans the workers, so a Slurm preemption notice would lose the run.
#   TORCH_ELASTIC_SHUTDOWN_TIMEOUT how long the agent waits, after forwarding such a signal, before SIGKILLing the
#                                  workers: the time yolotr has to agree on a step and write its checkpoint (torch's
#                                  default of 30 s is short for a large model on a slow file system).
# Call `use_cpu_threads PROCS` once the number of processes per node is known.
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_bin="${YOLOTR_VENV:-$root/.venv}/bin"
if [ ! -x "$venv_bin/python" ]; then
    echo "${0##*/}: no Python at $venv_bin/python; run 'bash launch/setup_env.sh' or set YOLOTR_VENV" >&2
    exit 1
fi
# torch knows how many GPUs this process may use (CUDA_VISIBLE_DEVICES, MIG, ROCm), but importing it costs seconds:
# ask it only where a GPU device file exists at all.
gpus=0
if compgen -G "/dev/nvidia[0-9]*" >/dev/null || [ -e /dev/kfd ]; then
    gpus=$("$venv_bin/python" -c "import torch; print(torch.cuda.device_count())")
fi
# The launchers run through launch/quiet_agent.py: when a worker stops with one of yolotr's own exit codes (2 for a bad
# config key, ...), the user reads yolotr's one line and that code, not torch's ChildFailedError traceback about it.
# shellcheck disable=SC2034  # used by the scripts that source this file
quiet_agent=("$venv_bin/python" "$root/launch/quiet_agent.py")
export PET_SIGNALS_TO_HANDLE="${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}"
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}"

# One thread per rank and core group on CPU: more oversubscribes the cores and runs ~10x slower. On GPUs the
# user's setting (or torch's) stays.
use_cpu_threads() {
    local procs="$1" cores
    if [ "$gpus" -eq 0 ]; then
        cores=$(nproc)
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / procs > 0 ? cores / procs : 1 ))}"
    fi
}

# The trainer's exit codes a retry can fix (yolotr/errors.py: RETRYABLE; a test keeps the two equal): 1, a crash or a
# lost node, and 75, a preemption with its checkpoint written. A launcher killed by a signal (> 128) without a code
# from the trainer counts as a crash. The others fail the same way again and are never retried: 2 usage, 3 diverged,
# 4 corrupt data, 5 no valid checkpoint, 74 the run folder cannot be written.
retryable="1 75"

is_retryable() {
    local code="$1" c
    [ "$code" -gt 128 ] && return 0
    for c in $retryable; do [ "$code" -eq "$c" ] && return 0; done
    return 1
}

# run_launcher COMMAND...: runs a launcher with YOLOTR_STATUS_FILE set (every node's local rank 0 writes the run
# folder there once it is settled, and the exit code at the end), and sets $trainer_code (the trainer's own exit code,
# else the launcher's: torchrun and accelerate turn any worker failure into 1) and $trainer_run_dir.
run_launcher() {
    local status=0 status_file child sig
    status_file=$(mktemp "${TMPDIR:-/tmp}/yolotr-status.XXXXXX")
    # In the background, so that this shell can pass a preemption or stop signal on to the launcher (a shell waiting
    # in the foreground runs no trap until its child ends, and would die of SIGUSR1 itself).
    YOLOTR_STATUS_FILE="$status_file" "$@" &
    child=$!
    for sig in TERM INT HUP USR1 USR2; do
        # shellcheck disable=SC2064  # $child and $sig are meant to be expanded now
        trap "kill -$sig $child 2>/dev/null || true" "$sig"
    done
    while true; do
        wait "$child" && status=0 || status=$?
        kill -0 "$child" 2>/dev/null || break  # a trap interrupted `wait` while the launcher still runs
    done
    trap - TERM INT HUP USR1 USR2
    read -r trainer_code trainer_run_dir < <("$venv_bin/python" - "$status_file" "$status" <<'PY'
import json, sys
path, launcher = sys.argv[1], sys.argv[2]
try:
    status = json.load(open(path))
except (OSError, ValueError):
    status = {}
code = status.get("exit_code")
print(launcher if code is None else code, status.get("run_dir") or "")
PY
)
    rm -f "$status_file"
}

# with_restarts MAX COMMAND...: run_launcher, and after a crash (exit 1, or a launcher killed by a signal) run it
# again up to MAX times, resuming the run folder the first attempt settled on (`--resume RUN_DIR`; the last --resume
# given wins). A preemption (75) ends the loop: whoever preempted decides (a Slurm requeue, slurm/preemptible.sh).
# Exits with the trainer's own code.
with_restarts() {
    local max="$1" attempt=0 run_dir=""
    shift
    local resume=()
    while true; do
        run_launcher "$@" "${resume[@]}"
        run_dir="${trainer_run_dir:-$run_dir}"
        if [ "$trainer_code" -eq 0 ] || [ "$trainer_code" -eq 75 ] || ! is_retryable "$trainer_code"; then
            [ "$trainer_code" -eq 0 ] || echo "${0##*/}: training exited with code $trainer_code" >&2
            exit "$trainer_code"
        fi
        if [ "$attempt" -ge "$max" ]; then
            echo "${0##*/}: training crashed (exit $trainer_code) after $attempt restart(s); giving up" >&2
            exit "$trainer_code"
        fi
        attempt=$((attempt + 1))
        echo "${0##*/}: training crashed (exit $trainer_code): restart $attempt of $max${run_dir:+, resuming $run_dir}" >&2
        if [ -n "$run_dir" ]; then resume=(--resume "$run_dir"); fi
    done
}
