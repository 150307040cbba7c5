"""Augmentations move boxes with the pixels: on synthetic images of solid objects, each augmented box matches the
object's visible pixels (IoU ≥ 0.9), through mosaic, scale, translation and flips; with rotation and shear, boxes
still enclose their objects."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment import apply_hsv_gains, augment_into, letterbox_into
from yolotr.data.augment_plan import draw_hsv_gains, sample_rng
from yolotr.data.batch import build_train_images, build_val_images
from yolotr.data.decode import DecodedSample
from yolotr.data.labels import DetectionLabel

SIZE = 160
MIN_SIDE = 16  # pixels: below, the integer pixel extent of an object is too coarse to measure IoU against
BACKGROUND = (40, 40, 40)
# Saturated, pairwise distant colours; object k of the test batch has colour PALETTE[k] and class k.
PALETTE = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230),
           (250, 140, 0), (140, 0, 250), (0, 140, 90), (250, 250, 250), (120, 60, 0), (0, 0, 110)]
NO_COLOUR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def solid_objects_batch(seed: int) -> list[DecodedSample]:
    """4 images of different sizes with 3 non-touching solid rectangles or discs each (12 distinct objects)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, (width, height) in enumerate([(120, 90), (80, 110), (100, 100), (140, 70)]):
        image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        boxes = []
        for j in range(3):
            k = 3 * i + j
            x1 = j * width // 3 + 3
            w = int(rng.integers(14, width // 3 - 6))
            h = int(rng.integers(14, min(45, height - 10)))
            y1 = int(rng.integers(2, height - h - 2))
            if k % 2:
                image[y1:y1 + h, x1:x1 + w] = PALETTE[k]
            else:
                cv2.ellipse(image, (x1 + w // 2, y1 + h // 2), (w // 2, h // 2), 0, 0, 360, PALETTE[k], -1)
            ys, xs = np.nonzero((image == PALETTE[k]).all(-1))
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        label = DetectionLabel(boxes=np.asarray(boxes, float), classes=np.arange(3 * i, 3 * i + 3), width=width,
                               height=height, source="")
        samples.append(DecodedSample(key=f"img{i}", image=image, label=label))
    return samples


def nearest_colour(image: np.ndarray) -> np.ndarray:
    """(S, S) index of the palette colour (objects, then background, then the grey fill) nearest to each pixel."""
    colours = np.asarray(PALETTE + [BACKGROUND, (114, 114, 114)], dtype=np.float32)  # (C, 3)
    distance = np.linalg.norm(image[:, :, None, :].astype(np.float32) - colours, axis=-1)  # (S, S, C)
    return distance.argmin(-1)


def object_components(colour_map: np.ndarray, k: int, *, min_pixels: int = 4) -> list[np.ndarray]:
    """Boxes (x1, y1, x2, y2) of the connected groups of at least `min_pixels` pixels whose colour is nearest to
    object k's. (Interpolated edges of other objects can be nearest to k's colour too, in thin rings of few pixels.)"""
    count, _, stats, _ = cv2.connectedComponentsWithStats((colour_map == k).astype(np.uint8))
    return [np.array([x, y, x + w, y + h], float) for x, y, w, h, area in stats[1:count] if area >= min_pixels]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def augmented(config: AugmentConfig, seed: int):
    """(image (S,S,3), boxes (n,4) pixels, classes (n,)) for each image of an augmented batch."""
    images, targets = build_train_images(solid_objects_batch(seed), size=SIZE, augment=config, seed=seed, epoch=0)
    for i in range(len(images)):
        rows = targets[targets[:, 0] == i].numpy()
        cx, cy, w, h = (rows[:, 2:6] * SIZE).T
        yield images[i].permute(1, 2, 0).numpy(), np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), \
            rows[:, 1].astype(int)


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_augmented_boxes_match_the_visible_object_pixels(mosaic):
    config = AugmentConfig(mosaic=mosaic, **NO_COLOUR)
    checked = 0
    for seed in range(6):
        for image, boxes, classes in augmented(config, seed):
            colour_map = nearest_colour(image)
            for box, k in zip(boxes, classes):
                if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                    continue
                best = max((iou(box, c) for c in object_components(colour_map, k)), default=0.0)
                assert best >= 0.9, f"seed {seed} object {k}: box {box} matches its pixels with IoU {best:.2f}"
                checked += 1
            # Conversely, every clearly visible object has a box.
            for k in range(len(PALETTE)):
                for component in object_components(colour_map, k, min_pixels=300):
                    assert any(c == k and iou(b, component) >= 0.9 for b, c in zip(boxes, classes)), \
                        f"seed {seed}: visible object {k} at {component} has no box"
    assert checked >= 40


def test_with_rotation_and_shear_boxes_still_enclose_their_objects():
    config = AugmentConfig(degrees=15.0, shear=5.0, **NO_COLOUR)
    for seed in range(4):
        for image, boxes, classes in augmented(config, seed):
            colour_map = nearest_colour(image)
            for box, k in zip(boxes, classes):
                if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                    continue
                components = [c for c in object_components(colour_map, k) if iou(box, c) > 0.3]
                assert components, f"seed {seed}: object {k} not found inside its box {box}"
                for c in components:
                    assert c[0] >= box[0] - 1.5 and c[1] >= box[1] - 1.5
                    assert c[2] <= box[2] + 1.5 and c[3] <= box[3] + 1.5


def test_the_same_seed_epoch_and_key_give_the_same_image_and_another_epoch_another():
    samples = solid_objects_batch(0)

    def draw(epoch):
        return build_train_images(samples, size=SIZE, augment=AugmentConfig(), seed=0, epoch=epoch)

    first, again, other = draw(0), draw(0), draw(1)

    assert np.array_equal(first[0].numpy(), again[0].numpy()) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0].numpy(), other[0].numpy())


def test_hsv_gains_change_colours_but_zero_gains_change_nothing():
    image = solid_objects_batch(0)[0].image.copy()
    untouched = image.copy()

    apply_hsv_gains(image, draw_hsv_gains(np.random.default_rng(0), AugmentConfig(**NO_COLOUR)))
    assert np.array_equal(image, untouched)

    apply_hsv_gains(image, draw_hsv_gains(np.random.default_rng(0), AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.4)))
    assert not np.array_equal(image, untouched)


