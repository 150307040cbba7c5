"""The label of one sample: its json layout in a shard, and the two ways of checking it.

A shard sample's label member (`<key>.json`) is
`{"boxes": [[x1, y1, x2, y2], ...], "classes": [int, ...], "width": W, "height": H, "source": str}` with boxes in
pixels of the original image (edge coordinates: a box around the whole image is [0, 0, W, H]). COCO's crowd regions
(`iscrowd: 1`) are kept apart, in `crowd_boxes` and `crowd_classes` (present only when there are some, so that other
labels keep their bytes): training never sees them, and COCO evaluation ignores the detections that fall in them.

Converters *clean* labels (clip boxes to the image, drop boxes left with no area, reject the sample for anything that
cannot be repaired); the stream *checks* them strictly, because a shard written by `yolotr data shard` never holds a
label that fails the check, so a failure there means the shard is damaged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from yolotr.data.errors import SampleError

# Boxes are stored rounded to 1/1000 pixel; the strict check allows that much slack at the image border.
_BOX_DECIMALS = 3
_BORDER_SLACK_PX = 0.01


@dataclass(frozen=True)
class DetectionLabel:
    """Boxes and classes of one image, in pixels of the original image."""

    boxes: np.ndarray  # (n, 4) float64, x1 y1 x2 y2
    classes: np.ndarray  # (n,) int64
    width: int
    height: int
    source: str
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (m, 4) float64, COCO iscrowd regions
    crowd_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (m,) int64


@dataclass(frozen=True)
class CleanedBoxes:
    boxes: np.ndarray  # (n, 4) float64, clipped to the image
    classes: np.ndarray  # (n,) int64
    clipped: int  # boxes that extended beyond the image and were clipped
    dropped: int  # boxes entirely outside the image (no area left after clipping)
    zero_size: int = 0  # boxes of zero width or height as given (a point or a line, not a region): dropped too


def encode_label(label: DetectionLabel) -> bytes:
    """The label as compact json with sorted keys, so that the same label always gives the same bytes."""
    doc = {
        "boxes": [[round(float(v), _BOX_DECIMALS) for v in box] for box in label.boxes],
        "classes": [int(c) for c in label.classes],
        "width": int(label.width),
        "height": int(label.height),
        "source": label.source,
    }
    if len(label.crowd_classes):
        doc["crowd_boxes"] = [[round(float(v), _BOX_DECIMALS) for v in box] for box in label.crowd_boxes]
        doc["crowd_classes"] = [int(c) for c in label.crowd_classes]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def clean_boxes(boxes: np.ndarray, classes: np.ndarray, *, width: int, height: int, nc: int) -> CleanedBoxes:
    """Converter-side validation. Raises `SampleError` for what cannot be repaired; clips what can.

    boxes: (n, 4) x1 y1 x2 y2 in pixels; classes: (n,) numbers that must be integers in [0, nc).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.float64).reshape(-1)
    _check_classes(classes, nc)
    if not np.isfinite(boxes).all():
        raise SampleError("nonfinite_box", f"boxes {boxes[~np.isfinite(boxes).all(1)].tolist()}")
    sizes = boxes[:, 2:] - boxes[:, :2]  # (n, 2) w h
    if (sizes < 0).any():
        raise SampleError("negative_box", f"boxes with negative width/height {boxes[(sizes < 0).any(1)].tolist()}")
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    changed = (clipped != boxes).any(1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    zero = (sizes == 0).any(1)  # (n,) told apart from boxes outside the image: the label, not the crop, is at fault
    return CleanedBoxes(
        boxes=clipped[keep],
        classes=classes[keep].astype(np.int64),
        clipped=int((changed & keep).sum()),
        dropped=int((~keep & ~zero).sum()),
        zero_size=int(zero.sum()),
    )


def parse_label(data: bytes | memoryview, *, nc: int) -> DetectionLabel:
    """Stream-side validation of a label member; raises `SampleError` naming the first problem found."""
    try:
        doc = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SampleError("invalid_json", str(err)) from None
    if not isinstance(doc, dict):
        raise SampleError("invalid_label", f"expected a json object, got {type(doc).__name__}")
    missing = [field for field in ("boxes", "classes", "width", "height") if field not in doc]
    if missing:
        raise SampleError("invalid_label", f"missing field(s) {missing}")
    width, height = doc["width"], doc["height"]
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise SampleError("invalid_label", f"width/height must be positive integers, got {width!r}/{height!r}")
    boxes, classes = _checked_boxes(doc, "boxes", "classes", width, height, nc)
    crowd_boxes, crowd_classes = _checked_boxes(doc, "crowd_boxes", "crowd_classes", width, height, nc)
    source = doc.get("source", "")
    return DetectionLabel(boxes=boxes, classes=classes, width=width, height=height,
                          source=source if isinstance(source, str) else str(source), crowd_boxes=crowd_boxes,
                          crowd_classes=crowd_classes)


def _checked_boxes(doc: dict, boxes_key: str, classes_key: str, width: int, height: int,
                   nc: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) float64 boxes and (n,) int64 classes of `doc[boxes_key]`, `doc[classes_key]` (absent: none)."""
    try:
        boxes = np.asarray(doc.get(boxes_key, []), dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(doc.get(classes_key, []), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SampleError("invalid_label", f"{boxes_key}/{classes_key} are not numeric lists: {err}") from None
    if len(boxes) != len(classes):
        raise SampleError("invalid_label", f"{len(boxes)} {boxes_key} but {len(classes)} {classes_key}")
    if not np.isfinite(boxes).all():
        raise SampleError("nonfinite_box", f"{boxes_key} {boxes[~np.isfinite(boxes).all(1)].tolist()}")
    negative = (boxes < 0).any(1) | (boxes[:, 2:] < boxes[:, :2]).any(1)  # (n,)
    if negative.any():
        raise SampleError("negative_box", f"{boxes_key} {boxes[negative].tolist()}")
    limit = np.array([width, height, width, height]) + _BORDER_SLACK_PX
    if (boxes > limit).any():
        raise SampleError("box_outside_image", f"{boxes_key} {boxes[(boxes > limit).any(1)].tolist()} in "
                                               f"{width}x{height}")
    _check_classes(classes, nc)
    return boxes, classes.astype(np.int64)


def _check_classes(classes: np.ndarray, nc: int) -> None:
    bad = ~np.isfinite(classes) | (classes != np.round(classes)) | (classes < 0) | (classes >= nc)
    if bad.any():
        values = [c if math.isfinite(c) else str(c) for c in classes[bad].tolist()]
        raise SampleError("class_out_of_range", f"class ids {values} not integers in [0, {nc})")
