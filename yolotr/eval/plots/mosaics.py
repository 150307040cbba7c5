"""Batch mosaics: `train_batch0.jpg` (an augmented batch with its labels) and `val_pred.jpg`
(each val image's labels beside its predictions)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.utils import make_grid

from yolotr.data.boxes import targets_of_image
from yolotr.eval.plots.drawing import as_uint8_image, draw_boxes, save_image

GAP = 4  # white pixels between a label panel and its prediction panel


def plot_train_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    names: Sequence[str],
    out_jpg: str | os.PathLike,
    max_images: int = 16,
) -> Path:
    """Grid of the first `max_images` images of a batch with their boxes.

    images: (B,3,H,W) uint8 (or float in [0,1]); targets: (N,6) [img_idx, cls, cx, cy, w, h] normalised.
    """
    tiles = []
    for index in range(min(len(images), max_images)):
        image = as_uint8_image(images[index])
        classes, boxes = targets_of_image(targets, index, *image.shape[-2:])
        tiles.append(draw_boxes(image, boxes, classes, names))
    return _save_grid(tiles, out_jpg)


def plot_val_predictions(
    images: torch.Tensor,
    predictions: Sequence[torch.Tensor],
    targets: torch.Tensor,
    names: Sequence[str],
    out_jpg: str | os.PathLike,
    conf_thres: float = 0.25,
    max_images: int = 8,
) -> Path:
    """Per image: labels (left) beside predictions with conf ≥ `conf_thres` (right).

    predictions: per image (n,6) x1,y1,x2,y2,conf,cls in the images' pixels (the NMS output).
    """
    tiles = []
    for index in range(min(len(images), max_images)):
        image = as_uint8_image(images[index])
        height, width = image.shape[-2:]
        classes, boxes = targets_of_image(targets, index, height, width)
        labelled = draw_boxes(image, boxes, classes, names)
        pred = predictions[index].detach().cpu().float()
        pred = pred[pred[:, 4] >= conf_thres]
        predicted = draw_boxes(image, pred[:, :4], pred[:, 5], names, scores=pred[:, 4])
        gap = torch.full((3, height, GAP), 255, dtype=torch.uint8)
        tiles.append(torch.cat([labelled, gap, predicted], dim=2))  # (3,H,2W+GAP)
    return _save_grid(tiles, out_jpg)


def _save_grid(tiles: list[torch.Tensor], out_jpg: str | os.PathLike) -> Path:
    if not tiles:
        raise ValueError(f"{out_jpg}: no images to draw")
    # make_grid needs equal sizes; batches are letterboxed to one size, so this only pads odd ones.
    height = max(t.shape[1] for t in tiles)
    width = max(t.shape[2] for t in tiles)
    tiles = [torch.nn.functional.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]), value=114) for t in tiles]
    columns = math.ceil(math.sqrt(len(tiles)))
    grid = make_grid(torch.stack(tiles), nrow=columns, padding=2, pad_value=255)  # (3,H',W')
    return save_image(grid, out_jpg)
