"""What one cell's run folder says happened: non-finite steps, skips, rollbacks, final loss, mAP, final weights.

Read from the files the trainer writes (metrics.jsonl, exit.json, weights/last.safetensors), never from its
console output. "Non-finite step": a train record (the study logs every step) whose loss or gradient norm is NaN or
infinite. With the guard on such a step is skipped; with it off it is applied, and the weights usually follow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from yolotr.track.metrics import read_metrics

FINAL_LOSS_WINDOW = 10
"""The final loss is the mean over this many last finite train records: single steps of the synthetic set swing
by ±50 % (images with and without many objects), a mean says where the run ended up."""


@dataclass
class RunResult:
    steps: int
    """Last step with a train record."""
    first_nonfinite_step: int | None
    nonfinite_steps: int
    skipped_steps: int
    rollbacks: int
    final_loss: float
    """Mean of the last FINAL_LOSS_WINDOW finite losses; NaN when the run ended on applied non-finite steps."""
    map50: float | None
    map: float | None
    exit_code: int | None
    """From exit.json; None when the run never got to write it (crash, kill)."""
    reason: str
    params_finite: bool | None
    """Every parameter of weights/last.safetensors (model and EMA) finite; None when no weights file was written."""
    nonfinite_buffers: list[str]
    """Buffers (BatchNorm running statistics) of that file holding NaN or inf, as `model.<name>` / `ema.<name>`.
    Kept apart from the parameters: the guard judges a step by its loss and gradient, and a buffer can overflow in
    a step whose loss and gradient are finite."""
    quarantined: int
    """Training images the guard had quarantined by the end (a key implicated in repeated skipped steps)."""
    world_size: int | None
    steps_per_epoch: int | None
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, loss) of every train record, non-finite values included."""
    nonfinite: list[int] = field(default_factory=list)
    rollback_steps: list[int] = field(default_factory=list)
    skip_events: int = 0


def read_run(run_dir: str | Path) -> RunResult:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.exists() else []
    train = [r for r in records if r["kind"] == "train"]
    events = [r for r in records if r["kind"] == "event"]
    vals = [r for r in records if r["kind"] == "val"]
    nonfinite = [r["step"] for r in train if not (_finite(r.get("loss")) and _finite(r.get("grad_norm")))]
    finite_losses = [r["loss"] for r in train if _finite(r.get("loss")) and r["step"] not in nonfinite]
    tail = finite_losses[-FINAL_LOSS_WINDOW:]
    skipped = int(train[-1]["skipped_steps"]) if train else 0
    # A last step that was non-finite *and applied* (nothing was ever skipped) means the weights went with it.
    diverged = bool(train) and train[-1]["step"] in nonfinite and skipped == 0
    final_loss = sum(tail) / len(tail) if tail and not diverged else math.nan
    start = next((e for e in events if e.get("event") == "start"), {})
    rollback_steps = [e["step"] for e in events if e.get("event") == "rollback"]
    exit_info = _read_exit(run_dir / "exit.json")
    finiteness = weights_finiteness(run_dir / "weights" / "last.safetensors")
    return RunResult(
        steps=train[-1]["step"] if train else 0,
        first_nonfinite_step=nonfinite[0] if nonfinite else None,
        nonfinite_steps=len(nonfinite),
        skipped_steps=skipped,
        # Counted from the events: the rollback that exhausts the budget stops the run before another train record.
        rollbacks=len(rollback_steps),
        final_loss=final_loss,
        map50=vals[-1].get("map50") if vals else None,
        map=vals[-1].get("map") if vals else None,
        exit_code=exit_info.get("exit_code"),
        reason=exit_info.get("reason", "no exit.json: the run crashed or was killed"),
        params_finite=finiteness.parameters if finiteness else None,
        nonfinite_buffers=finiteness.nonfinite_buffers if finiteness else [],
        quarantined=int(train[-1].get("quarantined", 0)) if train else 0,
        world_size=start.get("world_size"),
        steps_per_epoch=start.get("steps_per_epoch"),
        curve=[(r["step"], float(r["loss"]) if r.get("loss") is not None else math.nan) for r in train],
        nonfinite=nonfinite,
        rollback_steps=rollback_steps,
        skip_events=sum(1 for e in events if e.get("event") == "skip"),
    )


@dataclass(frozen=True)
class Finiteness:
    parameters: bool
    """Every parameter of the model and of its EMA is finite."""
    nonfinite_buffers: list[str]


def weights_finiteness(path: str | Path) -> Finiteness | None:
    """Which parts of a weights file hold NaN or inf; None when there is no file.

    Parameters and buffers are told apart by building the model the file describes (its state dict holds both).
    """
    path = Path(path)
    if not path.exists():
        return None
    import torch

    from yolotr.checkpoint.weights_file import read_weights_file
    from yolotr.model.yolo import DetectionModel

    weights = read_weights_file(path)
    buffer_names = {name for name, _ in DetectionModel(dict(weights.model_yaml), nc=len(weights.names)).named_buffers()}
    parameters_finite, bad_buffers = True, []
    for prefix, state in (("model", weights.model_state), ("ema", weights.ema_state or {})):
        for name, tensor in state.items():
            if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
                continue
            if name in buffer_names:
                bad_buffers.append(f"{prefix}.{name}")
            else:
                parameters_finite = False
    return Finiteness(parameters_finite, bad_buffers)


def weights_are_finite(path: str | Path) -> bool | None:
    """True when every parameter of a weights file (model and EMA) is finite; None when there is no file."""
    finiteness = weights_finiteness(path)
    return None if finiteness is None else finiteness.parameters


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _read_exit(path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


__all__ = ["FINAL_LOSS_WINDOW", "Finiteness", "RunResult", "read_run", "weights_are_finite", "weights_finiteness"]
