"""Where fp16 goes non-finite (issue #27 c): ultralytics/yolov5's own C3TR block (its yolov5s-transformer model) under
fp16 autocast with a GradScaler, yolov5's train.py step (scale, backward, unscale, clip 10, scaler step and update),
against yolotr-s with its guarded step (guard/step.py) in fp16 (its loss scale, guard/loss_scale.py) and in bf16.
Each arm trains at yolov5's default LR (lr0 0.01, SGD momentum 0.937) and at ×5, from the same seed, on the same
synthetic batches, with no warm-up (the warm-up would only postpone what the LR does).

Per arm, one json line (appended to --jsonl as each arm ends, so a cut-off run keeps the arms it finished): the first
step whose loss was non-finite, the first step after which a weight was non-finite, the skipped steps (yolov5: the
scaler's, seen as a scale back-off; yolotr: the guard's), the final loss (mean of the last 10 finite ones), the final
scale and the non-finite weights at the end. Then a markdown table.

    python benchmarks/fp16_nan.py --device cuda --yolov5-dir /path/to/yolov5 --imgsz 320 --batch 64 --steps 200
    python benchmarks/fp16_nan.py --device cpu --imgsz 64 --batch 2 --steps 3 --models yolotr-n    # a dry run

Without --yolov5-dir (or when yolov5 does not import) yolov5's arms are left out, with a line saying why.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml
from bench_speed import CONFIGS, synthetic_targets  # benchmarks/, this script's own folder

from yolotr.config.run import GuardConfig, TrainConfig
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.loss_scale import LossScale
from yolotr.guard.step import BufferGuard, guarded_step
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel

YOLOV5_CFG = "models/hub/yolov5s-transformer.yaml"
YOLOV5_HYP = "data/hyps/hyp.scratch-low.yaml"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def batches(steps: int, batch: int, imgsz: int, device: torch.device):
    """The same synthetic batches for every arm: (images in [0, 1], targets [image, class, cx, cy, w, h])."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        yield (torch.rand(batch, 3, imgsz, imgsz, generator=generator).to(device),
               synthetic_targets(batch, generator).to(device))


def weights_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())  # one read of the device


def nonfinite_weights(model: torch.nn.Module) -> int:
    return sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())


class Record:
    """The per-step facts an arm reports."""

    def __init__(self) -> None:
        self.first_nonfinite_loss: int | None = None
        self.first_nonfinite_weights: int | None = None
        self.skips = 0
        self.losses: list[float] = []

    def step(self, step: int, loss: float, skipped: bool, finite_weights: bool) -> None:
        if math.isfinite(loss):
            self.losses.append(loss)
        elif self.first_nonfinite_loss is None:
            self.first_nonfinite_loss = step
        self.skips += skipped
        if not finite_weights and self.first_nonfinite_weights is None:
            self.first_nonfinite_weights = step

    def result(self, **fields) -> dict:
        tail = self.losses[-10:]
        return {**fields, "first_nonfinite_loss_step": self.first_nonfinite_loss,
                "first_nonfinite_weights_step": self.first_nonfinite_weights, "skipped_steps": self.skips,
                "final_loss": sum(tail) / len(tail) if tail else None}


def yolov5_arm(yolov5_dir: Path, lr: float, args, device: torch.device) -> dict:
    """yolov5's model, loss, optimizer and AMP step, imported from its checkout (nothing of it copied here)."""
    sys.path.insert(0, str(yolov5_dir))
    from models.yolo import Model
    from utils.loss import ComputeLoss as YoloV5Loss
    from utils.torch_utils import smart_optimizer

    torch.manual_seed(0)
    nc = 80
    model = Model(str(yolov5_dir / YOLOV5_CFG), ch=3, nc=nc).to(device).train()
    hyp = yaml.safe_load((yolov5_dir / YOLOV5_HYP).read_text())
    nl = model.model[-1].nl
    # As train.py scales them: per detection layer, cls to the classes, obj to the image size.
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (args.imgsz / 640) ** 2 * 3 / nl
    model.nc, model.hyp = nc, hyp
    loss_fn = YoloV5Loss(model)
    optimizer = smart_optimizer(model, "SGD", lr, hyp["momentum"], hyp["weight_decay"] * args.batch / 64)
    scaler = torch.amp.GradScaler(device.type)
    record = Record()
    for step, (images, targets) in enumerate(batches(args.steps, args.batch, args.imgsz, device), 1):
        with torch.autocast(device.type, dtype=torch.float16):
            preds = model(images)
            loss, _ = loss_fn(preds, targets)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        record.step(step, float(loss.detach()), skipped=scaler.get_scale() < scale,
                    finite_weights=weights_finite(model))
    return record.result(final_scale=scaler.get_scale(), nonfinite_weights=nonfinite_weights(model))


