"""Fault injection for tests and drills: NaN losses or NaN local gradients on chosen ranks at chosen steps, and a
file system that fills up."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import torch
from torch import nn

from yolotr.config.run import FaultsConfig
from yolotr.model.transformer import TRANSFORMER_TYPES


class FaultInjector:
    """The run's fault drills (`faults.*`), with their hooks installed on `model`; inert when none is configured."""

    def __init__(self, cfg: FaultsConfig, rank: int, model: nn.Module):
        self.cfg = cfg
        self.rank = rank
        self._nan_loss = {step for r, step in cfg.nan_loss_at if r == rank}
        self._nan_grad = {step for r, step in cfg.nan_grad_at if r == rank}
        self._grad_armed = False
        self._step = 0
        self._install_grad(model)
        self._install_forward(model)

    def nan_loss(self, step: int) -> bool:
        if step in self._nan_loss:
            return True
        if self.cfg.random_nan_rate > 0:
            # A pure function of (seed, step, rank): reproducible, and independent of everything else in the run.
            return random.Random(f"{self.cfg.random_seed}/{step}/{self.rank}").random() < self.cfg.random_nan_rate
        return False

    def forced_skip(self, step: int) -> bool:
        return step in self.cfg.skip_steps

    def arm_grad(self, step: int) -> None:
        self._step = step
        self._grad_armed = step in self._nan_grad

    def _install_forward(self, model: nn.Module) -> None:
        """`faults.nan_forward_at`: the first Transformer block's output becomes NaN on armed steps — a non-finite
        *forward*, as exploding attention produces it."""
        steps = {step for r, step in self.cfg.nan_forward_at if r == self.rank}
        if not steps:
            return
        block = next(m for m in model.modules() if isinstance(m, TRANSFORMER_TYPES))
        block.register_forward_hook(lambda m, i, out: out * float("nan") if self._step in steps else None)

    def _install_grad(self, model: nn.Module) -> None:
        """A hook on the first parameter's gradient poisons it on armed steps. Tensor hooks run before gradient
        accumulation, so the NaN enters this rank's *local* gradient before DDP all-reduces it."""
        if not self._nan_grad:
            return
        first = next(p for p in model.parameters() if p.requires_grad)
        first.register_hook(lambda g: g * float("nan") if self._grad_armed else None)

    def poison_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan")


def fill_file_system(path: Path, leave_bytes: int = 0) -> int:
    """Grows the file `path` with zeros until its file system has at most `leave_bytes` free, or reports itself full
    (ENOSPC, EDQUOT) before that. Returns the bytes written."""
    chunk = bytes(1 << 20)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while (room := shutil.disk_usage(path.parent).free - leave_bytes) > 0:
            try:
                written += os.write(fd, chunk[:room])
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    break
                raise
        os.fsync(fd)
    finally:
        os.close(fd)
    return written
