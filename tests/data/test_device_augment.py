"""The device renderer draws what the OpenCV path draws: on the same plans (the same seed), the same boxes by
construction and the same pixels up to interpolation rounding, for mosaic and letterbox, flips, rotation and shear,
and HSV.

Bounds, from measurements on 15 images of 128 px per case (mean |diff| in grey levels; p99; share over 2 levels),
with margin: axis-aligned warps 0.003-0.005, 0, ≤0.01% (OpenCV's 1/32-pixel coordinates and 15-bit weights against
float32; HSV turns a one-level difference into up to 5): bounds 0.05, 1, 0.2%. Rotation and shear 0.046-0.095, 0,
≤0.21% (the tile edges, where fillConvexPoly's rounding is approximated): bounds 0.25, 1, 0.5%. A mirrored sampling,
a tile from another source, a one-pixel shift or swapped HSV gains each fail them (checked by breaking the code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment import apply_hsv_gains, augment_into, render_plan
from yolotr.data.augment_plan import plan_augmentation, sample_rng
from yolotr.data.device_augment import render_plans
from yolotr.data.device_hsv import apply_hsv_gains as device_hsv_gains
from yolotr.data.geometry import FILL_VALUE

SIZE = 128  # a multiple of OpenCV's vector block, so its HSV → RGB takes the vectorised loop everywhere
NO_COLOUR = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]
# case: (config, bound on the mean |diff|, share of pixels allowed more than 2 levels off)
CASES = {
    "letterbox": (AugmentConfig(mosaic=0.0, **NO_COLOUR), 0.05, 0.002),
    "mosaic": (AugmentConfig(**NO_COLOUR), 0.05, 0.002),
    "mosaic_flipped": (AugmentConfig(fliplr=1.0, **NO_COLOUR), 0.05, 0.002),
    "mosaic_hsv": (AugmentConfig(), 0.05, 0.002),
    "mosaic_rotate_shear": (AugmentConfig(degrees=20.0, shear=8.0, **NO_COLOUR), 0.25, 0.005),
    "letterbox_rotate_shear_flipped_hsv": (AugmentConfig(mosaic=0.0, degrees=30.0, shear=5.0, fliplr=1.0), 0.25,
                                           0.005),
}


def both_paths(samples, config: AugmentConfig, device: str):
    """(CPU images (N, S, S, 3), device images (N, S, S, 3), plans) over three seeds, each sample as primary."""
    cpu, plans = [], []
    for seed in range(3):
        for i, primary in enumerate(samples):
            pool = [s for j, s in enumerate(samples) if j != i]
            plan = plan_augmentation(primary, pool, sample_rng(seed, 0, primary.key), config, SIZE)
            out = np.full((SIZE, SIZE, 3), FILL_VALUE, dtype=np.uint8)
            render_plan(out, plan)
            cpu.append(out)
            plans.append(plan)
    images = {s.key: torch.from_numpy(s.image).permute(2, 0, 1).to(device) for s in samples}  # (3, H, W)
    rendered = render_plans(plans, images)  # (N, 3, S, S)
    assert rendered.device.type == device and rendered.shape == (len(plans), 3, SIZE, SIZE)
    return np.stack(cpu), rendered.permute(0, 2, 3, 1).cpu().numpy(), plans


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_device_render_matches_the_opencv_render_on_the_same_plans(case, device, textured_samples):
    config, mean_bound, share_bound = CASES[case]

    cpu, rendered, _ = both_paths(textured_samples, config, device)

    diff = np.abs(cpu.astype(np.int16) - rendered.astype(np.int16))
    assert diff.mean() < mean_bound, f"mean |diff| {diff.mean():.4f}"
    assert np.percentile(diff, 99) <= 1
    assert (diff > 2).mean() < share_bound, f"{(diff > 2).mean():.4%} of the values are more than 2 levels off"


def test_the_bounds_catch_a_wrong_flip_or_a_tile_from_another_image(textured_samples):
    """The bounds above are tight enough to see geometry go wrong, not only to pass."""
    config, mean_bound, _ = CASES["mosaic_flipped"]
    cpu, rendered, plans = both_paths(textured_samples, config, "cpu")
    # Each key given the next sample's pixels: every tile is pasted where it belongs, with another image's content.
    rotated = textured_samples[1:] + textured_samples[:1]
    swapped = {s.key: torch.from_numpy(other.image).permute(2, 0, 1) for s, other in zip(textured_samples, rotated)}
    wrong_tiles = render_plans(plans, swapped).permute(0, 2, 3, 1).numpy()

    assert np.abs(cpu.astype(np.int16) - rendered[:, :, ::-1]).mean() > 10 * mean_bound
    assert np.abs(cpu.astype(np.int16) - wrong_tiles).mean() > 10 * mean_bound


def test_augment_into_returns_the_plans_boxes(textured_samples):
    primary, pool = textured_samples[0], textured_samples[1:]
    plan = plan_augmentation(primary, pool, sample_rng(3, 1, primary.key), AugmentConfig(), SIZE)
    out = np.full((SIZE, SIZE, 3), FILL_VALUE, dtype=np.uint8)

    boxes = augment_into(out, primary, pool, sample_rng(3, 1, primary.key), AugmentConfig())

    assert len(boxes) > 0 and np.array_equal(boxes, plan.boxes)


def test_hsv_jitter_on_the_device_matches_opencv(textured_samples):
    gains = np.array([[1.015, 1.7, 0.6], [0.985, 0.3, 1.4], [1.0, 1.0, 1.0], [1.01, 0.5, 1.2]])
    image = np.stack([np.resize(s.image, (64, SIZE, 3)) for s in textured_samples[:4]])  # (4, 64, S, 3)
    expected = image.copy()
    for one, gain in zip(expected, gains):
        apply_hsv_gains(one, gain)

    jittered = device_hsv_gains(torch.from_numpy(image), gains).numpy()

    diff = np.abs(expected.astype(np.int16) - jittered)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # measured: identical on this OpenCV build
    assert np.array_equal(jittered[2], image[2])  # gains of 1 leave the image alone, as on the CPU


def test_a_batch_renders_each_image_as_it_renders_alone(textured_samples):
    plans = [plan_augmentation(s, textured_samples, sample_rng(0, 0, s.key), AugmentConfig(), SIZE)
             for s in textured_samples]
    images = {s.key: torch.from_numpy(s.image).permute(2, 0, 1) for s in textured_samples}

    batch = render_plans(plans, images)
    alone = [render_plans([plan], images)[0] for plan in plans]

    for i, image in enumerate(alone):
        assert torch.equal(batch[i], image)
