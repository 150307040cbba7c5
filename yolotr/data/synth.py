"""The synthetic detection set: the embedded default that the README trains on.

Shapes of a few well separated classes (circle, square, triangle, cross, …) in random saturated colours, scales and
aspect ratios, some partly occluded by others, on textured backgrounds (colour gradients, blotches, stripes, noise).
Objects are large (the shorter box side ≥ ~18 px at the default 160 px; 1-4 per image, at most 30% hidden) so that
a nano model learns them in minutes on a CPU.

Every image is drawn from a generator seeded by (seed, split, index) and encoded by OpenCV's JPEG encoder, so the
same arguments give byte-identical shards.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from yolotr.data.labels import DetectionLabel, clean_boxes
from yolotr.data.shard_writer import SampleRecord, write_shards
from yolotr.data.spec import write_data_yaml

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")
_SPLIT_CODES = {"train": 0, "val": 1}
_MAX_OBJECTS = 4
_MIN_VISIBLE = 0.7  # an occluded object keeps at least this fraction of its pixels
_JPEG_QUALITY = 90
_AA_SHIFT = 4  # polygon vertices with 4 fractional bits, for anti-aliased edges

log = logging.getLogger(__name__)


def write_synthetic_dataset(out_dir: str | Path, *, train: int = 2000, val: int = 200, classes: int = 4,
                            imgsz: int = 160, seed: int = 0, samples_per_shard: int = 500, workers: int = 0) -> Path:
    """Writes train/ and val/ shards with their indexes and a data.yaml; returns the data.yaml path.
    workers > 0 renders images in that many processes (the bytes are the same: each image has its own generator)."""
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be in [1, {len(SHAPES)}], got {classes}")
    if imgsz < 64:
        raise ValueError(f"imgsz must be >= 64 so that objects stay >= ~12 px, got {imgsz}")
    if train < 1 or val < 1:
        raise ValueError(f"train and val need at least one image each, got {train} and {val}")
    out_dir = Path(out_dir)
    names = list(SHAPES[:classes])
    for split, count in (("train", train), ("val", val)):
        log.info(f"data: drawing {count} {split} images of {imgsz} px into {out_dir / split}")
        samples = synthetic_samples(split, count, classes=classes, imgsz=imgsz, seed=seed, workers=workers)
        write_shards(samples, out_dir / split, nc=classes, names=names, samples_per_shard=samples_per_shard)
    return write_data_yaml(out_dir / "data.yaml", names=names,
                           splits={"train": "train/index.json", "val": "val/index.json"})


def synthetic_samples(split: str, count: int, *, classes: int, imgsz: int, seed: int,
                      workers: int = 0) -> Iterator[SampleRecord]:
    """The samples in index order; with workers > 0 rendered by a process pool (ordered: the same shards)."""
    render = partial(synthetic_sample, split, classes=classes, imgsz=imgsz, seed=seed)
    if workers <= 0:
        yield from map(render, range(count))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render, range(count), chunksize=16)


def synthetic_sample(split: str, i: int, *, classes: int, imgsz: int, seed: int) -> SampleRecord:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, _SPLIT_CODES.get(split, 2), i])
    image, boxes, labels = render_image(rng, classes=classes, imgsz=imgsz)
    height, width = image.shape[:2]
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode synthetic image {split}/{i}")
    cleaned = clean_boxes(boxes, labels, width=width, height=height, nc=classes)
    label = DetectionLabel(boxes=cleaned.boxes, classes=cleaned.classes, width=width, height=height,
                           source=f"synthetic/{split}/{i:06d}")
    return SampleRecord(key=f"{split}_{i:06d}", image=encoded.tobytes(), image_ext="jpg", label=label)


def render_image(rng: np.random.Generator, *, classes: int, imgsz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 RGB, its boxes (n, 4) x1y1x2y2 (tight around each shape) and classes (n,)."""
    short = int(round(imgsz * rng.uniform(0.75, 1.0)))
    width, height = (imgsz, short) if rng.random() < 0.5 else (short, imgsz)
    image = _background(rng, width, height)  # (H, W, 3) float32
    background_mean = image.reshape(-1, 3).mean(0)  # (3,)
    owner = np.full((height, width), -1, dtype=np.int16)  # which object each pixel shows
    areas: list[int] = []  # full pixel area of each object
    visible: list[int] = []  # pixels of each object not hidden by later ones
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        placed = _place_object(rng, image, owner, areas, visible, classes=classes, background=background_mean)
        if placed is not None:
            boxes.append(placed[0])
            labels.append(placed[1])
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Muted colours: a gradient between two colours, low-frequency blotches, sometimes stripes, and fine noise."""
    grey = rng.uniform(60, 200)
    colours = grey + rng.uniform(-50, 50, size=(2, 3))  # (2, 3) start and end colour
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)  # (H, W)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    image = (colours[0] + ramp[..., None] * (colours[1] - colours[0])).astype(np.float32)  # (H, W, 3)
    cells = int(rng.integers(3, 9))
    blotches = rng.uniform(-25, 25, size=(cells, cells, 3)).astype(np.float32)
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        period = rng.uniform(6, 20)
        phase = xs * math.cos(angle + 1.0) + ys * math.sin(angle + 1.0)
        image += (rng.uniform(5, 12) * np.sin(2 * math.pi * phase / period))[..., None]
    image += rng.random(size=image.shape, dtype=np.float32) * 16 - 8  # fine grain
    return image.astype(np.float32)


def _place_object(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, areas: list[int],
                  visible: list[int], *, classes: int, background: np.ndarray) -> tuple[list[float], int] | None:
    """Draws one object where it hides no other object by more than 1 - _MIN_VISIBLE; None if no spot was found."""
    height, width = owner.shape
    shape = int(rng.integers(classes))
    size = rng.uniform(0.2, 0.48) * min(width, height)
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    box_w, box_h = max(12, int(size * math.sqrt(aspect))), max(12, int(size / math.sqrt(aspect)))
    colour = _object_colour(rng, background)
    alpha = _shape_mask(SHAPES[shape], box_w, box_h, rng)  # (box_h, box_w) float32 in [0, 1]
    solid = alpha > 0.5
    for _ in range(20):
        x0, y0 = int(rng.integers(0, width - box_w + 1)), int(rng.integers(0, height - box_h + 1))
        region = owner[y0:y0 + box_h, x0:x0 + box_w]
        covered = np.bincount(region[solid & (region >= 0)], minlength=len(areas))
        if all(visible[i] - covered[i] >= _MIN_VISIBLE * areas[i] for i in range(len(areas))):
            break
    else:
        return None
    shading = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), box_w, dtype=np.float32)  # (box_w,)
    patch = image[y0:y0 + box_h, x0:x0 + box_w]
    fill = colour * shading[None, :, None]  # (1, box_w, 3)
    patch += alpha[..., None] * (fill - patch)
    region[solid] = len(areas)
    for i, hidden in enumerate(covered.tolist()):
        visible[i] -= hidden
    areas.append(int(solid.sum()))
    visible.append(areas[-1])
    rows, cols = np.nonzero(solid)
    return [x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1], shape


def _object_colour(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """A saturated colour far enough from the background's mean colour that the object stands out."""
    colour = mean
    for _ in range(10):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(110, 256)]]], dtype=np.uint8)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        if np.linalg.norm(colour - mean) > 120:
            break
    return colour


