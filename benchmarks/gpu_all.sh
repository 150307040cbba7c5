#!/usr/bin/env bash
# Issue 27's GPU call in one script, for one 10-minute device call (DEADLINE_S, default 540 s), most important first.
# Each part appends to OUT_DIR/summary.txt as soon as it ends, so a run cut off keeps the parts it reached. Exit
# status 1 if any check failed or a part was not reached.
#
#   bash benchmarks/gpu_all.sh OUT_DIR                 PYTHON=... the interpreter (default python3)
#   YOLOV5_DIR=/path/to/yolov5 bash benchmarks/gpu_all.sh OUT_DIR      with ultralytics/yolov5 beside (b, c, d)
#   DRY_RUN=1 bash benchmarks/gpu_all.sh OUT_DIR       every part on a CPU, tiny (64 px, batch 2, a few steps;
#                                                      DEADLINE_S default 1000 s, about a CPU minute of work)
#   PARTS="a c" bash benchmarks/gpu_all.sh OUT_DIR     only these parts, in this order
#
#   a  correctness (≈ 2 min): a compiled, channels-last `yolotr train` under the sync check (debug.cuda_sync_check:
#      torch.cuda.set_sync_debug_mode("error") between inspections) with a NaN injected: the compile event without a
#      fallback, the skip; its checkpoint resumed; fp16 with a NaN: the skip; DeepSpeed ZeRO-2 beside DDP, one rank
#      (bench_backends.py; one ZeRO-2 run in a dry run)                         → a_correctness.txt
#   b  speed (≈ 4 min): the step of yolov5s and yolotr-s at 640 px, batch 64, eager beside the fast path: s/step,
#      TFLOP/s and their share of the card's dense bf16 peak (read from the device name), peak memory, the first
#      (compiling) step's time (bench_speed.py → b_steps.json); then the whole trainer's images/s beside yolov5's
#      train.py at the same settings (parity.py, epoch 0 left out → b_trainers.md)       → b_speed.txt
#   c  fp16 (≈ 2 min): yolov5's C3TR model under fp16 AMP with a GradScaler at its default LR and ×5, against
#      yolotr-s and its guard in fp16 and bf16: the first non-finite step, the skips, the final loss
#      (fp16_nan.py; yolov5's arms left out, saying so, without yolov5)        → c_fp16.txt, c_fp16.jsonl
#   d  accuracy, with the time left: benchmarks/parity/gpu.sh (needs YOLOV5_DIR)           → d_parity.txt
#
# Eight files at most, no folders: what one device call brings back.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_all.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's yolotr, installed or not
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
[ "${DRY_RUN:-0}" = 1 ] && default_deadline=1000 || default_deadline=540
deadline=$((SECONDS + ${DEADLINE_S:-$default_deadline}))
status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
yolov5=${YOLOV5_DIR:-}

if [ "${DRY_RUN:-0}" = 1 ]; then
    synth=(--train 24 --val 8 --imgsz 64)
    train=(model=configs/models/yolotr-n.yaml train.imgsz=64 train.batch_size=2 train.nominal_batch_size=2
           train.num_workers=0 train.compile_backend=eager)
    steps=(4 6 4)  # the compiled run, its resume, fp16
    speed=(--device cpu --models yolotr-n --imgsz 64 --batch 2 --steps 1 --warmup 1 --compile-backend eager)
    trainers=(--synth "8,4,64,1" --imgsz 64 --epochs 2 --batch 2 --workers 0 --models yolov5n)
    fp16=(--device cpu --models yolotr-n --imgsz 64 --batch 2 --steps 3)
    parity_env=("SYNTH=16,8,64,1" IMGSZ=64 EPOCHS=1 BATCH=2 SEEDS=0 MODELS=yolov5n)
    limits=(400 300 150 150)  # a, b, c, d: a part's own limit, never past the deadline (a shared CPU is slow)
else
    synth=(--train 1024 --val 32 --imgsz 320 --workers "$(nproc)")
    train=(model=configs/models/yolotr-s.yaml train.imgsz=320 train.batch_size=64 train.nominal_batch_size=64
           train.num_workers=8)
    steps=(40 60 40)
    backends=(--nproc 1 --model configs/models/yolotr-s.yaml --imgsz 320 --batch 64 --workers 8 --steps 80
              --warmup-steps 30 --log-every 10 --rounds 1)
    speed=(--device cuda --models yolov5s yolotr-s --imgsz 640 --batch 64 --steps 10 --warmup 3)
    trainers=(--synth "1024,64,640,1" --synth-workers "$(nproc)" --imgsz 640 --epochs 2 --batch 64 --workers 8
              --models "yolov5s,transformer")
    fp16=(--device cuda --imgsz 320 --batch 64 --steps 150)
    parity_env=()
    limits=(150 270 100 300)  # d gets what is left of DEADLINE_S: none at 540 s, parity/gpu.sh's 6 minutes at 900
