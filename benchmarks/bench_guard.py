"""Guard overhead: median step time of the guarded step vs a plain `clip_grad_norm_` + `optimizer.step()`,
measured interleaved in one process (same model, same batch), on yolotr-n, with the optimizer the trainer picks
for the device (fused SGD with found_inf on a GPU, plain SGD with a verdict read on a CPU) in both arms.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_guard.py [--imgsz 256] [--rounds 15]
    .venv/bin/python benchmarks/bench_guard.py --device cuda --batch 64 --imgsz 640 --rounds 51

The step time includes forward, loss and backward (what a training step costs); the ratio shows what the guard adds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.step import BufferGuard, guarded_step
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cfg", default="configs/models/yolotr-n.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    n = 4 * args.batch
    targets = torch.cat([torch.arange(n).remainder(args.batch)[:, None].float(), torch.randint(0, 3, (n, 1)).float(),
                         torch.rand(n, 2) * 0.6 + 0.2, torch.rand(n, 2) * 0.2 + 0.05], 1).to(device)
    fused = True if device.type == "cuda" else None  # what the trainer picks (trainer.py)

    def setup():
        torch.manual_seed(0)
        model = DetectionModel(args.cfg, nc=3).to(device)
        groups = build_param_groups(model, 5e-4, 0.2)
        params = [p for g in groups for p in g["params"]]
        optimizer = build_optimizer(groups, "sgd", 0.01, 0.937, fused=fused)
        return model, params, optimizer, ComputeLoss(model, imgsz=args.imgsz), BufferGuard(model)

    # One model and optimizer for both arms, alternating: two instances can differ by their memory placement alone.
    state = setup()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    no_skip = torch.zeros((), dtype=torch.bool, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(state, use_guard: bool) -> float:
        model, params, optimizer, compute_loss, buffers = state
        sync()
        t0 = time.perf_counter()
        before = buffers.save() if use_guard else []
        with autocast:
            preds = model(images)
        loss, _ = compute_loss(preds, targets)
        loss.backward()
        if use_guard:
            guarded_step(params, optimizer, max_norm=1.0, images=args.batch, force_skip=no_skip, buffers=buffers,
                         buffers_before=before)
        else:
            torch.nn.utils.clip_grad_norm_(params, 1.0 * args.batch)  # the same threshold: the loss is ×batch
            optimizer.found_inf = None  # left by the guarded arm; a plain step has none
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step(state, True), step(state, False)
    times = {"guarded": [], "plain": []}
    for i in range(args.rounds):
        order = [("guarded", True), ("plain", False)]
        for name, use_guard in order if i % 2 == 0 else order[::-1]:
            times[name].append(step(state, use_guard))
    g, p = statistics.median(times["guarded"]), statistics.median(times["plain"])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    kind = "fused SGD, found_inf" if fused else "SGD, verdict read on the host"
    print(f"| step | median s (batch {args.batch}, {args.imgsz}px, {where}) |")
    print("|---|---:|")
    print(f"| plain clip_grad_norm_ + optimizer.step() ({kind.split(',')[0]}) | {p:.4f} |")
    print(f"| yolotr guarded step ({kind}) | {g:.4f} |")
    print(f"\nguard overhead: {100 * (g / p - 1):+.2f}% ({1000 * (g - p):+.2f} ms, ratio {g / p:.4f}, "
          f"{args.rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
