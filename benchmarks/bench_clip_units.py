"""The gradient norms the clip sees, at several batch sizes, in both units: the norm of the gradient of the loss yolotr
backpropagates (YOLOv5's: the per-image mean × the batch) and that norm divided by the batch (the per-image mean,
what guard.max_norm bounds). One fresh model per seed, the same first batches of the synthetic set, no step taken.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_clip_units.py --data D/data.yaml [--imgsz 160] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from yolotr.config.augment import AugmentConfig
from yolotr.data.spec import load_data_yaml
from yolotr.data.stream import TrainStream
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel


def grad_norm(model: DetectionModel, compute_loss: ComputeLoss, batch) -> float:
    model.zero_grad(set_to_none=True)
    loss, _ = compute_loss(model(batch.images.float() / 255), batch.targets)  # (per-image mean) × batch
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="configs/models/yolov5n.yaml")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    spec = load_data_yaml(args.data)
    print("| batch | ‖∇(loss × batch)‖ | ‖∇(per-image mean loss)‖ = the former / batch | YOLOv5's clip 10 in per-image "
          "units |\n|---:|---:|---:|---:|")
    for batch_size in args.batches:
        summed = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = DetectionModel(args.model, nc=spec.nc).train()
            compute_loss = ComputeLoss(model, imgsz=args.imgsz)
            stream = TrainStream(spec.train, global_batch_size=batch_size, rank=0, world_size=1, seed=seed,
                                 imgsz=args.imgsz, augment=AugmentConfig())
            summed.append(grad_norm(model, compute_loss, next(iter(stream))))
        mean = statistics.fmean(summed)
        print(f"| {batch_size} | {mean:.2f} | {mean / batch_size:.4f} | {10 / batch_size:.4f} |")


if __name__ == "__main__":
    main()
