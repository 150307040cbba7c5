"""COCO box mAP with pycocotools' COCOeval, plus per-class numbers read from its accumulated arrays.

mAP@0.5 and mAP@0.5:0.95 are COCOeval's own `stats[1]` and `stats[0]` (area "all", maxDets 100).
Per-class AP is the same average restricted to one class of COCOeval's `eval["precision"]` array.

Precision and recall are YOLOv5-like single numbers derived from COCOeval's precision array, not a second
matcher: for each class, the point of its interpolated 101-point PR curve at IoU 0.5 with the best F1;
`precision` and `recall` are the means of those points over the classes that have ground truth.
Classes without any ground-truth box in the evaluated images have no AP and are left out of the
per-class dicts (COCOeval leaves them out of the mean too).

Beside the PR curves: precision, recall and F1 against the confidence threshold (curves.py, from the same matches)
and the confusion matrix with background (confusion.py), for the plots YOLOv5 users look for.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from yolotr.eval.confusion import confusion_matrix
from yolotr.eval.curves import confidence_curves

# Fields drawn as plots, left out of the summary (metrics.jsonl records, `val --json`).
PLOT_FIELDS = ("pr_recall", "pr_curves", "conf_axis", "p_curves", "r_curves", "f1_curves", "confusion", "names")
IOU_50 = 0  # index of IoU 0.5 in COCOeval's iouThrs (0.50, 0.55, ..., 0.95)
AREA_ALL = 0  # index of area range "all"
MAX_DETS_LAST = -1  # index of maxDets 100, the one COCO's mAP uses


@dataclass
class EvalResult:
    map50: float = 0.0
    map: float = 0.0
    """mAP@0.5:0.95."""
    precision: float = 0.0
    recall: float = 0.0
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    per_class_ap: dict[str, float] = field(default_factory=dict)
    per_class_precision: dict[str, float] = field(default_factory=dict)
    per_class_recall: dict[str, float] = field(default_factory=dict)
    per_class_instances: dict[str, int] = field(default_factory=dict)
    pr_recall: list[float] = field(default_factory=list)
    """Recall axis (COCOeval's 101 recThrs) of `pr_curves`."""
    pr_curves: dict[str, list[float]] = field(default_factory=dict)
    """Class name → interpolated precision at each of `pr_recall`, IoU 0.5."""
    conf_axis: list[float] = field(default_factory=list)
    """Confidence thresholds (0, 0.01, ..., 1) of the three curves below."""
    p_curves: dict[str, list[float]] = field(default_factory=dict)
    """Class name → precision of the detections scoring ≥ each of `conf_axis`, IoU 0.5."""
    r_curves: dict[str, list[float]] = field(default_factory=dict)
    f1_curves: dict[str, list[float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    """(nc+1)×(nc+1) counts, rows predicted class, columns true class, the last of each background (conf > 0.25,
    IoU > 0.45, as YOLOv5)."""
    names: list[str] = field(default_factory=list)
    """Every class name, in class order (the plots' labels; the dicts above hold only classes with ground truth)."""
    n_images: int = 0
    n_detections: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> dict[str, Any]:
        """Everything but the curves and the matrix: what `yolotr val --json` prints and `val` records carry."""
        data = self.to_dict()
        for key in PLOT_FIELDS:
            del data[key]
        return data


def evaluate_detections(
    gt: dict[str, Any],
    detections: list[dict[str, Any]],
    names: list[str],
    image_ids: list[int] | None = None,
) -> EvalResult:
    """COCO box metrics of `detections` (COCO results: image_id, category_id, bbox x,y,w,h, score).

    gt is a COCO ground-truth dict whose category ids are class indices into `names`. `image_ids`
    restricts the evaluation to those images (default: every image of gt).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _complete_ground_truth(gt)
    gt_image_ids = {image["id"] for image in gt["images"]}
    image_ids = sorted(gt_image_ids if image_ids is None else set(image_ids))
    if unknown := set(image_ids) - gt_image_ids:
        raise ValueError(f"image ids {sorted(unknown)[:10]} are not in the ground truth")
    unknown_dets = {d["image_id"] for d in detections} - gt_image_ids
    if unknown_dets:
        raise ValueError(f"detections for image ids {sorted(unknown_dets)[:10]} that the ground truth lacks")
    bad_classes = {d["category_id"] for d in detections} - set(range(len(names)))
    if bad_classes:
        raise ValueError(f"detections with category ids {sorted(bad_classes)} outside 0..{len(names) - 1}")

    wanted = set(image_ids)
    detections = [dict(d) for d in detections if d["image_id"] in wanted]  # loadRes adds keys in place
    result = EvalResult(n_images=len(image_ids), n_detections=len(detections), names=list(names))
    result.per_class_instances = _instances_per_class(gt, wanted, names)
    shown = {**gt, "annotations": [a for a in gt["annotations"] if a["image_id"] in wanted]}
    result.confusion = confusion_matrix(shown, detections, len(names)).tolist()
    if not detections:
        zeros = {name: 0.0 for name in result.per_class_instances}
        result.per_class_ap50, result.per_class_ap = dict(zeros), dict(zeros)
        result.per_class_precision, result.per_class_recall = dict(zeros), dict(zeros)
        return result

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    result.map = max(0.0, float(evaluator.stats[0]))
    result.map50 = max(0.0, float(evaluator.stats[1]))
    # precision: [T iou thresholds, R=101 recall points, K classes, A areas, M maxDets]; -1 = no ground truth
    precision = evaluator.eval["precision"][:, :, :, AREA_ALL, MAX_DETS_LAST]  # (T,R,K)
    recall_axis = np.asarray(evaluator.params.recThrs)  # (R,)
    result.pr_recall = recall_axis.tolist()
    for k, category_id in enumerate(evaluator.params.catIds):
        per_iou = precision[:, :, k]  # (T,R)
        if not (per_iou > -1).any():
            continue
        name = names[category_id]
        result.per_class_ap[name] = float(per_iou[per_iou > -1].mean())
        curve = np.clip(per_iou[IOU_50], 0, None)  # (R,)
        result.per_class_ap50[name] = float(curve.mean())
        result.pr_curves[name] = curve.tolist()
        f1 = 2 * curve * recall_axis / np.maximum(curve + recall_axis, 1e-16)
        best = int(f1.argmax())
        has_point = f1[best] > 0
        result.per_class_precision[name] = float(curve[best]) if has_point else 0.0
        result.per_class_recall[name] = float(recall_axis[best]) if has_point else 0.0
    if result.per_class_precision:
        result.precision = float(np.mean(list(result.per_class_precision.values())))
        result.recall = float(np.mean(list(result.per_class_recall.values())))
    thresholds, curves = confidence_curves(evaluator, IOU_50)
    result.conf_axis = thresholds.tolist()
    for category_id, curve in curves.items():
        name = names[category_id]
        result.p_curves[name] = curve["precision"].tolist()
        result.r_curves[name] = curve["recall"].tolist()
        result.f1_curves[name] = curve["f1"].tolist()
    return result


def _complete_ground_truth(gt: dict[str, Any]) -> dict[str, Any]:
    """A copy of gt with the fields COCOeval needs (area, iscrowd, id) filled where a writer left them out."""
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"COCO ground truth lacks '{key}'")
    annotations = []
    for index, ann in enumerate(gt["annotations"]):
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise ValueError(f"COCO ground-truth annotation {index} lacks '{key}'")
        x, y, w, h = ann["bbox"]
        annotations.append({"area": w * h, "iscrowd": 0, "id": index + 1, **ann})
    return {**gt, "annotations": annotations}


def _instances_per_class(gt: dict[str, Any], image_ids: set[int], names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ann in gt["annotations"]:
        if ann["image_id"] in image_ids and not ann.get("iscrowd", 0):
            name = names[ann["category_id"]]
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: names.index(item[0])))
