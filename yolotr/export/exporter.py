"""`yolotr export` as a library function: every requested format written, run on the same images as the PyTorch
model, checked against it within a stated tolerance, and timed; the result is one table.

    report = export("best.safetensors", ExportSettings(formats=("onnx", "openvino"), nms=NmsSettings()))
    print(report.table())
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from yolotr.checkpoint.weights_file import LoadedWeights, load_weights
from yolotr.errors import UsageError
from yolotr.export import formats
from yolotr.export.onnx_export import (
    DEFAULT_OPSET,
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    DecodedOutput,
    ParityReport,
    Tolerance,
    compare,
    export_onnx,
)
from yolotr.export.nms import NmsSettings, canonical_order, reference_detections
from yolotr.model.nms import non_max_suppression
from yolotr.model.transformer import TRANSFORMER_TYPES

FORMATS = ("onnx", "torchscript", "openvino", "engine")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model", "engine": ".engine"}


@dataclass
class ExportSettings:
    formats: tuple[str, ...] = ("onnx",)
    """Any of onnx, torchscript, openvino, engine (TensorRT)."""
    imgsz: int | None = None
    """Input size; default: the size the weights were trained at."""
    batch: int = 1
    """Batch size of a fixed graph (and the one timed)."""
    dynamic: bool = False
    """Symbolic batch, height and width (ONNX, OpenVINO; TensorRT gets a batch 1..max(batch, 8) profile)."""
    half: bool = False
    """fp16 for GPU targets: fp16 ONNX and TorchScript, fp16 kernels in TensorRT, fp16 weights in OpenVINO."""
    nms: NmsSettings | None = None
    """End the ONNX / OpenVINO / TensorRT graphs in NonMaxSuppression (outputs `detections`, `num_detections`)."""
    opset: int = DEFAULT_OPSET
    device: str = "cpu"
    """Where the formats that run on a device (TorchScript, TensorRT, ONNX with onnxruntime-gpu) run and are timed."""
    latency_runs: int = 20
    """Timed runs per format after 3 warm-up runs; the median is reported."""


@dataclass
class ExportRow:
    format: str
    path: Path | None
    size_mb: float
    latency_ms: float | None
    """Median wall time of one batch (including the host↔device copies, as a caller sees it)."""
    parity: list[ParityReport] = field(default_factory=list)
    tolerance: Tolerance | None = None
    runtime: str = ""
    """What ran it (onnxruntime on the CPU or CUDA, OpenVINO on the CPU, ...)."""

    @property
    def max_abs_error(self) -> float | None:
        return max((r.max_abs_error for r in self.parity), default=None)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.parity)


@dataclass
class ExportReport:
    rows: list[ExportRow]
    input_shape: tuple[int, ...]
    device: str
    threads: int
    transformer_blocks: int = 0
    """The model's transformer blocks: an ONNX graph of such a model must hold attention ops."""

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def table(self) -> str:
        """Markdown: one row per format, PyTorch first (its latency is the reference)."""
        lines = [f"Input {list(self.input_shape)} on {self.device} ({self.threads} threads):", "",
                 "| Format | File | Runtime | Size (MB) | Latency (ms/batch) | Max abs diff vs PyTorch | Tolerance "
                 "| Parity |",
                 "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
        for row in self.rows:
            latency = f"{row.latency_ms:.1f}" if row.latency_ms is not None else "-"
            error = f"{row.max_abs_error:.2g}" if row.max_abs_error is not None else "-"
            tolerance = row.tolerance.describe() if row.tolerance else "-"
            verdict = "-" if not row.parity else "OK" if row.ok else "MISMATCH"
            name = row.path.name if row.path else "-"
            lines.append(f"| {row.format} | {name} | {row.runtime} | {row.size_mb:.1f} | {latency} | {error} | "
                         f"{tolerance} | {verdict} |")
        return "\n".join(lines)


def export(
    weights: str | os.PathLike | LoadedWeights, settings: ExportSettings | None = None,
    out: str | os.PathLike | None = None,
) -> ExportReport:
    """Write each format of `settings.formats` next to the weights (or into folder `out`; a file name when one
    format is asked for and `out` carries its suffix), run it and PyTorch on the same seeded images, and time both.

    The ONNX file is the source of OpenVINO and TensorRT, so it is written (and checked) whenever they are asked for.
    """
    settings = settings or ExportSettings()
    unknown = set(settings.formats) - set(FORMATS)
    if unknown or not settings.formats:
        raise UsageError(f"--format {','.join(settings.formats)}: choose from {', '.join(FORMATS)}")
    if settings.nms is not None and "torchscript" in settings.formats:
        raise UsageError("--nms: TorchScript is exported without NMS (its graph would need yolotr's custom op); "
                         "export it separately, or NMS in onnx / openvino / engine")
    device = torch.device(settings.device)
    loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights, device="cpu")
    model = loaded.model.float().cpu().eval()
    imgsz = settings.imgsz or loaded.imgsz
    stride = int(model.stride.max())
    if imgsz % stride:
        raise UsageError(f"--imgsz {imgsz} must be a multiple of the model's largest stride {stride}")
    stem_path = _stem_path(weights, out, settings.formats)
    threads = torch.get_num_threads()

    inputs = _parity_inputs(settings.batch, imgsz, stride, settings.dynamic)
    reference = _Reference(model, settings.nms, inputs)
    weights_path = Path(loaded.meta["path"]) if loaded.meta.get("path") else None
    torch_runtime = reference.torch_runtime(device)
    rows = [ExportRow("pytorch", weights_path, formats.path_size_mb(weights_path) if weights_path else 0.0,
                      _latency(torch_runtime, inputs[0], settings.latency_runs), runtime=torch_runtime.name)]

    onnx_path = None
    needs_onnx = {"onnx", "openvino", "engine"} & set(settings.formats)
    if needs_onnx:
        # OpenVINO and TensorRT convert an fp32 graph (they choose their fp16 kernels themselves).
        onnx_half = settings.half and "onnx" in settings.formats
        onnx_path = export_onnx(model, _path(stem_path, "onnx", out, settings.formats), imgsz,
                                dynamic=settings.dynamic, opset=settings.opset, half=onnx_half, nms=settings.nms,
                                batch=settings.batch)
        if "onnx" in settings.formats:
            runtime = formats.onnx_runtime(onnx_path, device, threads)
            rows.append(_checked_row("onnx", onnx_path, runtime, reference, inputs, onnx_half, settings))
        if onnx_half and {"openvino", "engine"} & set(settings.formats):
            onnx_path = export_onnx(model, onnx_path.with_name(f"{onnx_path.stem}-fp32.onnx"), imgsz,
                                    dynamic=settings.dynamic, opset=settings.opset, nms=settings.nms,
                                    batch=settings.batch)
    if "torchscript" in settings.formats:
        path = formats.export_torchscript(model, _path(stem_path, "torchscript", out, settings.formats), imgsz,
                                          batch=settings.batch, half=settings.half, device=device)
        runtime = formats.torchscript_runtime(path, device, settings.half)
        rows.append(_checked_row("torchscript", path, runtime, reference, inputs, settings.half, settings))
    if "openvino" in settings.formats:
        folder = _path(stem_path, "openvino", out, settings.formats)
        xml = formats.export_openvino(onnx_path, folder, half=settings.half)
        runtime = formats.openvino_runtime(xml, threads)
        # Its runtime computes in fp32 whatever the stored weights: fp16 weights differ like an fp16 model.
        rows.append(_checked_row("openvino", folder, runtime, reference, inputs, settings.half, settings))
    if "engine" in settings.formats:
        path = formats.export_tensorrt(onnx_path, _path(stem_path, "engine", out, settings.formats),
                                       half=settings.half, batch=settings.batch, dynamic=settings.dynamic,
                                       imgsz=imgsz, device=device)
        runtime = formats.tensorrt_runtime(path, device)
        rows.append(_checked_row("engine", path, runtime, reference, inputs, settings.half, settings))
    blocks = sum(isinstance(m, TRANSFORMER_TYPES) for m in model.modules())
    return ExportReport(rows, tuple(inputs[0].shape), str(device), threads, blocks)


