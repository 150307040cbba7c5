"""Parameter groups, the optimizer and the learning-rate / momentum schedule.

Groups follow YOLOv5 with two corrections: *every* bias and every norm weight is exempt from weight decay (YOLOv5
decays `nn.MultiheadAttention.in_proj_bias`), and Transformer parameters get `transformer_lr_mult` of the CNN's LR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from yolotr.model.transformer import TRANSFORMER_TYPES

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _transformer_param_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, TRANSFORMER_TYPES) for p in m.parameters()}


def build_param_groups(model: nn.Module, weight_decay: float, transformer_lr_mult: float) -> list[dict]:
    """Six groups: {cnn, transformer} × {decayed weights, norm weights, biases}.

    Each group carries `lr_mult` (applied by the schedule) and `kind` ("weight", "norm", "bias"): biases warm up from
    `warmup_bias_lr`, as in YOLOv5. Anything that is neither a bias nor a norm weight and has ≥ 2 dims (conv and
    linear weights) is decayed; 1-d leftovers (layer-scale gammas, position scales) are not.
    """
    transformer_ids = _transformer_param_ids(model)
    norm_weight_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, _NORM_TYPES) and getattr(m, "weight", None) is not None
    }
    groups: dict[tuple[str, str], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "transformer" if id(p) in transformer_ids else "cnn"
        if name.endswith("bias"):
            kind = "bias"
        elif id(p) in norm_weight_ids or p.ndim < 2:
            kind = "norm"
        else:
            kind = "weight"
        groups.setdefault((part, kind), []).append(p)
    result = []
    for (part, kind), params in sorted(groups.items()):
        result.append(
            {
                "params": params,
                "weight_decay": weight_decay if kind == "weight" else 0.0,
                "lr_mult": transformer_lr_mult if part == "transformer" else 1.0,
                "kind": kind,
                "name": f"{part}/{kind}",
            }
        )
    return result


def build_optimizer(
    groups: list[dict], name: str, lr: float, momentum: float, *, fused: bool | None = True, preinit_momentum: bool = True
):
    """SGD (Nesterov, YOLOv5's defaults) or AdamW, fused where torch supports it.

    Fused kernels take a `found_inf` tensor and then leave parameters *and* state untouched on the device, without a
    host sync: that is how the guard skips a step (see guard.py).
    """
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
        if not preinit_momentum:  # ZeRO re-creates the state on its flat partitions
            return opt
        # A fused SGD step skipped by found_inf on the very first step would leave `momentum_buffer` allocated but
        # uninitialised (torch.empty), and the next step would use it as if it were real momentum. Zero buffers make
        # the first real step bitwise identical to torch's lazy initialisation (0·m + g = g).
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return opt
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), fused=fused)
    raise ValueError(f"unknown optimizer {name!r} (sgd or adamw)")


@dataclass
class Schedule:
    """YOLOv5's warmup (LR from 0, bias LR from `warmup_bias_lr`, momentum from `warmup_momentum`), then cosine
    (or linear) decay from lr0 to lr0·lrf over `total_steps`. A function of the *applied* optimizer steps, so a skipped
    step does not advance it; `backoff` multiplies every LR during a post-rollback cool-down.
    """

    lr0: float
    lrf: float
    total_steps: int
    warmup_steps: int
    warmup_bias_lr: float
    warmup_momentum: float
    momentum: float
    cos_lr: bool = True

    @classmethod
    def from_config(cls, train, total_steps: int, steps_per_epoch: int) -> Schedule:
        """From the `train` config section: warmup over `warmup_epochs` (at least `warmup_steps_min` steps)."""
        warmup = 0
        if train.warmup_epochs > 0:
            warmup = max(round(train.warmup_epochs * steps_per_epoch), train.warmup_steps_min)
        return cls(lr0=train.lr0, lrf=train.lrf, total_steps=total_steps, warmup_steps=warmup,
                   warmup_bias_lr=train.warmup_bias_lr, warmup_momentum=train.warmup_momentum,
                   momentum=train.momentum, cos_lr=train.cos_lr)

    def decay_factor(self, step: int) -> float:
        t = min(step / max(self.total_steps, 1), 1.0)
        if self.cos_lr:
            return ((1 - math.cos(t * math.pi)) / 2) * (self.lrf - 1) + 1
        return (1 - t) * (1.0 - self.lrf) + self.lrf

    def apply(self, optimizer: torch.optim.Optimizer, step: int, backoff: float = 1.0) -> None:
        target = self.lr0 * self.decay_factor(step)
        warm = step < self.warmup_steps
        frac = step / self.warmup_steps if warm else 1.0
        for group in optimizer.param_groups:
            start = self.warmup_bias_lr if group.get("kind") == "bias" else 0.0
            lr = start + (target - start) * frac if warm else target
            group["lr"] = lr * group.get("lr_mult", 1.0) * backoff
            if "momentum" in group:
                group["momentum"] = self.warmup_momentum + (self.momentum - self.warmup_momentum) * frac
            elif "betas" in group:
                group["betas"] = (self.warmup_momentum + (self.momentum - self.warmup_momentum) * frac, group["betas"][1])

    def state_dict(self) -> dict:
        return dict(self.__dict__)
