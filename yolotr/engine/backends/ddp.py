"""The step backend of one process or DistributedDataParallel.

Gradients are all-reduced by DDP during the last micro-batch's backward (`no_sync` on the others), and the consensus
payload (mean loss, stop flag, "a rank's loss was non-finite") rides in that same all-reduce as the gradient of the
consensus parameter (guard/consensus.py): the guarded step costs no collective of its own.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from yolotr.checkpoint.checkpointer import OptimizerStateByName
from yolotr.config import Config
from yolotr.debug.digests import optimizer_digest, optimizer_sum
from yolotr.engine.backends.base import StepResult
from yolotr.engine.runtime import Runtime
from yolotr.guard.consensus import ConsensusModule, ConsensusPayload, install_local_check_hook
from yolotr.guard.loss_scale import LossScale
from yolotr.guard.step import BufferGuard, guarded_step, unguarded_step


def prepare_ddp(runtime: Runtime, module: torch.nn.Module) -> torch.nn.Module:
    """`module` wrapped by Accelerate in DistributedDataParallel when there are several ranks, as is otherwise."""
    if not runtime.distributed:
        return module
    ddp = runtime.accelerator.prepare(module)
    if hasattr(ddp, "_set_ddp_runtime_logging_sample_rate"):
        # DDP times its first 10 iterations and then every 100th with CUDA events that the host waits on at the
        # next forward (reducer_cuda.cpp): a sync torch's sync check does not report. Now only the first 10.
        ddp._set_ddp_runtime_logging_sample_rate(2**31 - 1)
    return ddp


class DDPBackend:
    def __init__(self, cfg: Config, runtime: Runtime, wrapper: ConsensusModule, optimizer, *,
                 local_bad: torch.Tensor) -> None:
        self.kind = runtime.kind  # "single" or "ddp"
        self.runtime = runtime
        self.guard = cfg.guard
        self.wrapper = wrapper
        self.optimizer = optimizer
        self.local_bad = local_bad
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        # The Detect head's 1x1-conv weight gradients come out channels-last from the conv backward; DDP copies them
        # into its bucket either way (one small copy per step), so its layout warning is noise on every rank.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.module = prepare_ddp(runtime, wrapper)  # what the forward runs through
        if runtime.kind == "ddp":
            install_local_check_hook(cast(DistributedDataParallel, self.module), local_bad)
        self._payload = torch.zeros(ConsensusPayload.SIZE, device=runtime.device)
        self._force = torch.zeros((), dtype=torch.bool, device=runtime.device)
        # fp16: the loss is scaled before backward, the gradients unscaled before the guard (guard/loss_scale.py).
        self.loss_scale = LossScale(runtime.device, enabled=cfg.train.precision == "fp16")

    # ---- one optimizer step ----------------------------------------------------------------------------------------
    def accumulating(self, last: bool):
        """Gradients are all-reduced only on the last micro-batch of an accumulation."""
        if last or not self.runtime.distributed:
            return nullcontext()
        return cast(DistributedDataParallel, self.module).no_sync()  # prepare_ddp's, with several ranks

    def backward(self, loss: torch.Tensor, items: torch.Tensor, bad: torch.Tensor, *, micro_batches: int, stop: bool,
                 force_skip: bool) -> None:
        payload = self._payload
        payload[ConsensusPayload.LOSS] = items.sum()
        payload[ConsensusPayload.BOX : ConsensusPayload.CLS + 1] = items
        payload[ConsensusPayload.STOP].fill_(float(stop))  # a kernel argument: no host->device copy
        payload[ConsensusPayload.LOCAL_BAD] = bad.float()
        # Every micro-batch adds its share: after the last backward the consensus gradient holds the step's mean.
        self.wrapper.payload = payload / micro_batches
        self.runtime.accelerator.backward(self.loss_scale.scale(self.wrapper.tie(loss)))

    def optimizer_step(self, *, images: int, force_skip: bool, buffers: BufferGuard,
                       buffers_before: list[torch.Tensor]) -> StepResult:
        """Clip-or-skip (guard/step.py). `images`: how many images' losses the gradient sums."""
        grad = self.wrapper.consensus.grad
        assert grad is not None, "optimizer_step before backward"
        consensus = grad.detach().clone()
        force = self._force.fill_(force_skip)  # a fill kernel: no host->device copy
        # A rank whose loss was non-finite but whose gradient is finite (e.g. a batch emptied by corrupt or
        # quarantined samples) still makes every rank skip: the flag came through the consensus all-reduce.
        losses_finite = consensus[ConsensusPayload.LOCAL_BAD] == 0
        force |= ~losses_finite
        self.loss_scale.unscale_(self.optimizer)  # the norm, the clip and the verdict see the true gradient
        if self.guard.enabled:
            grad_norm, skipped = guarded_step(self.params, self.optimizer, max_norm=self.guard.max_norm, images=images,
                                              force_skip=force, buffers=buffers, buffers_before=buffers_before)
            overflow = self.loss_scale.overflow(grad_norm, ~force)  # force: a forced skip or a bad loss
            self.loss_scale.update(self.optimizer, skipped)  # the verdict backs the scale off: one decision
        else:
            overflow = None
            grad_norm, skipped = unguarded_step(self.params, self.optimizer, max_norm=self.guard.max_norm,
                                                images=images)
        if not self.runtime.distributed:  # no comm hook saw the local gradient: it is the global one
            torch.logical_or(self.local_bad, ~torch.isfinite(grad_norm), out=self.local_bad)
        self.optimizer.zero_grad(set_to_none=True)
        self.wrapper.consensus.grad = None
        return StepResult(grad_norm, skipped, consensus, overflow)

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint_optimizer_state(self):
        """The optimizer's state by parameter name, for DCP: world-size independent (the state is replicated)."""
        if not hasattr(self, "_by_name"):
            self._by_name = OptimizerStateByName(self.wrapper.detector, self.optimizer)
        return self._by_name(self.optimizer)

    def write_checkpoint_files(self, tmp: Path) -> None:
        """Everything goes through DCP (checkpoint/checkpointer.py): nothing of the backend's own."""

    def optimizer_load_template(self) -> dict:
        return get_state_dict(self.wrapper.detector, self.optimizer)[1]

    def load_checkpoint(self, path: Path, loaded: dict) -> None:
        set_state_dict(self.wrapper.detector, self.optimizer, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optimizer"])

    def optimizer_fingerprint(self) -> tuple[str, float]:
        """sha256 of this rank's optimizer state and the sum of its moments (debug.rank_digests)."""
        return optimizer_digest(self.optimizer), optimizer_sum(self.optimizer)