class _Reference:
    """PyTorch's outputs for the parity inputs (fp32, CPU): decoded boxes, or predict's NMS for an NMS graph."""

    def __init__(self, model: torch.nn.Module, nms: NmsSettings | None, inputs: list[torch.Tensor]) -> None:
        self.model, self.nms = model, nms
        self.outputs = [self._outputs(images) for images in inputs]

    def _outputs(self, images: torch.Tensor) -> list[np.ndarray]:
        if self.nms is not None:
            rows, counts = reference_detections(self.model, images, self.nms)
            return [rows.numpy(), counts.numpy()]
        with torch.no_grad():
            return [DecodedOutput(self.model)(images).numpy()]

    def torch_runtime(self, device: torch.device) -> formats.Runtime:
        """The PyTorch model on `device` in fp32 (with predict's NMS for an NMS export): the latency reference."""
        # A copy for another device: the reference outputs stay CPU-computed.
        network = self.model if device.type == "cpu" else copy.deepcopy(self.model).to(device)
        model = DecodedOutput(network).eval()

        def run(images: torch.Tensor) -> list[np.ndarray]:
            with torch.no_grad():
                decoded = model(images.to(device))  # (B,N,5+nc)
                if self.nms is None:
                    return [decoded.cpu().numpy()]
                kept = non_max_suppression(decoded, self.nms.conf_thres, self.nms.iou_thres, max_det=self.nms.max_det)
                return [k.cpu().numpy() for k in kept]

        return formats.Runtime(f"PyTorch ({device.type}, fp32)", run, sync=formats.device_sync(device))


