"""`F1_curve.png`, `P_curve.png`, `R_curve.png`: a metric of each class against the confidence threshold, and their
mean in bold with its best point (for F1, the threshold to deploy at), as YOLOv5 draws them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from yolotr.eval.plots.pr_curves import MAX_LEGEND_CLASSES

TITLES = {"f1": "F1", "precision": "Precision", "recall": "Recall"}


def plot_confidence_curve(axis: Sequence[float], curves: Mapping[str, Sequence[float]], metric: str,
                          out_png: str | os.PathLike) -> Path:
    """curves: class name → `metric` at each threshold of `axis`."""
    label = TITLES[metric]
    figure = Figure(figsize=(9, 6), layout="constrained")
    ax = figure.subplots()
    x = np.asarray(axis)
    show_legend = len(curves) <= MAX_LEGEND_CLASSES
    for name, values in curves.items():
        ax.plot(x, values, linewidth=1, label=name if show_legend else None)
    if curves:
        mean = np.mean([np.asarray(values) for values in curves.values()], axis=0)
        # The best point of the mean: its maximum for F1 and precision; recall only falls, so its value at 0.
        best = int(mean.argmax()) if metric != "recall" else 0
        ax.plot(x, mean, linewidth=3, color="black", label=f"all classes {mean[best]:.2f} at {x[best]:.3f}")
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center")
    ax.set(xlabel="Confidence", ylabel=label, xlim=(0, 1), ylim=(0, 1.01), title=f"{label}-Confidence (IoU 0.5)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png
