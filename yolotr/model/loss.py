"""YOLOv5's detection loss, with every divide guarded and everything computed in fp32.

Semantics follow YOLOv5's ``utils/loss.py`` so its hyperparameters transfer: anchors match a target when the
width and height ratios are both below ``anchor_t``; each target is also assigned to the two neighbouring cells
nearest its centre (offset 0.5); CIoU box loss; objectness target = detached IoU clamped at 0; class BCE with
optional label smoothing; per-level objectness balance [4.0, 1.0, 0.4]; total scaled by the batch size.

The NaN sources reported against YOLOv5 (#2376, #8539, #13416: zero-width/height boxes, identical boxes, images
without labels, fp16 losses) are closed here: every ratio has an eps, the CIoU aspect term divides by a clamped
height, its alpha denominator is clamped, and the predictions are upcast to fp32 with autocast off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from yolotr.model.yolo import DetectionModel

# Guard for every divide in the box geometry; small against boxes measured in grid cells.
_EPS = 1e-7


@dataclass
class LossHyp:
    """Loss hyperparameters with YOLOv5's names and defaults (hyp.scratch-low.yaml)."""

    box: float = 0.05
    """Gain of the CIoU box loss (before the 3/nl scaling)."""
    obj: float = 1.0
    """Gain of the objectness BCE (before the (imgsz/640)^2 * 3/nl scaling)."""
    cls: float = 0.5
    """Gain of the class BCE (before the nc/80 * 3/nl scaling)."""
    cls_pw: float = 1.0
    """BCEWithLogits pos_weight of the class loss."""
    obj_pw: float = 1.0
    """BCEWithLogits pos_weight of the objectness loss."""
    anchor_t: float = 4.0
    """A target matches an anchor when max(w/w_a, w_a/w, h/h_a, h_a/h) < anchor_t."""
    label_smoothing: float = 0.0
    """Class targets become 1 - eps/2 and eps/2 (YOLOv5's smooth_BCE)."""
    fl_gamma: float = 0.0
    """Focal-loss gamma for the class and objectness BCE; 0 turns focal loss off."""


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, ciou: bool = False, eps: float = _EPS) -> torch.Tensor:
    """IoU (or CIoU) of matching rows of two (n, 4) cx,cy,w,h box tensors; returns (n,).

    Finite values and gradients for zero-width/height and identical boxes: areas get +eps in the union, the
    enclosing diagonal gets +eps, the aspect ratio divides by a height clamped at eps, and alpha's denominator
    (exactly 0 for identical boxes without the eps) is clamped.
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0) * (
        torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    enclosing_w = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)
    enclosing_h = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    diagonal_sq = enclosing_w**2 + enclosing_h**2 + eps
    centre_dist_sq = (x2 - x1) ** 2 + (y2 - y1) ** 2
    aspect_term = torch.atan(w2 / h2.clamp(min=eps)) - torch.atan(w1 / h1.clamp(min=eps))
    v = (4 / math.pi**2) * aspect_term.pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps)).clamp(min=eps)
    return iou - (centre_dist_sq / diagonal_sq + v * alpha)


class FocalLoss(nn.Module):
    """YOLOv5's focal loss wrapper around a BCEWithLogitsLoss (alpha 0.25), mean-reduced."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float, alpha: float = 0.25) -> None:
        super().__init__()
        self.bce = bce
        self.bce.reduction = "none"  # the modulating factor is applied per element
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        prob = torch.sigmoid(logits)
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha_factor = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha_factor * (1.0 - p_t) ** self.gamma).mean()


def _unwrap(model: nn.Module) -> DetectionModel:
    """The DetectionModel inside DDP / DeepSpeed / torch.compile wrappers."""
    while not isinstance(model, DetectionModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"ComputeLoss needs a DetectionModel (or a wrapper of one), got {type(model).__name__}")
        model = inner
    return model


