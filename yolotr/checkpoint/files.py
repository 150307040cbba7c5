"""The files of one checkpoint folder: written by a rank's writer (a process or a thread), read back on resume.

    state/          torch.distributed.checkpoint (model, EMA, optimizer): world-size independent, written by rank 0
    trainer.json    counters, guard and stream state, config, W&B id, code version (rank 0)
    rank-NNNNN.pt   each rank's RNG state (tensors only)
    ds/             DeepSpeed's own ZeRO partitions, when the run uses DeepSpeed

Nothing here is unpickled beyond tensors and plain containers: `.pt` files load with `weights_only=True`.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from yolotr.durable_json import write_json_durably
from yolotr.checkpoint.manager import CheckpointError


def write_rank_files(staged: dict, meta: dict, rank: int, tmp: Path) -> list[Path]:
    """Writes this rank's files of a checkpoint from a staged state ({"tensors", "rng"}); returns them (the manager
    fsyncs and hashes them). Runs in the writer process (writer_process.py) or in the manager's writer thread."""
    written = []
    if rank == 0:
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.save(staged["tensors"], checkpoint_id=tmp / "state", no_dist=True)
        written += sorted(p for p in (tmp / "state").rglob("*") if p.is_file())
        write_json_durably(tmp / "trainer.json", meta)
        written.append(tmp / "trainer.json")
    torch.save(staged["rng"], tmp / f"rank-{rank:05d}.pt")
    return [*written, tmp / f"rank-{rank:05d}.pt"]


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "trainer.json").read_text())


def load_tensors(template: dict, path: Path) -> None:
    """Fills `template` (state dicts) from the checkpoint's `state/`. Every rank reads the whole (replicated) state:
    no collective, any world size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(template, checkpoint_id=Path(path) / "state", no_dist=True)


def load_tensors_only(path: Path):
    """torch.load restricted to tensors and plain containers; anything else is refused, never executed."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers "
            f"(a crafted or foreign file?): {str(exc).splitlines()[0]}"
        ) from None
