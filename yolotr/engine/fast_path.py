"""The model's fast path on a GPU: channels-last memory format and torch.compile, each chosen once from the config.

Both are "auto" by default: on on a GPU, off on a CPU, where the old eager, contiguous path runs unchanged (CPU
convolutions gain nothing from channels-last, and a compilation costs more than a short CPU run saves).

The compilation is `nn.Module.compile()`: it compiles the detector's forward *in place*, so the module keeps its own
class and parameter names (no `_orig_mod.` prefix in checkpoints, weights files or the EMA's copy) and everything that
holds the module (the EMA, the snapshot, the checkpointer, DDP) sees the same parameters. It is applied before the
module is wrapped in DDP, as torchtitan applies compile before its data-parallel wrappers: DDP then hooks the compiled
module's gradients exactly as the eager one's (its own graph-splitting optimizer is for DDP modules compiled whole).
Only the forward is compiled: the guarded step (guard/step.py) stays eager, with the fused optimizer's found_inf skip.

Neither may cost a run. torch.compile is lazy: a missing Triton or C compiler, an Inductor or Dynamo error shows only at
the first forward (or, for the backward graph, the first backward). `try_fast_path` therefore runs the first batch's
forward and backward once, with no lasting effect, before the first step; where it fails on any rank, every rank goes
back to eager (then to the contiguous layout) with one warning naming the cause, and the `compile` event records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from yolotr.config.run import TrainConfig
from yolotr.distributed import all_gather_object

log = logging.getLogger(__name__)

# More graph breaks than this in the detector's forward (it has none) means a compiled forward made of many small
# graphs with eager code between them: slower than eager, and each break a chance to recompile.
MAX_GRAPH_BREAKS = 8


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

    def eager(self, model: nn.Module) -> FastPath:
        """Back to the eager forward: the in-place compilation is one attribute, the parameters were always shared."""
        model._compiled_call_impl = None
        return replace(self, compile=False)

    def contiguous(self, model: nn.Module) -> FastPath:
        """Back to the contiguous layout, the one a run without channels_last trains in."""
        model.to(memory_format=torch.contiguous_format)
        return replace(self, channels_last=False)


@dataclass(frozen=True)
class Fallback:
    """The fast path's part that was turned off, and why (each failing rank's error)."""

    part: str  # "compile" or "channels_last"
    cause: str

    def as_dict(self) -> dict:
        return {"part": self.part, "cause": self.cause}


def fit_backend(fast: FastPath, backend_kind: str) -> tuple[FastPath, list[Fallback]]:
    """The fast path a step backend can take. DeepSpeed's engine broadcasts each parameter as a byte view at its
    start (`p.data.view(torch.uint8)`), which a channels-last weight cannot give: its run trains contiguous."""
    if backend_kind != "deepspeed" or not fast.channels_last:
        return fast, []
    cause = "DeepSpeed broadcasts parameters as byte views, which channels-last weights cannot give"
    log.warning("train.channels_last: %s; training contiguous", cause)
    return replace(fast, channels_last=False), [Fallback("channels_last", cause)]


def try_fast_path(fast: FastPath, model: nn.Module,
                  attempt: Callable[[FastPath], None]) -> tuple[FastPath, list[Fallback]]:
    """Runs `attempt(fast)` (the first batch's forward and backward, leaving no trace) until it succeeds on every rank,
    turning off first the compilation, then channels_last, after a failure on any rank; every rank calls this and takes
    the same decisions. Returns the fast path that trains and the fallbacks taken. A failure of the plain eager,
    contiguous attempt is not the fast path's: it is left to the first step to raise."""
    fallbacks: list[Fallback] = []
    while fast.compile or fast.channels_last:
        cause = _failure(attempt, fast)
        failures = [(rank, c) for rank, c in enumerate(all_gather_object(cause)) if c is not None]
        if not failures:
            break
        causes = "; ".join(f"rank {rank}: {c}" for rank, c in failures)
        if fast.compile:
            fast, part = fast.eager(model), "compile"
            log.warning("train.compile: torch.compile (backend %s) failed, training eager: %s", fast.compile_backend,
                        causes)
        else:
            fast, part = fast.contiguous(model), "channels_last"
            log.warning("train.channels_last: the channels-last layout failed, training contiguous: %s", causes)
        fallbacks.append(Fallback(part, causes))
    return fast, fallbacks


def no_trace_step(model: nn.Module, buffers, autocast, compute_loss, images: torch.Tensor,
                  targets: torch.Tensor) -> Callable[[FastPath], None]:
    """`try_fast_path`'s attempt: the training forward and backward of one batch that leaves no trace. The gradients
    are returned by `torch.autograd.grad`, not accumulated (DDP's and DeepSpeed's gradient hooks do not fire), and the
    BatchNorm statistics (`buffers`, a guard/step.py BufferGuard) and the random state are put back."""
    params = [p for p in model.parameters() if p.requires_grad]

    def attempt(fast: FastPath) -> None:
        saved, rng = buffers.save(), torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state() if images.is_cuda else None
        try:
            with autocast:
                preds = model(fast.images(images))
            loss, _ = compute_loss(preds, targets)
            torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            buffers.restore(saved)
            torch.random.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng)

    return attempt


def _failure(attempt: Callable[[FastPath], None], fast: FastPath) -> str | None:
    """What went wrong in one attempt, as one line ("Type: first line of the message"), or None."""
    breaks_before = _graph_breaks()
    try:
        attempt(fast)
    except Exception as error:  # noqa: BLE001 - any compiler or layout error; the eager, contiguous path decides
        return _one_line(error)
    breaks = _graph_breaks() - breaks_before
    if fast.compile and breaks > MAX_GRAPH_BREAKS:
        return f"a graph break storm: {breaks} graph breaks in one forward and backward (limit {MAX_GRAPH_BREAKS})"
    return None


def _one_line(error: BaseException) -> str:
    """"Type: message", on one line; a message that introduces its cause ("backend='inductor' raised:", Dynamo's
    wrapper of the compiler's error) with the cause's line after it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or ["(no message)"]
    message = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return f"{type(error).__name__}: {message}"[:300]


def _graph_breaks() -> int:
    """Dynamo's count of graph breaks in this process, all reasons together."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


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
