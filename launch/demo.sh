#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: install, make the synthetic set, train yolotr-n
# with 2 processes (CPU) or all GPUs, evaluate the best weights, and leave everything in runs/demo/ (runs/demo2/, ...
# when run again).
#   bash launch/demo.sh [extra train overrides, e.g. train.epochs=5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh .venv
export OMP_WAIT_POLICY=PASSIVE WANDB_SILENT=true
if [ ! -f datasets/synth/data.yaml ]; then
    .venv/bin/yolotr data synth --out datasets/synth
fi
# The folder this run takes: runs/demo, or runs/demo2, ... when an earlier demo is there (a new run never resumes one).
run_dir=$(.venv/bin/python -m yolotr train --config configs/train/demo.yaml "$@" --print-config \
    | .venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["run"]["dir"])')
status=0
bash launch/launch.sh -- --config configs/train/demo.yaml "$@" "run.dir=$run_dir" || status=$?
if [ "$status" -ne 0 ]; then
    echo "launch/demo.sh: training exited with code $status" >&2
    exit "$status"
fi
.venv/bin/yolotr val --weights "$run_dir/weights/best.safetensors" --data datasets/synth/data.yaml --imgsz 128
echo "run folder: $run_dir (metrics.jsonl, results.png, weights/, checkpoints/; wandb/ where W&B is set up)"
