#!/usr/bin/env bash
# Starts `yolotr train` data-parallel with the right launcher settings for this machine, GPUs or not.
#
#   launch/launch.sh [--procs N] [--deepspeed zero1|zero2] [--] TRAIN_ARGS...
#
#   --procs N       processes on this node (default: number of GPUs, or 2 on a machine without GPUs)
#   --deepspeed Z   DeepSpeed ZeRO stage config from configs/deepspeed/Z.json (default: plain DDP)
#
# Why a helper: on CPU, accelerate needs ACCELERATE_USE_CPU=1 with --multi_gpu to start several gloo ranks
# (plain --cpu runs ONE process), while DeepSpeed needs DS_ACCELERATOR=cpu and must NOT see ACCELERATE_USE_CPU
# (it would silently drop DeepSpeed). On GPUs neither is set. PET_SIGNALS_TO_HANDLE lets the launcher forward
# SIGUSR1 (preemption notice) to the workers instead of dying and orphaning them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_bin="${YOLOTR_VENV:-$root/.venv}/bin"
procs=""
deepspeed=""
while [ $# -gt 0 ]; do
    case "$1" in
        --procs) procs="$2"; shift 2 ;;
        --deepspeed) deepspeed="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done

gpus=$("$venv_bin/python" -c "import torch; print(torch.cuda.device_count())")
if [ -z "$procs" ]; then
    if [ "$gpus" -gt 0 ]; then procs="$gpus"; else procs=2; fi
fi
export PET_SIGNALS_TO_HANDLE="${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}"
args=(--num_processes "$procs" --num_machines 1 --mixed_precision no --dynamo_backend no)
if [ "$gpus" -eq 0 ]; then
    # One thread per rank on CPU: more oversubscribes the cores and runs ~10x slower.
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / procs > 0 ? $(nproc) / procs : 1 ))}"
fi
if [ -n "$deepspeed" ]; then
    unset ACCELERATE_USE_CPU
    if [ "$gpus" -eq 0 ]; then export DS_ACCELERATOR=cpu; fi
    args+=(--use_deepspeed --deepspeed_config_file "$root/configs/deepspeed/$deepspeed.json")
elif [ "$procs" -gt 1 ]; then
    if [ "$gpus" -eq 0 ]; then export ACCELERATE_USE_CPU=1; fi
    args+=(--multi_gpu)
fi
exec "$venv_bin/accelerate" launch "${args[@]}" -m yolotr train "$@"
