"""The detection confusion matrix with a background class, as YOLOv5 builds it.

Per image, detections above `conf_thres` are matched one-to-one to ground-truth boxes of any class with IoU above
`iou_thres`, highest IoU first. A match counts at (predicted class, true class); a box nobody found counts at
(background, true class); a detection that found nothing counts at (predicted class, background), unless it lies
in a crowd region (COCO's iscrowd), which COCO's evaluation does not count against a detector either.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

CONF_THRES = 0.25
IOU_THRES = 0.45
CROWD_COVER = 0.5  # a detection with at least this share of its area inside a crowd region lies in it


def confusion_matrix(gt: dict[str, Any], detections: list[dict[str, Any]], nc: int, *,
                     conf_thres: float = CONF_THRES, iou_thres: float = IOU_THRES) -> np.ndarray:
    """(nc+1, nc+1) counts: rows are predicted classes, columns true classes; the last row and column background.

    gt: COCO ground truth (category ids are class indices); detections: COCO results on the same images.
    """
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    truths: dict[int, list] = defaultdict(list)
    crowds: dict[int, list] = defaultdict(list)
    for ann in gt["annotations"]:
        (crowds if ann.get("iscrowd", 0) else truths)[ann["image_id"]].append((ann["category_id"], ann["bbox"]))
    found: dict[int, list] = defaultdict(list)
    for det in detections:
        if det["score"] > conf_thres:
            found[det["image_id"]].append((det["category_id"], det["bbox"]))
    for image_id in set(truths) | set(found):
        true_cls, true_boxes = _split(truths[image_id])
        pred_cls, pred_boxes = _split(found[image_id])
        pairs = _match(true_boxes, pred_boxes, iou_thres)
        np.add.at(matrix, (pred_cls[pairs[:, 1]], true_cls[pairs[:, 0]]), 1)
        missed = np.setdiff1d(np.arange(len(true_cls)), pairs[:, 0])
        np.add.at(matrix, (nc, true_cls[missed]), 1)
        spurious = np.setdiff1d(np.arange(len(pred_cls)), pairs[:, 1])
        spurious = spurious[~_in_crowd(pred_boxes[spurious], _split(crowds[image_id])[1])]
        np.add.at(matrix, (pred_cls[spurious], nc), 1)
    return matrix


def _split(entries: list) -> tuple[np.ndarray, torch.Tensor]:
    """[(class, xywh)] → classes (n,) and x1y1x2y2 boxes (n,4)."""
    classes = np.asarray([c for c, _ in entries], dtype=np.int64)
    boxes = torch.tensor([b for _, b in entries], dtype=torch.float64).reshape(-1, 4)
    return classes, box_convert(boxes, in_fmt="xywh", out_fmt="xyxy")


def _match(true_boxes: torch.Tensor, pred_boxes: torch.Tensor, iou_thres: float) -> np.ndarray:
    """(k,2) [truth index, detection index] pairs: greedy by IoU, each box used once."""
    if len(true_boxes) == 0 or len(pred_boxes) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    iou = box_iou(true_boxes, pred_boxes).numpy()  # (m,n)
    truth, pred = np.nonzero(iou > iou_thres)
    order = np.argsort(-iou[truth, pred], kind="mergesort")
    pairs, used_truth, used_pred = [], set(), set()
    for t, p in zip(truth[order].tolist(), pred[order].tolist()):
        if t not in used_truth and p not in used_pred:
            used_truth.add(t)
            used_pred.add(p)
            pairs.append((t, p))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _in_crowd(boxes: torch.Tensor, crowd: torch.Tensor) -> np.ndarray:
    """(n,) whether each box lies (by CROWD_COVER of its area) inside some crowd region."""
    if len(boxes) == 0 or len(crowd) == 0:
        return np.zeros(len(boxes), dtype=bool)
    top_left = torch.maximum(boxes[:, None, :2], crowd[None, :, :2])  # (n,m,2)
    bottom_right = torch.minimum(boxes[:, None, 2:], crowd[None, :, 2:])  # (n,m,2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (n,m)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1).clamp(min=1e-9)  # (n,)
    return ((inter / area[:, None]) >= CROWD_COVER).any(dim=1).numpy()
