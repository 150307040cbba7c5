"""Export beyond the decoded ONNX graph: NonMaxSuppression inside the graph, fp16, TorchScript, OpenVINO and
TensorRT, each run and checked against PyTorch, and the CLI's table of sizes and latencies."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from yolotr.cli import main
from yolotr.errors import UsageError
from yolotr.export.onnx_export import FP16_TOLERANCE, check_parity, export_onnx, onnx_op_counts
from yolotr.export.nms import NmsSettings, canonical_order, reference_detections
from yolotr.export.exporter import ExportSettings, export

NMS = NmsSettings(conf_thres=0.3, iou_thres=0.45, max_det=20)


def weight_bytes(path) -> int:
    import onnx

    return sum(len(tensor.raw_data) for tensor in onnx.load(str(path)).graph.initializer)


def run_onnx(path, images: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def test_the_nms_graph_returns_what_predicts_own_nms_returns_for_any_batch(make_tiny_model, tmp_path):
    model = make_tiny_model()
    path = export_onnx(model, tmp_path / "e2e.onnx", 64, dynamic=True, nms=NMS)
    generator = torch.Generator().manual_seed(0)

    for images in (torch.rand(1, 3, 64, 64, generator=generator), torch.rand(3, 3, 64, 96, generator=generator)):
        detections, counts = run_onnx(path, images)
        expected, expected_counts = reference_detections(model, images, NMS)

        assert detections.shape == (len(images), NMS.max_det, 6) and counts.dtype == np.int64
        assert counts.tolist() == expected_counts.tolist() and counts.min() > 0
        np.testing.assert_allclose(canonical_order(detections), canonical_order(expected.numpy()), rtol=1e-4,
                                   atol=1e-4)
    assert onnx_op_counts(path)["NonMaxSuppression"] == 1


def test_a_fixed_batch_nms_graph_pads_each_image_to_max_det(make_tiny_model, tmp_path):
    model = make_tiny_model()
    settings = NmsSettings(conf_thres=0.3, max_det=3)  # fewer than the boxes found: each image is cut at 3
    path = export_onnx(model, tmp_path / "e2e.onnx", 64, nms=settings, batch=2)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    detections, counts = run_onnx(path, images)

    assert detections.shape == (2, 3, 6) and counts.tolist() == [3, 3]
    assert (np.diff(detections[..., 4], axis=1) <= 0).all()  # by confidence, descending
    expected = reference_detections(model, images, settings)[0].numpy()
    np.testing.assert_allclose(canonical_order(detections), canonical_order(expected), rtol=1e-4, atol=1e-4)


def test_an_fp16_onnx_file_stores_half_the_weight_bytes_and_matches_within_the_fp16_tolerance(make_tiny_model, tmp_path):
    model = make_tiny_model()
    full = export_onnx(model, tmp_path / "fp32.onnx", 64)
    half = export_onnx(model, tmp_path / "fp16.onnx", 64, half=True)

    (report,) = check_parity(model, half, [torch.rand(1, 3, 64, 64)], tolerance=FP16_TOLERANCE)

    session = onnxruntime.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert report.ok and report.max_abs_error > 0  # computed in fp16, not silently in fp32
    assert weight_bytes(half) == pytest.approx(weight_bytes(full) / 2, rel=0.05)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left in fp32


def test_torchscript_and_onnx_rows_carry_size_latency_and_their_difference(tiny_weights, tmp_path):
    weights, _ = tiny_weights

    report = export(weights, ExportSettings(formats=("onnx", "torchscript"), imgsz=64, latency_runs=2), out=tmp_path)

    assert [row.format for row in report.rows] == ["pytorch", "onnx", "torchscript"]
    assert report.ok and report.transformer_blocks == 1
    for row in report.rows[1:]:
        assert row.path.parent == tmp_path and row.size_mb > 0 and row.latency_ms > 0
        assert row.max_abs_error is not None and row.max_abs_error < 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream, still widely deployed
        loaded = torch.jit.load(str(tmp_path / "tiny.torchscript"))
    assert loaded(torch.rand(1, 3, 64, 64)).shape == (1, 3 * (8 * 8 + 4 * 4), 8)


def test_openvino_converts_the_checked_nms_graph_and_matches(tiny_weights, tmp_path):
    pytest.importorskip("openvino")
    weights, _ = tiny_weights

    report = export(weights, ExportSettings(formats=("openvino",), imgsz=64, nms=NMS, latency_runs=1), out=tmp_path)

    (row,) = [r for r in report.rows if r.format == "openvino"]
    assert row.ok and row.path == tmp_path / "tiny_openvino_model" and (row.path / "tiny.xml").is_file()
    assert row.parity[0].detections > 0


def test_nms_in_torchscript_is_refused_before_anything_is_written(tiny_weights, tmp_path):
    weights, _ = tiny_weights

    with pytest.raises(UsageError, match="TorchScript is exported without NMS"):
        export(weights, ExportSettings(formats=("onnx", "torchscript"), nms=NMS), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_cli_prints_the_table_of_every_format(tiny_weights, tmp_path, capsys):
    weights, _ = tiny_weights

    code = main(["export", "--weights", str(weights), "--format", "onnx,torchscript", "--imgsz", "64",
                 "--runs", "2", "--out", str(tmp_path)])

    printed = capsys.readouterr().out
    assert code == 0
    assert "| Format | File | Runtime | Size (MB) | Latency (ms/batch) | Max abs diff vs PyTorch |" in printed
    for name in ("| pytorch | tiny.safetensors | PyTorch (cpu, fp32) |", "| onnx | tiny.onnx | onnxruntime |",
                 "| torchscript | tiny.torchscript | TorchScript (cpu) |"):
        assert name in printed


GPU_CASES = {
    "torchscript-fp16": ExportSettings(formats=("torchscript",), half=True, device="cuda"),
    "engine-fp32": ExportSettings(formats=("engine",), device="cuda"),
    "engine-fp16-nms": ExportSettings(formats=("engine",), half=True, nms=NMS, device="cuda"),
}


@pytest.mark.parametrize("case", list(GPU_CASES))
def test_gpu_formats_match_pytorch(case, tiny_weights, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if "engine" in case:
        pytest.importorskip("tensorrt")
    settings = GPU_CASES[case]
    settings.imgsz, settings.latency_runs = 64, 5

    report = export(tiny_weights[0], settings, out=tmp_path)

    row = report.rows[-1]
    assert row.ok, [p.line() for p in row.parity]
    assert row.latency_ms > 0 and row.path.stat().st_size > 0
