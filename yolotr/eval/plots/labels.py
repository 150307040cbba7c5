"""`labels.jpg`: how many boxes each class has, where box centres fall and what sizes boxes have."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from yolotr.data.index import SplitIndex
from yolotr.eval.plots.drawing import class_color

# Labels of at most this many images are read for a split's labels.jpg: enough for its statistics, and quick even
# for COCO (each sample is read whole, image included).
MAX_SPLIT_IMAGES = 2000


def plot_labels(targets: torch.Tensor | np.ndarray | SplitIndex, names: Sequence[str], out_jpg: str | os.PathLike,
                max_images: int = MAX_SPLIT_IMAGES) -> Path:
    """Class histogram, centre (x, y) and size (w, h) distributions of a set of labels.

    targets: (N,6) [img_idx, cls, cx, cy, w, h] as the data stream yields them, or (N,5) [cls, cx, cy, w, h],
    coordinates normalised to the image; or a split, whose labels are read: all of them for up to `max_images`
    images, else those of `max_images` images spread evenly over it (the title says which).
    """
    scope = ""
    if isinstance(targets, SplitIndex):
        total = targets.num_samples
        targets, read = split_label_rows(targets, names, max_images)
        scope = f" in all {read:,} images" if read == total else f" in {read:,} of {total:,} images (evenly spaced)"
    labels = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] not in (5, 6):
        raise ValueError(f"{out_jpg}: labels must be (N,5) or (N,6), got shape {labels.shape}")
    labels = labels[:, -5:]  # (N,5) cls, cx, cy, w, h
    classes = labels[:, 0].astype(int)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(names)):
        raise ValueError(f"{out_jpg}: class ids {sorted(set(classes.tolist()))} outside 0..{len(names) - 1}")

    figure = Figure(figsize=(15, 5), layout="constrained")
    histogram, centres, sizes = figure.subplots(1, 3)
    counts = np.bincount(classes, minlength=len(names))
    histogram.bar(range(len(names)), counts, color=[np.array(class_color(i)) / 255 for i in range(len(names))])
    histogram.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0, fontsize=8)
    histogram.set(ylabel="instances", title=f"{len(classes):,} boxes{scope}")

    # Square bins over the unit square: a 2-D histogram stays readable for millions of boxes.
    bins = 50
    centres.hist2d(labels[:, 1], labels[:, 2], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
    centres.set(xlabel="x", ylabel="y", title="box centres", xlim=(0, 1), ylim=(1, 0))
    sizes.hist2d(labels[:, 3], labels[:, 4], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
    sizes.set(xlabel="width", ylabel="height", title="box sizes", xlim=(0, 1), ylim=(0, 1))

    out_jpg = Path(out_jpg)
    out_jpg.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_jpg, dpi=100)
    return out_jpg


def split_label_rows(split: SplitIndex, names: Sequence[str], max_images: int) -> tuple[np.ndarray, int]:
    """(N,5) [cls, cx, cy, w, h] normalised, from the labels of up to `max_images` samples spread evenly over the split
    (each sample is read whole from its shard, so a COCO-sized split is sampled, not read), and how many were read.
    Crowd regions are not boxes the model learns: left out."""
    from yolotr.data.errors import SampleError
    from yolotr.data.labels import parse_label
    from yolotr.data.shard_reader import ShardReader

    ids = np.unique(np.linspace(0, split.num_samples - 1, min(max_images, split.num_samples)).round().astype(int))
    # Remote shards: only those already in the node's cache; a plot never downloads a whole set.
    ids = ids[[split.shard_is_local(int(split.shard_of[i])) for i in ids]] if split.remote is not None else ids
    rows, read = [], 0
    reader = ShardReader(split)
    try:
        for global_id in ids.tolist():
            try:
                label = parse_label(reader.read(global_id)["json"], nc=len(names))
            except (SampleError, KeyError):  # a damaged sample: `yolotr data check` reports those
                continue
            read += 1
            scale = np.array([label.width, label.height, label.width, label.height], dtype=np.float64)
            xyxy = label.boxes / scale  # (n,4) normalised
            rows.append(np.column_stack([label.classes, (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]]))
    finally:
        reader.close()
    return (np.concatenate(rows) if rows else np.zeros((0, 5))), read
