"""Host-memory snapshots of the training state: what a rollback restores."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


def _to_host(obj):
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class Snapshot:
    step: int  # the last optimizer step whose result the snapshot holds
    applied_steps: int
    model: dict
    optimizer: dict
    ema: dict | None


def take_snapshot(step: int, applied_steps: int, model, optimizer, ema) -> Snapshot:
    return Snapshot(
        step=step,
        applied_steps=applied_steps,
        model=_to_host(model.state_dict()),
        optimizer=_to_host(optimizer.state_dict()),
        ema=_to_host(ema.state_dict()) if ema is not None else None,
    )


def restore_snapshot(snap: Snapshot, model, optimizer, ema) -> None:
    model.load_state_dict(snap.model)
    optimizer.load_state_dict(snap.optimizer)
    if ema is not None and snap.ema is not None:
        ema.load_state_dict(snap.ema)