fi
parts=" ${PARTS:-a b c d} "
wanted() { [[ "$parts" == *" $1 "* ]]; }

left() { echo $((deadline - SECONDS)); }

# run LOG LIMIT COMMAND...: appends the command's output to LOG, at most LIMIT seconds and never past the deadline;
# records its verdict line in summary.txt. Trainers it started in sessions of their own are killed on a timeout.
run() {
    local log=$1 limit=$2 name=$3
    shift 3
    local t0=$SECONDS rc=0 before
    if [ "$(left)" -lt 15 ]; then
        echo "$name: not run, the deadline is reached" | tee -a "$log" >>"$out/summary.txt"
        status=1
        return 1
    fi
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    before=$(pgrep -f -- "yolotr train" || true)
    echo "== $name: $*" >>"$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        for pid in $(pgrep -f -- "yolotr train"); do
            grep -qx "$pid" <<<"$before" || kill -9 "$pid" 2>/dev/null
        done
    fi
    if [ "$rc" -ne 0 ]; then status=1; fi
    echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" >>"$out/summary.txt"
    return "$rc"
}

facts() {  # facts NAME RUN_DIR FACT...: run_facts.py's ok/FAIL lines into the part's log and the summary
    local name=$1 dir=$2
    shift 2
    local rc=0
    "$py" benchmarks/run_facts.py "$dir" "$@" >"$work/facts.txt" 2>&1 || rc=$?
    sed "s/^/  $name /" "$work/facts.txt" | tee -a "$out/a_correctness.txt" >>"$out/summary.txt"
    if [ "$rc" -ne 0 ]; then status=1; fi
}

part_end() {  # part_end LETTER LIMIT_START: how long the part took
    echo "-- part $1 ended after $((SECONDS - $2)) s; $(left) s left" >>"$out/summary.txt"
    echo >>"$out/summary.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo "dry run: ${DRY_RUN:-0}; yolov5: ${yolov5:-none}; parts:$parts; deadline ${DEADLINE_S:-$default_deadline} s"
    echo
} >"$out/summary.txt" 2>&1

if wanted a || wanted b; then  # the synthetic set parts a and b train on
    "$py" -m yolotr data synth --out "$work/data" "${synth[@]}" --seed 0 >"$work/synth.log" 2>&1 ||
        { echo "the synthetic set failed: $(tail -n 3 "$work/synth.log")" >>"$out/summary.txt"; status=1; }
fi
data="$work/data/data.yaml"

if wanted a; then
    t0=$SECONDS
    part_deadline=$((SECONDS + limits[0]))
    log="$out/a_correctness.txt"
    common=(--config configs/train/demo.yaml "data=$data" "${train[@]}" train.log_every=2 val.every_epochs=0
            train.compile=true train.channels_last=true debug.cuda_sync_check=true)
    a_left() { local l=$((part_deadline - SECONDS)); echo $((l > 0 ? l : 1)); }
    run "$log" "$(a_left)" "a sync_free" "$py" -m yolotr train "${common[@]}" "run.dir=$work/a" \
        "train.max_steps=${steps[0]}" "checkpoint.every=${steps[0]}" 'faults.nan_grad_at=[[0, 3]]' &&
        facts sync_free "$work/a" compiled skip finite
    run "$log" "$(a_left)" "a resume" "$py" -m yolotr train "${common[@]}" "run.dir=$work/a" \
        "train.max_steps=${steps[1]}" checkpoint.resume=auto && facts resume "$work/a" resume compiled finite
    run "$log" "$(a_left)" "a fp16" "$py" -m yolotr train "${common[@]}" "run.dir=$work/fp16" \
        train.precision=fp16 "train.max_steps=${steps[2]}" 'faults.nan_grad_at=[[0, 3]]' &&
        facts fp16 "$work/fp16" compiled skip finite
    if [ "${DRY_RUN:-0}" = 1 ]; then  # one ZeRO-2 run: bench_backends' pair of runs takes minutes on a CPU
        run "$log" "$(a_left)" "a deepspeed" env DS_ACCELERATOR=cpu "$py" -m torch.distributed.run \
            --nproc-per-node=1 --standalone -m yolotr train "${common[@]}" "run.dir=$work/zero2" train.compile=false \
            debug.cuda_sync_check=false \
            distributed.backend=deepspeed distributed.deepspeed_config=configs/deepspeed/zero2.json \
            train.optimizer=sgd "train.max_steps=${steps[2]}" 'faults.nan_grad_at=[[0, 3]]' &&
            facts deepspeed "$work/zero2" skip finite
    else  # ZeRO-2 beside DDP, a NaN in both: the guarded step through DeepSpeed's engine and the images/s ratio
        run "$log" "$(a_left)" "a deepspeed" "$py" benchmarks/bench_backends.py "${backends[@]}" --data "$data" \
            train.compile=false 'faults.nan_grad_at=[[0, 3]]' &&
            tail -n 6 "$log" | sed 's/^/  deepspeed /' >>"$out/summary.txt"
    fi
    part_end a "$t0"