def yolotr_arm(name: str, precision: str, lr: float, args, device: torch.device) -> dict:
    """yolotr's model, loss and guarded step, as the trainer runs them (one rank, no accumulation)."""
    torch.manual_seed(0)
    model = DetectionModel(CONFIGS / f"{name}.yaml").to(device).train()
    train = TrainConfig()
    loss_fn = ComputeLoss(model, imgsz=args.imgsz)
    optimizer = build_optimizer(build_param_groups(model, train.weight_decay, train.transformer_lr_mult), "sgd", lr,
                                train.momentum, fused=device.type == "cuda" or None)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)  # the schedule's job in the trainer
    loss_scale = LossScale(device, enabled=precision == "fp16")
    params, buffers = list(model.parameters()), BufferGuard(model)
    no_skip = torch.zeros((), dtype=torch.bool, device=device)
    max_norm = GuardConfig().max_norm
    record = Record()
    for step, (images, targets) in enumerate(batches(args.steps, args.batch, args.imgsz, device), 1):
        before = buffers.save()
        with torch.autocast(device.type, dtype=DTYPES[precision]):
            preds = model(images)
        loss, _ = loss_fn(preds, targets)
        loss_scale.scale(loss).backward()
        loss_scale.unscale_(optimizer)
        _, skipped = guarded_step(params, optimizer, max_norm=max_norm, images=args.batch,
                                  force_skip=no_skip | ~torch.isfinite(loss), buffers=buffers, buffers_before=before)
        loss_scale.update(optimizer, skipped)
        optimizer.zero_grad(set_to_none=True)
        record.step(step, float(loss.detach()), skipped=bool(skipped), finite_weights=weights_finite(model))
    return record.result(final_scale=float(loss_scale.value()), nonfinite_weights=nonfinite_weights(model))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--yolov5-dir", type=Path, default=None, help="a checkout of ultralytics/yolov5")
    parser.add_argument("--models", nargs="+", default=["yolotr-s"], help="yolotr's model(s) beside yolov5's")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr0", type=float, default=0.01, help="yolov5's default (hyp.scratch-low.yaml)")
    parser.add_argument("--lr-factors", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--deadline-s", type=float, default=None, help="start no arm after this many s")
    parser.add_argument("--jsonl", type=Path, default=None, help="append each arm's result here as it ends")
    args = parser.parse_args()
    device = torch.device(args.device)
    start = time.perf_counter()

    arms = []
    yolov5_why_not = _yolov5_missing(args.yolov5_dir)
    if yolov5_why_not:
        print(f"yolov5: left out ({yolov5_why_not})", flush=True)
    for factor in args.lr_factors:
        if not yolov5_why_not:
            arms.append(("yolov5s-transformer (C3TR)", "fp16 AMP + GradScaler", factor,
                         lambda lr: yolov5_arm(args.yolov5_dir, lr, args, device)))
        for name in args.models:
            for precision in ("fp16", "bf16"):
                arms.append((name, f"{precision} + guard", factor,
                             lambda lr, n=name, p=precision: yolotr_arm(n, p, lr, args, device)))
    results = []
    for model, path, factor, run in arms:
        if args.deadline_s is not None and time.perf_counter() - start > args.deadline_s:
            print(f"{model} {path} lr ×{factor:g}: not started, the deadline is reached", flush=True)
            continue
        t0 = time.perf_counter()
        result = {"model": model, "path": path, "lr_factor": factor, "lr": args.lr0 * factor, "imgsz": args.imgsz,
                  "batch": args.batch, "steps": args.steps, "device": _device_name(device),
                  **run(args.lr0 * factor), "seconds": round(time.perf_counter() - t0, 1)}
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.jsonl is not None:
            with args.jsonl.open("a") as f:
                f.write(json.dumps(result) + "\n")
    print(_table(results))
    return 0


def _yolov5_missing(yolov5_dir: Path | None) -> str | None:
    """Why yolov5's arms cannot run here, or None."""
    if yolov5_dir is None:
        return "no --yolov5-dir / YOLOV5_DIR"
    if not (yolov5_dir / YOLOV5_CFG).is_file():
        return f"{yolov5_dir / YOLOV5_CFG} does not exist"
    sys.path.insert(0, str(yolov5_dir))
    try:
        import models.yolo  # noqa: F401  - yolov5's own imports (ultralytics, pandas, ...)
    except Exception as error:  # noqa: BLE001 - whatever its dependencies raise, the yolotr arms still run
        return f"yolov5 does not import: {type(error).__name__}: {error}"
    return None


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _table(results: list[dict]) -> str:
    rows = ["| model | path | LR | first non-finite loss | first non-finite weights | skips | final loss | "
            "non-finite weights at the end |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        loss = f"{r['final_loss']:.4g}" if r["final_loss"] is not None else "–"
        rows.append(f"| {r['model']} | {r['path']} | {r['lr']:g} (×{r['lr_factor']:g}) | "
                    f"{r['first_nonfinite_loss_step'] or '–'} | {r['first_nonfinite_weights_step'] or '–'} | "
                    f"{r['skipped_steps']}/{r['steps']} | {loss} | {r['nonfinite_weights']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
