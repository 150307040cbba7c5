"""The DDP + NCCL guarded step on one GPU: bf16 autocast forward, DDP's NCCL all-reduce with yolotr's comm hook and
consensus parameter, the guard's fused step, the EMA — every step between inspections under
torch.cuda.set_sync_debug_mode("error"), with a NaN injected into the gradient at one step, which must be skipped.

One GPU gives a one-rank NCCL group (NCCL refuses two ranks on one device), so this checks the code path, not the
cross-rank agreement; the agreement is tested on CPU with gloo (tests/engine/test_skip_consensus.py).

    python benchmarks/gpu_nccl_step.py [--steps 30] [--nan-step 11]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.consensus import ConsensusModule, ConsensusPayload, install_local_check_hook
from yolotr.guard.ema import ModelEMA
from yolotr.guard.step import BufferGuard, guarded_step
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--nan-step", type=int, default=11)
    parser.add_argument("--inspect-every", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29751")
    dist.init_process_group("nccl", rank=0, world_size=1)
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = DetectionModel("configs/models/yolotr-n.yaml", nc=4).to(device)
    wrapper = ConsensusModule(model).to(device)
    ddp = DistributedDataParallel(wrapper, device_ids=[0], broadcast_buffers=True)
    local_bad = torch.zeros((), dtype=torch.bool, device=device)
    install_local_check_hook(ddp, local_bad)
    groups = build_param_groups(model, 5e-4, 0.2)
    params = [p for g in groups for p in g["params"]]
    optimizer = build_optimizer(groups, "sgd", 0.01, 0.937, fused=True)
    ema = ModelEMA(model)
    compute_loss = ComputeLoss(model, imgsz=320)
    buffers = BufferGuard(model)
    first = params[0]
    armed = torch.zeros((), dtype=torch.bool, device=device)
    first.register_hook(lambda g: torch.where(armed, float("nan"), g))  # the NaN enters one local gradient
    images = torch.rand(16, 3, 320, 320, device=device)
    targets = torch.tensor([[i % 16, i % 4, 0.3 + 0.02 * (i % 10), 0.5, 0.1, 0.2] for i in range(48)], device=device)
    no_skip = torch.zeros((), dtype=torch.bool, device=device)
    pending, skipped_steps = [], []
    for step in range(1, args.steps + 1):
        # Steps 1 and 2 are not checked: DDP rebuilds its gradient buckets in the second forward and reads two
        # small index tensors back to the host (reducer.cpp, once per process).
        inspect = step <= 2 or step % args.inspect_every == 0
        torch.cuda.set_sync_debug_mode("default" if inspect else "error")
        armed.fill_(step == args.nan_step)
        local_bad.zero_()
        saved = buffers.save()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            preds = ddp(images)
        loss, items = compute_loss(preds, targets)
        payload = torch.zeros(ConsensusPayload.SIZE, device=device)
        payload[ConsensusPayload.LOSS] = items.sum()
        wrapper.payload = payload
        wrapper.tie(loss).backward()
        norm, skipped = guarded_step(params, optimizer, max_norm=1.0, images=len(images), force_skip=no_skip,
                                     buffers=buffers, buffers_before=saved)
        ema.update(model, skipped)
        optimizer.zero_grad(set_to_none=True)
        wrapper.consensus.grad = None
        pending.append((step, norm, skipped, local_bad.clone()))
        torch.cuda.set_sync_debug_mode("default")
        if inspect:
            for s, n, k, bad in pending:  # the only device-to-host reads, at inspection steps
                if bool(k):
                    skipped_steps.append(s)
                    print(f"step {s}: skipped, grad_norm={float(n):.3g}, local gradient non-finite: {bool(bad)}")
            pending = []
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    print(f"NCCL one-rank DDP: {args.steps} steps, set_sync_debug_mode('error') between inspections raised nothing; "
          f"skipped steps {skipped_steps} (NaN injected at {args.nan_step}); parameters finite: {finite}")
    dist.destroy_process_group()
    if skipped_steps != [args.nan_step] or not finite:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
