#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: install, make the synthetic set, train yolotr-n
# with 2 processes (CPU) or all GPUs, evaluate the best weights, and leave everything in runs/demo/.
#   bash launch/demo.sh [extra train overrides, e.g. train.epochs=5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh .venv
export OMP_WAIT_POLICY=PASSIVE WANDB_SILENT=true
if [ ! -f datasets/synth/data.yaml ]; then
    .venv/bin/yolotr data synth --out datasets/synth
fi
status=0
bash launch/launch.sh -- --config configs/train/demo.yaml "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "launch/demo.sh: training exited with code $status" >&2
    exit "$status"
fi
.venv/bin/yolotr val --weights runs/demo/weights/best.safetensors --data datasets/synth/data.yaml --imgsz 128
echo "run folder: runs/demo (metrics.jsonl, results.png, weights/, checkpoints/, wandb/)"