class ComputeLoss:
    """YOLOv5's loss: ``loss(preds, targets) -> (total, items)``.

    preds: the train-mode output of `DetectionModel`, nl tensors (B, na, h_i, w_i, 5 + nc), any float dtype.
    targets: float (N, 6) rows [image index in batch, class, cx, cy, w, h], cx..h normalised to [0, 1], class in
        [0, nc) (not checked here: that would cost a GPU sync per step; the data pipeline validates labels).
    total: (lbox + lobj + lcls) * B as a 0-dim fp32 tensor; items: detached fp32 [box, obj, cls].
    """

    def __init__(self, model: nn.Module, hyp: LossHyp | None = None, imgsz: int = 640) -> None:
        self.detect = _unwrap(model).detect
        self.hyp = hyp or LossHyp()
        self.nc, self.nl, self.na = self.detect.nc, self.detect.nl, self.detect.na
        # YOLOv5's train.py scales the gains so one hyp file fits any class count, level count and image size.
        level_scale = 3 / self.nl
        self.box_gain = self.hyp.box * level_scale
        self.cls_gain = self.hyp.cls * self.nc / 80 * level_scale
        self.obj_gain = self.hyp.obj * (imgsz / 640) ** 2 * level_scale
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        # YOLOv5's smooth_BCE: positive and negative class targets.
        self.class_positive = 1.0 - 0.5 * self.hyp.label_smoothing
        self.class_negative = 0.5 * self.hyp.label_smoothing

    def _bce(self, pos_weight: float, device: torch.device) -> nn.Module:
        bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))
        return FocalLoss(bce, self.hyp.fl_gamma) if self.hyp.fl_gamma > 0 else bce

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(preds) != self.nl:
            raise ValueError(f"expected {self.nl} prediction levels (the train-mode output), got {len(preds)}")
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(f"targets must be (N, 6) [image, class, cx, cy, w, h], got {tuple(targets.shape)}")
        device = preds[0].device
        with torch.autocast(device.type, enabled=False):
            preds = [p.float() for p in preds]
            targets = targets.to(device=device, dtype=torch.float32)
            return self._loss(preds, targets)

    def _loss(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = preds[0].device
        bce_cls, bce_obj = self._bce(self.hyp.cls_pw, device), self._bce(self.hyp.obj_pw, device)
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for level, (pred, (tcls, tbox, (b, a, gj, gi), anchors)) in enumerate(
            zip(preds, self.build_targets(preds, targets), strict=True)
        ):
            tobj = torch.zeros(pred.shape[:4], device=device)  # (B, na, h, w)
            if b.shape[0]:
                pxy, pwh, _, pcls = pred[b, a, gj, gi].split((2, 2, 1, self.nc), dim=1)
                pxy = pxy.sigmoid() * 2 - 0.5  # offset from the cell corner, in (-0.5, 1.5)
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors  # grid units, in (0, 4·anchor)
                iou = bbox_iou(torch.cat((pxy, pwh), 1), tbox, ciou=True)  # (n,)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(min=0)
                if self.nc > 1:  # YOLOv5 has no class loss for single-class models
                    class_targets = torch.full_like(pcls, self.class_negative)
                    class_targets[torch.arange(b.shape[0], device=device), tcls] = self.class_positive
                    lcls = lcls + bce_cls(pcls, class_targets)
            lobj = lobj + bce_obj(pred[..., 4], tobj) * self.balance[level]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        batch_size = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.stack((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[tuple]:
        """Per level: (classes (n,), boxes (n, 4) as offset-from-cell xy + wh in grid units,
        indices (image, anchor, row, col), anchors (n, 2) in grid units) of every target-anchor-cell match."""
        device = targets.device
        na, nt = self.na, targets.shape[0]
        anchor_index = torch.arange(na, device=device, dtype=torch.float32).view(na, 1).repeat(1, nt)  # (na, nt)
        # (nt, 6) -> repeat -> (na, nt, 6) -> cat anchor index -> (na, nt, 7): one copy of each target per anchor
        targets = torch.cat((targets.repeat(na, 1, 1), anchor_index[..., None]), dim=2)
        half = 0.5
        # The own cell, then the left, upper, right and lower neighbours (YOLOv5's offsets, in cells).
        offsets_table = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * half
        gain = torch.ones(7, device=device)
        matches = []
        for level, pred in enumerate(preds):
            anchors = self.detect.anchors[level].to(device=device, dtype=torch.float32)  # (na, 2) grid units
            _, _, ny, nx, _ = pred.shape
            gain[2:6] = torch.tensor([nx, ny, nx, ny], device=device, dtype=torch.float32)
            t = targets * gain  # (na, nt, 7) with boxes in grid units of this level
            if nt:
                ratio = t[..., 4:6] / anchors[:, None]  # (na, nt, 2)
                # Zero-size boxes: ratio 0, its clamped inverse 1e7 fails the test, so they never match (no inf/NaN).
                keep = torch.max(ratio, 1 / ratio.clamp(min=_EPS)).max(dim=2).values < self.hyp.anchor_t
                t = t[keep]  # (m, 7)
                gxy = t[:, 2:4]  # centre from the top-left of the map
                gxy_inverse = gain[[2, 3]] - gxy  # centre from the bottom-right
                left, up = ((gxy % 1 < half) & (gxy > 1)).T
                right, down = ((gxy_inverse % 1 < half) & (gxy_inverse > 1)).T
                use = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, m)
                t = t.repeat((5, 1, 1))[use]  # (k, 7)
                offsets = (torch.zeros_like(gxy)[None] + offsets_table[:, None])[use]  # (k, 2)
            else:
                t = targets[0]  # (0, 7)
                offsets = torch.zeros((0, 2), device=device)
            image_class, gxy, gwh, anchor = t.split((2, 2, 2, 1), dim=1)
            anchor = anchor.long().view(-1)
            image, cls = image_class.long().T
            cell = (gxy - offsets).long()  # (k, 2) column, row
            # A centre exactly on the right/bottom edge (cx = 1.0) falls in the cell past the map; YOLOv5 clamps it
            # back and measures the box offset from the clamped cell.
            gi, gj = cell[:, 0].clamp(0, nx - 1), cell[:, 1].clamp(0, ny - 1)
            boxes = torch.cat((gxy - torch.stack((gi, gj), dim=1), gwh), dim=1)
            matches.append((cls, boxes, (image, anchor, gj, gi), anchors[anchor]))
        return matches
