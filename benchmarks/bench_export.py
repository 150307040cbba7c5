"""The export table of a model yaml: every format written, checked against PyTorch and timed, as `yolotr export`
prints it. Sizes, latencies and differences do not depend on training, so the model is freshly initialised (COCO's
80 classes) unless --weights is given.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_export.py --cfg configs/models/yolotr-n.yaml --imgsz 640 \
        --formats onnx,torchscript,openvino
    python benchmarks/bench_export.py --cfg configs/models/yolotr-s.yaml --device cuda --half --formats onnx,engine

Latency is the median of --runs calls of one batch, host↔device copies included, after 3 warm-up calls.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from yolotr.checkpoint.weights_file import save_weights
from yolotr.export.nms import NmsSettings
from yolotr.export.exporter import ExportSettings, export
from yolotr.model.yolo import DetectionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="configs/models/yolotr-n.yaml", help="model yaml")
    parser.add_argument("--weights", default=None, help="a weights file instead of a fresh model")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--formats", default="onnx,torchscript,openvino")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--nms", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=None, help="folder for the exported files (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            model = DetectionModel(args.cfg, nc=80).eval()
            weights = save_weights(out / f"{Path(args.cfg).stem}.safetensors", model_state=model.state_dict(),
                                   ema_state=None, model_yaml=model.yaml, names=[str(i) for i in range(80)],
                                   imgsz=args.imgsz)
        settings = ExportSettings(formats=tuple(args.formats.split(",")), imgsz=args.imgsz, batch=args.batch,
                                  half=args.half, nms=NmsSettings() if args.nms else None, device=args.device,
                                  latency_runs=args.runs)
        report = export(weights, settings, out=out)
        print(f"{args.cfg} at {args.imgsz} px, batch {args.batch}{', fp16' if args.half else ''}"
              f"{', NMS in the graph' if args.nms else ''}")
        print(report.table())


if __name__ == "__main__":
    main()
