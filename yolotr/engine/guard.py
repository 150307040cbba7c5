"""The step guard: one verdict per optimizer step, the same on every rank, decided on the device.

How every rank reaches the same verdict without a collective of its own (plain DDP):
  * DDP all-reduces the gradients during backward, so after backward every rank holds the *same bits*. The global
    norm computed locally from them is the global norm, identical on all ranks, and so is "is it finite?".
  * Whatever else must be agreed (the mean loss for spike detection, "a rank wants to stop", "a rank saw a non-finite
    loss") rides in that same all-reduce as the gradient of a tiny `consensus` parameter (see ConsensusPayload).
Under DeepSpeed the engine computes the global norm across ZeRO partitions and skips non-finite steps itself; its
overflow flag is all-reduced over the data-parallel group, so `was_step_applied()` agrees on every rank.

A skipped step is skipped by *selection*: fused optimizers take a `found_inf` tensor and then leave parameters and
their state bitwise unchanged on the device; the EMA selects a decay of exactly 1; buffers (BatchNorm statistics
touched by a non-finite forward) are restored with `torch.where`. Nothing is multiplied by zero (0·NaN = NaN), and the
host never waits for the verdict: it reads verdicts only at inspection steps (guard.py: GuardMonitor).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm


class ConsensusPayload:
    """Slots of the consensus parameter's gradient. Each rank adds its local values in a gradient hook; DDP's
    all-reduce averages them, so after backward every rank reads the cross-rank mean."""

    STOP = 0  # > 0: at least one rank received a preemption signal
    LOSS = 1  # mean total loss (then box, obj, cls) across ranks
    BOX, OBJ, CLS = 2, 3, 4
    LOCAL_BAD = 5  # > 0: at least one rank had a non-finite loss or local gradient
    SIZE = 6


class ConsensusModule(nn.Module):
    """Wraps the detector so that DDP also all-reduces the consensus parameter. It is excluded from the optimizer,
    the gradient norm and every saved weights file."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.consensus = nn.Parameter(torch.zeros(ConsensusPayload.SIZE))
        self.payload = torch.zeros(ConsensusPayload.SIZE)
        # A tensor hook on a leaf runs before gradient accumulation, hence before DDP copies the gradient into its
        # bucket: the payload is averaged with the real gradients, at no extra collective.
        self.consensus.register_hook(lambda grad: grad + self.payload.to(grad.device))

    def forward(self, images: torch.Tensor):
        return self.detector(images)

    def tie(self, loss: torch.Tensor) -> torch.Tensor:
        """Makes the consensus parameter part of the graph (DDP requires every parameter to get a gradient)."""
        return loss + self.consensus.sum() * 0.0


def guarded_step(
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    max_norm: float,
    force_skip: torch.Tensor,
    buffers: list[torch.Tensor],
    buffers_before: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and steps, or skips; returns the device tensors (global grad norm before clipping, skipped as bool).

    `params` hold gradients that DDP has already averaged across ranks (identical bits everywhere).
    """
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = get_total_norm(grads, norm_type=2.0, foreach=True).float()
    # BatchNorm statistics can overflow in a forward whose loss and gradient stay finite: that step is bad too.
    stats = [b for b in buffers if b.dtype.is_floating_point]
    stats_finite = torch.isfinite(get_total_norm(stats, foreach=True)) if stats else torch.ones((), dtype=torch.bool)
    skipped = ~torch.isfinite(grad_norm) | ~stats_finite.to(grad_norm.device) | force_skip
    if max_norm > 0:
        # When the norm is non-finite the clipped gradients are garbage too, but the step below is not applied.
        clip_grads_with_norm_(params, max_norm, grad_norm, foreach=True)
    # Fused SGD/AdamW read `found_inf`: 1 → no parameter, momentum, moment or step-counter changes.
    optimizer.found_inf = skipped.float()
    optimizer.step()
    # A non-finite forward may have written NaN into BatchNorm running statistics: select the old values back.
    for buf, before in zip(buffers, buffers_before):
        buf.copy_(torch.where(skipped, before, buf))
    return grad_norm, skipped
