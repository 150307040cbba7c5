"""The contract of a step backend, and what one optimizer step returns.

A backend owns what differs between data-parallel implementations (see the package docstring); the trainer's
micro-batch loop drives any of them through these methods alone.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from yolotr.checkpoint.backend_state import CheckpointedBackend
from yolotr.guard.loss_scale import LossScale
from yolotr.guard.step import BufferGuard


@dataclass
class StepResult:
    """One optimizer step, as device tensors: nothing here has been read by the host."""

    grad_norm: torch.Tensor
    """The global norm of the gradient of the per-image mean loss (guard/step.py: the clip's units)."""
    skipped: torch.Tensor
    """The verdict: True when the step was not applied (identical on every rank)."""
    consensus: torch.Tensor
    """The all-reduced consensus payload (guard/consensus.py: mean loss and its parts, stop flag, bad-loss flag)."""
    overflow: torch.Tensor | None
    """fp16 only: the step overflowed the loss scale (a skip the scale answers for, not the data)."""


class StepBackend(CheckpointedBackend, Protocol):
    module: torch.nn.Module
    """What the forward runs through: the consensus-tied detector, wrapped in DDP or DeepSpeed's engine."""

    @property
    def loss_scale(self) -> LossScale | None:
        """fp16's loss scale (guard/loss_scale.py); None where the backend has none."""

    def accumulating(self, last: bool) -> AbstractContextManager:
        """The context of one micro-batch's forward and backward: gradients are reduced on the last one only."""

    def backward(self, loss: torch.Tensor, items: torch.Tensor, bad: torch.Tensor, *, micro_batches: int, stop: bool,
                 force_skip: bool) -> None:
        """Backward of one micro-batch, with this rank's share of the consensus payload riding along."""

    def optimizer_step(self, *, images: int, force_skip: bool, buffers: BufferGuard,
                       buffers_before: list[torch.Tensor]) -> StepResult:
        """Clip-or-skip on the verdict; `images`: how many images' losses the gradient sums."""

    def optimizer_fingerprint(self) -> tuple[str, float]:
        """sha256 of this rank's optimizer state and the sum of its moments (debug.rank_digests)."""
