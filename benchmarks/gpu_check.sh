#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go (about 7 minutes on one H100), most important first. Each writes
# OUT_DIR/<name>.txt; OUT_DIR/summary.txt collects the tail of each (9 files in all). Exit status 1 if any failed.
# On a GPU train.compile and train.channels_last are on by default (auto): every `yolotr train` below runs compiled,
# so the sync-free checks are the compiled path's (the fp16 and DeepSpeed checks run eager, to keep them short).
#
#   bash benchmarks/gpu_check.sh OUT_DIR     PYTHON=... picks the interpreter (default python3);
#                                            DEADLINE_S=... bounds the whole script (default 540 s: one device call
#                                            may run 600 s); BENCH_SECTIONS="stall" runs part of bench_train
#
#   sync_free   the sync-free step: a real compiled `yolotr train` run under torch.cuda.set_sync_debug_mode("error")
#               between inspections, with a NaN step (tests/engine/test_cuda_sync.py, the loss and guard unit tests,
#               fp16's scaled step and scale update: tests/engine/test_loss_scale.py)
#   nccl_step   the DDP guarded step over NCCL: comm hook, consensus parameter, fused found_inf skip (one rank)
#   train       a compiled, channels-last bf16 training run of yolotr-s (batch 64, 320 px) with the sync check on and
#               a NaN injected: images/s, the skip, the compile event, checkpoint stalls, mAP (makes the synthetic set
#               the later checks use)
#   fp16        train.precision fp16 (the T4/V100 path), eager, sync check on, a NaN injected: the skip, the loss scale
#   deepspeed   DeepSpeed ZeRO-2 over NCCL beside the plain path (one rank, eager, a NaN injected in both): the guarded
#               step through DeepSpeed's engine, and the steady-state images/s of both (bench_backends.py; fails if
#               DeepSpeed turned the trainer's bf16 autocast off)
#   guard       guard overhead on the GPU: guarded vs plain clip + step, yolotr-n and yolotr-s at 640 px
#   bench_train checkpoint stall (async vs sync) and time to first step (fresh vs resume) on one GPU
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
# The benchmark scripts import yolotr from the checkout, which need not be installed there.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
deadline=$((SECONDS + ${DEADLINE_S:-540}))
status=0
work=$(mktemp -d)

check() {  # check NAME SECONDS COMMAND...: at most SECONDS, and never past the deadline
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS)) t0=$SECONDS rc=0
    if [ "$left" -lt 20 ]; then
        echo "== $name: not run, the deadline is reached" >>"$out/summary.txt"
        status=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local before
    before=$(pgrep -f -- "-m yolotr train")
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.txt" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        # Timed out: trainers it started in sessions of their own survive `timeout` and must not hold the GPU.
        for pid in $(pgrep -f -- "-m yolotr train"); do
            grep -qx "$pid" <<<"$before" || kill -9 "$pid" 2>/dev/null
        done
    fi
    if [ "$rc" -ne 0 ]; then status=1; fi
    {
        echo "== $name: exit $rc in $((SECONDS - t0)) s (limit $limit s)"
        tail -n 25 "$out/$name.txt"
        echo
    } >>"$out/summary.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo
} >"$out/summary.txt" 2>&1

check sync_free 180 "$py" -m pytest -q -p no:cacheprovider tests/engine/test_cuda_sync.py \
    tests/engine/test_guard_step.py tests/engine/test_loss_scale.py tests/model/test_detection_loss.py
check nccl_step 60 "$py" benchmarks/gpu_nccl_step.py
check train 220 bash -c "'$py' -m yolotr data synth --out '$work/data' --train 2560 --val 128 --imgsz 320 &&
    '$py' -m yolotr train --config configs/train/demo.yaml data='$work/data/data.yaml' run.dir='$work/run' \
    model=configs/models/yolotr-s.yaml train.imgsz=320 train.batch_size=64 train.nominal_batch_size=64 \
    train.epochs=8 train.num_workers=8 train.log_every=40 val.every_epochs=4 checkpoint.every=100 \
    train.compile=true train.channels_last=true debug.cuda_sync_check=true 'faults.nan_grad_at=[[0, 130]]'"
cp "$work/run/metrics.jsonl" "$out/train_metrics.jsonl" 2>/dev/null
check fp16 70 bash -c "'$py' -m yolotr train --config configs/train/demo.yaml data='$work/data/data.yaml' \
    run.dir='$work/fp16' train.imgsz=320 train.batch_size=64 train.nominal_batch_size=64 train.max_steps=80 \
    train.num_workers=8 train.log_every=20 val.every_epochs=0 train.precision=fp16 train.compile=false \
    debug.cuda_sync_check=true 'faults.nan_grad_at=[[0, 50]]' && grep -h '\"skip\"' '$work/fp16/metrics.jsonl'"
check deepspeed 120 "$py" benchmarks/bench_backends.py --nproc 1 --model configs/models/yolotr-s.yaml --imgsz 320 \
    --batch 64 --workers 6 --steps 140 --warmup-steps 40 --log-every 10 --rounds 1 --data "$work/data/data.yaml" \
    train.compile=false 'faults.nan_grad_at=[[0, 20]]'
check guard 120 bash -c "'$py' benchmarks/bench_guard.py --device cuda --batch 64 --imgsz 640 --rounds 31 &&
    '$py' benchmarks/bench_guard.py --device cuda --cfg configs/models/yolotr-s.yaml --batch 64 --imgsz 640 --rounds 31"
# shellcheck disable=SC2086  # BENCH_SECTIONS is a word list
check bench_train 200 "$py" benchmarks/bench_train.py --procs 1 --batch 64 --imgsz 320 --workers 6 --steps 60 \
    --stall-steps 200 \
    --ckpt-every 40 --data "$work/data/data.yaml" --sections ${BENCH_SECTIONS:-scale stall resume}
rm -rf "$work"
exit "$status"