def _checked_row(name: str, path: Path, runtime: formats.Runtime, reference: _Reference, inputs: list[torch.Tensor],
                 half: bool, settings: ExportSettings) -> ExportRow:
    tolerance = FP16_TOLERANCE if half else FP32_TOLERANCE
    reports = []
    for images, expected in zip(inputs, reference.outputs):
        actual = runtime.run(images)
        if len(actual) != len(expected):
            raise UsageError(f"{path}: {len(actual)} outputs, PyTorch has {len(expected)}")
        if settings.nms is not None:  # ties in confidence may come out in another order
            expected, actual = [canonical_order(expected[0]), expected[1]], [canonical_order(actual[0]), actual[1]]
        parts = [compare(e, a, tuple(images.shape), tolerance, runtime.name) for e, a in zip(expected, actual)]
        detections = int(expected[1].sum()) if settings.nms is not None else None
        reports.append(ParityReport(tuple(images.shape), max(p.max_abs_error for p in parts),
                                    max(p.max_rel_error for p in parts), all(p.ok for p in parts), tolerance,
                                    runtime.name, detections))
    latency = _latency(runtime, inputs[0], settings.latency_runs)
    return ExportRow(name, path, formats.path_size_mb(path), latency, reports, tolerance, runtime.name)


def _latency(runtime: formats.Runtime, images: torch.Tensor, runs: int) -> float | None:
    if runs <= 0:
        return None
    for _ in range(3):  # warm-up: lazy initialisation, autotuning, caches
        runtime.run(images)
    runtime.sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runtime.run(images)
        runtime.sync()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _parity_inputs(batch: int, imgsz: int, stride: int, dynamic: bool) -> list[torch.Tensor]:
    """Seeded images; a dynamic graph also gets another batch size and a non-square shape through the same file."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(batch, 3, imgsz, imgsz, generator=generator)]
    if dynamic:
        inputs.append(torch.rand(batch + 1, 3, imgsz, imgsz + stride, generator=generator))
    return inputs


def _stem_path(weights, out, requested: tuple[str, ...]) -> Path:
    """Where outputs go, without suffix: `out` as a folder, else next to the weights file."""
    source = Path(weights) if not isinstance(weights, LoadedWeights) else Path(weights.meta.get("path", "model"))
    if out is not None and not _is_single_file(Path(out), requested):
        return Path(out) / source.stem
    return source.with_suffix("")


def _is_single_file(out: Path, requested: tuple[str, ...]) -> bool:
    return len(requested) == 1 and out.suffix == SUFFIXES[requested[0]]


def _path(stem_path: Path, fmt: str, out, requested: tuple[str, ...]) -> Path:
    if out is not None and fmt in requested and _is_single_file(Path(out), requested):
        return Path(out)
    return stem_path.with_name(stem_path.name + SUFFIXES[fmt])
