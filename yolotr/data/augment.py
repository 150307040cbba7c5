"""YOLOv5's training augmentations, boxes transformed with the pixels: 4-image mosaic or letterbox, random affine
(scale, translate, rotation, shear), horizontal flip, HSV jitter; boxes that leave the image are clipped, and dropped
by YOLOv5's area rule.

Every random draw for an output image comes from a generator seeded by (seed, epoch, primary sample key), so an
image does not depend on which worker or process built it. A mosaic's three partners are drawn from the whole
dataset, as YOLOv5 draws them (`mosaic_partners: dataset`; the stream reads them by their byte offsets,
producers.DatasetPartners), or from the other samples of the same local batch, already decoded (`batch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from yolotr.config.augment import AugmentConfig
from yolotr.data.decode import DecodedSample
from yolotr.data.geometry import (
    box_candidates,
    clip_boxes,
    horizontal_flip,
    letterbox_geometry,
    mosaic_placements,
    paste_warped,
    random_affine,
    scaling,
    transform_boxes,
    translation,
)


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator for everything random about sample `key` in `epoch`."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch),
                                  int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")])


# Draws a mosaic's three partners for a primary sample with the primary's generator.
PartnerDraw = Callable[[np.random.Generator, DecodedSample], list[DecodedSample]]


def pool_partners(pool: Sequence[DecodedSample]) -> PartnerDraw:
    """Partners drawn with replacement from `pool` (the primary itself when the pool is empty)."""

    def draw(rng: np.random.Generator, primary: DecodedSample) -> list[DecodedSample]:
        choices = list(pool) or [primary]
        return [choices[i] for i in rng.integers(0, len(choices), 3)]

    return draw


def augment_into(out: np.ndarray, primary: DecodedSample, partners: Sequence[DecodedSample] | PartnerDraw,
                 rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Draws one augmented training image into `out` (S, S, 3), pre-filled with the fill value.

    partners: samples a mosaic may take its other three images from (the primary is used if empty), or a function
    that draws them (called only when the image is a mosaic, so a partner read from disk is read only when used).
    Returns the kept boxes as (n, 5) float64 rows [class, x1, y1, x2, y2] in output pixels.
    """
    size = out.shape[0]
    if rng.random() < config.mosaic:
        draw = partners if callable(partners) else pool_partners(partners)
        sources = [primary, *draw(rng, primary)]
        xc, yc = (int(rng.uniform(size / 2, 1.5 * size)) for _ in range(2))
        resized = [_long_side_size(s.image, size) for s in sources]
        layout = [(region, translation(*pad) @ scaling(w / s.image.shape[1], h / s.image.shape[0]))
                  for s, (w, h), (region, pad) in zip(sources, resized, mosaic_placements(resized, size, xc, yc))]
        canvas_size = 2 * size
    else:
        sources = [primary]
        height0, width0 = primary.image.shape[:2]
        box = letterbox_geometry(width0, height0, size)
        place = translation(box.left, box.top) @ scaling(box.new_width / width0, box.new_height / height0)
        layout = [((box.left, box.top, box.left + box.new_width, box.top + box.new_height), place)]
        canvas_size = size
    warp, factor = random_affine(rng, degrees=config.degrees, translate=config.translate, scale=config.scale,
                                 shear=config.shear, canvas_size=canvas_size, out_size=size)
    if rng.random() < config.fliplr:
        warp = horizontal_flip(size) @ warp
    rows = []
    for sample, (region, place) in zip(sources, layout):
        paste_warped(out, sample.image, warp @ place, region, warp)
        # Boxes: source → canvas, clipped to the image's region (what is visible of it), then → output.
        before = clip_boxes(transform_boxes(sample.label.boxes, place), *region)
        after = clip_boxes(transform_boxes(before, warp), 0, 0, size, size)
        keep = box_candidates(before, after, scale=factor)
        rows.append(np.concatenate([sample.label.classes[keep, None].astype(np.float64), after[keep]], axis=1))
    hsv_jitter(out, rng, config)
    return np.concatenate(rows, axis=0)


def letterbox_into(out: np.ndarray, sample: DecodedSample) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resizes (long side → S) and pads `sample` into `out` (S, S, 3), pre-filled with the fill value, as YOLOv5's
    validation does. Returns boxes (n, 5) [class, x1, y1, x2, y2] in output pixels, the ratio and the (left, top) pad.
    """
    size = out.shape[0]
    height0, width0 = sample.image.shape[:2]
    box = letterbox_geometry(width0, height0, size)
    # INTER_AREA when shrinking avoids aliasing, as YOLOv5 does when it does not augment.
    interpolation = cv2.INTER_AREA if box.ratio < 1 else cv2.INTER_LINEAR
    roi = out[box.top:box.top + box.new_height, box.left:box.left + box.new_width]
    cv2.resize(sample.image, (box.new_width, box.new_height), dst=roi, interpolation=interpolation)
    place = translation(box.left, box.top) @ scaling(box.new_width / width0, box.new_height / height0)
    boxes = transform_boxes(sample.label.boxes, place)
    rows = np.concatenate([sample.label.classes[:, None].astype(np.float64), boxes], axis=1)
    return rows, box.ratio, (box.left, box.top)


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> None:
    """YOLOv5's HSV augmentation, in place on an RGB (H, W, 3) uint8 image, through one lookup table."""
    gains = rng.uniform(-1, 1, 3) * [config.hsv_h, config.hsv_s, config.hsv_v] + 1
    if np.all(gains == 1):
        return
    x = np.arange(256, dtype=np.float64)
    lut = np.stack([(x * gains[0]) % 180, np.clip(x * gains[1], 0, 255), np.clip(x * gains[2], 0, 255)], axis=-1)
    lut = lut.astype(np.uint8).reshape(256, 1, 3)  # one table per channel: H, S, V
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    cv2.LUT(hsv, lut, dst=hsv)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=image)


def _long_side_size(image: np.ndarray, size: int) -> tuple[int, int]:
    """(w, h) of `image` resized so that its long side is `size`."""
    height, width = image.shape[:2]
    ratio = size / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))
