"""Precision, recall and F1 of each class as functions of the confidence threshold (YOLOv5's P/R/F1 curves).

Read from COCOeval's own per-image matches at IoU 0.5 (area "all", at most 100 detections per image), so that the
curves agree with the mAP beside them: the same matching, the same crowd regions and ignored detections.
"""

from __future__ import annotations

import numpy as np

CONF_POINTS = 101  # thresholds 0, 0.01, ..., 1


def confidence_curves(evaluator, iou_index: int = 0) -> tuple[np.ndarray, dict[int, dict[str, np.ndarray]]]:
    """(thresholds (C,), {category id: {"precision", "recall", "f1": (C,)}}) for the categories with ground truth.

    Precision is 1 where no detection is left above the threshold (YOLOv5 draws it so); recall is then 0.
    """
    params = evaluator.params
    n_areas, n_images = len(params.areaRng), len(params.imgIds)
    max_det = params.maxDets[-1]
    thresholds = np.linspace(0, 1, CONF_POINTS)
    curves = {}
    for k, category in enumerate(params.catIds):
        first = k * n_areas * n_images  # evalImgs is ordered category, area range, image; area 0 is "all"
        entries = [e for e in evaluator.evalImgs[first : first + n_images] if e is not None]
        n_gt = sum(int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)) for e in entries)
        if n_gt == 0:
            continue
        scores = np.concatenate([np.asarray(e["dtScores"][:max_det], dtype=np.float64) for e in entries])
        matched = np.concatenate([e["dtMatches"][iou_index, :max_det] for e in entries]) > 0
        ignored = np.concatenate([e["dtIgnore"][iou_index, :max_det] for e in entries]).astype(bool)
        order = np.argsort(-scores[~ignored], kind="mergesort")
        scores, true_positive = scores[~ignored][order], matched[~ignored][order]  # (D,) by score, descending
        tp_cum = np.concatenate([[0], np.cumsum(true_positive)])  # (D+1,) true positives among the first i
        # Detections kept at threshold c: those scoring >= c.
        kept = np.searchsorted(-scores, -thresholds, side="right")  # (C,)
        tp = tp_cum[kept].astype(np.float64)
        precision = np.where(kept > 0, tp / np.maximum(kept, 1), 1.0)
        recall = tp / n_gt
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-16)
        curves[category] = {"precision": precision, "recall": recall, "f1": f1}
    return thresholds, curves
