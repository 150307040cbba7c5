"""Boxes drawn onto uint8 images (torchvision's draw_bounding_boxes) and image files written by suffix.

Shared by `yolotr predict` and the batch mosaics.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

# YOLOv5's palette, so that users see the class colours they are used to.
PALETTE_HEX = (
    "FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB "
    "2C99A8 00C2FF 344593 6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7"
).split()
PALETTE = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in PALETTE_HEX]
# Newer torchvision draws a label on a box-coloured background (fill_labels); older ones draw the text alone.
_FILLS_LABELS = "fill_labels" in inspect.signature(draw_bounding_boxes).parameters


LABEL_TEXT = (255, 255, 255)


def class_color(class_index: int) -> tuple[int, int, int]:
    return PALETTE[int(class_index) % len(PALETTE)]


def as_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """(3,H,W) uint8 on the CPU; float images are taken to be in [0,1]."""
    image = image.detach().cpu()
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3,H,W) image, got shape {tuple(image.shape)}")
    if image.dtype.is_floating_point:
        image = (image.float() * 255).round().clamp(0, 255).to(torch.uint8)
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    names: Sequence[str],
    scores: torch.Tensor | None = None,
    width: int | None = None,
    show_labels: bool = True,
    fill_labels: bool = True,
) -> torch.Tensor:
    """A copy of `image` (3,H,W) with (n,4) x1,y1,x2,y2 pixel boxes drawn, labelled `name` or `name 0.87` in white
    on the box's colour, as YOLOv5 labels them: thin coloured text alone is unreadable on a busy image
    (`show_labels=False`: no text; `fill_labels=False`: the text alone, in the box's colour)."""
    image = as_uint8_image(image)
    if len(boxes) == 0:
        return image.clone()
    classes = classes.detach().cpu().long().tolist()
    if not show_labels:
        labels = None
    elif scores is None:
        labels = [names[c] for c in classes]
    else:
        labels = [f"{names[c]} {s:.2f}" for c, s in zip(classes, scores.detach().cpu().tolist())]
    if width is None:
        width = max(1, round(min(image.shape[-2:]) / 200))
    options = {"fill_labels": True, "label_colors": LABEL_TEXT} if fill_labels and labels and _FILLS_LABELS else {}
    return draw_bounding_boxes(
        image, boxes.detach().cpu().float(), labels=labels, colors=[class_color(c) for c in classes], width=width,
        **options,
    )


def save_image(image: torch.Tensor, path: str | os.PathLike, quality: int = 90) -> Path:
    """Write a (3,H,W) uint8 image as JPEG or PNG, chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        raise ValueError(f"{path}: images are written as .jpg or .png, not '{suffix}'")
    # Pillow rather than torchvision.io, whose encoders are deprecated since torchvision 0.29.
    hwc = as_uint8_image(image).permute(1, 2, 0).contiguous().numpy()  # (3,H,W) -> (H,W,3)
    options = {} if suffix == ".png" else {"quality": quality}
    Image.fromarray(hwc).save(path, **options)
    return path
