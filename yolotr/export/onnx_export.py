"""ONNX export of a detector (torch.onnx's exporter) and the parity check that guards every exported format.

The decoded graph takes `images` (B,3,H,W) in [0,1] (fp16 with `half`) and returns `output` (B,N,5+nc) fp32: the
decoded boxes of the eval-mode forward (cx,cy,w,h pixels, sigmoid objectness and class scores), i.e. everything
before NMS. With `nms`, the graph ends in ONNX NonMaxSuppression instead (export_nms.py) and returns `detections`
(B,max_det,6) and `num_detections` (B,).
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.errors import YolotrError
from yolotr.export.nms import NMS_TRANSLATION, EndToEnd, NmsSettings

DEFAULT_OPSET = 18


@dataclass(frozen=True)
class Tolerance:
    """An exported output `a` matches PyTorch's `b` where |a − b| ≤ atol + rtol·|b|, element by element."""

    rtol: float
    atol: float

    def describe(self) -> str:
        return f"atol {self.atol:g} + rtol {self.rtol:g}"


# fp32 runtimes reorder sums, nothing more. The absolute slack is for values that are ~0 (sigmoid scores of 1e-6),
# where relative error means nothing.
FP32_TOLERANCE = Tolerance(rtol=1e-4, atol=1e-6)
# fp16 holds ~3 significant digits and the errors add up over the layers: 1 % of a value, or 0.01 of a score.
FP16_TOLERANCE = Tolerance(rtol=1e-2, atol=1e-2)
# Kept for callers of the first version of this module.
PARITY_RTOL, PARITY_ATOL = FP32_TOLERANCE.rtol, FP32_TOLERANCE.atol


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
    """max |exported − torch| / |torch| over elements where the relative error means something (|torch| > atol/rtol)."""
    ok: bool
    tolerance: Tolerance = FP32_TOLERANCE
    runtime: str = "onnxruntime"
    detections: int | None = None
    """For a graph with NMS: the detections PyTorch found, i.e. what the comparison exercised."""

    def line(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        compared = f" over {self.detections} detections" if self.detections is not None else ""
        return (
            f"{self.runtime} parity {verdict} at input {list(self.shape)}{compared}: max abs err "
            f"{self.max_abs_error:.3g}, max rel err {self.max_rel_error:.3g} (tolerance {self.tolerance.describe()})"
        )


class ParityError(YolotrError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


def compare(expected: np.ndarray, actual: np.ndarray, shape: tuple[int, ...], tolerance: Tolerance,
            runtime: str) -> ParityReport:
    """One ParityReport of `actual` against `expected` (same shape, compared in fp32)."""
    expected, actual = np.asarray(expected, np.float32), np.asarray(actual, np.float32)
    if actual.shape != expected.shape:
        raise ParityError(f"{runtime}: output shape {actual.shape} != PyTorch's {expected.shape}")
    error = np.abs(actual - expected)
    meaningful = np.abs(expected) > tolerance.atol / tolerance.rtol
    rel = float((error[meaningful] / np.abs(expected[meaningful])).max()) if meaningful.any() else 0.0
    ok = bool(np.all(error <= tolerance.atol + tolerance.rtol * np.abs(expected)))
    return ParityReport(shape, float(error.max()) if error.size else 0.0, rel, ok, tolerance, runtime)


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike,
    imgsz: int,
    *,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    half: bool = False,
    nms: NmsSettings | None = None,
    batch: int = 1,
) -> Path:
    """Export `model` (eval mode) to one self-contained .onnx file.

    With `dynamic`, batch, height and width are symbolic (height and width must stay multiples of the model's
    largest stride at run time); otherwise the graph is fixed at (batch,3,imgsz,imgsz). `half` exports fp16
    weights and input (for GPU runtimes; the output stays fp32). `nms` appends ONNX NonMaxSuppression.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    network = (copy.deepcopy(model).half() if half else model.float()).cpu().eval()  # the caller's model stays fp32
    wrapped = (EndToEnd(network, nms) if nms is not None else DecodedOutput(network)).eval()
    example = torch.rand(batch, 3, imgsz, imgsz).to(dtype)
    dynamic_shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        dynamic_shapes = {"images": {0: auto, 2: auto, 3: auto}}
    torch.onnx.export(
        wrapped,
        (example,),
        str(out),
        input_names=["images"],
        output_names=["detections", "num_detections"] if nms is not None else ["output"],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=NMS_TRANSLATION if nms is not None else None,
    )
    return out


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, inputs: list[torch.Tensor],
                 tolerance: Tolerance = FP32_TOLERANCE) -> list[ParityReport]:
    """Run PyTorch (fp32, CPU) and onnxruntime (CPU) on each input of a decoded graph; one report per input."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_type = session.get_inputs()[0].type  # "tensor(float16)" for a half export
    wrapped = DecodedOutput(model.float().cpu().eval()).eval()
    reports = []
    for images in inputs:
        with torch.no_grad():
            expected = wrapped(images).numpy()  # (B,N,5+nc)
        feed = images.numpy().astype(np.float16 if "float16" in input_type else np.float32)
        (actual,) = session.run(["output"], {"images": feed})
        reports.append(compare(expected, actual, tuple(images.shape), tolerance, "onnxruntime"))
    return reports


def onnx_op_counts(onnx_path: str | os.PathLike) -> Counter:
    """How many nodes of each op type the graph has (functions inlined by the exporter included)."""
    import onnx

    graph_model = onnx.load(str(onnx_path))
    counts = Counter(node.op_type for node in graph_model.graph.node)
    for function in graph_model.functions:
        counts.update(node.op_type for node in function.node)
    return counts
