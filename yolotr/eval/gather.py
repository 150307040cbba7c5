"""Collecting every rank's share on rank 0 and sharing rank 0's answer back; plain pass-through without a
process group, so single-process code paths are the same calls."""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_to_rank0(value: T) -> list[T] | None:
    """Every rank's `value` as a list on rank 0 (in rank order), None on the other ranks."""
    if not is_distributed():
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_from_rank0(value: T | None) -> T:
    """Rank 0's `value` on every rank (the others pass None)."""
    if not is_distributed():
        return value  # type: ignore[return-value]
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
