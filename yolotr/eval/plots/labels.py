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


def plot_labels(targets: torch.Tensor | np.ndarray | SplitIndex, names: Sequence[str], out_jpg: str | os.PathLike) -> Path:
    """Class histogram, centre (x, y) and size (w, h) distributions of a set of labels.

    targets: (N,6) [img_idx, cls, cx, cy, w, h] as the data stream yields them, or (N,5) [cls, cx, cy, w, h],
    coordinates normalised to the image; or a whole split (every label of its shards is read).
    """
    if isinstance(targets, SplitIndex):
        targets = _split_labels(targets, names)
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
    histogram.set(ylabel="instances", title=f"{len(classes)} boxes")

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


def _split_labels(split: SplitIndex, names: Sequence[str]) -> np.ndarray:
    """(N,5) [cls, cx, cy, w, h] normalised, from the labels of every sample of a split."""
    from yolotr.data.coco_gt import coco_ground_truth

    gt = coco_ground_truth(split, list(names))  # the data side's reader of every label, boxes in pixels
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    rows = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd"):  # a crowd region is not a box the model learns
            continue
        width, height = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        rows.append([ann["category_id"], (x + w / 2) / width, (y + h / 2) / height, w / width, h / height])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)
