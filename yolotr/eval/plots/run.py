"""Redrawing a run folder's plots from the files the trainer leaves in it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from yolotr.eval.plots.pr_curves import plot_pr_curves
from yolotr.eval.plots.results import plot_results

METRICS_FILE = "metrics.jsonl"
VAL_RESULT_FILE = "val_last.json"  # EvalResult.to_dict() of the latest validation
RESULTS_PNG = "results.png"
PR_CURVE_PNG = "PR_curve.png"


def redraw_run(run_dir: str | os.PathLike) -> list[Path]:
    """Redraw results.png (from metrics.jsonl) and PR_curve.png (from val_last.json, when present).

    The image mosaics (train_batch0.jpg, val_pred.jpg, labels.jpg) need the images themselves; the trainer
    draws them while it has the batches.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir}: no {METRICS_FILE}; is this a yolotr run folder?")
    written = [plot_results(metrics, run_dir / RESULTS_PNG)]
    val_result = run_dir / VAL_RESULT_FILE
    if val_result.is_file():
        try:
            result = json.loads(val_result.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{val_result}: not valid JSON ({error})") from error
        names = list(result.get("pr_curves", {}))  # in class order, as evaluate_detections builds it
        written.append(plot_pr_curves(result, names, run_dir / PR_CURVE_PNG))
    return written
