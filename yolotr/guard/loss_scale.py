"""fp16's loss scale, decided by the guard's verdict (train.precision: fp16, for GPUs without bf16: T4, V100).

fp16 overflows where bf16 does not, so the loss is multiplied by a scale before backward and the gradients divided by
it before the clip. torch's GradScaler skips an overflowed step on its own, by reading its inf check on the host
(`GradScaler.step` waits on `found_inf.item()`), and each rank would decide from its own check. Here the scaler only
scales, unscales and keeps the scale; the decision is the guard's one verdict (guard/step.py), reached identically
on every rank from the all-reduced gradients (guard/consensus.py), on the device:

  * `unscale_` divides the gradients by the scale before the guard computes the norm and clips. Its inf check sees
    what the guard sees (DDP has averaged the gradients, so an inf on any rank is an inf on all of them): an overflow
    makes the norm non-finite and the guard skips the step by selection, like any non-finite step.
  * `update(skipped)` hands the scaler that verdict as its found_inf: a skipped step backs the scale off, and a step
    applied since `growth_interval` steps grows it, the same on every rank, with no host sync. A step the guard skips
    for another reason (a rank's non-finite loss, a forced skip) backs the scale off too: one decision, not two.

An overflow skip is fp16's routine, not trouble: `overflow()` tells the monitor (guard/monitor.py) which skips were
one (the gradient non-finite while every rank's loss was finite, at a scale of at least OVERFLOW_SCALE_FLOOR), so that
they neither quarantine samples nor count toward a rollback. Below the floor a non-finite gradient is not something a
smaller scale cures, and the guard treats it as any other.

With fp16 off the scale is disabled: `scale` returns the loss itself and the other calls do nothing.
"""

from __future__ import annotations

import torch


OVERFLOW_SCALE_FLOOR = 1.0  # 16 back-offs below GradScaler's initial 2**16


class LossScale:
    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.enabled else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divides the gradients by the scale, in place (before the guard's norm and clip)."""
        if self.enabled:
            self.scaler.unscale_(optimizer)

    def update(self, optimizer: torch.optim.Optimizer, skipped: torch.Tensor) -> None:
        """Backs the scale off when the guard skipped the step, grows it after enough applied steps (device ops)."""
        if not self.enabled:
            return
        # The scaler's own inf check, recorded by unscale_, is replaced by the verdict that includes it.
        state = self.scaler._per_optimizer_states[id(optimizer)]
        state["found_inf_per_device"] = {skipped.device: skipped.float().reshape(1)}
        self.scaler.update()

    def overflow(self, grad_norm: torch.Tensor, losses_finite: torch.Tensor) -> torch.Tensor | None:
        """Whether a skip of this step is an overflow (a device bool; before `update`). None with fp16 off."""
        if not self.enabled:
            return None
        scale = self.scaler._scale
        assert scale is not None  # GradScaler makes it on the first scale() of a backward
        return ~torch.isfinite(grad_norm) & losses_finite & (scale >= OVERFLOW_SCALE_FLOOR)

    def value(self) -> torch.Tensor:
        """The current scale, a device scalar (tests and digests read it)."""
        return self.scaler._scale if self.enabled and self.scaler._scale is not None else torch.ones(())

    def state_dict(self) -> dict:
        """Reads the scale back to the host: for checkpoints, at a step boundary only."""
        return self.scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state:
            self.scaler.load_state_dict(state)