def _shape_mask(shape: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage (h, w) float32 of `shape` filling a w×h box."""
    mask = np.zeros((h, w), dtype=np.uint8)
    scale = 1 << _AA_SHIFT

    def polygon(points: list[tuple[float, float]]) -> None:
        # Unit-box points → pixel edge coordinates → OpenCV's centre convention, in fixed point.
        pts = np.array([[(px * w - 0.5) * scale, (py * h - 0.5) * scale] for px, py in points], dtype=np.int32)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=_AA_SHIFT)

    def ellipse(fraction: float, value: int) -> None:
        centre = (int((w / 2 - 0.5) * scale), int((h / 2 - 0.5) * scale))
        axes = (int(w / 2 * fraction * scale), int(h / 2 * fraction * scale))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, value, -1, lineType=cv2.LINE_AA, shift=_AA_SHIFT)

    if shape == "circle":
        ellipse(1.0, 255)
    elif shape == "square":
        polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
    elif shape == "triangle":
        polygon([(0.5, 0), (1, 1), (0, 1)] if rng.random() < 0.5 else [(0, 0), (1, 0), (0.5, 1)])
    elif shape == "cross":
        polygon([(1 / 3, 0), (2 / 3, 0), (2 / 3, 1), (1 / 3, 1)])
        polygon([(0, 1 / 3), (1, 1 / 3), (1, 2 / 3), (0, 2 / 3)])
    elif shape == "star":
        polygon([(0.5 + 0.5 * (1 if k % 2 == 0 else 0.4) * math.sin(k * math.pi / 5),
                  0.5 - 0.5 * (1 if k % 2 == 0 else 0.4) * math.cos(k * math.pi / 5)) for k in range(10)])
    elif shape == "ring":
        ellipse(1.0, 255)
        ellipse(0.55, 0)
    elif shape == "diamond":
        polygon([(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)])
    elif shape == "hexagon":
        polygon([(0.5 + 0.5 * math.cos(k * math.pi / 3), 0.5 + 0.5 * math.sin(k * math.pi / 3)) for k in range(6)])
    return mask.astype(np.float32) / 255.0
