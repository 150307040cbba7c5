"""Guard overhead: median step time of the guarded step vs a plain `clip_grad_norm_` + `optimizer.step()`,
measured interleaved in one process (same model, same batch), on yolotr-n.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_guard.py [--imgsz 256] [--rounds 15]

The step time includes forward, loss and backward (what a training step costs); the ratio shows what the guard adds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from yolotr.engine.guard import guarded_step
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cfg", default="configs/models/yolotr-n.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
    n = 4 * args.batch
    targets = torch.cat([torch.arange(n).remainder(args.batch)[:, None].float(), torch.randint(0, 3, (n, 1)).float(),
                         torch.rand(n, 2) * 0.6 + 0.2, torch.rand(n, 2) * 0.2 + 0.05], 1)

    def setup(fused: bool):
        model = DetectionModel(args.cfg, nc=3)
        groups = build_param_groups(model, 5e-4, 0.2)
        params = [p for g in groups for p in g["params"]]
        return model, params, build_optimizer(groups, "sgd", 0.01, 0.937, fused=fused), ComputeLoss(model, imgsz=args.imgsz)

    guarded, plain = setup(True), setup(False)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    def step(state, use_guard: bool) -> float:
        model, params, optimizer, compute_loss = state
        buffers = list(model.buffers())
        t0 = time.perf_counter()
        before = [b.clone() for b in buffers] if use_guard else []
        with autocast:
            preds = model(images)
        loss, _ = compute_loss(preds, targets)
        loss.backward()
        if use_guard:
            guarded_step(params, optimizer, max_norm=1.0, force_skip=torch.tensor(False), buffers=buffers,
                         buffers_before=before)
        else:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for _ in range(2):  # warm-up
        step(guarded, True), step(plain, False)
    times = {"guarded": [], "plain": []}
    for i in range(args.rounds):
        order = [("guarded", guarded, True), ("plain", plain, False)]
        for name, state, use_guard in order if i % 2 == 0 else order[::-1]:
            times[name].append(step(state, use_guard))
    g, p = statistics.median(times["guarded"]), statistics.median(times["plain"])
    print(f"| step | median s (batch {args.batch}, {args.imgsz}px, {torch.get_num_threads()} threads) |")
    print("|---|---:|")
    print(f"| plain clip_grad_norm_ + SGD (foreach) | {p:.4f} |")
    print(f"| yolotr guarded step (fused SGD, found_inf) | {g:.4f} |")
    print(f"\nguard overhead: {100 * (g / p - 1):+.2f}% (ratio {g / p:.4f}, {args.rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
