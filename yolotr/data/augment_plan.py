"""Everything random and every box of one training augmentation, decided before a pixel moves: the plan.

A plan says, for each source image pasted into the output, the matrix that maps it there and the region of it that
is visible; the HSV gains; the boxes that are kept. Rendering a plan is then pure pixel work, done by OpenCV on the
CPU (`augment.augment_into`) or by torch on any device (`device_augment`), and both give the same boxes because the
boxes are part of the plan.

Every random draw for an output image comes from a generator seeded by (seed, epoch, primary sample key), so an
image does not depend on which worker or process built it. The draw order is YOLOv5's and must not move (the CPU
path is pinned bit for bit by tests/data/test_augment_pinned.py): mosaic or not, the partners, the mosaic centre,
the affine, the flip, then the HSV gains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from yolotr.config.augment import AugmentConfig
from yolotr.data.geometry import (
    box_candidates,
    clip_boxes,
    horizontal_flip,
    letterbox_geometry,
    mosaic_placements,
    random_affine,
    scaling,
    transform_boxes,
    translation,
)
from yolotr.data.labels import DetectionLabel


class LabelledSample(Protocol):
    """What planning needs of a sample: its key and its label (whose width and height are the image's; decode.py's
    `decode_sample` checks that). A `DecodedSample` is one; so is a sample whose pixels are not decoded yet.
    Read-only, as those frozen dataclasses are."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> DetectionLabel: ...


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator for everything random about sample `key` in `epoch`."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch),
                                  int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")])


# Draws a mosaic's three partners for a primary sample with the primary's generator.
PartnerDraw = Callable[[np.random.Generator, LabelledSample], list]


def pool_partners(pool: Sequence[LabelledSample]) -> PartnerDraw:
    """Partners drawn with replacement from `pool` (the primary itself when the pool is empty)."""

    def draw(rng: np.random.Generator, primary: LabelledSample) -> list:
        choices = list(pool) or [primary]
        return [choices[i] for i in rng.integers(0, len(choices), 3)]

    return draw


@dataclass(frozen=True)
class PastedSource:
    """One source image's part in the output. Coordinates are edge coordinates (geometry.py's convention)."""

    sample: LabelledSample
    matrix: np.ndarray  # (3, 3) source pixels → output pixels
    region: tuple[int, int, int, int]  # (x1, y1, x2, y2): the visible part, on the canvas that region_to_out maps
    region_to_out: np.ndarray  # (3, 3) canvas → output: only output pixels whose centres fall in the mapped region


@dataclass(frozen=True)
class AugmentPlan:
    """One augmented training image, without its pixels."""

    size: int  # the output is (size, size)
    sources: tuple[PastedSource, ...]  # pasted in this order (regions do not overlap, so the order is cosmetic)
    hsv_gains: np.ndarray  # (3,) multipliers of H, S, V; all 1 means no colour change
    boxes: np.ndarray  # (n, 5) float64 rows [class, x1, y1, x2, y2] in output pixels


def plan_augmentation(primary: LabelledSample, partners: Sequence[LabelledSample] | PartnerDraw,
                      rng: np.random.Generator, config: AugmentConfig, size: int) -> AugmentPlan:
    """Draws one augmented image of `size`² pixels: YOLOv5's mosaic or letterbox, random affine, flip, HSV gains.

    partners: samples a mosaic may take its other three images from (the primary is used if empty), or a function
    that draws them (called only when the image is a mosaic, so a partner read from disk is read only when used).
    """
    if rng.random() < config.mosaic:
        draw = partners if callable(partners) else pool_partners(partners)
        samples = [primary, *draw(rng, primary)]
        xc, yc = (int(rng.uniform(size / 2, 1.5 * size)) for _ in range(2))
        resized = [_long_side_size(s.label, size) for s in samples]
        layout = [(region, translation(*pad) @ scaling(w / s.label.width, h / s.label.height))
                  for s, (w, h), (region, pad) in zip(samples, resized, mosaic_placements(resized, size, xc, yc))]
        canvas_size = 2 * size
    else:
        samples = [primary]
        width0, height0 = primary.label.width, primary.label.height
        box = letterbox_geometry(width0, height0, size)
        place = translation(box.left, box.top) @ scaling(box.new_width / width0, box.new_height / height0)
        layout = [((box.left, box.top, box.left + box.new_width, box.top + box.new_height), place)]
        canvas_size = size
    warp, factor = random_affine(rng, degrees=config.degrees, translate=config.translate, scale=config.scale,
                                 shear=config.shear, canvas_size=canvas_size, out_size=size)
    if rng.random() < config.fliplr:
        warp = horizontal_flip(size) @ warp
    sources, rows = [], []
    for sample, (region, place) in zip(samples, layout):
        sources.append(PastedSource(sample=sample, matrix=warp @ place, region=region, region_to_out=warp))
        # Boxes: source → canvas, clipped to the image's region (what is visible of it), then → output.
        before = clip_boxes(transform_boxes(sample.label.boxes, place), *region)
        after = clip_boxes(transform_boxes(before, warp), 0, 0, size, size)
        keep = box_candidates(before, after, scale=factor)
        rows.append(np.concatenate([sample.label.classes[keep, None].astype(np.float64), after[keep]], axis=1))
    return AugmentPlan(size=size, sources=tuple(sources), hsv_gains=draw_hsv_gains(rng, config),
                       boxes=np.concatenate(rows, axis=0))


def draw_hsv_gains(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """YOLOv5's HSV gains: (3,) multipliers of H, S, V, each drawn from [1 - hsv_x, 1 + hsv_x]."""
    return rng.uniform(-1, 1, 3) * [config.hsv_h, config.hsv_s, config.hsv_v] + 1


def hsv_lookup_tables(gains: np.ndarray) -> np.ndarray:
    """(B, 3) H, S, V gains → (B, 3, 256) uint8 tables, the value each H, S, V byte becomes: H times its gain modulo
    180 (OpenCV's uint8 hue range), S and V times theirs, clipped; float64 products truncated to uint8 as YOLOv5's
    table. Both renderers apply these tables, so their colour changes are the same."""
    x = np.arange(256, dtype=np.float64)
    gains = np.asarray(gains, dtype=np.float64)[:, :, None]  # (B, 3, 1)
    hue = (x * gains[:, 0]) % 180
    saturation = np.clip(x * gains[:, 1], 0, 255)
    value = np.clip(x * gains[:, 2], 0, 255)
    return np.stack([hue, saturation, value], axis=1).astype(np.uint8)


def _long_side_size(label: DetectionLabel, size: int) -> tuple[int, int]:
    """(w, h) of the labelled image resized so that its long side is `size`."""
    ratio = size / max(label.width, label.height)
    return max(1, round(label.width * ratio)), max(1, round(label.height * ratio))
