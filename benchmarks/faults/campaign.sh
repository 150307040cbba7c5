#!/usr/bin/env bash
# A fault campaign on the synthetic set: makes the data (96 images of 64 px) and a tiny yolotr-n once in OUT, then
# runs `yolotr drill` on 2 CPU ranks under torchrun. CI's size is 10 faults (tests/engine/test_drill.py runs the
# same); the record in docs/reliability.md is 100.
#
#   benchmarks/faults/campaign.sh OUT [FAULTS] [SEED] [DRILL_ARGS...]
#
# e.g. benchmarks/faults/campaign.sh runs/drill-100 100 0
#      benchmarks/faults/campaign.sh runs/drill-10 10 3 --launcher "bash launch/launch.sh --procs 2 --"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${YOLOTR_VENV:-$root/.venv}/bin/python"
out="${1:?usage: campaign.sh OUT [FAULTS] [SEED] [DRILL_ARGS...]}"
faults="${2:-10}"
seed="${3:-0}"
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ ! -f "$out/data/data.yaml" ]; then
    "$python" -m yolotr data synth --out "$out/data" --train 96 --val 16 --imgsz 64 --seed 0 >/dev/null
fi
if [ ! -f "$out/train.yaml" ]; then
    "$python" - "$root/configs/models/yolotr-n.yaml" "$out" <<'PY'
import sys, yaml
model = yaml.safe_load(open(sys.argv[1]))
model["width_multiple"] = 0.125  # the tests' tiny yolotr-n: the drill measures recovery, not the model
out = sys.argv[2]
yaml.safe_dump(model, open(f"{out}/yolotr-tiny.yaml", "w"))
yaml.safe_dump({
    "model": f"{out}/yolotr-tiny.yaml", "data": f"{out}/data/data.yaml", "run": {"seed": 0},
    "train": {"batch_size": 8, "nominal_batch_size": 8, "imgsz": 64, "num_workers": 0, "warmup_epochs": 0.0,
              "progress_bar": False},
    "val": {"every_epochs": 0, "batch_size": 8},
    "checkpoint": {"every": 4, "keep_last": 3, "writer": "thread"},
    "wandb": {"enabled": False},
}, open(f"{out}/train.yaml", "w"))
PY
fi
cd "$root"  # the ranks run `-m yolotr` from this checkout
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE="${WANDB_MODE:-disabled}"
exec "$python" -m yolotr drill --config "$out/train.yaml" --faults "$faults" --seed "$seed" \
    --out "$out/drill-seed$seed-faults$faults" "$@"
