"""sha256 digests of a rank's parameters, buffers and optimizer state, so tests can compare ranks and runs bitwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from yolotr.distributed import is_distributed


def _hash_tensors(items) -> str:
    h = hashlib.sha256()
    for name, t in items:
        h.update(name.encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    return _hash_tensors(sorted(model.state_dict().items()))


def optimizer_digest(optimizer: torch.optim.Optimizer) -> str:
    state = optimizer.state_dict()["state"]
    items = []
    for pid in sorted(state):
        for key in sorted(state[pid]):
            value = state[pid][key]
            if torch.is_tensor(value):
                items.append((f"{pid}.{key}", value))
    return _hash_tensors(items)


def optimizer_sum(optimizer: torch.optim.Optimizer) -> float:
    """Sum of the optimizer's moment / momentum tensors: comparable across world sizes and backends."""
    total = 0.0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dtype.is_floating_point and value.numel() > 1:
                total += float(value.detach().double().sum())
    return total


def zero_partition_sum(zero_optimizer) -> float:
    """Sum of every optimizer-state tensor over all ZeRO partitions: a world-size independent fingerprint."""
    total = torch.zeros((), dtype=torch.float64)
    for state in zero_optimizer.optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dtype.is_floating_point and value.numel() > 1:
                total += value.detach().double().sum().cpu()
    if is_distributed():
        dist.all_reduce(total)
    return float(total)


def append_digest(path: Path, *, step: int, rank: int, tag: str, model: nn.Module, optimizer: tuple[str, float],
                  ema: nn.Module | None = None, loss_scale: float | None = None) -> None:
    """One line of digests.jsonl; `optimizer` is the step backend's (sha256, moment sum) of its optimizer state;
    `loss_scale` fp16's loss scale (train.precision: fp16), recorded only then."""
    opt_digest, opt_sum = optimizer
    record = {
        "tag": tag,
        "step": step,
        "rank": rank,
        "model": model_digest(model),
        "optimizer": opt_digest,
        "optimizer_sum": opt_sum,
        "ema": model_digest(ema) if ema is not None else None,
    }
    if loss_scale is not None:
        record["loss_scale"] = loss_scale
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
