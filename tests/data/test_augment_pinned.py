"""The CPU augmentation path is pinned: what is drawn (partners, matrices, regions, HSV gains, kept boxes) on every
machine, and the pixels bit for bit under the OpenCV version they were recorded with. A digest changes when a random
draw moves, a matrix changes, or the render changes: a change here changes every training run's images, so it has to
be deliberate (and the digests re-recorded in the same commit that says why).

The digests held over the split of geometry from pixels (plan + render): they were first recorded on the code before
it (commit 8dffce1) and passed unchanged after; the pixel digests below, recomputed over pixels alone, equal
those of the code before the split. The geometry is rounded before hashing (matrices to 1e-6, boxes to
1e-4) so that a BLAS or CPU that differs in the last bit of a 3x3 product does not count as a change; the pixels are
only compared under the recorded OpenCV, since another release may round its warps or colour conversion differently.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment import augment_into
from yolotr.data.augment_plan import plan_augmentation, sample_rng
from yolotr.data.geometry import FILL_VALUE

SIZE = 128
SEEDS = range(3)
CASES = {
    "defaults": AugmentConfig(),  # mosaic, flip half the time, HSV
    "letterbox": AugmentConfig(mosaic=0.0),
    "mosaic_rotate_shear": AugmentConfig(degrees=20.0, shear=8.0),
    "letterbox_rotate_shear_flip": AugmentConfig(mosaic=0.0, degrees=30.0, shear=5.0, fliplr=1.0),
    "mosaic_flip_no_hsv": AugmentConfig(fliplr=1.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0),
}
PINNED_PLANS = {
    "defaults": "bf1cb0e062a21b14f353c97e3464afefa6d5d9b5fa21e99fbc2e02133cf93a8b",
    "letterbox": "c683b0fc1dda32f4357877c30074aab4039e427e54cd3df443dff75044171209",
    "letterbox_rotate_shear_flip": "affb8c84588f68442f31ecfc39192bad8f4a4eb352b096bf59b8da22f4a87672",
    "mosaic_flip_no_hsv": "aedb6bf4ce1a0090c2e226dee6635da1fa846c17e8f63ae76a3c6182d38790ea",
    "mosaic_rotate_shear": "ec242c8b4f4cfa0d8857b47a133a2eed5c46c723bafe257d156f7f441951ae60",
}
PIXELS_OPENCV = "5.1.0"
PINNED_PIXELS = {
    "defaults": "1de582c3e331f6809714161006b49e12cf09d3367e263e7355ed83e8abc377f6",
    "letterbox": "9fb8a1bccc7270c0b6315a321c71de768cf21adb0768fa0eb3bce0155436994b",
    "letterbox_rotate_shear_flip": "9fd291c6f15017e8a04c34b45bc5ed3388f6f92f3a1a8260ce5ccbd403a4e02e",
    "mosaic_flip_no_hsv": "997869a7d2479b0254061efaa38ad80846cf4c16d91b105e6594f77585283fae",
    "mosaic_rotate_shear": "75f5fa6fd3e9179443d94599d3de2b594b5d8c1040342ac46031e8addcb17f7d",
}


def rounded(values, decimals: int) -> bytes:
    """Bytes of `values` rounded, with -0.0 made 0.0 (a sign that only rounding produced is not a change)."""
    return (np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0).tobytes()


def cases_of(samples):
    """(primary, its partners: the other samples, generator) for three seeds and every sample as primary."""
    for seed in SEEDS:
        for i, primary in enumerate(samples):
            yield primary, [s for j, s in enumerate(samples) if j != i], sample_rng(seed, 0, primary.key)


def plan_digest(samples, config: AugmentConfig) -> str:
    digest = hashlib.sha256()
    for primary, pool, rng in cases_of(samples):
        plan = plan_augmentation(primary, pool, rng, config, SIZE)
        for source in plan.sources:
            digest.update(source.sample.key.encode())
            digest.update(rounded(source.matrix, 6) + rounded(source.region, 6) + rounded(source.region_to_out, 6))
        digest.update(rounded(plan.hsv_gains, 9) + rounded(plan.boxes, 4))
    return digest.hexdigest()


def pixel_digest(samples, config: AugmentConfig) -> str:
    digest = hashlib.sha256()
    for primary, pool, rng in cases_of(samples):
        out = np.full((SIZE, SIZE, 3), FILL_VALUE, dtype=np.uint8)
        augment_into(out, primary, pool, rng, config)
        digest.update(out.tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_augmentation_draws_the_pinned_sources_matrices_gains_and_boxes(case, textured_samples):
    assert plan_digest(textured_samples, CASES[case]) == PINNED_PLANS[case]


@pytest.mark.parametrize("case", sorted(CASES))
def test_augment_into_gives_the_pinned_pixels(case, textured_samples):
    if cv2.__version__ != PIXELS_OPENCV:
        pytest.skip(f"pixels were recorded under OpenCV {PIXELS_OPENCV}, this is {cv2.__version__}")
    assert pixel_digest(textured_samples, CASES[case]) == PINNED_PIXELS[case]
