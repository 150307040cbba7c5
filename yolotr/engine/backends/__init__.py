"""One step backend per distributed kind, chosen once when the trainer is built.

A backend owns what differs between data-parallel implementations: what the forward runs through, how a micro-batch's
gradient is reduced and how the cross-rank consensus travels, the clip-or-skip optimizer step, and the optimizer's
part of a checkpoint. The trainer's micro-batch loop (`Trainer.train_step`) is the same for all of them.

    base.py       the contract: `StepBackend` (a Protocol) and `StepResult`, what one optimizer step returns
    ddp.py        one process, or DistributedDataParallel (the consensus rides in DDP's gradient all-reduce)
    deepspeed.py  DeepSpeed ZeRO-1/2 (the engine clips and skips; the consensus takes one small all-reduce)
"""

from __future__ import annotations

from pathlib import Path

from yolotr.config import Config
from yolotr.engine.backends.base import StepBackend, StepResult
from yolotr.engine.backends.ddp import DDPBackend
from yolotr.engine.backends.deepspeed import DeepSpeedBackend
from yolotr.engine.runtime import Runtime
from yolotr.guard.consensus import ConsensusModule


def make_step_backend(cfg: Config, runtime: Runtime, wrapper: ConsensusModule, optimizer, *, accumulate: int,
                      resume_from: Path | None, local_bad) -> StepBackend:
    if runtime.kind == "deepspeed":
        return DeepSpeedBackend(cfg, runtime, wrapper, optimizer, accumulate=accumulate, resume_from=resume_from,
                                local_bad=local_bad)
    return DDPBackend(cfg, runtime, wrapper, optimizer, local_bad=local_bad)


__all__ = ["DDPBackend", "DeepSpeedBackend", "StepBackend", "StepResult", "make_step_backend"]
