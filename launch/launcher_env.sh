# Sourced (not run) by launch/launch.sh and launch/torchrun_elastic.sh: what every yolotr launcher sets up the same way.
#
# After sourcing: $venv_bin is the venv's bin folder, $gpus the number of visible GPUs, and the environment carries
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
