"""Exponential moving average of the weights, kept in fp32 (YOLOv5's ModelEMA, made skip-aware without a host sync)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """ema = d·ema + (1 − d)·model over every floating-point parameter and buffer, with YOLOv5's ramp
    d = decay·(1 − exp(−updates/tau)).

    `update(model, skipped)` takes the guard's device-side verdict: on a skipped step d is *selected* to be exactly 1
    and the model contribution exactly 0, so the EMA stays bitwise unchanged and the host never waits for the verdict.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(model).eval().float()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates  # host-side count of attempted updates; skipped ones are rolled back on inspection
        self._pairs: tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]] | None = None

    def _targets(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The floating-point tensors of both state dicts, paired. Built once per model: they are views of the
        parameters' and buffers' storage, which optimizers, load_state_dict and DeepSpeed (after its set-up) all
        update in place; rebuilding them took two state_dict() walks per step (1.5 ms for yolotr-n on a CPU)."""
        if self._pairs is None or self._pairs[0] is not model:
            ema_sd = self.module.state_dict()
            model_sd = model.state_dict()
            # A module registered under two names (DetectionModel's head is both `model.24` and `detect`) gives two
            # keys for one tensor: updated twice per step, its average would run away (ema·d² + 2·(1 − d)·model
            # settles at 2/(1 + d) × the model: anchors and head biases ~1.9× too large early in training).
            storages: set[tuple[int, torch.Size]] = set()
            keys = []
            for k, v in ema_sd.items():
                if v.dtype.is_floating_point and (v.data_ptr(), v.shape) not in storages:
                    storages.add((v.data_ptr(), v.shape))
                    keys.append(k)
            self._pairs = (model, [ema_sd[k] for k in keys], [model_sd[k].detach().float() for k in keys])
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update(self, model: nn.Module, skipped: torch.Tensor | None = None) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        ema_t, model_t = self._targets(model)
        if skipped is None:
            torch._foreach_lerp_(ema_t, model_t, 1.0 - d)
            return
        keep = torch.where(skipped.bool(), 1.0, d).to(ema_t[0].device)
        # ema·keep + model·(1 − keep): with keep = 1 both terms are exact (x·1 = x, y·0 = 0, x + 0 = x).
        torch._foreach_mul_(ema_t, keep)
        torch._foreach_add_(ema_t, torch._foreach_mul(model_t, 1.0 - keep))

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