fi

if wanted b; then
    t0=$SECONDS
    log="$out/b_speed.txt"
    # The steps get half the part and a little more (two compilations); no configuration starts in their last 60 s.
    half=$((limits[1] * 11 / 20))
    run "$log" "$half" "b steps" "$py" benchmarks/bench_speed.py "${speed[@]}" \
        --deadline-s $((half - 60 > 10 ? half - 60 : 10)) --json "$out/b_steps.json" &&
        grep '^|' "$log" >>"$out/summary.txt"
    which=yolotr
    [ -n "$yolov5" ] && which=yolov5,yolotr
    [ -z "$yolov5" ] && echo "  trainers: yolov5 left out (no YOLOV5_DIR)" | tee -a "$log" >>"$out/summary.txt"
    run "$log" $((limits[1] - (SECONDS - t0))) "b trainers" "$py" benchmarks/parity/parity.py "${trainers[@]}" \
        --seeds 0 --trainers "$which" --deadline-s $((limits[1] - (SECONDS - t0) - 40)) --out "$work/trainers"
    "$py" benchmarks/parity/parity.py --out "$work/trainers" --trainers "$which" --report-only \
        >"$out/b_trainers.md" 2>>"$log" && cat "$out/b_trainers.md" >>"$out/summary.txt"
    part_end b "$t0"
fi

if wanted c; then
    t0=$SECONDS
    v5=()
    [ -n "$yolov5" ] && v5=(--yolov5-dir "$yolov5")
    run "$out/c_fp16.txt" "${limits[2]}" "c fp16" "$py" benchmarks/fp16_nan.py "${fp16[@]}" "${v5[@]}" \
        --deadline-s $((limits[2] - 30)) --jsonl "$out/c_fp16.jsonl"
    grep -h '^|\|^yolov5: left out' "$out/c_fp16.txt" >>"$out/summary.txt"
    part_end c "$t0"
fi

if wanted d; then
    t0=$SECONDS
    if [ -z "$yolov5" ]; then
        echo "d parity: not run, yolov5 is not present (YOLOV5_DIR unset)" |
            tee "$out/d_parity.txt" >>"$out/summary.txt"
    elif [ "$(left)" -lt 60 ]; then
        echo "d parity: not run, $(left) s left" | tee "$out/d_parity.txt" >>"$out/summary.txt"
    else
        budget=$(( $(left) < limits[3] ? $(left) : limits[3] ))
        # parity/gpu.sh stops starting seeds at its DEADLINE_S and is killed 150 s after it.
        env "${parity_env[@]}" DEADLINE_S=$((budget > 200 ? budget - 160 : budget / 4)) YOLOV5_DIR="$yolov5" \
            PYTHON="$py" timeout --kill-after=10 "$budget" bash benchmarks/parity/gpu.sh "$work/parity" \
            >"$work/parity.out" 2>&1
        echo "d parity: exit $? in $((SECONDS - t0)) s" >>"$out/summary.txt"
        cat "$work/parity/parity.md" "$work/parity/parity.log" >"$out/d_parity.txt" 2>/dev/null
        cat "$work/parity/parity.md" >>"$out/summary.txt" 2>/dev/null
    fi
    part_end d "$t0"
fi

cat "$out/summary.txt"
exit "$status"
