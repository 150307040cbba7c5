"""The checks of a training start that need more than the config file: the world size the launcher started and the
size of the train split. They run before any process group or run folder exists, so that a batch the data or the
ranks cannot hold is one line naming `train.batch_size` (exit 2), not a traceback from inside the stream."""

from __future__ import annotations

import os
from pathlib import Path

from yolotr.config import Config
from yolotr.config.tree import ConfigError
from yolotr.errors import YolotrError


def launched_world_size() -> int:
    """The number of ranks the launcher started (torchrun, accelerate and DeepSpeed all set WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_batch_splits(batch_size: int, world_size: int) -> None:
    """Every rank must get the same number of images per step (data/order.py: check_batch_split)."""
    if batch_size % world_size:
        raise ConfigError("train.batch_size", f"{batch_size} does not divide by the world size {world_size}: every "
                          f"rank must get the same number of images per step; use a multiple of {world_size}")


def check_batch_fits(batch_size: int, train_samples: int, index_file: str | os.PathLike) -> None:
    """A step takes one global batch from the train split and drops the remainder: a batch larger than the split
    has no step at all."""
    if batch_size > train_samples:
        raise ConfigError("train.batch_size", f"{batch_size} is more than the {train_samples} images of the train "
                          f"split ({index_file}): lower train.batch_size or add data")


def train_split_size(data: str | os.PathLike) -> tuple[int, str] | None:
    """(samples, index file) of the train split when `data` is a shard data.yaml whose index can be read now; None
    for a source that is converted at the start (YOLO, COCO: its size is checked once converted) and for a data
    yaml that cannot be read (the trainer reports that, in the run folder)."""
    from yolotr.data.dataset_cache import source_kind
    from yolotr.data.spec import load_data_yaml

    try:
        if source_kind(Path(data)) != "shards":
            return None
        train = load_data_yaml(Path(data), splits=("train",)).train
    except (YolotrError, OSError):
        return None
    if train is None:
        return None
    return train.num_samples, str(train.index_file)


def check_before_start(cfg: Config) -> None:
    """What `yolotr train` refuses before it joins a process group or makes a run folder."""
    check_batch_splits(cfg.train.batch_size, launched_world_size())
    size = train_split_size(cfg.data)
    if size is not None:
        check_batch_fits(cfg.train.batch_size, *size)
