"""The guarded optimizer step: one verdict per step, the same on every rank (consensus.py says why), decided on the
device. Under DeepSpeed the engine skips non-finite steps itself; its overflow flag is all-reduced over the
data-parallel group, so `was_step_applied()` agrees on every rank.

A skipped step is skipped by *selection*, never by multiplying by zero (0·NaN = NaN), in one of two ways:
  * on a GPU the optimizer is fused and takes a `found_inf` tensor: when it is 1 the kernel leaves parameters and
    their state bitwise unchanged on the device, the EMA selects a decay of exactly 1, and buffers (BatchNorm
    statistics touched by a non-finite forward) are put back with `torch.where`. The host never waits for the
    verdict: it reads verdicts only at inspection steps (monitor.py: GuardMonitor);
  * on a CPU every op has finished when it returns, so reading the verdict costs no synchronisation: the step is
    simply not called. (CPU fused kernels are slower than the plain ones, and would cost the guard ~1.5%.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm


class BufferGuard:
    """A module's buffers (BatchNorm running statistics and batch counters), saved before the forward and put back
    when the step is skipped. Kept flat per dtype: a handful of kernels per step instead of two per buffer (yolotr-n
    has 167 buffers, and on a GPU each tiny kernel costs a launch)."""

    def __init__(self, module: nn.Module):
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buf in module.buffers():
            by_dtype.setdefault(buf.dtype, []).append(buf)
        self.groups = list(by_dtype.values())

    def save(self) -> list[torch.Tensor]:
        return [torch.cat([b.reshape(-1) for b in group]) for group in self.groups]

    @staticmethod
    def all_finite(flats: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Whether every floating-point value of `flats` (from `save()`) is finite, as a bool on `device` (made there
        when there is nothing to check: a host tensor copied over would make the host wait)."""
        finite = [torch.isfinite(flat).all() for flat in flats if flat.dtype.is_floating_point]
        return torch.stack(finite).all() if finite else torch.ones((), dtype=torch.bool, device=device)

    def restore(self, saved: list[torch.Tensor], where: torch.Tensor | None = None,
                current: list[torch.Tensor] | None = None) -> None:
        """Copies the saved values back; with `where`, only if it is true (selected on the device) and the buffers
        keep `current` (their values now, from `save()`; taken here when not given)."""
        if where is not None and current is None:
            current = self.save()
        for i, (group, flat) in enumerate(zip(self.groups, saved, strict=True)):
            if where is not None:
                flat = torch.where(where, flat, current[i])
            values = flat.split([b.numel() for b in group])
            torch._foreach_copy_(group, [v.view_as(b) for v, b in zip(values, group, strict=True)])


def guarded_step(
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    max_norm: float,
    force_skip: torch.Tensor,
    buffers: BufferGuard,
    buffers_before: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and steps, or skips; returns the device tensors (global grad norm before clipping, skipped as bool).

    `params` hold gradients that DDP has already averaged across ranks (identical bits everywhere), so every rank
    computes the same verdict.
    """
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = get_total_norm(grads, norm_type=2.0, foreach=True).float()
    # BatchNorm statistics can overflow in a forward whose loss and gradient stay finite: that step is bad too.
    # (The optimizer step does not touch them, so this one copy also serves the restore below.)
    current = buffers.save()
    stats_finite = buffers.all_finite(current, grad_norm.device)
    skipped = ~torch.isfinite(grad_norm) | ~stats_finite | force_skip
    if max_norm > 0:
        # When the norm is non-finite the clipped gradients are garbage too, but the step below is not applied.
        clip_grads_with_norm_(params, max_norm, grad_norm, foreach=True)
    if optimizer.defaults.get("fused"):
        # Fused SGD/AdamW read `found_inf`: 1 → no parameter, momentum, moment or step-counter changes.
        optimizer.found_inf = skipped.float()
        optimizer.step()
        buffers.restore(buffers_before, where=skipped, current=current)
    elif not skipped.item():  # CPU: the verdict is already computed, reading it waits for nothing
        optimizer.step()
    else:
        buffers.restore(buffers_before)
    return grad_norm, skipped


def unguarded_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, *,
                   max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The stability study's baseline (guard.enabled: false): clip if asked, and step whatever the gradients hold."""
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = get_total_norm(grads, foreach=True).float()
    if max_norm > 0:
        clip_grads_with_norm_(params, max_norm, grad_norm, foreach=True)
    optimizer.step()
    return grad_norm, torch.zeros((), dtype=torch.bool, device=grad_norm.device)
