"""OpenCV's uint8 HSV conversions and the HSV jitter's lookup tables, in torch, on any device.

The CPU path (`augment.apply_hsv_gains`) goes RGB → HSV with `cv2.cvtColor`, through a per-channel table
(`augment_plan.hsv_lookup_tables`, which this module applies too), and back.
Both conversions round, and H lives in [0, 180) as one byte, so a float HSV formula would drift from it by a few
levels; these functions follow OpenCV's own arithmetic instead (color_hsv.simd.hpp): RGB → HSV in fixed point with
its division tables (RGB2HSV_b), HSV → RGB in float32 as its vectorised loop does it (HSV2RGB_b with HSV2RGB_simd:
the sector by truncation, the result truncated to uint8). OpenCV's scalar loop, which only converts the last pixels
of a row when the width is not a multiple of its vector block (32 or 64 px; 320 and 640 are), rounds instead, so
such pixels may differ by one level.
"""

from __future__ import annotations

import numpy as np
import torch

from yolotr.data.augment_plan import hsv_lookup_tables

_HSV_SHIFT = 12  # fractional bits of OpenCV's fixed-point division tables


def _division_tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's sdiv_table and hdiv_table180: round((255 << 12) / i) and round((180 << 12) / (6 i)), 0 at i = 0."""
    i = np.arange(1, 256, dtype=np.float64)
    saturation = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / i)]).astype(np.int32)
    hue = np.concatenate([[0], np.rint((180 << _HSV_SHIFT) / (6.0 * i))]).astype(np.int32)
    return saturation, hue


_SATURATION_DIV, _HUE_DIV = _division_tables()
# Which of (v, v(1-s), v(1-s f), v(1-s(1-f))) is R, G and B in each sixth of the hue circle (OpenCV lists B, G, R).
_SECTOR_RGB = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) uint8 RGB → (..., 3) uint8 HSV with H in [0, 180), as cv2.COLOR_RGB2HSV."""
    r, g, b = rgb.to(torch.int32).unbind(-1)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    saturation_div = torch.as_tensor(_SATURATION_DIV, device=rgb.device)
    hue_div = torch.as_tensor(_HUE_DIV, device=rgb.device)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * saturation_div[v] + half) >> _HSV_SHIFT
    # OpenCV tests v == r first, then v == g: the order decides ties.
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hue_div[diff] + half) >> _HSV_SHIFT  # an arithmetic shift: floors negative values, as in C
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v], dim=-1).to(torch.uint8)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(..., 3) uint8 HSV (H in [0, 180)) → (..., 3) uint8 RGB, as cv2.COLOR_HSV2RGB's vectorised loop."""
    h, s, v = hsv.to(torch.float32).unbind(-1)
    # float32 constants as OpenCV's C computes them (6.0f / 180, 1.0f / 255)
    h = h * torch.tensor(np.float32(6.0) / np.float32(180.0), device=hsv.device)
    inverse_255 = torch.tensor(np.float32(1.0) / np.float32(255.0), device=hsv.device)
    s, v = s * inverse_255, v * inverse_255
    sector = torch.trunc(h)  # H < 180 → sector in [0, 5]
    fraction = h - sector
    table = torch.stack([v, v * (1 - s), v * _fused_one_minus_product(s, fraction),
                         v * _fused_one_minus_product(s, 1 - fraction)], dim=-1)  # (..., 4)
    rgb = torch.gather(table, -1, _SECTOR_RGB.to(hsv.device)[sector.to(torch.int64)])  # (..., 3)
    return torch.trunc(rgb * 255.0).clamp_(0, 255).to(torch.uint8)


def _fused_one_minus_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - a·b rounded once to float32, as a fused multiply-add gives it: OpenCV's x86-64 wheels are compiled so that
    `1 - s*h` becomes an FMA (with two roundings, 0.015% of all HSV values came out one level off). The float64
    product of two float32 values is exact, so one float64 subtraction and one rounding reproduce it."""
    return (1 - a.double() * b.double()).float()


def apply_hsv_gains(images: torch.Tensor, gains: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB images with their (B, 3) HSV gains → jittered images (a new tensor). Images whose
    gains are all 1 are left as they are: the CPU path skips them, and the HSV round trip is not the identity."""
    changed = np.flatnonzero(~np.all(np.asarray(gains) == 1, axis=1))
    if len(changed) == 0:
        return images
    out = images.clone()
    index = torch.as_tensor(changed, device=images.device)
    tables = torch.as_tensor(hsv_lookup_tables(np.asarray(gains)[changed]), device=images.device)  # (b, 3, 256)
    hsv = rgb_to_hsv(images[index]).to(torch.int64)  # (b, H, W, 3)
    b, height, width, _ = hsv.shape
    flat = hsv.reshape(b, -1, 3).permute(0, 2, 1)  # (b, 3, H·W): one table per image and channel
    jittered = torch.gather(tables, 2, flat).permute(0, 2, 1).reshape(b, height, width, 3)
    out[index] = hsv_to_rgb(jittered)
    return out
