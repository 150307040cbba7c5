"""Renders the augmentation plans of a batch with torch, on the device that holds the decoded images.

The same pixels as `augment.render_plan` (OpenCV on the CPU) up to interpolation rounding: each output pixel whose
centre falls inside a pasted source's region is sampled bilinearly from that source through the plan's matrix, with
the source's border replicated (cv2.BORDER_REPLICATE); every other pixel keeps the fill value; then the HSV gains
are applied with OpenCV's own uint8 arithmetic (device_hsv). Boxes are the plans' own, so they are identical.

All images of a batch are rendered at once: the sources are concatenated into one flat buffer (they differ in size,
so a padded (N, 3, H, W) stack for grid_sample would waste memory on large batches), each output pixel looks up its
source and gathers its four neighbours from that buffer. OpenCV's warpAffine quantises coordinates to 1/32 pixel
and weights to 15 bits; we sample at float32 precision, hence the small differences (measured in
tests/data/test_device_augment.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from yolotr.data.augment_plan import AugmentPlan, PastedSource
from yolotr.data.device_hsv import apply_hsv_gains
from yolotr.data.geometry import FILL_VALUE, transform_points

IMAGES_PER_CHUNK = 16  # bounds the per-pixel temporaries (~400 bytes per output pixel: ~2.6 GB at 640 px)


def render_plans(plans: Sequence[AugmentPlan], images: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, 3, S, S) uint8, channels_last memory (as batch.build_train_images), on the images' device.

    images: each source's decoded pixels by sample key, (3, H, W) uint8 RGB (torchvision's decoders' layout).
    """
    size = plans[0].size
    if any(plan.size != size for plan in plans):
        raise ValueError("the plans of a batch must have one output size")
    device = next(iter(images.values())).device
    keys = sorted({source.sample.key for plan in plans for source in plan.sources})
    flat, offsets, shapes = _flat_sources(images, keys)
    key_index = {key: i for i, key in enumerate(keys)}
    out = torch.empty((len(plans), size, size, 3), dtype=torch.uint8, device=device)  # (B, S, S, 3)
    for first in range(0, len(plans), IMAGES_PER_CHUNK):
        chunk = plans[first:first + IMAGES_PER_CHUNK]
        out[first:first + len(chunk)] = _render_chunk(chunk, flat, offsets, shapes, key_index)
    out = apply_hsv_gains(out, np.stack([plan.hsv_gains for plan in plans]))
    return out.permute(0, 3, 1, 2)  # (B, 3, S, S) view of (B, S, S, 3) memory


def _flat_sources(images: Mapping[str, torch.Tensor], keys: list[str]) -> tuple[torch.Tensor, list[int], list]:
    """One flat uint8 buffer of the (3, H, W) sources in `keys` order, each source's offset and (H, W)."""
    offsets, shapes, parts, offset = [], [], [], 0
    for key in keys:
        image = images[key]
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"image {key!r}: expected (3, H, W) uint8, got {tuple(image.shape)} {image.dtype}")
        offsets.append(offset)
        shapes.append(tuple(image.shape[1:]))
        parts.append(image.reshape(-1))
        offset += image.numel()
    return torch.cat(parts), offsets, shapes


