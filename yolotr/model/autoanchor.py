"""Anchors that fit the training boxes (YOLOv5's AutoAnchor behaviour, yolotr's own code).

Before training, the box sizes of the train split (each image resized so that its long side is the training size,
with a random ±10 % scale, as the augmentation will present them) are compared with the model's anchors. The fit of
a box to an anchor is min(w/wa, wa/w, h/ha, ha/h); a box is *recallable* when some anchor fits it better than
1/anchor_t, the loss's matching rule. When fewer than 98 % of the boxes are recallable (best possible recall, BPR),
new anchors are computed: k-means on log box sizes (ratios are what the rule compares), then a mutation search
that maximises the mean fit of the boxes that pass the rule. They replace the model's only if their BPR is higher.
A user's data with small or elongated objects then trains with anchors its boxes can match, as in YOLOv5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yolotr.model.detect import Detect

BPR_THRESHOLD = 0.98  # YOLOv5's: below it the anchors are recomputed
MAX_EVOLVE_BOXES = 20_000


@dataclass(frozen=True)
class AnchorFit:
    bpr: float  # fraction of boxes some anchor can match (best fit > 1/anchor_t)
    anchors_per_box: float  # mean number of anchors that can match a box

    def __str__(self) -> str:
        return f"BPR {self.bpr:.4f}, {self.anchors_per_box:.2f} anchors/box"


def _fits(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(n, k): for each box and anchor, min(w/wa, wa/w, h/ha, ha/h)."""
    ratio = wh[:, None, :] / anchors[None, :, :]  # (n, k, 2)
    return np.minimum(ratio, 1 / ratio).min(axis=2)


def anchor_fit(wh: np.ndarray, anchors: np.ndarray, anchor_t: float) -> AnchorFit:
    """How well `anchors` (k, 2) in pixels fit box sizes `wh` (n, 2) in pixels."""
    fits = _fits(wh, anchors)
    return AnchorFit(bpr=float((fits.max(1) > 1 / anchor_t).mean()),
                     anchors_per_box=float((fits > 1 / anchor_t).sum(1).mean()))


def _fitness(wh: np.ndarray, anchors: np.ndarray, anchor_t: float) -> float:
    best = _fits(wh, anchors).max(1)
    return float((best * (best > 1 / anchor_t)).mean())


def evolve_anchors(wh: np.ndarray, count: int, anchor_t: float, *, generations: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """`count` anchors (count, 2) in pixels, sorted by area, fitted to box sizes `wh` (n, 2)."""
    rng = np.random.default_rng(seed)
    points = np.log(wh)  # (n, 2): k-means in log space clusters by ratio, the quantity the matching rule compares
    centres = points[rng.choice(len(points), count, replace=len(points) < count)]
    for _ in range(30):  # Lloyd iterations
        nearest = ((points[:, None] - centres[None]) ** 2).sum(2).argmin(1)  # (n,)
        for j in range(count):
            members = points[nearest == j]
            if len(members):
                centres[j] = members.mean(0)
    anchors = np.exp(centres)
    best = _fitness(wh, anchors, anchor_t)
    for _ in range(generations):  # keep a mutation when it fits the boxes better
        mutate = rng.random(anchors.shape) < 0.9
        factor = np.clip(1 + rng.standard_normal(anchors.shape) * 0.1 * rng.random() * mutate, 0.3, 3.0)
        candidate = anchors * factor
        score = _fitness(wh, candidate, anchor_t)
        if score > best:
            anchors, best = candidate, score
    return anchors[np.argsort(anchors.prod(1))]


def training_box_sizes(labels: list[tuple[np.ndarray, int, int]], imgsz: int, *, seed: int = 0) -> np.ndarray:
    """(n, 2) box sizes in training pixels from (boxes (m, 4) x1y1x2y2, width, height) per image: each image
    resized to long side `imgsz` and scaled by a random factor in [0.9, 1.1]; boxes under 2 px are left out."""
    rng = np.random.default_rng(seed)
    sizes = []
    for boxes, width, height in labels:
        if len(boxes):
            scale = imgsz / max(width, height) * rng.uniform(0.9, 1.1)
            sizes.append((boxes[:, 2:4] - boxes[:, 0:2]) * scale)
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    return wh[(wh >= 2.0).all(1)]


def check_anchors(detect: Detect, wh: np.ndarray, anchor_t: float) -> tuple[AnchorFit, AnchorFit | None]:
    """Compares the head's anchors with the box sizes; recomputes and installs new ones (small anchors at the
    stride-8 level, as the head expects) when the BPR is under 98 % and the new ones do better.
    Returns (fit before, fit of the new anchors or None when they were not computed)."""
    strides = detect.stride.view(-1, 1, 1)  # (nl, 1, 1)
    current = (detect.anchors * strides).reshape(-1, 2).cpu().numpy()  # (nl·na, 2) pixels
    before = anchor_fit(wh, current, anchor_t)
    if before.bpr >= BPR_THRESHOLD or len(wh) == 0:
        return before, None
    # The evolution's cost grows with the boxes; a fixed random subset of them is as good a sample of their sizes.
    subset = wh if len(wh) <= MAX_EVOLVE_BOXES else wh[np.random.default_rng(0).choice(len(wh), MAX_EVOLVE_BOXES)]
    anchors = evolve_anchors(subset, len(current), anchor_t)  # (nl·na, 2), sorted by area
    after = anchor_fit(wh, anchors, anchor_t)
    if after.bpr > before.bpr:
        levels = detect.stride.argsort().tolist()  # the smallest anchors go to the finest level
        per_level = torch.tensor(anchors, dtype=detect.anchors.dtype).view_as(detect.anchors)  # (nl, na, 2) pixels
        for rank, level in enumerate(levels):
            detect.anchors[level] = (per_level[rank] / detect.stride[level].cpu()).to(detect.anchors.device)
    return before, after
