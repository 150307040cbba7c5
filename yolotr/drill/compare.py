"""Two checkpoints compared bit for bit: every tensor of the model, the EMA and the optimizer (torch.equal, and the
same dtype and shape), every non-tensor entry of the optimizer (its param groups: the LR, momentum, ... as the bytes
DCP stored, never unpickled), each rank's RNG state, and the trainer's counters and data position."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from yolotr.checkpoint.files import load_tensors_only, read_meta

MAX_LISTED = 20


@dataclass
class Comparison:
    compared: int = 0  # entries compared: tensors, stored bytes, RNG states, trainer.json values
    differences: list[str] = field(default_factory=list)  # the first MAX_LISTED, each naming the entry
    different: int = 0

    @property
    def equal(self) -> bool:
        return self.different == 0

    def differ(self, text: str) -> None:
        self.different += 1
        if len(self.differences) < MAX_LISTED:
            self.differences.append(text)

    def to_json(self) -> dict:
        return {"equal": self.equal, "compared": self.compared, "different": self.different,
                "differences": self.differences}


class _RawBytesPlanner(DefaultLoadPlanner):
    """Keeps the stored bytes of non-tensor entries as they are: comparing needs no unpickling."""

    def load_bytes(self, read_item, value) -> None:
        self.state_dict[read_item.dest_index.fqn] = value.read()


def read_state(checkpoint: Path) -> dict[str, torch.Tensor | bytes]:
    """Every entry of a checkpoint's state/ (DCP), by its flat name: `model.<param>`, `ema.<param>`,
    `optimizer.state.<param>.<buffer>`, `optimizer.param_groups.<i>.<key>`."""
    reader = dcp.FileSystemReader(str(Path(checkpoint) / "state"))
    entries = reader.read_metadata().state_dict_metadata
    template: dict = {name: torch.empty(entry.size, dtype=entry.properties.dtype)
                      if isinstance(entry, TensorStorageMetadata) else b"" for name, entry in entries.items()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(template, storage_reader=reader, planner=_RawBytesPlanner(flatten_state_dict=False), no_dist=True)
    return template


def compare_checkpoints(ours: Path, reference: Path) -> Comparison:
    result = Comparison()
    _compare_state(read_state(ours), read_state(reference), result)
    _compare_rng(Path(ours), Path(reference), result)
    _compare_trainer(read_meta(ours), read_meta(reference), result)
    return result


def _compare_state(ours: dict, theirs: dict, result: Comparison) -> None:
    for name in sorted(ours.keys() - theirs.keys()):
        result.differ(f"{name}: only in the faulted run's checkpoint")
    for name in sorted(theirs.keys() - ours.keys()):
        result.differ(f"{name}: only in the reference's checkpoint")
    for name in sorted(ours.keys() & theirs.keys()):
        result.compared += 1
        a, b = ours[name], theirs[name]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            problem = _tensor_difference(a, b)
        else:
            problem = None if a == b else "stored values differ"
        if problem:
            result.differ(f"{name}: {problem}")


def _tensor_difference(a: torch.Tensor, b: torch.Tensor) -> str | None:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    if torch.equal(a, b):  # bitwise for finite values; NaNs never compare equal, which is right here
        return None
    if not a.is_floating_point():
        return f"{int((a != b).sum())} of {a.numel()} values differ"
    delta = (a.double() - b.double()).abs()
    return f"{int((a != b).sum())} of {a.numel()} values differ (max abs difference {float(delta.max()):.3g})"


def _compare_rng(ours: Path, theirs: Path, result: Comparison) -> None:
    names = sorted({p.name for p in ours.glob("rank-*.pt")} | {p.name for p in theirs.glob("rank-*.pt")})
    for name in names:
        if not (ours / name).is_file() or not (theirs / name).is_file():
            result.differ(f"{name}: only in one of the checkpoints")
            continue
        a, b = load_tensors_only(ours / name), load_tensors_only(theirs / name)
        for key in sorted(a.keys() | b.keys()):
            result.compared += 1
            if key not in a or key not in b or not torch.equal(a[key], b[key]):
                result.differ(f"{name} {key}: RNG state differs")


# trainer.json parts that must match: the counters (step, applied steps, epoch, ...) and the data position. The
# guard's key strikes legitimately differ: a NaN implicates its samples, a skip told to the reference does not.
_TRAINER_PARTS = ("counters", "stream")


def _compare_trainer(ours: dict, theirs: dict, result: Comparison) -> None:
    for part in _TRAINER_PARTS:
        a, b = ours.get(part, {}), theirs.get(part, {})
        for key in sorted(a.keys() | b.keys()):
            result.compared += 1
            if a.get(key) != b.get(key):
                result.differ(f"trainer.json {part}.{key}: {a.get(key)!r} vs {b.get(key)!r}")
    a, b = ours.get("guard", {}).get("skipped_steps"), theirs.get("guard", {}).get("skipped_steps")
    result.compared += 1
    if a != b:
        result.differ(f"trainer.json guard.skipped_steps: {a!r} vs {b!r}")
