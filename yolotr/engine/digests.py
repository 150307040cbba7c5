"""sha256 digests of a rank's parameters, buffers and optimizer state, so tests can compare ranks and runs bitwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn


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


def append_digest(path: Path, *, step: int, rank: int, model: nn.Module, optimizer, tag: str) -> None:
    record = {
        "tag": tag,
        "step": step,
        "rank": rank,
        "model": model_digest(model),
        "optimizer": optimizer_digest(optimizer),
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
