"""The end-to-end export graph: the detector followed by ONNX NonMaxSuppression, with predict's NMS semantics.

`EndToEnd` maps images (B,3,H,W) to `detections` (B,max_det,6) [x1,y1,x2,y2,conf,class] in input pixels, zero-padded
and sorted by confidence, and `num_detections` (B,) int64. Each box keeps only its best class (predict's
`multi_label=False`), then suppression runs per class, so the graph returns what `non_max_suppression` returns.

NMS is a custom op, `yolotr::nms_indices`: torchvision's NMS when PyTorch runs it, one ONNX NonMaxSuppression node in
the exported graph (its translation is handed to torch.onnx.export), whose output (K,3) [batch, class, box] has the
same meaning in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnxscript import opset18 as op
from torch import nn
from torchvision.ops import box_convert, nms

from yolotr.model.nms import non_max_suppression


@dataclass(frozen=True)
class NmsSettings:
    conf_thres: float = 0.25
    """Minimum confidence (objectness × class score) of a kept box."""
    iou_thres: float = 0.45
    max_det: int = 300
    """Detections per image: the fixed second dimension of `detections`."""


@torch.library.custom_op("yolotr::nms_indices", mutates_args=())
def nms_indices(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thres: float,
                score_thres: float) -> torch.Tensor:
    """ONNX NonMaxSuppression's contract: boxes (B,N,4) x1y1x2y2, scores (B,C,N); returns (K,3) int64
    [batch, class, box] of the boxes kept, per (batch, class) by descending score, scores > score_thres."""
    selected = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            candidates = (scores[b, c] > score_thres).nonzero().flatten()  # (n,)
            kept = candidates[nms(boxes[b, candidates].float(), scores[b, c, candidates].float(), iou_thres)]
            kept = kept[:max_per_class]
            selected.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], dim=1))  # (k,3)
    return torch.cat(selected) if selected else boxes.new_zeros((0, 3), dtype=torch.int64)


@nms_indices.register_fake
def _nms_indices_shape(boxes, scores, max_per_class, iou_thres, score_thres):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(), 3), dtype=torch.int64)


def _nms_indices_onnx(boxes, scores, max_per_class: int, iou_thres: float, score_thres: float):
    return op.NonMaxSuppression(
        boxes, scores, op.Constant(value_ints=[max_per_class]), op.Constant(value_floats=[iou_thres]),
        op.Constant(value_floats=[score_thres]), center_point_box=0,
    )


NMS_TRANSLATION = {torch.ops.yolotr.nms_indices.default: _nms_indices_onnx}


class EndToEnd(nn.Module):
    def __init__(self, model: nn.Module, settings: NmsSettings) -> None:
        super().__init__()
        self.model = model
        self.settings = settings

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        decoded = self.model(images)[0].float()  # (B,N,5+nc)
        batch = decoded.shape[0]
        boxes = box_convert(decoded[..., :4], in_fmt="cxcywh", out_fmt="xyxy")  # (B,N,4)
        scores = decoded[..., 5:] * decoded[..., 4:5]  # (B,N,nc) conf = objectness × class score
        # Only each box's best class competes, as in predict (multi_label=False).
        scores = torch.where(scores == scores.amax(dim=2, keepdim=True), scores, torch.zeros_like(scores))
        selected = torch.ops.yolotr.nms_indices(boxes, scores.transpose(1, 2).contiguous(), s.max_det, s.iou_thres,
                                                s.conf_thres)  # (K,3) [batch, class, box]
        image, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
        conf = scores[image, box, cls]  # (K,)
        found = torch.cat([boxes[image, box], conf[:, None], cls[:, None].to(conf.dtype)], dim=1)  # (K,6)
        # Sort by image, then confidence; a detection's rank within its image is its row in the output.
        order = (image.to(conf.dtype) * 2 - conf).argsort()  # conf ≤ 1: images never interleave
        image, found = image[order], found[order]
        # (K,B); a comparison rather than one_hot(), whose class count the exporter would fix to the example batch
        one_hot = (image[:, None] == torch.arange(batch, device=image.device)[None, :]).long()
        rank = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1  # (K,)
        overflow = batch * s.max_det  # one spare row takes every detection past max_det
        slot = torch.where(rank < s.max_det, image * s.max_det + rank, torch.full_like(rank, overflow))
        rows = found.new_zeros((overflow + 1, 6)).index_put((slot,), found)
        counts = one_hot.sum(dim=0).clamp(max=s.max_det)  # (B,)
        return rows[:-1].view(batch, s.max_det, 6), counts


def reference_detections(model: nn.Module, images: torch.Tensor, settings: NmsSettings) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """What predict's own NMS returns for `images`, in EndToEnd's padded layout: (B,max_det,6) and (B,)."""
    with torch.no_grad():
        decoded = model(images.float())[0]  # (B,N,5+nc)
    kept = non_max_suppression(decoded, conf_thres=settings.conf_thres, iou_thres=settings.iou_thres,
                               max_det=settings.max_det)
    rows = torch.zeros(len(kept), settings.max_det, 6)
    for index, detections in enumerate(kept):
        rows[index, : len(detections)] = detections
    return rows, torch.tensor([len(k) for k in kept])


def canonical_order(detections: np.ndarray) -> np.ndarray:
    """(B,max_det,6) with each image's rows sorted by confidence, then by box and class: runtimes order detections of
    equal confidence differently, which is no difference."""
    ordered = np.array(detections, dtype=np.float32, copy=True)
    for image in ordered:  # padding rows (all zero) sort last: conf 0 is below any kept box's
        # Confidences within 1e-4 count as equal: the runtimes' sums differ in the last bits.
        keys = (image[:, 5], image[:, 3], image[:, 2], image[:, 1], image[:, 0], -np.round(image[:, 4], 4))
        image[:] = image[np.lexsort(keys)]
    return ordered