def _render_chunk(plans: Sequence[AugmentPlan], flat: torch.Tensor, offsets: list[int], shapes: list,
                  key_index: Mapping[str, int]) -> torch.Tensor:
    """(b, S, S, 3) uint8: the warped sources of `plans` on the fill value, before HSV."""
    size, device = plans[0].size, flat.device
    # Per pasted source: where its pixels are in `flat`, its size, its inverse matrix and its region's half-planes,
    # computed on the host in float64 and copied to the device once; `images` says which output each one is pasted in.
    images, rows = [], []
    for image_index, plan in enumerate(plans):
        for source in plan.sources:
            key = key_index[source.sample.key]
            height, width = shapes[key]
            to_source = np.linalg.inv(source.matrix)[:2].ravel()  # output edge coordinates → source's
            images.append(image_index)
            rows.append([offsets[key], height, width, *to_source, *_region_edges(source)])
    table = torch.tensor(rows, dtype=torch.float64, device=device)  # (K, 21)
    owner = _owners(table[:, 9:], torch.tensor(images, device=device), len(plans), size)  # (b, S, S); -1: fill
    column = table[:, :9][owner.clamp(min=0).reshape(-1)].reshape(*owner.shape, 9)  # (b, S, S, 9): that source's row
    offset, height, width = column[..., 0].long(), column[..., 1].long(), column[..., 2].long()
    a = column[..., 3:9]  # (b, S, S, 6): output → source matrix
    del column

    centres = torch.arange(size, device=device, dtype=torch.float64) + 0.5
    cy, cx = centres[:, None], centres[None, :]  # (S, 1), (1, S)
    # Source coordinates of each output pixel centre, in OpenCV's centre convention (pixel j spans [j-½, j+½)).
    u = a[..., 0] * cx + a[..., 1] * cy + a[..., 2] - 0.5
    v = a[..., 3] * cx + a[..., 4] * cy + a[..., 5] - 0.5
    del a
    # Clamping the coordinate to the pixel centres is BORDER_REPLICATE for bilinear sampling.
    u = torch.minimum(u.clamp(min=0), (width - 1).double())
    v = torch.minimum(v.clamp(min=0), (height - 1).double())
    x0, y0 = u.floor(), v.floor()
    fx, fy = (u - x0).float()[..., None], (v - y0).float()[..., None]  # (b, S, S, 1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = torch.minimum(x0 + 1, width - 1), torch.minimum(y0 + 1, height - 1)
    channels = torch.arange(3, device=device) * (height * width)[..., None]  # (b, S, S, 3): offset of plane c

    def gather(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return flat[(offset + y * width + x)[..., None] + channels].float()  # (b, S, S, 3)

    top = gather(x0, y0) * (1 - fx) + gather(x1, y0) * fx
    bottom = gather(x0, y1) * (1 - fx) + gather(x1, y1) * fx
    pixels = (top * (1 - fy) + bottom * fy).round_().clamp_(0, 255).to(torch.uint8)
    return torch.where((owner >= 0)[..., None], pixels, torch.full_like(pixels, FILL_VALUE))


def _region_edges(source: PastedSource) -> list[float]:
    """The region's quadrilateral in the output as 4 half-planes (a, b, c): a pixel centre (x, y) is on the inner side
    of an edge when a·x + b·y + c >= 0.

    An axis-aligned region gets the exact rule of paste_warped's warp-only branch: a centre in [min, max) of the
    corners on each axis (x < max written as max - x - ε >= 0). A rotated or sheared one gets an approximation of
    OpenCV's fillConvexPoly, which makes paste_warped's mask there: it fills each row from the rounded left to the
    rounded right edge, and draws the edges as 8-connected lines, so a pixel is in when its centre is within half a
    pixel horizontally of the quadrilateral, or vertically of one of its shallow edges. Its fixed-point rounding is
    not reproduced: about 0.2% of the pixels of rotated images, along tile edges, differ.
    """
    x1, y1, x2, y2 = source.region
    corners = transform_points(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64),
                               source.region_to_out)
    m = source.region_to_out
    if abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12:
        (lo_x, lo_y), (hi_x, hi_y) = corners.min(0), corners.max(0)
        exclusive = 1e-9  # x < hi as x - hi + ε <= 0 with ε below any centre's spacing from a corner
        return [1, 0, -lo_x, 0, 1, -lo_y, -1, 0, hi_x - exclusive, 0, -1, hi_y - exclusive]
    centre = corners.mean(0)
    edges = []
    for p, q in zip(corners, np.roll(corners, -1, axis=0)):
        a, b = q[1] - p[1], p[0] - q[0]  # a normal of the edge p → q
        c = -(a * p[0] + b * p[1])
        if a * centre[0] + b * centre[1] + c < 0:  # point it inwards
            a, b, c = -a, -b, -c
        # Half a pixel out horizontally (the scanline spans), and vertically too for the shallow edges (its lines).
        edges += [a, b, c + 0.5 * abs(a) + (0.5 * abs(b) if abs(b) > abs(a) else 0.0)]
    return edges


def _owners(edges: torch.Tensor, images: torch.Tensor, count: int, size: int) -> torch.Tensor:
    """(count, S, S) int64: for each output pixel the source whose region holds its centre, -1 where none does.

    edges: (K, 12) per source, the 4 half-planes of its region (`_region_edges`); images: (K,) the output image of
    each source. Where two regions claim a pixel (edges of rotated mosaic tiles), the later one wins, as the later
    paste does on the CPU.
    """
    device = edges.device
    centres = torch.arange(size, device=device, dtype=torch.float64) + 0.5
    cy, cx = centres[:, None], centres[None, :]  # (S, 1), (1, S)
    inside = torch.ones((len(edges), size, size), dtype=torch.bool, device=device)  # (K, S, S)
    for edge in edges.reshape(-1, 4, 3).unbind(1):  # (K, 3) each
        a, b, c = edge.unbind(1)  # (K,) each
        inside &= a[:, None, None] * cx + b[:, None, None] * cy + c[:, None, None] >= 0
    claims = torch.where(inside, torch.arange(len(edges), device=device)[:, None, None], -1)  # (K, S, S)
    owner = torch.full((count, size * size), -1, dtype=torch.int64, device=device)
    owner.scatter_reduce_(0, images[:, None].expand(-1, size * size), claims.reshape(-1, size * size), "amax")
    return owner.reshape(count, size, size)
