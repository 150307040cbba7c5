#!/usr/bin/env bash
# Starts `yolotr train` data-parallel with the right launcher settings for this machine, GPUs or not.
#
#   launch/launch.sh [--procs N] [--deepspeed zero1|zero2] [--nodes N] [--max-restarts N] [--] TRAIN_ARGS...
#
#   --procs N       processes on this node (default: number of GPUs, or 2 on a machine without GPUs)
#   --deepspeed Z   DeepSpeed ZeRO stage Z: launch/accelerate/deepspeed_Z.yaml with configs/deepspeed/Z.json
#                   (default: plain DDP with launch/accelerate/multi_gpu.yaml)
#   --nodes N       machines in the job (default 1). With N > 1, run this once on every machine: it reads its machine
#                   rank from NODE_RANK (or SLURM_NODEID), and the main process's address from MAIN_ADDR and
#                   MAIN_PORT (default 29500). launch/accelerate/multi_node.yaml holds the rest.
#   --max-restarts N  after a crash, start again up to N times, resuming the run (default 0). Only crashes are
#                   retried; the script exits with the trainer's own exit code (see launcher_env.sh).
#
# Examples: launch/launch.sh -- --config configs/train/coco-yolov5.yaml train.epochs=10
#           launch/launch.sh --deepspeed zero2 -- --config configs/train/demo.yaml
#
# Why a helper: on CPU, accelerate needs ACCELERATE_USE_CPU=1 with a multi-GPU config to start several gloo ranks
# (plain --cpu runs ONE process), while DeepSpeed needs DS_ACCELERATOR=cpu and must NOT see ACCELERATE_USE_CPU
# (it would silently drop DeepSpeed). On GPUs neither is set. The accelerate config files are passed explicitly, so
# a stale ~/.cache/huggingface/accelerate/default_config.yaml never changes what runs.
set -euo pipefail
# shellcheck source=launch/launcher_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/launcher_env.sh"

procs=""
deepspeed=""
nodes=1
max_restarts=0
while [ $# -gt 0 ]; do
    case "$1" in
        --procs) procs="$2"; shift 2 ;;
        --deepspeed) deepspeed="$2"; shift 2 ;;
        --nodes) nodes="$2"; shift 2 ;;
        --max-restarts) max_restarts="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
if [ -z "$procs" ]; then
    if [ "$gpus" -gt 0 ]; then procs="$gpus"; else procs=2; fi
fi
use_cpu_threads "$procs"

if [ -z "$deepspeed" ] && [ "$nodes" -eq 1 ] && [ "$procs" -eq 1 ]; then
    # One process needs no launcher, and accelerate's single-process launcher would die on SIGUSR1 without passing
    # it on. yolotr's Accelerator takes its settings in code, so nothing is lost.
    with_restarts "$max_restarts" "$venv_bin/python" -m yolotr train "$@"
fi

if [ -n "$deepspeed" ]; then
    config="deepspeed_$deepspeed.yaml"
    if [ ! -f "$root/configs/deepspeed/$deepspeed.json" ]; then
        echo "launch.sh: --deepspeed $deepspeed: no configs/deepspeed/$deepspeed.json (zero1 or zero2)" >&2
        exit 2
    fi
    unset ACCELERATE_USE_CPU
    if [ "$gpus" -eq 0 ]; then export DS_ACCELERATOR=cpu; fi
    extra=(--deepspeed_config_file "$root/configs/deepspeed/$deepspeed.json")
else
    if [ "$nodes" -gt 1 ]; then config=multi_node.yaml; else config=multi_gpu.yaml; fi
    if [ "$gpus" -eq 0 ]; then export ACCELERATE_USE_CPU=1; fi
    extra=()
fi

args=(--config_file "$root/launch/accelerate/$config" --num_processes "$(( procs * nodes ))" --num_machines "$nodes")
if [ "$nodes" -gt 1 ]; then
    if [ -z "${MAIN_ADDR:-}" ]; then
        echo "launch.sh: --nodes $nodes needs MAIN_ADDR (the address of the machine with rank 0)" >&2
        exit 2
    fi
    args+=(--machine_rank "${NODE_RANK:-${SLURM_NODEID:-0}}" --main_process_ip "$MAIN_ADDR"
           --main_process_port "${MAIN_PORT:-29500}")
else
    # Port 0: accelerate picks a free one, so two runs on one machine never collide.
    args+=(--main_process_port "${MAIN_PORT:-0}")
fi
with_restarts "$max_restarts" "${quiet_agent[@]}" accelerate launch "${args[@]}" "${extra[@]}" -m yolotr train "$@"
