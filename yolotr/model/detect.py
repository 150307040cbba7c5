"""YOLOv5's anchor-based detection head, with YOLOv5's output layout and box decoding."""

from __future__ import annotations

import math

import torch
from torch import nn


class Detect(nn.Module):
    """One 1x1 convolution per pyramid level predicting, per anchor, (x, y, w, h, objectness, nc class logits).

    ``anchors`` is a buffer (nl, na, 2) in grid units of each level (pixels / stride), set by `DetectionModel` once
    the strides are known; the yaml gives them in input pixels. Outputs:

    * train mode: list of nl raw tensors (B, na, h_i, w_i, 5 + nc);
    * eval mode: ``(decoded, raw)`` with decoded (B, N, 5 + nc): cx, cy, w, h in input pixels, then sigmoid
      objectness and class scores — YOLOv5's decoding xy = (2σ - 0.5 + grid)·stride, wh = (2σ)²·anchor.
    """

    def __init__(self, nc: int, anchors: list[list[float]], ch: list[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5  # outputs per anchor
        self.nl = len(anchors)  # pyramid levels
        self.na = len(anchors[0]) // 2  # anchors per level
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        # Set by DetectionModel from a dry run; derived from the architecture, so kept out of the state_dict.
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(channels, self.no * self.na, 1) for channels in ch)

    def initialize_biases(self) -> None:
        """YOLOv5's prior: about 8 objects per 640x640 image for objectness, 0.6 spread over the classes."""
        with torch.no_grad():
            for conv, stride in zip(self.m, self.stride.tolist(), strict=True):
                bias = conv.bias.view(self.na, self.no)  # (na·no,) -> (na, no), a view of the parameter
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (self.nc - 0.99999))

    def _grids(self, level: int, ny: int, nx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (minus YOLOv5's 0.5) and anchor sizes in pixels, both (1, na, ny, nx, 2)."""
        # fp32 even when the module was cast to bf16 (DeepSpeed's bf16 mode casts buffers too).
        anchors = self.anchors[level].float()
        rows = torch.arange(ny, device=anchors.device, dtype=torch.float32)
        cols = torch.arange(nx, device=anchors.device, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")  # (ny, nx) each
        shape = (1, self.na, ny, nx, 2)
        grid = torch.stack((grid_x, grid_y), dim=2).expand(shape) - 0.5
        anchor_grid = (anchors * self.stride[level].float()).view(1, self.na, 1, 1, 2).expand(shape)
        return grid, anchor_grid

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        raw: list[torch.Tensor] = []
        decoded: list[torch.Tensor] = []
        for level, (conv, feature) in enumerate(zip(self.m, features, strict=True)):
            y = conv(feature)
            batch, _, ny, nx = y.shape
            # (B, na·no, ny, nx) -> view (B, na, no, ny, nx) -> permute -> (B, na, ny, nx, no)
            y = y.view(batch, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            raw.append(y)
            if not self.training:
                grid, anchor_grid = self._grids(level, ny, nx)
                # Decoded in fp32 even under bf16 autocast: bf16 has an 8-bit mantissa, i.e. 4-pixel steps at x=640.
                xy, wh, scores = y.float().sigmoid().split((2, 2, self.nc + 1), dim=4)
                xy = (xy * 2 + grid) * self.stride[level].float()
                wh = (wh * 2) ** 2 * anchor_grid
                # (B, na, ny, nx, no) -> (B, na·ny·nx, no)
                decoded.append(torch.cat((xy, wh, scores), dim=4).view(batch, self.na * ny * nx, self.no))
        return raw if self.training else (torch.cat(decoded, dim=1), raw)
