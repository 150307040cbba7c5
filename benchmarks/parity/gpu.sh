#!/usr/bin/env bash
# Issue 14's GPU parity run, for one H200 in about 6 minutes of wall time: ultralytics/yolov5's own train.py against
# yolotr's configs/train/coco-yolov5.yaml, model yolov5s in both, 3 seeds, the synthetic set (4,096 train + 256 val
# images at 320 px), 6 epochs, batch 64; then yolov5's models/hub/yolov5s-transformer.yaml against yolotr-s while
# time is left. Writes OUT/parity.md (the table), OUT/parity.log and OUT/results/ (one json per run).
#
#   YOLOV5_DIR=/path/to/yolov5 bash benchmarks/parity/gpu.sh OUT_DIR
#
# On the project's GPU machine (python3 there has torch; the rest comes as wheels, see ../shared/device/wheels.sh,
# run here with WITH_YOLOV5=1; the yolov5 checkout travels as a git-ignored folder named in `carry`):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD && YOLOV5_DIR=$PWD/.yolov5 bash benchmarks/parity/gpu.sh "$OUT"
#
# DEADLINE_S (default 330): no seed starts whose runs, timed by the previous seed, would end after it; the whole
# script is killed at DEADLINE_S + 150. The sizes can be changed for a dry run on a CPU, e.g.
#   SYNTH=96,32,64,1 IMGSZ=64 EPOCHS=1 BATCH=16 SEEDS=0 MODELS=yolov5n bash benchmarks/parity/gpu.sh /tmp/parity-dry
set -uo pipefail
out=${1:?usage: YOLOV5_DIR=/path/to/yolov5 bash benchmarks/parity/gpu.sh OUT_DIR}
: "${YOLOV5_DIR:?YOLOV5_DIR must point at a checkout of ultralytics/yolov5}"
mkdir -p "$out/results"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} YOLOV5_PYTHON=${YOLOV5_PYTHON:-$py}
deadline=${DEADLINE_S:-330}
work=$(mktemp -d)
workers=$(($(nproc) < 8 ? $(nproc) : 8))
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >"$out/parity.log" 2>&1
t0=$SECONDS
# shellcheck disable=SC2086  # SEEDS is a list of numbers
timeout --kill-after=10 $((deadline + 150)) "$py" "$here/benchmarks/parity/parity.py" \
    --synth "${SYNTH:-4096,256,320,1}" --synth-workers "$(nproc)" --imgsz "${IMGSZ:-320}" --epochs "${EPOCHS:-6}" \
    --batch "${BATCH:-64}" --workers "$workers" --seeds ${SEEDS:-0 1 2} --models "${MODELS:-yolov5s,transformer}" \
    --deadline-s "$deadline" --out "$work" >>"$out/parity.log" 2>&1
rc=$?
echo "parity.py exit $rc after $((SECONDS - t0)) s" >>"$out/parity.log"
# The table of whatever finished, also after a timeout.
"$py" "$here/benchmarks/parity/parity.py" --out "$work" --report-only >"$out/parity.md" 2>>"$out/parity.log"
for f in "$work"/runs/*/*/result.json; do
    [ -f "$f" ] && cp "$f" "$out/results/$(basename "$(dirname "$(dirname "$f")")")-$(basename "$(dirname "$f")").json"
done
for f in "$work"/runs/*/*/train.log; do  # the tail of every run's log, for a failure
    [ -f "$f" ] && { echo "== $f"; tail -n 5 "$f"; } >>"$out/parity.log"
done
cat "$out/parity.md"
rm -rf "$work"
exit $rc
