"""Post-processing of the decoded predictions: confidence filter and class-aware NMS, as YOLOv5 does it."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert

# YOLOv5's cap on the boxes handed to NMS per image, so a flood of low-confidence boxes cannot stall it.
_MAX_BOXES_INTO_NMS = 30000


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    multi_label: bool = False,
    classes: list[int] | None = None,
    agnostic: bool = False,
) -> list[torch.Tensor]:
    """Filters and suppresses the eval-mode output of `DetectionModel`.

    Args:
        pred: decoded predictions (B, N, 5 + nc): cx, cy, w, h in pixels, objectness, class scores.
        conf_thres: minimum objectness and minimum objectness × class score.
        iou_thres: IoU above which a lower-scoring box of the same class is suppressed.
        max_det: detections kept per image, highest confidence first.
        multi_label: a box may be kept once per class whose score passes `conf_thres` (for mAP), instead of only
            for its best class.
        classes: keep only these class indices.
        agnostic: suppress across classes too.

    Returns:
        per image a (n, 6) tensor: x1, y1, x2, y2, conf, class — sorted by conf, descending.
    """
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected decoded predictions (B, N, 5 + nc), got {tuple(pred.shape)}")
    nc = pred.shape[-1] - 5
    multi_label &= nc > 1
    output = []
    for image_pred in pred:
        x = image_pred[image_pred[:, 4] > conf_thres].float()  # (n, 5 + nc)
        scores = x[:, 5:] * x[:, 4:5]  # conf = objectness × class score
        boxes = box_convert(x[:, :4], in_fmt="cxcywh", out_fmt="xyxy")
        if multi_label:
            box_index, cls = (scores > conf_thres).nonzero(as_tuple=True)
            detections = torch.cat((boxes[box_index], scores[box_index, cls, None], cls[:, None].float()), 1)
        else:
            conf, cls = scores.max(dim=1, keepdim=True)
            detections = torch.cat((boxes, conf, cls.float()), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            wanted = torch.tensor(classes, device=detections.device, dtype=detections.dtype)
            detections = detections[(detections[:, 5:6] == wanted).any(1)]
        detections = detections[detections[:, 4].argsort(descending=True)[:_MAX_BOXES_INTO_NMS]]
        group = torch.zeros_like(detections[:, 5]) if agnostic else detections[:, 5]
        keep = batched_nms(detections[:, :4], detections[:, 4], group.long(), iou_thres)[:max_det]
        output.append(detections[keep])  # (n, 6)
    return output
