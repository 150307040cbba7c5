"""The model's fast path on a GPU: channels-last memory format and torch.compile, each chosen once from the config.

Both are "auto" by default: on on a GPU, off on a CPU, where the old eager, contiguous path runs unchanged (CPU
convolutions gain nothing from channels-last, and a compilation costs more than a short CPU run saves).

The compilation is `nn.Module.compile()`: it compiles the detector's forward *in place*, so the module keeps its own
class and parameter names (no `_orig_mod.` prefix in checkpoints, weights files or the EMA's copy) and everything that
holds the module (the EMA, the snapshot, the checkpointer, DDP) sees the same parameters. It is applied before the
module is wrapped in DDP, as torchtitan applies compile before its data-parallel wrappers: DDP then hooks the compiled
module's gradients exactly as the eager one's (its own graph-splitting optimizer is for DDP modules compiled whole).
Only the forward is compiled: the guarded step (guard/step.py) stays eager, with the fused optimizer's found_inf skip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from yolotr.config.run import TrainConfig


@dataclass(frozen=True)
class FastPath:
    compile: bool
    channels_last: bool
    compile_backend: str

    @classmethod
    def from_config(cls, train: TrainConfig, device: torch.device) -> FastPath:
        on_gpu = device.type == "cuda"
        return cls(compile=on_gpu if train.compile == "auto" else train.compile,
                   channels_last=on_gpu if train.channels_last == "auto" else train.channels_last,
                   compile_backend=train.compile_backend)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Channels-last weights, in place (conv weights are 4-d: the only tensors the format changes)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compile_model(self, model: nn.Module) -> None:
        """Compiles `model`'s forward in place; the compilation itself happens at the first forward."""
        if self.compile:
            model.compile(backend=self.compile_backend)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (B, 3, H, W) in the model's memory format (a no-op when it already is)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


class CompileClock:
    """The compilation's cost, for the `compile` event: the wall time of this process's first step (which waits for
    the forward's and backward's compilation on the host) and the compiler's own count of it."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def record(self) -> dict:
        first_step_s = time.perf_counter() - self.start
        return {"first_step_s": round(first_step_s, 3), "compile_s": _dynamo_compile_s()}


def _dynamo_compile_s() -> float | None:
    """Seconds torch.compile spent tracing and compiling (forward graphs and their backward), from its timers; None
    when this torch does not report them."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
    except (ImportError, TypeError, ValueError):
        return None
    spent = dict(zip(names, values, strict=True))
    keys = ("_compile.compile_inner", "backward._backward_impl")
    if not any(key in spent for key in keys):
        return None
    return round(sum(float(str(spent.get(key, 0.0))) for key in keys), 3)
