#!/usr/bin/env bash
# The deploy checks that need an NVIDIA GPU, in one go (about 7 minutes on one H200). Each writes OUT_DIR/<name>.txt
# (6 files):
#
#   bash benchmarks/gpu_deploy_check.sh OUT_DIR     PYTHON=... picks the interpreter (default python3);
#                                                   PRECISIONS="fp16" skips the fp32 table
#
#   env          GPU, torch, onnxruntime providers, whether TensorRT is installed
#   gpu_tests    tests/eval/test_export_formats.py's GPU cases: TorchScript fp16, TensorRT fp32 and fp16 + NMS
#                (the TensorRT ones skip where the tensorrt wheel is missing)
#   export_fp32  the export table of yolotr-s at 640 px on the GPU (TorchScript; ONNX runs where onnxruntime can)
#   export_fp16  the same with --half (and TensorRT fp16 where it is installed)
#   train        a training run with 8 DataLoader workers and pin_memory: its stderr must hold no traceback (the
#                "DataLoader worker (pid N) is killed by signal" seen at exit on an H200), then predict on the GPU
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_deploy_check.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
work=$(mktemp -d)
engine=""
"$py" -c "import tensorrt" 2>/dev/null && engine=",engine"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'onnxruntime', o.__version__, o.get_available_providers())"
    "$py" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
} >"$out/env.txt" 2>&1

timeout 90 "$py" -m pytest -q -p no:cacheprovider tests/eval/test_export_formats.py -k gpu -rs >"$out/gpu_tests.txt" 2>&1
echo "exit $?" >>"$out/gpu_tests.txt"
for precision in ${PRECISIONS:-fp16 fp32}; do
    half=""
    [ "$precision" = fp16 ] && half="--half"
    timeout 130 "$py" benchmarks/bench_export.py --cfg configs/models/yolotr-s.yaml --imgsz 640 --device cuda \
        --formats "onnx,torchscript$engine" $half --runs 30 >"$out/export_$precision.txt" 2>&1
    echo "exit $?" >>"$out/export_$precision.txt"
done
timeout 180 bash -c "'$py' -m yolotr data synth --out '$work/data' --train 512 --val 64 --imgsz 320 >/dev/null &&
    '$py' -m yolotr train --config configs/train/demo.yaml data='$work/data/data.yaml' run.dir='$work/run' \
    model=configs/models/yolotr-n.yaml train.imgsz=320 train.batch_size=64 train.nominal_batch_size=64 \
    train.epochs=2 train.num_workers=8 train.log_every=2 val.every_epochs=1 2>'$out/train_stderr.txt'
    echo \"train exit \$?\"
    grep -c -e Traceback -e 'killed by signal' '$out/train_stderr.txt' | sed 's/^/tracebacks in stderr: /'
    '$py' -m yolotr predict --weights '$work/run/weights/last.safetensors' --source '$work/data/val' \
        --out '$work/pred' --device cuda --batch-size 32" >"$out/train.txt" 2>&1
echo "exit $?" >>"$out/train.txt"
rm -rf "$work"
