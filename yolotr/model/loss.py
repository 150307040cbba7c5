"""YOLOv5's detection loss, with every divide guarded and everything computed in fp32.

Semantics follow YOLOv5's ``utils/loss.py`` so its hyperparameters transfer: anchors match a target when the
width and height ratios are both below ``anchor_t``; each target is also assigned to the two neighbouring cells
nearest its centre (offset 0.5); CIoU box loss; objectness target = detached IoU clamped at 0; class BCE with
optional label smoothing; per-level objectness balance [4.0, 1.0, 0.4]; total scaled by the batch size.

The NaN sources reported against YOLOv5 (#2376, #8539, #13416: zero-width/height boxes, identical boxes, images
without labels, fp16 losses) are closed here: every ratio has an eps, the CIoU aspect term divides by a clamped
height, its alpha denominator is clamped, and the predictions are upcast to fp32 with autocast off.

Unlike YOLOv5, nothing here makes the host wait for the GPU: YOLOv5 compacts the target-anchor matches with boolean
masks (`t[j]`), whose output size the host must read back every step. Here every (neighbour, anchor, target) candidate
keeps its slot with a `valid` weight, so every shape is known on the host, and the means are weighted means over the
valid candidates. Where two matches claim the same cell and anchor, the objectness target is the later one's IoU,
as in YOLOv5 on a CPU (on a GPU YOLOv5's write order is unspecified; here it is the same on every device).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.config.model import LossHyp
from yolotr.model.yolo import DetectionModel

# Guard for every divide in the box geometry; small against boxes measured in grid cells.
_EPS = 1e-7


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


def bce_elements(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None, focal_gamma: float, alpha: float = 0.25
) -> torch.Tensor:
    """Element-wise BCE-with-logits, optionally with YOLOv5's focal modulation (gamma > 0, alpha 0.25)."""
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    if focal_gamma <= 0:
        return loss
    prob = torch.sigmoid(logits)
    p_t = target * prob + (1 - target) * (1 - prob)
    alpha_factor = target * alpha + (1 - target) * (1 - alpha)
    return loss * alpha_factor * (1.0 - p_t) ** focal_gamma


