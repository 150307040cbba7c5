"""Host-memory snapshots of the training state: what a rollback restores."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from yolotr.checkpoint.host_stage import HostStager


@dataclass
class Snapshot:
    step: int  # the last optimizer step whose result the snapshot holds
    applied_steps: int
    model: dict
    optimizer: dict
    ema: dict | None


def take_snapshot(step: int, applied_steps: int, model, optimizer, ema, stager: HostStager) -> Snapshot:
    """Copies the state into `stager`'s host buffers, which the previous snapshot of that stager also used: a new
    snapshot replaces the old one."""
    state, _ = stager.stage(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
        }
    )
    return Snapshot(step=step, applied_steps=applied_steps, **state)


def restore_snapshot(snap: Snapshot, model, optimizer, ema) -> None:
    """Puts the snapshot back; it stays intact for a later rollback to the same state."""
    model.load_state_dict(snap.model)  # copies into the parameters
    # An optimizer keeps the tensors it is given when they are already on the right device and dtype: without the
    # copy, the next steps would update the snapshot's own momentum in place.
    _load_optimizer_state(optimizer, copy.deepcopy(snap.optimizer))
    if ema is not None and snap.ema is not None:
        ema.load_state_dict(snap.ema)


def _load_optimizer_state(optimizer, state: dict) -> None:
    dp_group = getattr(optimizer, "dp_process_group", None)
    if dp_group is None:
        optimizer.load_state_dict(state)
        return
    # A DeepSpeed ZeRO optimizer: its load_state_dict takes the list of every data-parallel rank's dicts and reads
    # entry [dp_rank] (ZeRO's default, non-elastic layout). A snapshot holds this rank's own dict only; the other
    # entries are None, so any code path that wanted them would fail loudly. fp32 master partitions come from the
    # snapshot itself, not re-derived from the model's weights.
    import torch.distributed as dist

    states: list[dict | None] = [None] * dist.get_world_size(group=dp_group)
    states[dist.get_rank(group=dp_group)] = state
    optimizer.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=True)
