#!/usr/bin/env bash
# Issue 18's speed figures on one GPU, in under 10 minutes (DEADLINE_S, default 540 s). Each part writes
# OUT_DIR/<name>.txt; OUT_DIR/summary.txt collects their tails. Exit status 1 if any failed.
#
#   bash benchmarks/gpu_speed.sh OUT_DIR            PYTHON=... the interpreter (default python3)
#   YOLOV5_DIR=/path/to/yolov5 bash benchmarks/gpu_speed.sh OUT_DIR     with ultralytics/yolov5's train.py beside
#   DRY_RUN=1 bash benchmarks/gpu_speed.sh OUT_DIR  the same parts, tiny, on a CPU (proves the script end to end)
#   PARTS="steps backends" bash benchmarks/gpu_speed.sh OUT_DIR   only these parts, in this file's order
#            (default: all but backends, which with them would not fit one 10-minute call; gpu_check.sh runs it too)
#
#   steps    bench_speed.py: yolov5s and yolotr-s at 320 and 640 px, batch 64, bf16, eager beside the fast path
#            (channels-last + torch.compile): s/step, images/s, TFLOP/s and their share of the dense bf16 peak, peak
#            GPU memory, and the first (compiling) step's time; steps.json
#   loader   the train stream alone (mosaic + augmentations, 8 workers) at 320 and 640 px, the workers decoding and
#            augmenting (train.augment_on=cpu) and the workers planning for the GPU (device): images/s
#   device_loader  loader_speed.py: decode + augment of one CPU process beside nvJPEG + the device renderer
#            in one process, batch 64 at 320 and 640 px: images/s and their ratio
#   trainers the parity harness (benchmarks/parity/): yolov5's own train.py (when YOLOV5_DIR is set) and
#            `yolotr train` on the same synthetic set, yolov5s then yolov5s-transformer / yolotr-s (as the deadline
#            allows), batch 64 at 640 px (the target setting), 2 epochs, epoch 0 left out:
#            end-to-end training images/s of both (parity.md)
#   backends bench_backends.py: DeepSpeed ZeRO-2 beside the plain path, one rank, yolotr-s, batch 64 at 320 px,
#            eager: steady-state images/s and their ratio (the 10 % target)
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_speed.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's yolotr, installed or not
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
deadline=$((SECONDS + ${DEADLINE_S:-540}))
status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${DRY_RUN:-0}" = 1 ]; then
    steps_args=(--device cpu --models yolotr-n --imgsz 64 --batch 2 --steps 1 --warmup 1 --compile-backend eager)
    synth=(--train 32 --val 16 --imgsz 64)
    loader_args=(--imgsz 64 --batch 8 --workers 0 --loader-batches 2 --device cpu --augment-on cpu device)
    parity_args=(--synth "32,16,64,1" --imgsz 64 --epochs 1 --batch 16 --workers 0 --models "yolov5n")
    device_loader_args=(--device cpu --sizes 64 --batch 4 --batches 1 --images 8 --source-size 64)
    backends_args=(--nproc 1 --imgsz 64 --batch 8 --workers 0 --steps 12 --warmup-steps 4 --log-every 2 --rounds 1)
    limits=(220 80 200 20 200)
else
    steps_args=(--device cuda --models yolov5s yolotr-s --imgsz 320 640 --batch 64 --steps 20 --warmup 3)
    synth=(--train 1024 --val 16 --imgsz 640)
    loader_args=(--imgsz 320 640 --batch 64 --workers 8 --loader-batches 12 --device cuda --augment-on cpu device)
    parity_args=(--synth "1536,64,640,1" --synth-workers "$(nproc)" --imgsz 640 --epochs 2 --batch 64 --workers 8
                 --models "yolov5s,transformer")
    device_loader_args=(--device cuda --sizes 320 640 --batch 64 --batches 2 --images 64 --source-size 640)
    # steps stops starting configurations 70 s before its limit (its compiled step gets what the eager ones left);
    # trainers at 640 px: each yolotr run compiles in its epoch 0, so the second pair may not fit (then it says so)
    backends_args=(--nproc 1 --model configs/models/yolotr-s.yaml --imgsz 320 --batch 64 --workers 8 --steps 140
                   --warmup-steps 40 --log-every 10 --rounds 1)
    limits=(220 70 220 20 120)
fi
parts=" ${PARTS:-steps loader device_loader trainers} "
wanted() { [[ "$parts" == *" $1 "* ]]; }
trainers=yolotr
[ -n "${YOLOV5_DIR:-}" ] && trainers=yolov5,yolotr

part() {  # part NAME SECONDS COMMAND...: at most SECONDS, and never past the deadline
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS)) t0=$SECONDS rc=0
    if [ "$left" -lt 20 ]; then
        echo "== $name: not run, the deadline is reached" >>"$out/summary.txt"
        status=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.txt" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then status=1; fi
    {
        echo "== $name: exit $rc in $((SECONDS - t0)) s (limit $limit s)"
        tail -n 16 "$out/$name.txt"
        echo
    } >>"$out/summary.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo "trainers: $trainers"
    echo
} >"$out/summary.txt" 2>&1

# The compiled step gets what is left of its part's time after the eager ones: no configuration starts after it.
wanted steps && part steps "${limits[0]}" "$py" benchmarks/bench_speed.py "${steps_args[@]}" \
    --deadline-s $((limits[0] - 70)) --json "$out/steps.json"
wanted loader && part loader "${limits[1]}" bash -c "'$py' -m yolotr data synth --out '$work/data' ${synth[*]} \
    --seed 0 >/dev/null && '$py' benchmarks/bench_speed.py --paths eager --models --loader '$work/data/data.yaml' \
    ${loader_args[*]}"
wanted device_loader && part device_loader "${limits[3]}" "$py" benchmarks/loader_speed.py "${device_loader_args[@]}"
# The loader part's synthetic set when it ran; bench_backends makes its own otherwise.
data_arg=()
[ -f "$work/data/data.yaml" ] && data_arg=(--data "$work/data/data.yaml")
wanted backends && part backends "${limits[4]}" "$py" benchmarks/bench_backends.py "${backends_args[@]}" \
    "${data_arg[@]}" --json "$out/backends.json" train.compile=false
wanted trainers && part trainers "${limits[2]}" bash -c "set -o pipefail && '$py' benchmarks/parity/parity.py \
    ${parity_args[*]} --seeds 0 --trainers $trainers --deadline-s $((limits[2] - 60)) --out '$work/parity' &&
    '$py' benchmarks/parity/parity.py --out '$work/parity' --trainers $trainers --report-only | tee '$out/parity.md'"
cat "$out/summary.txt"
exit "$status"