def test_mosaic_without_partners_uses_the_primary_image():
    sample = solid_objects_batch(0)[2]
    out = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)

    boxes = augment_into(out, sample, [], sample_rng(0, 0, sample.key), AugmentConfig(**NO_COLOUR))

    assert set(boxes[:, 0].astype(int)) <= {6, 7, 8}


def test_letterbox_keeps_aspect_and_maps_back_to_original_pixels():
    samples = solid_objects_batch(1)

    images, targets, ratio_pad = build_val_images(samples, size=SIZE)

    for i, sample in enumerate(samples):
        ratio, (pad_w, pad_h) = ratio_pad[i]
        assert ratio == pytest.approx(SIZE / max(sample.image.shape[:2]))
        rows = targets[targets[:, 0] == i].numpy()
        cx, cy, w, h = (rows[:, 2:6] * SIZE).T
        back = (np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) - [pad_w, pad_h, pad_w, pad_h]) / ratio
        np.testing.assert_allclose(back, sample.label.boxes, atol=1.0)


def test_letterbox_pads_with_grey_and_keeps_the_image_uint8():
    sample = solid_objects_batch(0)[3]  # 140x70: wide, padded top and bottom
    out = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)

    _, ratio, (left, top) = letterbox_into(out, sample)

    assert out.dtype == np.uint8 and left == 0 and top > 0
    assert (out[:top - 1] == 114).all() and (out[-(top - 1):] == 114).all()
