"""Every label of a split, read without its image (for statistics over the train boxes, e.g. anchor fitting)."""

from __future__ import annotations

from yolotr.data.errors import SampleError
from yolotr.data.index import SplitIndex
from yolotr.data.labels import DetectionLabel, parse_label
from yolotr.data.shard_reader import ShardReader


def read_split_labels(split: SplitIndex) -> list[DetectionLabel]:
    """The labels of `split` in index order; unreadable ones are left out (the stream counts them when it meets
    them). Reads only the label members: two small reads per sample."""
    reader = ShardReader(split)
    labels = []
    try:
        for global_id in range(split.num_samples):
            try:
                labels.append(parse_label(reader.read_member(global_id, "json"), nc=split.nc))
            except SampleError:
                continue
    finally:
        reader.close()
    return labels
