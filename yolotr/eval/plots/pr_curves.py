"""`pr_curve.png`: precision-recall at IoU 0.5 per class and over all classes (YOLOv5's PR_curve.png)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from yolotr.eval.coco_eval import EvalResult

MAX_LEGEND_CLASSES = 20  # beyond this the per-class legend hides the plot, as in YOLOv5


def plot_pr_curves(result: EvalResult | Mapping[str, Any], names: Sequence[str], out_png: str | os.PathLike) -> Path:
    """Draw the per-class PR curves of an EvalResult (or its `to_dict()`) and their mean."""
    if isinstance(result, Mapping):
        result = EvalResult.from_dict(dict(result))
    recall = np.asarray(result.pr_recall)
    figure = Figure(figsize=(9, 6), layout="constrained")
    ax = figure.subplots()
    curves = [(name, np.asarray(result.pr_curves[name])) for name in names if name in result.pr_curves]
    show_legend = len(curves) <= MAX_LEGEND_CLASSES
    for name, precision in curves:
        ap50 = result.per_class_ap50.get(name, float(precision.mean()))
        ax.plot(recall, precision, linewidth=1, label=f"{name} {ap50:.3f}" if show_legend else None)
    if curves:
        mean = np.mean([precision for _, precision in curves], axis=0)
        ax.plot(recall, mean, linewidth=3, color="black", label=f"all classes {result.map50:.3f} mAP@0.5")
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-Recall (IoU 0.5)")
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png
