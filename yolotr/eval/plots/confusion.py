"""`confusion_matrix.png`: the detection confusion matrix with background, each true class's column normalised."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

MAX_ANNOTATED_CLASSES = 30  # beyond this the numbers in the cells are unreadable


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], names: Sequence[str], out_png: str | os.PathLike) -> Path:
    """matrix: (nc+1, nc+1) counts, rows predicted, columns true, the last of each background."""
    counts = np.asarray(matrix, dtype=np.float64)
    labels = [*names, "background"]
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"{out_png}: a {counts.shape} matrix for {len(names)} classes (expected {len(labels)}²)")
    totals = counts.sum(axis=0, keepdims=True)  # (1, nc+1): each true class's boxes (background: false positives)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(6.0, 0.35 * len(labels) + 3)
    figure = Figure(figsize=(size * 1.15, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(labels))
    small = len(labels) <= MAX_ANNOTATED_CLASSES
    ax.set_xticks(ticks, labels if small else [], rotation=90, fontsize=8)
    ax.set_yticks(ticks, labels if small else [], fontsize=8)
    if small:
        for (row, column), value in np.ndenumerate(share):
            if counts[row, column]:
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (columns normalised)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png
