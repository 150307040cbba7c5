"""Geometry shared by the augmentations: affine matrices, box transforms, YOLOv5's box rule, and placing a source
image into the output through one warp.

Conventions: all matrices are 3x3 and map *edge* coordinates (pixel i spans [i, i+1), a box around a W-wide image
is [0, W]) from the source to the output, the same coordinates as the boxes. OpenCV samples at pixel centres, so
`paste_warped` converts at the last moment.

YOLOv5 resizes every image, pastes it into a 2S×2S mosaic canvas, then warps the canvas into the S×S output. We
compose resize, paste and warp into one matrix per source image and warp each source straight into its region of
the output: one resampling instead of two, and no canvas to fill and copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FILL_VALUE = 114  # YOLOv5's grey for letterbox and mosaic borders


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def random_affine(rng: np.random.Generator, *, degrees: float, translate: float, scale: float, shear: float,
                  canvas_size: float, out_size: int) -> tuple[np.ndarray, float]:
    """YOLOv5's `random_perspective` without perspective: canvas (canvas_size²) → output (out_size²).

    Returns the matrix and the scale factor it drew (for the box area rule). The draw order matches YOLOv5.
    """
    centre = translation(-canvas_size / 2, -canvas_size / 2)
    angle = math.radians(rng.uniform(-degrees, degrees))
    factor = rng.uniform(1 - scale, 1 + scale)
    # cv2.getRotationMatrix2D(center=(0, 0), angle, scale): counter-clockwise rotation in image coordinates.
    alpha, beta = factor * math.cos(angle), factor * math.sin(angle)
    rotate = np.array([[alpha, beta, 0.0], [-beta, alpha, 0.0], [0.0, 0.0, 1.0]])
    shear_matrix = np.eye(3)
    shear_matrix[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    shear_matrix[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    move = translation(rng.uniform(0.5 - translate, 0.5 + translate) * out_size,
                       rng.uniform(0.5 - translate, 0.5 + translate) * out_size)
    return move @ shear_matrix @ rotate @ centre, factor


def horizontal_flip(width: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(n, 2) points through a 3x3 affine matrix."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(n, 4) x1y1x2y2 boxes → the (n, 4) boxes enclosing their transformed corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)  # (n·4, 2): tl, tr, br, bl
    moved = transform_points(corners, matrix).reshape(-1, 4, 2)  # (n, 4 corners, 2)
    return np.concatenate([moved.min(1), moved.max(1)], axis=1)


def clip_boxes(boxes: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    out = boxes.copy()
    np.clip(out[:, 0::2], x1, x2, out=out[:, 0::2])
    np.clip(out[:, 1::2], y1, y2, out=out[:, 1::2])
    return out


def box_candidates(before: np.ndarray, after: np.ndarray, *, scale: float, wh_thr: float = 2.0,
                   ar_thr: float = 100.0, area_thr: float = 0.1) -> np.ndarray:
    """YOLOv5's rule for keeping a box after augmentation: wider and taller than `wh_thr` pixels, at least
    `area_thr` of its (scaled) area left, aspect ratio below `ar_thr`. (n,) bool."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 * scale * scale + 1e-16) > area_thr) & (aspect < ar_thr)


@dataclass(frozen=True)
class Letterbox:
    """Resize by `ratio` (long side → target), then pad by (left, top) pixels to a square."""

    ratio: float
    new_width: int
    new_height: int
    left: int
    top: int


def letterbox_geometry(width: int, height: int, size: int) -> Letterbox:
    ratio = size / max(width, height)
    new_width, new_height = max(1, round(width * ratio)), max(1, round(height * ratio))
    # YOLOv5 splits the padding with round(d ± 0.1) so that an odd padding puts the extra pixel right/bottom.
    left = int(round((size - new_width) / 2 - 0.1))
    top = int(round((size - new_height) / 2 - 0.1))
    return Letterbox(ratio=ratio, new_width=new_width, new_height=new_height, left=left, top=top)


Placement = tuple[tuple[int, int, int, int], tuple[int, int]]  # region (x1, y1, x2, y2), top-left (pad_x, pad_y)


def mosaic_placements(sizes: list[tuple[int, int]], size: int, xc: int, yc: int) -> list[Placement]:
    """YOLOv5's 4-image mosaic layout on a 2S×2S canvas around the centre (xc, yc).

    sizes: (w, h) of the four images after resizing their long side to S. Returns, per image, its region
    (x1, y1, x2, y2) on the canvas and the canvas position of its top-left pixel (pad_x, pad_y).
    """
    placements = []
    for k, (w, h) in enumerate(sizes):
        if k == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * size), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * size, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h)
            x1b, y1b = 0, 0
        placements.append(((x1a, y1a, x2a, y2a), (x1a - x1b, y1a - y1b)))
    return placements


def paste_warped(out: np.ndarray, source: np.ndarray, matrix: np.ndarray, region: tuple[float, float, float, float],
                 region_to_out: np.ndarray) -> None:
    """Warps `source` (H, W, 3) through `matrix` (source → out) into `out` (S, S, 3), inside `region` only.

    `region` is a rectangle (x1, y1, x2, y2) in the coordinates that `region_to_out` maps into `out`; only output
    pixels whose centres fall inside the mapped region are written, so neighbouring mosaic tiles meet without a
    seam or overlap, and pixels outside every region keep the fill value.
    """
    x1, y1, x2, y2 = region
    corners = transform_points(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64), region_to_out)
    height, width = out.shape[:2]
    # Output pixel i is inside when its centre i + 0.5 is in [lo, hi).
    cx0 = max(0, math.ceil(corners[:, 0].min() - 0.5))
    cy0 = max(0, math.ceil(corners[:, 1].min() - 0.5))
    cx1 = min(width, math.ceil(corners[:, 0].max() - 0.5))
    cy1 = min(height, math.ceil(corners[:, 1].max() - 0.5))
    if cx1 <= cx0 or cy1 <= cy0:
        return
    # Edge → centre convention for OpenCV, then shift to the ROI's origin.
    to_roi = translation(-cx0 - 0.5, -cy0 - 0.5) @ matrix @ translation(0.5, 0.5)
    roi = out[cy0:cy1, cx0:cx1]
    size = (cx1 - cx0, cy1 - cy0)
    axis_aligned = abs(region_to_out[0, 1]) < 1e-12 and abs(region_to_out[1, 0]) < 1e-12
    if axis_aligned:
        # The region is exactly the ROI; replicate the border so edge pixels interpolate against themselves.
        cv2.warpAffine(source, to_roi[:2], size, dst=roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return
    # Rotated or sheared: warp the bounding box, then keep only the pixels inside the region's quadrilateral.
    warped = cv2.warpAffine(source, to_roi[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.zeros(roi.shape[:2], dtype=np.uint8)
    shift = 8  # sub-pixel polygon vertices, fixed point with 8 fractional bits
    polygon = np.round((corners - [cx0 + 0.5, cy0 + 0.5]) * (1 << shift)).astype(np.int32)
    cv2.fillConvexPoly(mask, polygon, 1, lineType=cv2.LINE_8, shift=shift)
    np.copyto(roi, warped, where=mask[..., None].astype(bool))
