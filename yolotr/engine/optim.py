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
    """YOLOv5's learning-rate, momentum and accumulation schedule, as a function of the *applied* optimizer steps
    (a skipped step does not advance it); `backoff` multiplies every LR during a post-rollback cool-down.

    Progress is counted in batches (of `train.batch_size` images, what YOLOv5 calls iterations), as YOLOv5 does:
      * warm-up over `warmup_batches`: the LR of weights rises from 0 and that of biases falls from `warmup_bias_lr`,
        both towards the scheduled LR, and momentum rises from `warmup_momentum`; meanwhile the number of batches
        accumulated per optimizer step ramps from 1 to `accumulate` (YOLOv5's nominal batch), so early steps are many
        and small (`ramp_accumulation`; off under DeepSpeed, whose accumulation is fixed when the engine is built);
      * decay: linear (or cosine) from lr0 to lr0·lrf over `epochs`, evaluated at the epoch (`lr_step="epoch"`, as
        YOLOv5's per-epoch LambdaLR: the last epoch trains at lf(epochs − 1), lr0·lrf would come only after it) or at
        the exact fraction of an epoch (`lr_step="step"`).
    """

    lr0: float
    lrf: float
    epochs: float
    batches_per_epoch: int
    warmup_batches: int
    warmup_bias_lr: float
    warmup_momentum: float
    momentum: float
    accumulate: int = 1
    ramp_accumulation: bool = True
    cos_lr: bool = False
    lr_step: str = "epoch"

    def __post_init__(self) -> None:
        # Batches consumed before each warm-up step: the accumulation ramp makes it irregular until warm-up ends.
        self._warm_starts: list[int] = []
        batches = 0
        while self.ramp_accumulation and batches < self.warmup_batches:
            self._warm_starts.append(batches)
            batches += self._step_batches(batches)
        self._after_warm = batches

    @classmethod
    def from_config(cls, train, batches_per_epoch: int, *, accumulate: int, ramp_accumulation: bool = True,
                    max_steps: int | None = None) -> Schedule:
        """From the `train` config section: warm-up over `warmup_epochs` (at least `warmup_steps_min` batches)."""
        warmup = 0
        if train.warmup_epochs > 0:
            warmup = max(round(train.warmup_epochs * batches_per_epoch), train.warmup_steps_min)
        schedule = cls(lr0=train.lr0, lrf=train.lrf, epochs=float(train.epochs), batches_per_epoch=batches_per_epoch,
                       warmup_batches=warmup, warmup_bias_lr=train.warmup_bias_lr,
                       warmup_momentum=train.warmup_momentum, momentum=train.momentum, accumulate=accumulate,
                       ramp_accumulation=ramp_accumulation, cos_lr=train.cos_lr, lr_step=train.lr_step)
        if max_steps:  # the decay spans the steps asked for, not the epochs
            schedule.epochs = schedule.batches_before(max_steps) / batches_per_epoch
        return schedule

    def _accumulate_at_batch(self, batch: int) -> int:
        if not self.ramp_accumulation or batch >= self.warmup_batches:
            return self.accumulate
        # YOLOv5: round(interp(ni, [0, nw], [1, nbs / batch_size])), at least 1
        return max(1, round(1 + (self.accumulate - 1) * batch / self.warmup_batches))

    def _step_batches(self, first: int) -> int:
        """Batches of the step that starts at batch `first`: YOLOv5 steps after batch ni once ni − last step's batch
        reaches the accumulation it computes at ni."""
        count = 1
        while count < self._accumulate_at_batch(first + count - 1):
            count += 1
        return count

    def batches_before(self, step: int) -> int:
        """Batches the first `step` optimizer steps consume."""
        if step < len(self._warm_starts):
            return self._warm_starts[step]
        return self._after_warm + (step - len(self._warm_starts)) * self.accumulate

    def accumulate_at(self, step: int) -> int:
        """Batches optimizer step number `step` (0-based: `step` steps were applied before it) accumulates."""
        return self._step_batches(self.batches_before(step))

    def total_steps(self) -> int:
        """Optimizer steps that consume at most `epochs` epochs of batches."""
        budget = round(self.epochs * self.batches_per_epoch)
        if budget <= self._after_warm:
            return max(sum(1 for start in self._warm_starts if start < budget), 1)
        return len(self._warm_starts) + (budget - self._after_warm) // self.accumulate

    def decay_factor(self, batch: int) -> float:
        epoch = batch / self.batches_per_epoch
        if self.lr_step == "epoch":
            epoch = math.floor(epoch)
        t = min(epoch / max(self.epochs, 1e-9), 1.0)
        if self.cos_lr:
            return ((1 - math.cos(t * math.pi)) / 2) * (self.lrf - 1) + 1
        return (1 - t) * (1.0 - self.lrf) + self.lrf

    def apply(self, optimizer: torch.optim.Optimizer, step: int, backoff: float = 1.0) -> None:
        """Sets the LRs and momenta of optimizer step number `step` (0-based), as YOLOv5 sets them at its last batch."""
        batch = self.batches_before(step) + self.accumulate_at(step) - 1
        target = self.lr0 * self.decay_factor(batch)
        warm = batch < self.warmup_batches
        frac = batch / self.warmup_batches if warm else 1.0
        for group in optimizer.param_groups:
            start = self.warmup_bias_lr if group.get("kind") == "bias" else 0.0
            lr = start + (target - start) * frac if warm else target
            group["lr"] = lr * group.get("lr_mult", 1.0) * backoff
            if "momentum" in group:
                group["momentum"] = self.warmup_momentum + (self.momentum - self.warmup_momentum) * frac
            elif "betas" in group:
                group["betas"] = (self.warmup_momentum + (self.momentum - self.warmup_momentum) * frac, group["betas"][1])

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
