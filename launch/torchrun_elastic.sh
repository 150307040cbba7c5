#!/usr/bin/env bash
# Starts `yolotr train` under torchrun: a crashed worker (or a lost node) ends the attempt, and the whole group is
# started again, up to --max-restarts times, resuming the run folder's newest valid checkpoint (`--resume RUN_DIR`).
# Only crashes are retried: an exit a retry cannot fix (a bad config, divergence, corrupt data, no valid checkpoint, a
# full disk) or a preemption (75) ends the script with the trainer's own exit code (see launcher_env.sh). Running the
# script again starts a new run (runs/exp2, ...) unless `--resume` is given.
#
#   launch/torchrun_elastic.sh [--nnodes MIN:MAX] [--procs N] [--max-restarts N] [--rdzv-endpoint HOST:PORT]
#                              [--rdzv-id ID] [--] TRAIN_ARGS...
#
#   --nnodes MIN:MAX       nodes the job may run on; it starts once MIN have joined (default 1:1; env NNODES)
#   --procs N              processes per node (default: number of GPUs, or 2 without GPUs; env NPROC_PER_NODE)
#   --max-restarts N       restarts of the worker group before giving up (default 3; env MAX_RESTARTS)
#   --rdzv-endpoint H:P    c10d rendezvous: host:port of any one node, the same on all (default 127.0.0.1:29400;
#                          env RDZV_ENDPOINT)
#   --rdzv-id ID           names the job, the same on all nodes (default: SLURM_JOB_ID, else one new id per call of
#                          this script; env RDZV_ID)
#
# Multi-node: run the same line on every node, e.g. launch/torchrun_elastic.sh --nnodes 2:4 --rdzv-endpoint node1:29400.
# Data-parallel on CPU works unchanged (gloo): yolotr's backend sets what accelerate needs under torchrun.
set -euo pipefail
# shellcheck source=launch/launcher_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/launcher_env.sh"

nnodes="${NNODES:-1:1}"
procs="${NPROC_PER_NODE:-}"
max_restarts="${MAX_RESTARTS:-3}"
rdzv_endpoint="${RDZV_ENDPOINT:-127.0.0.1:29400}"
rdzv_id="${RDZV_ID:-${SLURM_JOB_ID:-yolotr-$(hostname)-$$-$(date +%s)}}"
while [ $# -gt 0 ]; do
    case "$1" in
        --nnodes) nnodes="$2"; shift 2 ;;
        --procs) procs="$2"; shift 2 ;;
        --max-restarts) max_restarts="$2"; shift 2 ;;
        --rdzv-endpoint) rdzv_endpoint="$2"; shift 2 ;;
        --rdzv-id) rdzv_id="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
if [ -z "$procs" ]; then
    if [ "$gpus" -gt 0 ]; then procs="$gpus"; else procs=2; fi
fi
use_cpu_threads "$procs"

# Restarts are this script's (with_restarts), not torchrun's: torchrun would restart every failure, a bad config too.
with_restarts "$max_restarts" "${quiet_agent[@]}" torchrun --nnodes="$nnodes" --nproc-per-node="$procs" --max-restarts=0 \
    --rdzv-backend=c10d --rdzv-endpoint="$rdzv_endpoint" --rdzv-id="$rdzv_id" \
    -m yolotr train "$@"
