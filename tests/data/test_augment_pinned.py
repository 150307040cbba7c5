"""The CPU augmentation path is pinned bit for bit: sha256 digests of `augment_into`'s pixels and boxes, recorded
before geometry was split from pixels (plan + render), for mosaic on and off, rotation + shear, and flips. A digest
changes when any random draw moves, a matrix changes, or the render changes: a change here changes every training
run's images, so it has to be deliberate (and the digests re-recorded in the same commit that says why)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment import augment_into
from yolotr.data.augment_plan import sample_rng
from yolotr.data.geometry import FILL_VALUE

SIZE = 128
CASES = {
    "defaults": AugmentConfig(),  # mosaic, flip half the time, HSV
    "letterbox": AugmentConfig(mosaic=0.0),
    "mosaic_rotate_shear": AugmentConfig(degrees=20.0, shear=8.0),
    "letterbox_rotate_shear_flip": AugmentConfig(mosaic=0.0, degrees=30.0, shear=5.0, fliplr=1.0),
    "mosaic_flip_no_hsv": AugmentConfig(fliplr=1.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0),
}
PINNED = {
    "defaults": "d06da44998d3db2f5f7b105641a14a1b0cd41a77311188a4b37b95a38efafec3",
    "letterbox": "898e92d75a7fcaf113176b5a14427e4349c774554f9e762feed556525a71ed11",
    "mosaic_rotate_shear": "5d925a24c55b18e5f47c425102d2f434d7f10c97ac1cc2ba0a9e47ddd3503883",
    "letterbox_rotate_shear_flip": "f2c484a88d674863050e9c0a5288427f8b2699ce884c706e1ab8f891610e2fda",
    "mosaic_flip_no_hsv": "09d520daf76fdd08952cc4ceb75302a978df695542330f7de53ec1511d9e7bbd",
}


def augment_digest(samples, config: AugmentConfig) -> str:
    """One digest over every sample as primary (its partners: the others) and three seeds."""
    digest = hashlib.sha256()
    for seed in range(3):
        for i, primary in enumerate(samples):
            out = np.full((SIZE, SIZE, 3), FILL_VALUE, dtype=np.uint8)
            pool = [s for j, s in enumerate(samples) if j != i]
            boxes = augment_into(out, primary, pool, sample_rng(seed, 0, primary.key), config)
            digest.update(out.tobytes())
            digest.update(np.ascontiguousarray(boxes, dtype=np.float64).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_augment_into_gives_the_pinned_pixels_and_boxes(case, textured_samples):
    assert augment_digest(textured_samples, CASES[case]) == PINNED[case]
