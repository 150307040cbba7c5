"""The model and EMA weights of a committed training checkpoint, read without a trainer (to start another run
from it, or to evaluate it): `RUN/checkpoints/step-N`, or a run folder (its newest checkpoint that verifies)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from yolotr.checkpoint.files import read_meta
from yolotr.checkpoint.manager import STEP_DIR, verify
from yolotr.checkpoint.weights_errors import WeightsFileError


def checkpoint_folder(path: str | Path) -> Path:
    """`path` itself when it is a checkpoint (a step-N folder with trainer.json), else the newest verified
    checkpoint of the run folder `path`. WeightsFileError naming the folder when there is none."""
    path = Path(path)
    if (path / "trainer.json").is_file():
        problem = verify(path)
        if problem:
            raise WeightsFileError(f"{path}: damaged checkpoint ({problem})")
        return path
    steps = sorted((p for p in (path / "checkpoints").glob("step-*") if p.is_dir() and STEP_DIR.match(p.name)),
                   key=lambda p: p.name)
    for step in reversed(steps):
        if verify(step) is None:
            return step
    raise WeightsFileError(f"{path}: neither a checkpoint (step-N/ with trainer.json) nor a run folder with a valid "
                           "one")


def read_checkpoint_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict]:
    """(model state, EMA state or None, trainer.json) of a checkpoint or of a run folder's newest valid one."""
    folder = checkpoint_folder(path)
    meta = read_meta(folder)
    reader = dcp.FileSystemReader(str(folder / "state"))
    template: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}}
    for key, entry in reader.read_metadata().state_dict_metadata.items():
        part, _, name = key.partition(".")
        if part in template and isinstance(entry, TensorStorageMetadata):
            template[part][name] = torch.empty(entry.size, dtype=entry.properties.dtype)
    if not template["model"]:
        raise WeightsFileError(f"{folder}: the checkpoint holds no model tensors")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(template, storage_reader=reader, no_dist=True)
    return template["model"], template["ema"] or None, meta
