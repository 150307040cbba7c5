"""Box conversions between the letterboxed network input, the original image and COCO's format.

torchvision.ops.box_convert does the format changes; what is written here is only the letterbox inverse
and the reading of the `(N,6)` target layout, which are specific to yolotr's data stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_convert

RatioPad = tuple[float | Sequence[float], tuple[float, float]]


def letterbox_to_original(boxes: torch.Tensor, ratio_pad: RatioPad, orig_size: tuple[int, int]) -> torch.Tensor:
    """Map (n,4) x1,y1,x2,y2 boxes from letterboxed pixels back to original pixels, clipped to the image.

    The letterbox scaled the original by `ratio` (one number, or (ratio_w, ratio_h)) and then padded
    `(pad_w, pad_h)` on the left/top, so the inverse is `(x - pad) / ratio`.
    """
    ratio, (pad_w, pad_h) = ratio_pad
    ratio_w, ratio_h = (ratio, ratio) if isinstance(ratio, (int, float)) else (ratio[0], ratio[1])
    height, width = orig_size
    out = boxes.clone().float()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_w) / ratio_w).clamp(0, width)
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_h) / ratio_h).clamp(0, height)
    return out


def xyxy_to_coco_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(n,4) x1,y1,x2,y2 → (n,4) COCO x,y,w,h (top-left corner, width, height)."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="xywh")


def targets_of_image(targets: torch.Tensor, index: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes (m,) and pixel x1,y1,x2,y2 boxes (m,4) of image `index` in a batch.

    `targets` is the data stream's (N,6) [img_idx, cls, cx, cy, w, h] with boxes normalised to the image.
    """
    targets = targets.detach().cpu()
    mine = targets[targets[:, 0] == index]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = box_convert(mine[:, 2:6].float() * scale, in_fmt="cxcywh", out_fmt="xyxy")
    return mine[:, 1].long(), boxes
