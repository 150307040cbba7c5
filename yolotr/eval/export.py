"""ONNX export of a detector (torch.onnx's exporter) and the onnxruntime parity check that guards it.

The exported graph takes `images` float (B,3,H,W) in [0,1] and returns `output` (B,N,5+nc): the decoded
boxes of the eval-mode forward (cx,cy,w,h pixels, sigmoid objectness and class scores), i.e. everything
before NMS, which deployment runtimes implement themselves.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.errors import YolotrError

DEFAULT_OPSET = 18
PARITY_RTOL = 1e-4
# Tiny absolute slack for values that are ~0 (sigmoid scores of 1e-6): relative error means nothing there.
PARITY_ATOL = 1e-6


class DecodedOutput(nn.Module):
    """The model with only its decoded tensor as output (the raw per-level maps are training-only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[0]  # (B,N,5+nc)


@dataclass
class ParityReport:
    shape: tuple[int, ...]
    """Input shape the comparison ran at."""
    max_abs_error: float
    max_rel_error: float
    """max |ort − torch| / |torch| over elements with |torch| > PARITY_ATOL / PARITY_RTOL."""
    ok: bool

    def line(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"onnxruntime parity {verdict} at input {list(self.shape)}: max abs err {self.max_abs_error:.3g}, "
            f"max rel err {self.max_rel_error:.3g} (tolerance rel {PARITY_RTOL:g})"
        )


class ParityError(YolotrError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(
    model: nn.Module, out: str | os.PathLike, imgsz: int, *, dynamic: bool = False, opset: int = DEFAULT_OPSET
) -> Path:
    """Export `model` (eval mode, CPU fp32) to one self-contained .onnx file.

    With `dynamic`, batch, height and width are symbolic (height and width must stay multiples of the
    model's largest stride at run time); otherwise the graph is fixed at (1,3,imgsz,imgsz).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapped = DecodedOutput(model.float().cpu().eval()).eval()
    example = torch.rand(1, 3, imgsz, imgsz)
    dynamic_shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        dynamic_shapes = {"images": {0: auto, 2: auto, 3: auto}}
    torch.onnx.export(
        wrapped,
        (example,),
        str(out),
        input_names=["images"],
        output_names=["output"],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes=dynamic_shapes,
    )
    return out


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, inputs: list[torch.Tensor]) -> list[ParityReport]:
    """Run PyTorch and onnxruntime (CPU) on each input; one report per input."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapped = DecodedOutput(model.float().cpu().eval()).eval()
    reports = []
    for images in inputs:
        with torch.no_grad():
            expected = wrapped(images).numpy()  # (B,N,5+nc)
        (actual,) = session.run(["output"], {"images": images.numpy()})
        if actual.shape != expected.shape:
            raise ParityError(f"{onnx_path}: output shape {actual.shape} != PyTorch's {expected.shape}")
        error = np.abs(actual - expected)
        meaningful = np.abs(expected) > PARITY_ATOL / PARITY_RTOL
        rel = float((error[meaningful] / np.abs(expected[meaningful])).max()) if meaningful.any() else 0.0
        ok = bool(np.all(error <= PARITY_ATOL + PARITY_RTOL * np.abs(expected)))
        reports.append(ParityReport(tuple(images.shape), float(error.max()), rel, ok))
    return reports


def onnx_op_counts(onnx_path: str | os.PathLike) -> Counter:
    """How many nodes of each op type the graph has (functions inlined by the exporter included)."""
    import onnx

    graph_model = onnx.load(str(onnx_path))
    counts = Counter(node.op_type for node in graph_model.graph.node)
    for function in graph_model.functions:
        counts.update(node.op_type for node in function.node)
    return counts
