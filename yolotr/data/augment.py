"""YOLOv5's training augmentations rendered by OpenCV on the CPU: 4-image mosaic or letterbox, random affine (scale,
translate, rotation, shear), horizontal flip, HSV jitter; and the validation letterbox.

What is random and where the boxes go is decided by `augment_plan.plan_augmentation`; this module moves the pixels.
A mosaic's three partners are drawn from the whole dataset, as YOLOv5 draws them (`mosaic_partners: dataset`; the
stream reads them by their byte offsets, producers.DatasetPartners), or from the other samples of the same local
batch, already decoded (`batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import cv2
import numpy as np

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment_plan import AugmentPlan, LabelledSample, PartnerDraw, hsv_lookup_tables, plan_augmentation
from yolotr.data.decode import DecodedSample
from yolotr.data.geometry import letterbox_geometry, paste_warped, scaling, transform_boxes, translation


def augment_into(out: np.ndarray, primary: DecodedSample, partners: Sequence[LabelledSample] | PartnerDraw,
                 rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Draws one augmented training image into `out` (S, S, 3), pre-filled with the fill value.

    partners: samples a mosaic may take its other three images from (the primary is used if empty), or a function
    that draws them (called only when the image is a mosaic, so a partner read from disk is read only when used).
    Returns the kept boxes as (n, 5) float64 rows [class, x1, y1, x2, y2] in output pixels.
    """
    plan = plan_augmentation(primary, partners, rng, config, out.shape[0])
    render_plan(out, plan)
    return plan.boxes


def render_plan(out: np.ndarray, plan: AugmentPlan) -> None:
    """The pixels of `plan` into `out` (S, S, 3), pre-filled with the fill value; its samples are `DecodedSample`s."""
    for source in plan.sources:
        sample = cast(DecodedSample, source.sample)  # a plan rendered on the host was made from decoded samples
        paste_warped(out, sample.image, source.matrix, source.region, source.region_to_out)
    apply_hsv_gains(out, plan.hsv_gains)


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


def apply_hsv_gains(image: np.ndarray, gains: np.ndarray) -> None:
    """Multiplies H, S, V of an RGB (H, W, 3) uint8 image by `gains` (3,), in place, through one lookup table."""
    if np.all(gains == 1):
        return
    tables = hsv_lookup_tables(np.asarray(gains)[None])[0]  # (3, 256): H, S, V
    lut = np.ascontiguousarray(tables.T).reshape(256, 1, 3)  # cv2.LUT's layout for a 3-channel image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    cv2.LUT(hsv, lut, dst=hsv)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=image)
