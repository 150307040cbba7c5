"""Redrawing a run folder's plots from the files the trainer leaves in it, and the plots of one validation."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolotr.errors import UsageError, YolotrError
from yolotr.eval.coco_eval import EvalResult
from yolotr.eval.plots.conf_curves import plot_confidence_curve
from yolotr.eval.plots.confusion import plot_confusion_matrix
from yolotr.eval.plots.pr_curves import plot_pr_curves
from yolotr.eval.plots.results import plot_results

METRICS_FILE = "metrics.jsonl"
VAL_RESULT_FILE = "val_last.json"  # EvalResult.to_dict() of the latest validation
RESULTS_PNG = "results.png"
PR_CURVE_PNG = "PR_curve.png"
CURVE_PNGS = {"f1": "F1_curve.png", "precision": "P_curve.png", "recall": "R_curve.png"}
CONFUSION_PNG = "confusion_matrix.png"


def plot_validation(result: EvalResult | Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """PR_curve.png, F1_curve.png, P_curve.png, R_curve.png and confusion_matrix.png of one validation."""
    if isinstance(result, Mapping):
        result = EvalResult.from_dict(dict(result))
    out_dir = Path(out_dir)
    # Results written before `names` was recorded: the classes with ground truth, in class order.
    names = result.names or list(result.pr_curves)
    written = [plot_pr_curves(result, names, out_dir / PR_CURVE_PNG)]
    by_metric = {"f1": result.f1_curves, "precision": result.p_curves, "recall": result.r_curves}
    if result.conf_axis:
        for metric, png in CURVE_PNGS.items():
            written.append(plot_confidence_curve(result.conf_axis, by_metric[metric], metric, out_dir / png))
    if result.confusion:
        written.append(plot_confusion_matrix(result.confusion, names, out_dir / CONFUSION_PNG))
    return written


def redraw_run(run_dir: str | os.PathLike) -> list[Path]:
    """Redraw results.png (from metrics.jsonl) and the validation plots (from val_last.json, when present).

    The image mosaics (train_batch0.jpg, val_pred.jpg, labels.jpg) need the images themselves; the trainer
    draws them while it has the batches.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise UsageError(f"{run_dir}: no {METRICS_FILE}; is this a yolotr run folder?")
    written = [plot_results(metrics, run_dir / RESULTS_PNG)]
    val_result = run_dir / VAL_RESULT_FILE
    if val_result.is_file():
        try:
            result = json.loads(val_result.read_text())
        except json.JSONDecodeError as error:
            raise YolotrError(f"{val_result}: not valid JSON ({error})") from error
        written += plot_validation(result, run_dir)
    return written
