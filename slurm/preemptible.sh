# Sourced by the sbatch scripts in slurm/: runs the training launcher so that a preemption notice ends in a
# checkpoint and a requeue of the same job, never in a lost run.
#
#   yolotr_run_dir TRAIN_ARGS...          prints the run folder that these `yolotr train` arguments resolve to (and
#                                         fails with exit 2 and the key's name when the config is wrong, before any
#                                         GPU is touched).
#   run_preemptible RUN_DIR COMMAND...    runs COMMAND (the launcher) in the background and waits for it. SIGUSR1 to
#                                         the batch shell (`#SBATCH --signal=B:USR1@T` before the time limit, or
#                                         `scancel --signal=USR1 --batch JOB`) is forwarded to it; the trainer agrees
#                                         on a step, checkpoints and exits 75. Then: trainer exit 75 → `scontrol
#                                         requeue` (the job comes back with SLURM_RESTART_COUNT+1, which makes the
#                                         trainer continue the run folder this job started, recorded in its job.json,
#                                         and its W&B run id); a crash (exit 1 or a signal) →
#                                         requeue too, at most YOLOTR_MAX_REQUEUES times (default 3);
#                                         anything else (2, 3, 4, 5, 74: see yolotr/errors.py) → the job
#                                         exits with the trainer's own code, not retried.
#
# Why the batch shell must catch the signal: `--signal=B:` reaches only this shell, and a bash that waits in the
# foreground runs no trap until its child ends. Hence the launcher runs in the background and `wait` is repeated:
# a trap interrupts `wait`. The launcher itself exits non-zero after forwarding (torchrun and accelerate turn any
# worker failure into 1), so the trainer's real code is read from RUN_DIR/exit.json.
# shellcheck shell=bash

yolotr_python="${YOLOTR_VENV:-$PWD/.venv}/bin/python"

# From the moment this file is sourced, a notice is remembered rather than fatal to the batch shell (SIGUSR1's default
# action): one that comes before the launcher starts requeues the job at once (there is nothing to checkpoint yet).
yolotr_notice_pending=0
trap 'yolotr_notice_pending=1' USR1

yolotr_run_dir() {
    "$yolotr_python" -m yolotr train "$@" --print-config \
        | "$yolotr_python" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["run"]["dir"])'
}

# The trainer's exit code from RUN_DIR/exit.json when that file was written after SINCE (epoch seconds), else FALLBACK.
trainer_exit_code() {
    "$yolotr_python" - "$@" <<'PY'
import json, os, sys

run_dir, since, fallback = sys.argv[1:4]
path = os.path.join(run_dir, "exit.json")
try:
    fresh = os.path.getmtime(path) >= float(since)
    code = json.load(open(path)).get("exit_code") if fresh else None
    print(fallback if code is None else code)  # None: the start marked it running and was killed before its end
except (OSError, ValueError, KeyError):
    print(fallback)
PY
}

run_preemptible() {
    local run_dir="$1" started status code launcher
    shift
    started=$(date +%s)
    if [ "$yolotr_notice_pending" -eq 1 ]; then
        echo "yolotr: preemption notice (SIGUSR1) before training started; requeueing job ${SLURM_JOB_ID}"
        scontrol requeue "$SLURM_JOB_ID"
        return 0
    fi
    echo "yolotr: job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}: run folder $run_dir"
    "$@" &
    launcher=$!
    # shellcheck disable=SC2064  # $launcher is meant to be expanded now
    trap "echo 'yolotr: preemption notice (SIGUSR1): forwarding it to the launcher'; kill -USR1 $launcher || true" USR1
    status=0
    while true; do
        wait "$launcher" && status=0 || status=$?
        # A trap interrupts `wait` (status > 128) while the launcher still runs: wait again.
        kill -0 "$launcher" 2>/dev/null || break
    done
    trap 'yolotr_notice_pending=1' USR1
    code=$(trainer_exit_code "$run_dir" "$started" "$status")
    if [ "$code" -eq 75 ]; then
        echo "yolotr: checkpoint written at preemption; requeueing job ${SLURM_JOB_ID}"
        scontrol requeue "$SLURM_JOB_ID"
        return 0
    fi
    # A crash or a lost node (exit 1, or a signal) may go well on other nodes, and remote shards unreachable (69) once
    # the storage is back: requeue, a bounded number of times.
    # The other codes (a bad config, divergence, corrupt data, no valid checkpoint, a full disk) fail again: never.
    if { [ "$code" -eq 1 ] || [ "$code" -eq 69 ] || [ "$code" -gt 128 ]; } && [ "${SLURM_RESTART_COUNT:-0}" -lt "${YOLOTR_MAX_REQUEUES:-3}" ]; then
        echo "yolotr: training crashed (exit $code); requeueing job ${SLURM_JOB_ID}" \
             "(restart $(( ${SLURM_RESTART_COUNT:-0} + 1 )) of ${YOLOTR_MAX_REQUEUES:-3})"
        scontrol requeue "$SLURM_JOB_ID"
        return 0
    fi
    echo "yolotr: training exited with code $code (launcher: $status)"
    return "$code"
}