class LevelMatches(NamedTuple):
    """Every (neighbour cell, anchor, target) candidate of one pyramid level, k = 5 · na · nt of them, flattened in
    that order. Invalid candidates (anchor ratio over `anchor_t`, or a neighbour not among the two nearest the centre)
    keep their slot with `valid` false and in-range indices, so no shape depends on the data."""

    cls: torch.Tensor  # (k,) class
    boxes: torch.Tensor  # (k, 4) centre as offset from the cell, and wh, in grid units
    image: torch.Tensor  # (k,) image index in the batch
    anchor: torch.Tensor  # (k,) anchor index
    row: torch.Tensor  # (k,) gj
    col: torch.Tensor  # (k,) gi
    anchors: torch.Tensor  # (k, 2) the matched anchor's size in grid units
    valid: torch.Tensor  # (k,) bool


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
        # Constants are made once, on the model's device: a tensor made from Python data inside the step would be a
        # host-to-device copy, which synchronises.
        device = self.detect.anchors.device
        self.cls_pos_weight = self._pos_weight(self.hyp.cls_pw, device)
        self.obj_pos_weight = self._pos_weight(self.hyp.obj_pw, device)
        # The own cell, then the left, upper, right and lower neighbours (YOLOv5's offsets, in cells).
        self.neighbour_offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device) * 0.5

    @staticmethod
    def _pos_weight(weight: float, device: torch.device) -> torch.Tensor | None:
        return None if weight == 1.0 else torch.tensor([weight], device=device)

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
        gamma = self.hyp.fl_gamma
        cls_pw, obj_pw = (w.to(device) if w is not None else None for w in (self.cls_pos_weight, self.obj_pos_weight))
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for level, (pred, m) in enumerate(zip(preds, self.build_targets(preds, targets), strict=True)):
            tobj = torch.zeros(pred.shape[:4], device=device)  # (B, na, h, w)
            if m.valid.numel():  # a host-side shape: false only for a batch without labels
                weight = m.valid.float()
                count = weight.sum().clamp(min=1)  # protected: a level where no candidate matched adds 0
                pxy, pwh, _, pcls = pred[m.image, m.anchor, m.row, m.col].split((2, 2, 1, self.nc), dim=1)
                pxy = pxy.sigmoid() * 2 - 0.5  # offset from the cell corner, in (-0.5, 1.5)
                pwh = (pwh.sigmoid() * 2) ** 2 * m.anchors  # grid units, in (0, 4·anchor)
                iou = bbox_iou(torch.cat((pxy, pwh), 1), m.boxes, ciou=True)  # (k,)
                # where(), not a product with the weight: an invalid candidate must not reach the sum even as 0·inf.
                lbox = lbox + torch.where(m.valid, 1.0 - iou, 0.0).sum() / count
                tobj = self._objectness_target(tobj, m, iou.detach().clamp(min=0))
                if self.nc > 1:  # YOLOv5 has no class loss for single-class models
                    # scatter_ takes the value as a kernel argument; index assignment of a Python number would copy
                    # it to the device first, which synchronises.
                    class_targets = torch.full_like(pcls, self.class_negative).scatter_(
                        1, m.cls[:, None], self.class_positive
                    )
                    per_candidate = bce_elements(pcls, class_targets, cls_pw, gamma).mean(dim=1)  # (k,)
                    lcls = lcls + torch.where(m.valid, per_candidate, 0.0).sum() / count
            lobj = lobj + bce_elements(pred[..., 4], tobj, obj_pw, gamma).mean() * self.balance[level]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        batch_size = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.stack((lbox, lobj, lcls)).detach()

    def _objectness_target(self, tobj: torch.Tensor, m: LevelMatches, iou: torch.Tensor) -> torch.Tensor:
        """tobj[image, anchor, row, col] = iou of the match there. Where several valid candidates claim one cell and
        anchor, the last in YOLOv5's order wins, as its `tobj[b, a, gj, gi] = iou` does on a CPU (on a GPU that
        write is unordered): the winner is the highest valid candidate index, found with a scatter-max."""
        _, _, ny, nx = tobj.shape
        cell = ((m.image * self.na + m.anchor) * ny + m.row) * nx + m.col  # (k,) flat index into tobj
        order = torch.arange(len(cell), device=cell.device)
        winner = torch.full((tobj.numel(),), -1, dtype=torch.long, device=cell.device)
        winner.scatter_reduce_(0, cell, torch.where(m.valid, order, -1), reduce="amax")
        return torch.where(winner >= 0, iou[winner.clamp(min=0)], 0.0).view_as(tobj)

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[LevelMatches]:
        """Per level, every target × anchor × {own cell, 4 neighbours} candidate, marked valid as YOLOv5 matches:
        an anchor matches when the width and height ratios are within `anchor_t`; besides its own cell, a target is
        assigned to the two neighbouring cells nearest its centre (offset 0.5)."""
        device = targets.device
        na, nt = self.na, targets.shape[0]
        half = 0.5
        offsets_table = self.neighbour_offsets.to(device)  # (5, 2)
        image_class = targets[:, :2]
        levels = []
        for level, pred in enumerate(preds):
            anchors = self.detect.anchors[level].to(device=device, dtype=torch.float32)  # (na, 2) grid units
            _, _, ny, nx, _ = pred.shape
            # (nt, 4): centre and size in grid units of this level (Python scalars: no host-to-device copy)
            grid = torch.stack((targets[:, 2] * nx, targets[:, 3] * ny, targets[:, 4] * nx, targets[:, 5] * ny), 1)
            ratio = grid[None, :, 2:4] / anchors[:, None]  # (na, nt, 2)
            # Zero-size boxes: ratio 0, its clamped inverse 1e7 fails the test, so they never match (no inf/NaN).
            anchor_ok = torch.max(ratio, 1 / ratio.clamp(min=_EPS)).max(dim=2).values < self.hyp.anchor_t  # (na, nt)
            gxy = grid[:, :2]  # centre from the top-left of the map, (nt, 2)
            gxy_inverse = torch.stack((nx - gxy[:, 0], ny - gxy[:, 1]), 1)  # centre from the bottom-right
            left, up = ((gxy % 1 < half) & (gxy > 1)).T  # (nt,) each
            right, down = ((gxy_inverse % 1 < half) & (gxy_inverse > 1)).T
            near = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, nt)
            valid = near[:, None, :] & anchor_ok[None]  # (5, na, nt)
            shape = (5, na, nt)
            anchor = torch.arange(na, device=device)[None, :, None].expand(shape).reshape(-1)  # (k,)
            offsets = offsets_table[:, None, None, :].expand(*shape, 2).reshape(-1, 2)  # (k, 2)
            candidate_xy = gxy[None, None].expand(*shape, 2).reshape(-1, 2)  # (k, 2)
            candidate_wh = grid[None, None, :, 2:4].expand(*shape, 2).reshape(-1, 2)
            image, cls = image_class[None, None].expand(*shape, 2).reshape(-1, 2).long().T
            cell = (candidate_xy - offsets).long()  # (k, 2) column, row
            # A centre exactly on the right/bottom edge (cx = 1.0) falls in the cell past the map; YOLOv5 clamps it
            # back and measures the box offset from the clamped cell. Invalid neighbours are clamped into the map
            # too, so that their (unused) gather stays in range.
            gi, gj = cell[:, 0].clamp(0, nx - 1), cell[:, 1].clamp(0, ny - 1)
            boxes = torch.cat((candidate_xy - torch.stack((gi, gj), dim=1), candidate_wh), dim=1)
            levels.append(LevelMatches(cls, boxes, image, anchor, gj, gi, anchors[anchor], valid.reshape(-1)))
        return levels
